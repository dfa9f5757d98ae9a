// Package buildkit is the build engine that drives BuildKit: a rootless
// buildkitd of the build's own, started in berth's build sandbox (package
// sandbox) exactly where the buildah engine runs `buildah build`, and
// driven from the worker through BuildKit's Go client over a unix socket in
// the build's work directory.
//
// The sandbox's rules hold as for buildah. buildkitd runs in rootlesskit's
// user, mount, PID, UTS and IPC namespaces, after `sandbox-init` has put the
// network policy in place; its OCI worker runs each RUN step with runc in
// the sandbox's network namespace (--oci-worker-net=host names the
// sandbox's own, restricted one), so RUN steps reach the outside through
// slirp4netns and never the host's loopback, its addresses or the denied
// networks. RUN steps see the hostname buildkitsandbox, as under
// `docker buildx build`.
//
// The build holds no registry credentials and pulls nothing itself. The
// worker copies every base image (FROM and COPY --from images alike) on the
// host, with skopeo and an auth file that exists only while it runs, into an
// OCI layout in the work directory; the client session serves that layout
// to buildkitd as an OCI store, and each base is named to the Dockerfile
// frontend as a build context (context:<image>=oci-layout://…), so FROM
// and COPY --from read it from there. The image built is exported back
// through the session as an OCI layout and pushed from the host with the
// build's credentials, again only while the push runs. Build arguments,
// labels and the target reach buildkitd as frontend options over its
// socket, never on a command line or in a file.
//
// Differences from the buildah engine: BuildKit's default RUN capabilities
// keep CAP_SYS_CHROOT (buildkitd has no option to drop a capability), and
// BuildKit shows no step for ARG, so the engine logs the Dockerfile's
// instructions as written before the build starts.
package buildkit

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	contentlocal "github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/distribution/reference"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/solver/errdefs"
	"github.com/tonistiigi/fsutil"

	"github.com/berth-dev/berth/internal/buildhost"
	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/engine/enginehost"
	"github.com/berth-dev/berth/worker/sandbox"
)

// Name is the engine's name, which jobs give.
const Name = "buildkit"

// A worker's engine runs on the host the worker's options describe.
func init() {
	engine.Register(Name, enginehost.Factory(func(h enginehost.Host) engine.Engine { return &Engine{Host: h} }))
}

// Name implements engine.Engine.
func (e *Engine) Name() string { return Name }

// Engine builds with a buildkitd of each build's own.
type Engine struct {
	// Buildkitd is the buildkitd program ("buildkitd" on PATH when empty).
	Buildkitd string
	// Skopeo is the program that copies images between registries and OCI
	// layouts on the host ("skopeo" on PATH when empty).
	Skopeo string
	// Host holds the logger and the sandbox buildkitd runs in.
	enginehost.Host
}

// New returns an engine using buildkitd and skopeo from PATH.
func New() *Engine { return &Engine{} }

func (e *Engine) buildkitd() string { return cmp.Or(e.Buildkitd, "buildkitd") }

func (e *Engine) skopeo() string { return cmp.Or(e.Skopeo, "skopeo") }

// basesStore is the OCI store's name in the client session.
const basesStore = "bases"

// run is one build's files and environment.
type run struct {
	e    *Engine
	req  engine.Request
	sink engine.LogSink
	env  []string
	// dir is the engine's part of WorkDir.
	dir string
	// policy is skopeo's signature policy; certDir holds berth's CA.
	policy, certDir string
	// authFile is where credentials are written while a pull or push runs.
	authFile string
	// bases is the OCI layout the base images are copied into; out the
	// one the built image is exported to.
	bases, out string
	// contexts maps each base image, as the Dockerfile frontend names its
	// build contexts, to its manifest digest in bases.
	contexts map[string]string
	// sandbox is where buildkitd runs.
	sandbox enginehost.State
}

// Build implements engine.Engine.
func (e *Engine) Build(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
	return enginehost.Run(ctx, Name, req, &run{e: e, req: req, sink: sink, contexts: map[string]string{}})
}

