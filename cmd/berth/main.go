// Command berth is the whole of berth in one binary: the server, the build
// worker, the build client and administration commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-dev/berth/internal/logctx"
	"github.com/berth-dev/berth/worker/sandbox"
)

const usage = `usage: berth <command> [flags]

commands:
  serve    run the registry, API and build manager
  build    build DIR on a berth server and stream the log
  logs     print and follow a build's log
  worker   run one build (started by an executor)
  sandbox-init  inside a build sandbox: apply its network policy, then run the build engine
  tun-device-plugin  on a Kubernetes node: lend build pods the node's /dev/net/tun
  admin    administration: admin token create --user U --scope S
  version  print the version
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	signals := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if cmd == "build" {
		// build takes Ctrl-C itself: the first cancels the build on the
		// server, the second detaches.
		signals = signals[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), signals...)
	defer stop()
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, args)
	case "build":
		err = runBuild(ctx, args)
	case "logs":
		err = runLogs(ctx, args)
	case "worker":
		err = runWorker(ctx, args)
	case "sandbox-init":
		// Replaces this process with the build engine when it succeeds.
		err = sandbox.Init(args)
	case "tun-device-plugin":
		err = runTunDevicePlugin(ctx, args)
	case "admin":
		err = runAdmin(ctx, args)
	case "version":
		fmt.Println(version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "berth: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "berth %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

// newLogger logs text to stderr at the given level.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	// Lines logged with a request's or a build's context carry its IDs.
	return slog.New(logctx.Handler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))), nil
}
