package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/berth-dev/berth/registry/reference"
)

const buildUsage = `usage: berth build -t NAME[:TAG] [-t NAME[:TAG]]... [-f Dockerfile] [--build-arg K=V]...
                   [--target STAGE] [--no-cache] [--pull-robot NAMESPACE+ROBOT]
                   [--server URL] [--token T] [--tls-verify=false] [--ca-file PEM] DIR
       berth build --attach BUILD_ID -t NAME [--server URL] [--token T] ...

Uploads DIR (honouring .dockerignore) to berth, builds it there, streams the log and
prints NAME:TAG@DIGEST for every tag. NAME is namespace/repository, optionally after
the registry's host (which then names the server). -t is required.

Ctrl-C asks the server to cancel the build; a second Ctrl-C detaches and leaves it
running. --attach (or berth logs NAME BUILD_ID) follows a build already started.

Credentials: --token or BERTH_TOKEN (an OAuth access token), else the login podman,
skopeo, buildah or docker stored for the server ($REGISTRY_AUTH_FILE,
$XDG_RUNTIME_DIR/containers/auth.json or /run/containers/UID/auth.json,
$XDG_CONFIG_HOME/containers/auth.json, $DOCKER_CONFIG/config.json or
~/.docker/config.json, ~/.dockercfg).

`

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// console is what a client command uses besides the network.
type console struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// tty says stderr is a terminal: progress is redrawn in place.
	tty bool
	// interrupts delivers Ctrl-C (nil: never).
	interrupts <-chan os.Signal
}

// runBuild is `berth build`. It takes Ctrl-C itself (main leaves it alone):
// the first cancels the build, the second detaches.
func runBuild(ctx context.Context, args []string) error {
	fi, err := os.Stderr.Stat()
	tty := err == nil && fi.Mode()&os.ModeCharDevice != 0
	interrupts := make(chan os.Signal, 2)
	signal.Notify(interrupts, os.Interrupt)
	defer signal.Stop(interrupts)
	return buildMain(ctx, args, console{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, tty: tty, interrupts: interrupts})
}

func buildMain(ctx context.Context, args []string, con console) error {
	flags := flag.NewFlagSet("build", flag.ContinueOnError)
	flags.SetOutput(con.stderr)
	flags.Usage = func() { fmt.Fprint(con.stderr, buildUsage); flags.PrintDefaults() }
	var tags, buildArgs listFlag
	flags.Var(&tags, "t", "image name and tag, namespace/repository[:tag] (required, repeatable)")
	flags.Var(&tags, "tag", "same as -t")
	dockerfile := flags.String("f", "", "the Dockerfile (default DIR/Dockerfile)")
	flags.StringVar(dockerfile, "file", "", "same as -f")
	flags.Var(&buildArgs, "build-arg", "a build argument K=V (repeatable)")
	target := flags.String("target", "", "the stage to build")
	noCache := flags.Bool("no-cache", false, "do not use cached layers")
	pullRobot := flags.String("pull-robot", "", "a robot account (namespace+name) whose credentials pull private base images")
	attach := flags.String("attach", "", "follow build BUILD_ID of NAME's repository instead of starting one")
	var conn serverFlags
	conn.register(flags, con.getenv)
	if err := flags.Parse(args); err != nil {
		return err
	}
	switch {
	case *attach != "" && flags.NArg() != 0:
		return errors.New("--attach follows a build already started: it takes no DIR")
	case *attach == "" && flags.NArg() != 1:
		flags.Usage()
		return errors.New("exactly one context directory is required")
	}
	ref, err := parseBuildTags(tags)
	if err != nil {
		return err
	}
	body := map[string]any{"docker_tags": ref.tags, "context": "/"}
	if len(buildArgs) > 0 {
		parsed := map[string]string{}
		for _, kv := range buildArgs {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return fmt.Errorf("--build-arg %q is not K=V", kv)
			}
			parsed[k] = v
		}
		body["build_args"] = parsed
	}
	if *target != "" {
		body["target"] = *target
	}
	if *noCache {
		body["no_cache"] = true
	}
	if *pullRobot != "" {
		body["pull_robot"] = *pullRobot
	}
	c, err := conn.client(con.getenv, ref.host, ref.repo, con.stdout, con.stderr)
	if err != nil {
		return err
	}
	c.progress = con.tty

	id := *attach
	if id == "" {
		if id, err = c.start(ctx, ref.repo, flags.Arg(0), *dockerfile, body, con.interrupts); err != nil {
			return err
		}
		fmt.Fprintf(con.stderr, "Build %s queued: %s\n", id, c.pageURL(ref.repo, id))
	} else if err := c.connect(ctx); err != nil {
		return err
	}
	final, err := c.watch(ctx, ref.repo, id, con.interrupts)
	if err != nil {
		return err
	}
	if final.Phase != "complete" {
		msg := final.Error
		if msg == "" {
			msg = "no reason given"
		}
		if strings.Contains(msg, "pull_robot") {
			msg += " (berth build --pull-robot NAMESPACE+ROBOT)"
		}
		return fmt.Errorf("build %s ended %s: %s", final.ID, final.Phase, msg)
	}
	for _, tag := range final.Tags {
		fmt.Fprintf(con.stdout, "%s/%s:%s@%s\n", c.server.Host, ref.repo, tag, final.ManifestDigests[tag])
	}
	return nil
}