// Configure writes the build's private configuration under WorkDir and
// prepares the environment of the programs it runs.
func (r *run) Configure() error {
	r.dir = filepath.Join(r.req.WorkDir, "buildkit")
	home := filepath.Join(r.dir, "home")
	tmp := filepath.Join(r.dir, "tmp")
	r.bases = filepath.Join(r.dir, "bases")
	r.out = filepath.Join(r.dir, "out")
	for _, d := range []string{r.dir, home, tmp, r.bases, r.req.StorageRoot, r.req.RunRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("buildkit: create %s: %w", d, err)
		}
	}
	// Trust is berth's concern at the registry, not the worker's.
	r.policy = filepath.Join(r.dir, "policy.json")
	if err := os.WriteFile(r.policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		return fmt.Errorf("buildkit: write policy: %w", err)
	}
	if len(r.req.Registry.CAPEM) > 0 {
		r.certDir = filepath.Join(r.dir, "certs")
		if err := os.MkdirAll(r.certDir, 0o700); err != nil {
			return fmt.Errorf("buildkit: create cert dir: %w", err)
		}
		if err := os.WriteFile(filepath.Join(r.certDir, "ca.crt"), r.req.Registry.CAPEM, 0o600); err != nil {
			return fmt.Errorf("buildkit: write CA: %w", err)
		}
	}
	r.authFile = filepath.Join(r.dir, "auth.json")
	var err error
	if r.sandbox, err = r.e.Sandbox.NewState(Name); err != nil {
		return err
	}
	r.env = privateEnv(home, tmp, r.req.RunRoot)
	return nil
}

// privateEnv is the worker's environment with a home, temporary directory
// and runtime directory of the build's own, so that no program reads the
// user's configuration or shares caches with another build.
func privateEnv(home, tmp, runtime string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF", "CONTAINERS_STORAGE_CONF", "DOCKER_CONFIG", "BUILDKIT_HOST",
			"HOME", "TMPDIR", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "TMPDIR="+tmp, "XDG_RUNTIME_DIR="+runtime)
}

// AuthFile implements enginehost.Steps.
func (r *run) AuthFile() enginehost.AuthFile {
	return enginehost.AuthFile{Engine: Name, Path: r.authFile, Registry: r.req.Registry, Logger: r.e.Log()}
}

// transport are skopeo's options for the registry of ref, on the side
// ("src" or "dest") it is on.
func (r *run) transport(side, ref string) []string {
	opts := []string{"--policy", r.policy, "--authfile", r.authFile}
	reg := r.req.Registry
	if reg.Host == "" || registryHost(ref) != reg.Host {
		return opts
	}
	if reg.Insecure {
		opts = append(opts, "--"+side+"-tls-verify=false")
	}
	if r.certDir != "" {
		opts = append(opts, "--"+side+"-cert-dir", r.certDir)
	}
	return opts
}

// registryHost is the registry of an image reference ("docker.io" for a
// short name), as reference.ParseNormalizedNamed reads it.
func registryHost(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ""
	}
	return reference.Domain(named)
}

// contextName is how the Dockerfile frontend looks up a named build
// context for an image reference: its familiar form without ":latest".
func contextName(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(reference.FamiliarString(named), ":latest"), nil
}

// Pull copies img from its registry into the bases layout, named for its
// place i, and records it as a build context.
func (r *run) Pull(ctx context.Context, i int, img string) error {
	name := fmt.Sprintf("base%d", i)
	ctxName, err := contextName(img)
	if err != nil {
		return r.baseImageError(img, err.Error(), err)
	}
	digestFile := filepath.Join(r.dir, "digest-"+name)
	args := []string{"copy", "--retry-times", "1", "--digestfile", digestFile}
	args = append(args, r.transport("src", img)...)
	args = append(args, "docker://"+img, "oci:"+r.bases+":"+name)
	out, err := r.command(ctx, args...)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if isUnreachable(out) && registryHost(img) == r.req.Registry.Host {
			return fmt.Errorf("buildkit: pull %s: berth's registry is unreachable: %w: %s", img, err, lastLine(out))
		}
		return r.baseImageError(img, out, err)
	}
	d, err := enginehost.ReadDigest("buildkit: pull "+img, digestFile)
	if err != nil {
		return err
	}
	r.contexts[ctxName] = d
	r.sink.Log(engine.LineOutput, fmt.Sprintf("pulled %s (%s)", img, d))
	return nil
}

// baseImageError is the user's error for a base image that cannot be
// pulled, explained by the last line of out.
func (r *run) baseImageError(img, out string, err error) error {
	return enginehost.BaseImageError(img, r.req.Registry.PullRobot, lastLine(out), err)
}

