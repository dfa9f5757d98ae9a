package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

const logsUsage = `usage: berth logs [--server URL] [--token T] [--tls-verify=false] [--ca-file PEM] NAME BUILD_ID

Prints the log of build BUILD_ID of repository NAME ([host/]namespace/repository) from
its start, and follows it until the build ends. Ctrl-C stops following; the build goes
on. Credentials as for berth build.

`

// runLogs is `berth logs`.
func runLogs(ctx context.Context, args []string) error {
	return logsMain(ctx, args, console{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
}

func logsMain(ctx context.Context, args []string, con console) error {
	flags := flag.NewFlagSet("logs", flag.ContinueOnError)
	flags.SetOutput(con.stderr)
	flags.Usage = func() { fmt.Fprint(con.stderr, logsUsage); flags.PrintDefaults() }
	var conn serverFlags
	conn.register(flags, con.getenv)
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() != 2 {
		flags.Usage()
		return errors.New("a repository and a build ID are required")
	}
	name, id := flags.Arg(0), flags.Arg(1)
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		return fmt.Errorf("%q: name the repository, without a tag", name)
	}
	ref, err := parseBuildTags([]string{name})
	if err != nil {
		return err
	}
	c, err := conn.client(con.getenv, ref.host, ref.repo, con.stdout, con.stderr)
	if err != nil {
		return err
	}
	c.log = con.stdout
	if err := c.connect(ctx); err != nil {
		return err
	}
	_, err = c.follow(ctx, ref.repo, id)
	return err
}