// start packs dir, makes sure the repository exists (or can be made)
// before uploading, uploads the context and asks for the build; it returns
// the build's ID. Ctrl-C stops it, and no build is left behind unless the
// server had already accepted it.
func (c *buildClient) start(ctx context.Context, repo, dir, dockerfile string, body map[string]any, interrupts <-chan os.Signal) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	interrupted := make(chan struct{})
	go func() {
		select {
		case <-interrupts:
			close(interrupted)
			cancel()
		case <-ctx.Done():
		}
	}()
	id, err := c.upAndSubmit(ctx, repo, dir, dockerfile, body)
	select {
	case <-interrupted:
		return "", errors.New("interrupted before the build was started")
	default:
	}
	return id, err
}

func (c *buildClient) upAndSubmit(ctx context.Context, repo, dir, dockerfile string, body map[string]any) (string, error) {
	archive, dfPath, err := packContext(dir, dockerfile)
	if err != nil {
		return "", err
	}
	defer os.Remove(archive.Name())
	defer archive.Close()
	if err := c.connect(ctx); err != nil {
		return "", err
	}
	if err := c.ensureRepository(ctx, repo); err != nil {
		return "", err
	}
	fileID, err := c.upload(ctx, archive)
	if err != nil {
		return "", err
	}
	body["file_id"], body["dockerfile_path"] = fileID, dfPath
	var view buildStatus
	if err := c.call(ctx, "POST", "/api/v1/repository/"+repo+"/build/", body, &view); err != nil {
		return "", fmt.Errorf("the server did not start the build: %w", err)
	}
	return view.ID, nil
}

// watch follows the build's log until it ends. The first Ctrl-C asks the
// server to cancel the build and keeps following (the log then ends
// cancelled); the second detaches, leaving the build to the server.
func (c *buildClient) watch(ctx context.Context, repo, id string, interrupts <-chan os.Signal) (*buildStatus, error) {
	ctx, detach := context.WithCancel(ctx)
	defer detach()
	done := make(chan struct{})
	defer close(done)
	detached := make(chan struct{})
	go func() {
		select {
		case <-interrupts:
		case <-done:
			return
		}
		fmt.Fprintf(c.stderr, "\nCancelling build %s (Ctrl-C again to detach and leave it running)\n", id)
		cancelled := make(chan error, 1)
		go func() { cancelled <- c.cancel(ctx, repo, id) }()
		for {
			select {
			case err := <-cancelled:
				if err != nil && ctx.Err() == nil {
					fmt.Fprintf(c.stderr, "Could not cancel build %s: %v\n", id, err)
				}
				cancelled = nil
			case <-interrupts:
				close(detached)
				detach()
				return
			case <-done:
				return
			}
		}
	}()
	final, err := c.follow(ctx, repo, id)
	select {
	case <-detached:
		return nil, fmt.Errorf("detached from build %s, which goes on: %s\nfollow it again with: berth logs %s %s", id, c.pageURL(repo, id), repo, id)
	default:
	}
	return final, err
}

// buildRef is what the -t flags name: one repository, its tags, and the
// registry host when the names carry one.
type buildRef struct {
	host, repo string
	tags       []string
}

// parseBuildTags checks the names as the server will, so that a bad name
// is refused before anything is uploaded.
func parseBuildTags(names []string) (buildRef, error) {
	var ref buildRef
	if len(names) == 0 {
		return ref, errors.New("-t namespace/repository[:tag] is required")
	}
	for _, n := range names {
		if strings.Contains(n, "@") {
			return ref, fmt.Errorf("%q: a digest cannot be built", n)
		}
		name, tag := n, "latest"
		if i := strings.LastIndex(n, ":"); i > strings.LastIndex(n, "/") {
			name, tag = n[:i], n[i+1:]
		}
		parts := strings.Split(name, "/")
		host := ""
		if len(parts) == 3 {
			host, parts = parts[0], parts[1:]
		}
		if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
			return ref, fmt.Errorf("%q is not [host/]namespace/repository[:tag]", n)
		}
		repo := parts[0] + "/" + parts[1]
		if err := reference.ValidateName(repo); err != nil {
			return ref, fmt.Errorf("%q: %s is not a valid repository name (lowercase letters, digits and single . _ - separators)", n, repo)
		}
		if err := reference.ValidateTag(tag); err != nil {
			return ref, fmt.Errorf("%q: %q is not a valid tag (letters, digits, _ . -, not starting with . or -)", n, tag)
		}
		if ref.repo == "" {
			ref.host, ref.repo = host, repo
		} else if repo != ref.repo || host != ref.host {
			return ref, fmt.Errorf("every -t must name the same repository (%s and %s)", ref.repo, repo)
		}
		ref.tags = append(ref.tags, tag)
	}
	return ref, nil
}