// Push copies the exported image to tag and returns its manifest digest.
func (r *run) Push(ctx context.Context, tag string) (string, error) {
	digestFile := filepath.Join(r.dir, "digest-push")
	args := []string{"copy", "--retry-times", "2", "--preserve-digests", "--digestfile", digestFile}
	args = append(args, r.transport("dest", tag)...)
	args = append(args, "oci:"+r.out+":latest", "docker://"+tag)
	out, err := r.command(ctx, args...)
	if err != nil {
		return "", enginehost.PushError(ctx, Name, tag, out, lastLine(out), err)
	}
	return enginehost.ReadDigest("buildkit: push "+tag, digestFile)
}

// command runs skopeo on the host and returns its output, which it also
// logs line by line. When ctx ends, skopeo is killed.
func (r *run) command(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, r.e.skopeo(), args...)
	cmd.Env = r.env
	cmd.Dir = r.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// Patterns of BuildKit's errors.
var (
	exitCode         = regexp.MustCompile(`did not complete successfully: exit code: (\d+)`)
	dockerfileSyntax = regexp.MustCompile(`dockerfile parse error[^:]*: (.*)$`)
	unresolvedBase   = regexp.MustCompile(`failed to resolve source metadata for (\S+)`)
	stepPrefix       = regexp.MustCompile(`^\[[^\]]*\] `)
)

// Build starts buildkitd in the sandbox, builds with the Dockerfile
// frontend and exports the image to r.out; buildkitd is stopped before it
// returns.
func (r *run) Build(ctx context.Context) error {
	r.logDockerfile()
	d, err := startDaemon(ctx, daemonConfig{
		binary: r.e.buildkitd(), root: r.req.StorageRoot, socket: socketPath(r.sandbox.Dir),
		env: r.env, dir: r.dir, sandbox: r.sandbox.Config,
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	defer d.stop()
	opt, err := r.solveOpt()
	if err != nil {
		return err
	}
	statuses := make(chan *client.SolveStatus)
	prog := newProgress(r.sink, hideArgs(r.req.BuildArgs))
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		for s := range statuses {
			prog.update(s)
		}
		prog.flushAll()
	}()
	// Solve closes statuses when it returns.
	_, solveErr := d.client.Solve(ctx, nil, opt, statuses)
	<-logged
	if solveErr == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return r.buildError(solveErr, prog, d)
}

// solveOpt is the Dockerfile frontend's request: the context and the
// Dockerfile's directory from the host, the bases from the OCI layout, the
// build's options, and the OCI exporter writing to r.out.
func (r *run) solveOpt() (client.SolveOpt, error) {
	contextFS, err := fsutil.NewFS(r.req.ContextDir)
	if err != nil {
		return client.SolveOpt{}, fmt.Errorf("buildkit: context: %w", err)
	}
	dockerfileFS, err := fsutil.NewFS(filepath.Dir(r.req.DockerfilePath))
	if err != nil {
		return client.SolveOpt{}, fmt.Errorf("buildkit: Dockerfile directory: %w", err)
	}
	store, err := contentlocal.NewStore(r.bases)
	if err != nil {
		return client.SolveOpt{}, fmt.Errorf("buildkit: base image store: %w", err)
	}
	attrs := map[string]string{"filename": filepath.Base(r.req.DockerfilePath)}
	if r.req.Target != "" {
		attrs["target"] = r.req.Target
	}
	if r.req.NoCache {
		attrs["no-cache"] = ""
	}
	for k, v := range r.req.BuildArgs {
		attrs["build-arg:"+k] = v
	}
	for k, v := range r.req.Labels {
		attrs["label:"+k] = v
	}
	for name, dgst := range r.contexts {
		attrs["context:"+name] = "oci-layout://" + basesStore + "@" + dgst
	}
	return client.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: attrs,
		LocalMounts:   map[string]fsutil.FS{"context": contextFS, "dockerfile": dockerfileFS},
		OCIStores:     map[string]content.Store{basesStore: store},
		Exports: []client.ExportEntry{{
			Type:      client.ExporterOCI,
			Attrs:     map[string]string{"tar": "false"},
			OutputDir: r.out,
		}},
	}, nil
}

// buildError turns a failed solve into a user error when the Dockerfile or
// a step of it failed, and into an infrastructure failure otherwise.
func (r *run) buildError(err error, prog *progress, d *daemon) error {
	// The error names steps as BuildKit does, with the build arguments
	// expanded: only its text with the values hidden is kept.
	msg := prog.hide.Replace(err.Error())
	hasSource := len(errdefs.Sources(err)) > 0
	err = errors.New(msg)
	if m := exitCode.FindStringSubmatch(msg); m != nil {
		step := stepPrefix.ReplaceAllString(prog.failed, "")
		return &engine.UserError{Code: engine.CodeBuildStep, Message: fmt.Sprintf("the build step %q failed with exit status %s", step, m[1]), Err: err}
	}
	if m := dockerfileSyntax.FindStringSubmatch(msg); m != nil {
		return &engine.UserError{Code: engine.CodeDockerfile, Message: "the Dockerfile cannot be parsed: " + m[1], Err: err}
	}
	if m := unresolvedBase.FindStringSubmatch(msg); m != nil {
		return r.baseImageError(m[1], msg, err)
	}
	if hasSource {
		// An error BuildKit points at a line of the Dockerfile for.
		return &engine.UserError{Code: engine.CodeDockerfile, Message: "the Dockerfile cannot be built: " + msg, Err: err}
	}
	return fmt.Errorf("buildkit: build: %w (buildkitd: %s)", err, lastLine(d.out.last()))
}

// logDockerfile logs the Dockerfile's instructions as written: BuildKit
// shows no step of its own for ARG, ENV or LABEL.
func (r *run) logDockerfile() {
	f, err := os.Open(r.req.DockerfilePath)
	if err != nil {
		return
	}
	defer f.Close()
	res, err := parser.Parse(io.LimitReader(f, 1<<20))
	if err != nil {
		// BuildKit reports it.
		return
	}
	for _, n := range res.AST.Children {
		r.sink.Log(engine.LineOutput, "Dockerfile: "+strings.TrimSpace(n.Original))
	}
}

// Cleanup removes the build's storage and scratch files. buildkitd's
// snapshots hold files owned by subordinate ids that only the user
// namespace may delete, so an unprivileged worker removes them in one.
func (r *run) Cleanup() {
	r.sandbox.Remove(r.e.Log())
	paths := []string{r.req.StorageRoot, r.req.RunRoot, filepath.Join(r.req.WorkDir, "buildkit")}
	if err := r.e.removeAll(paths); err != nil {
		r.e.Log().Warn("remove build storage", "storage_root", r.req.StorageRoot, "err", err)
	}
}

// removeAll removes paths, inside a user namespace when unprivileged.
func (e *Engine) removeAll(paths []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if os.Geteuid() == 0 {
		return enginehost.RemoveAll(ctx, nil, nil, paths)
	}
	stateDir, err := os.MkdirTemp(buildhost.SandboxStateParent, "berth-cleanup-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stateDir)
	kit := []string{cmp.Or(e.Sandbox.RootlessKit, "rootlesskit"), "--state-dir=" + filepath.Join(stateDir, "kit")}
	return enginehost.RemoveAll(ctx, kit, nil, paths)
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// isUnreachable reports whether output tells of a registry that could not
// be reached at all (an infrastructure failure, not a missing image).
func isUnreachable(s string) bool {
	for _, p := range []string{"connection refused", "i/o timeout", "connection reset", "TLS handshake timeout", "server misbehaving"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

var _ engine.Checker = (*Engine)(nil)

// Check reports whether this machine can run builds in the engine's
// sandbox: the programs are installed, the sandbox starts
// (sandbox.Preflight), and buildkitd starts in it and answers. dir is
// scratch space of the caller's.
func (e *Engine) Check(ctx context.Context, dir string) error {
	for _, p := range []string{e.buildkitd(), e.skopeo(), "runc"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%w: %s is not installed", sandbox.ErrUnavailable, p)
		}
	}
	if err := e.Sandbox.Preflight(ctx, Name, nil, dir); err != nil {
		return err
	}
	work := filepath.Join(dir, "buildkit-check")
	root := filepath.Join(work, "root")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	defer func() {
		if err := e.removeAll([]string{work}); err != nil {
			e.Log().Warn("remove buildkitd check", "dir", work, "err", err)
		}
	}()
	st, err := e.Sandbox.NewState(Name)
	if err != nil {
		return err
	}
	defer st.Remove(e.Log())
	d, err := startDaemon(ctx, daemonConfig{
		binary: e.buildkitd(), root: root, socket: socketPath(st.Dir),
		env: privateEnv(work, work, work), dir: work, sandbox: st.Config,
	})
	if err != nil {
		return fmt.Errorf("%w: buildkitd does not start in the sandbox: %v", sandbox.ErrUnavailable, err)
	}
	d.stop()
	return nil
}