// packContext writes dir as a gzipped tar to a temporary file, leaving out
// what .dockerignore (or <Dockerfile>.dockerignore) excludes but always
// keeping the Dockerfile. It returns the file, rewound, and the
// Dockerfile's path in the archive ("/" is the archive's root). A
// Dockerfile outside dir is added as /.berth.Dockerfile.
func packContext(dir, dockerfile string) (*os.File, string, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", err
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return nil, "", fmt.Errorf("%s is not a directory", dir)
	}
	df := filepath.Join(root, "Dockerfile")
	if dockerfile != "" {
		if df, err = filepath.Abs(dockerfile); err != nil {
			return nil, "", err
		}
	}
	if _, err := os.Stat(df); err != nil {
		return nil, "", fmt.Errorf("the Dockerfile cannot be read: %w", err)
	}
	dfRel, err := filepath.Rel(root, df)
	inside := err == nil && !strings.HasPrefix(dfRel, ".."+string(filepath.Separator)) && dfRel != ".."
	ignore := filepath.Join(root, ".dockerignore")
	if _, err := os.Stat(df + ".dockerignore"); err == nil {
		ignore = df + ".dockerignore"
	}
	var patterns []string
	if f, err := os.Open(ignore); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", ignore, err)
		}
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, "", fmt.Errorf(".dockerignore: %w", err)
	}
	keep := map[string]bool{".dockerignore": true}
	if inside {
		keep[filepath.ToSlash(dfRel)] = true
	}

	out, err := os.CreateTemp("", "berth-context-*.tar.gz")
	if err != nil {
		return nil, "", err
	}
	fail := func(err error) (*os.File, string, error) {
		out.Close()
		os.Remove(out.Name())
		return nil, "", fmt.Errorf("pack context: %w", err)
	}
	zw := gzip.NewWriter(out)
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !keep[rel] {
			skip, err := pm.MatchesOrParentMatches(rel)
			if err != nil {
				return err
			}
			if skip {
				// A directory may still hold re-included (!) entries.
				if d.IsDir() && !pm.Exclusions() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		return addToTar(tw, p, rel, d)
	})
	if err == nil && !inside {
		err = addFileAs(tw, df, ".berth.Dockerfile")
		dfRel = ".berth.Dockerfile"
	}
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		_, err = out.Seek(0, io.SeekStart)
	}
	if err != nil {
		return fail(err)
	}
	return out, "/" + filepath.ToSlash(dfRel), nil
}

// addToTar adds one walked entry: directories, regular files and symlinks
// (sockets, devices and pipes are left out, as the server refuses them).
func addToTar(tw *tar.Writer, p, rel string, d fs.DirEntry) error {
	info, err := d.Info()
	if err != nil {
		return err
	}
	link := ""
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	case info.IsDir(), info.Mode().IsRegular():
	default:
		return nil
	}
	h, err := tar.FileInfoHeader(info, link)
	if err != nil {
		return err
	}
	h.Name = rel
	if info.IsDir() {
		h.Name += "/"
	}
	h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}

func addFileAs(tw *tar.Writer, p, name string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Now(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = tw.Write(b)
	return err
}

// progressReader draws an upload progress bar.
type progressReader struct {
	r        io.Reader
	total, n int64
	w        io.Writer
	live     bool
	drawn    time.Time
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.live && time.Since(p.drawn) > 100*time.Millisecond {
		p.draw("\r")
		p.drawn = time.Now()
	}
	return n, err
}

func (p *progressReader) draw(prefix string) {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = float64(p.n) / float64(p.total)
	}
	bar := strings.Repeat("#", int(frac*width)) + strings.Repeat("-", width-int(frac*width))
	fmt.Fprintf(p.w, "%sUploading context [%s] %3d%% %s/%s", prefix, bar, int(frac*100), humanBytes(p.n), humanBytes(p.total))
}

func (p *progressReader) finish() {
	prefix := ""
	if p.live {
		prefix = "\r"
	}
	p.draw(prefix)
	fmt.Fprintln(p.w)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}
