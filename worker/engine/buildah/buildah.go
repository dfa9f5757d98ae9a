// Package buildah is the build engine that drives the buildah CLI, rootless
// (a user namespace from /etc/subuid), with storage, registry and trust
// configuration private to each build, so that nothing from the host's or
// another build's configuration leaks in.
//
// Pulling and pushing run on the host, where berth's registry is reachable,
// with an auth file that exists only while they run. `buildah build` runs
// inside a sandbox (package sandbox): its own user, mount, PID and network
// namespaces, whose network reaches the outside through slirp4netns but not
// the host; every RUN step runs in an OCI container (runc) in it, without
// CAP_SYS_CHROOT. The build reads only images pulled before it, and its
// build arguments from the Dockerfile (never from a command line).
package buildah

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/dockerfile"
	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/engine/enginehost"
	"github.com/berth-dev/berth/worker/sandbox"
)

// Engine builds with the buildah CLI.
type Engine struct {
	// Binary is the buildah program ("buildah" on PATH when empty).
	Binary string
	// StorageDriver is the containers/storage driver ("vfs" when empty):
	// vfs needs no kernel or FUSE support, which unprivileged containers
	// often lack.
	StorageDriver string
	// Host holds the logger and the sandbox `buildah build` runs in.
	enginehost.Host
}

// Name is the engine's name, which jobs give.
const Name = "buildah"

// A worker's engine runs on the host the worker's options describe.
func init() {
	engine.Register(Name, enginehost.Factory(func(h enginehost.Host) engine.Engine { return &Engine{Host: h} }))
}

// Name implements engine.Engine.
func (e *Engine) Name() string { return Name }

// New returns an engine using buildah from PATH with vfs storage.
func New() *Engine { return &Engine{} }

func (e *Engine) binary() string { return cmp.Or(e.Binary, "buildah") }

func (e *Engine) driver() string { return cmp.Or(e.StorageDriver, "vfs") }

// run is one build's configuration on disk and in the environment.
type run struct {
	e       *Engine
	req     engine.Request
	sink    engine.LogSink
	env     []string
	policy  string
	certDir string
	// authFile is where credentials are written while a pull or push runs.
	authFile string
	// sandbox is where the build step runs.
	sandbox enginehost.State
	// shown maps instructions that carry build-argument values to what the
	// log shows instead (dockerfile.WithBuildArgs).
	shown map[string]string
}

// Build implements engine.Engine.
func (e *Engine) Build(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
	return enginehost.Run(ctx, Name, req, &run{e: e, req: req, sink: sink})
}

// Configure writes the build's private configuration files under WorkDir
// and prepares the environment buildah runs in.
func (r *run) Configure() error {
	dir := filepath.Join(r.req.WorkDir, "buildah")
	tmp := filepath.Join(dir, "tmp")
	home := filepath.Join(dir, "home")
	for _, d := range []string{dir, tmp, home, r.req.StorageRoot, r.req.RunRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("buildah: create %s: %w", d, err)
		}
	}
	reg := r.req.Registry
	var conf strings.Builder
	conf.WriteString("unqualified-search-registries = [\"docker.io\"]\nshort-name-mode = \"permissive\"\n")
	if reg.Host != "" {
		fmt.Fprintf(&conf, "\n[[registry]]\nlocation = %q\ninsecure = %t\n", reg.Host, reg.Insecure)
	}
	// Rootless containers/storage ignores graphroot in favour of
	// rootless_storage_path (default under $HOME): set both, so that no
	// buildah call of this build touches the user's home.
	storage := fmt.Sprintf("[storage]\ndriver = %q\ngraphroot = %q\nrunroot = %q\nrootless_storage_path = %q\n",
		r.e.driver(), r.req.StorageRoot, r.req.RunRoot, r.req.StorageRoot)
	files := map[string][]byte{
		"registries.conf": []byte(conf.String()),
		"storage.conf":    []byte(storage),
		// Trust is berth's concern at the registry, not the worker's: accept
		// what the registry serves, as a plain buildah would with the
		// default policy most distributions ship.
		"policy.json": []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`),
	}
	if len(reg.CAPEM) > 0 {
		r.certDir = filepath.Join(dir, "certs")
		if err := os.MkdirAll(r.certDir, 0o700); err != nil {
			return fmt.Errorf("buildah: create cert dir: %w", err)
		}
		files[filepath.Join("certs", "ca.crt")] = reg.CAPEM
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return fmt.Errorf("buildah: write %s: %w", name, err)
		}
	}
	r.policy = filepath.Join(dir, "policy.json")
	r.authFile = filepath.Join(dir, "auth.json")
	var err error
	if r.sandbox, err = r.e.Sandbox.NewState(Name); err != nil {
		return err
	}
	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF", "CONTAINERS_STORAGE_CONF", "BUILDAH_ISOLATION", "TMPDIR", "BUILDAH_LAYERS", "BUILDAH_FORMAT", "DOCKER_CONFIG",
			"HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME":
			continue
		}
		env = append(env, kv)
	}
	r.env = append(env,
		"REGISTRY_AUTH_FILE="+r.authFile,
		"CONTAINERS_REGISTRIES_CONF="+filepath.Join(dir, "registries.conf"),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"),
		"TMPDIR="+tmp,
		// A home of its own: containers/image keeps caches and reads
		// per-user configuration there, which would otherwise be shared
		// by every build of the worker's user.
		"HOME="+home,
	)
	return nil
}

// AuthFile implements enginehost.Steps.
func (r *run) AuthFile() enginehost.AuthFile {
	return enginehost.AuthFile{Engine: Name, Path: r.authFile, Registry: r.req.Registry, Logger: r.e.Log()}
}

// Cleanup removes the build's image storage and temporary files. Rootless vfs layers hold files
// owned by subordinate ids that only the user namespace may delete, so it
// runs inside `buildah unshare` when unprivileged.
func (r *run) Cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The temp dir too: a killed buildah leaves mount points there.
	paths := []string{r.req.StorageRoot, r.req.RunRoot, filepath.Join(r.req.WorkDir, "buildah", "tmp")}
	r.sandbox.Remove(r.e.Log())
	unshare := append([]string{r.e.binary()}, append(r.global(), "unshare")...)
	if err := enginehost.RemoveAll(ctx, unshare, r.env, paths); err != nil {
		r.e.Log().Warn("remove build storage", "storage_root", r.req.StorageRoot, "err", err)
	}
}

// global are the options every buildah command gets.
func (r *run) global() []string {
	return []string{"--root", r.req.StorageRoot, "--runroot", r.req.RunRoot, "--storage-driver", r.e.driver()}
}

// registryOpts are the transport options for talking to host.
func (r *run) registryOpts(host string) []string {
	opts := []string{"--signature-policy", r.policy}
	if r.req.Registry.Host != "" && host == r.req.Registry.Host {
		if r.req.Registry.Insecure {
			opts = append(opts, "--tls-verify=false")
		}
		if r.certDir != "" {
			opts = append(opts, "--cert-dir", r.certDir)
		}
	}
	return opts
}

// refHost returns the registry host of a reference, as containers/image
// decides it: the first component when it looks like a host.
func refHost(ref string) string {
	ref = strings.TrimPrefix(ref, "docker://")
	first, _, ok := strings.Cut(ref, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first
	}
	return "docker.io"
}

// Pull implements enginehost.Steps.
func (r *run) Pull(ctx context.Context, _ int, img string) error {
	args := append(r.global(), "pull", "--retry", "1", "--retry-delay", "1s")
	args = append(args, r.registryOpts(refHost(img))...)
	args = append(args, img)
	tail, err := r.exec(ctx, append([]string{r.e.binary()}, args...))
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if isUnreachable(tail) && refHost(img) == r.req.Registry.Host {
		return fmt.Errorf("buildah: pull %s: berth's registry is unreachable: %w: %s", img, err, lastLine(tail))
	}
	return r.baseImageError(img, tail, err)
}

// baseImageError is the user's error for a base image that cannot be
// pulled, explained by the last line of out.
func (r *run) baseImageError(img, out string, err error) error {
	return enginehost.BaseImageError(img, r.req.Registry.PullRobot, lastLine(out), err)
}

// Patterns of buildah's error output.
var (
	// stepFailure finds the report of a failing step.
	stepFailure = regexp.MustCompile(`building at STEP "([^"]*)": (.*)$`)
	exitStatus  = regexp.MustCompile(`exit status (\d+)`)
	// dockerfileFailure finds buildah's report of a Dockerfile it cannot
	// parse (the worker parses first; this catches what only buildah
	// rejects).
	dockerfileFailure = regexp.MustCompile(`(?:parsing main Dockerfile|dockerfile parse error)[^:]*: (.*)$`)
)

// Build implements enginehost.Steps: `buildah build` in the sandbox.
func (r *run) Build(ctx context.Context) error {
	dockerfilePath, err := r.writeDockerfile()
	if err != nil {
		return err
	}
	args := append(r.global(), "build", "--layers")
	args = append(args, IsolationArgs()...)
	args = append(args, "-f", dockerfilePath)
	// A build may pull from any registry (COPY --from=image): TLS stays on
	// for all of them; berth's own plain-HTTP address is marked insecure
	// in the build's registries.conf alone. Its CA is added to the system
	// roots, not put in their place.
	args = append(args, "--signature-policy", r.policy)
	if r.certDir != "" {
		args = append(args, "--cert-dir", r.certDir)
	}
	for _, t := range r.req.Tags {
		args = append(args, "-t", t)
	}
	for _, k := range sortedKeys(r.req.Labels) {
		args = append(args, "--label", k+"="+r.req.Labels[k])
	}
	if r.req.Target != "" {
		args = append(args, "--target", r.req.Target)
	}
	if r.req.NoCache {
		args = append(args, "--no-cache")
	}
	args = append(args, r.req.ContextDir)
	tail, err := r.exec(ctx, r.sandbox.Config.Wrap(append([]string{r.e.binary()}, args...)))
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if m := lastMatch(dockerfileFailure, tail); m != nil {
		return &engine.UserError{Code: engine.CodeDockerfile, Message: "the Dockerfile cannot be parsed: " + m[1], Err: err}
	}
	if m := lastMatch(stepFailure, tail); m != nil {
		step, cause := m[1], m[2]
		// imagebuilder appends a dump of its step structure.
		cause, _, _ = strings.Cut(cause, " &imagebuilder.")
		if c, ok := strings.CutPrefix(cause, "Build error: "); ok {
			return &engine.UserError{Code: engine.CodeDockerfile, Message: fmt.Sprintf("the Dockerfile cannot be built: %s (at %q)", c, strings.TrimSpace(step)), Err: err}
		}
		msg := fmt.Sprintf("the build step %q failed: %s", step, cause)
		if s := exitStatus.FindStringSubmatch(cause); s != nil {
			msg = fmt.Sprintf("the build step %q failed with exit status %s", step, s[1])
		}
		return &engine.UserError{Code: engine.CodeBuildStep, Message: msg, Err: err}
	}
	if strings.Contains(tail, "creating build container") && !isUnreachable(tail) {
		return r.baseImageError("named in the Dockerfile", tail, err)
	}
	return fmt.Errorf("buildah build: %w: %s", err, lastLine(tail))
}

// IsolationArgs are the `buildah build` options of a build in the
// sandbox: every RUN step an OCI container in the sandbox's network
// (--network host is the sandbox's, not the machine's), with private PID,
// IPC and UTS namespaces and without CAP_SYS_CHROOT; images only from the
// storage the pulls filled.
func IsolationArgs() []string {
	return []string{"--isolation", "oci", "--runtime", "runc",
		"--network", "host", "--pid", "private", "--ipc", "private", "--uts", "private",
		"--cap-drop", "SYS_CHROOT", "--pull=never"}
}

// writeDockerfile writes the Dockerfile with the build arguments in it
// where buildah reads it, outside the context, and returns its path.
func (r *run) writeDockerfile() (string, error) {
	if len(r.req.BuildArgs) == 0 {
		return r.req.DockerfilePath, nil
	}
	content, err := os.ReadFile(r.req.DockerfilePath)
	if err != nil {
		return "", fmt.Errorf("buildah: read Dockerfile: %w", err)
	}
	rewritten, shown, err := dockerfile.WithBuildArgs(content, r.req.BuildArgs)
	if err != nil {
		return "", err
	}
	r.shown = shown
	path := filepath.Join(r.req.WorkDir, "buildah", "Dockerfile")
	if err := os.WriteFile(path, rewritten, 0o600); err != nil {
		return "", fmt.Errorf("buildah: write Dockerfile: %w", err)
	}
	return path, nil
}

// Push implements enginehost.Steps.
func (r *run) Push(ctx context.Context, tag string) (string, error) {
	digestFile := filepath.Join(r.req.WorkDir, "buildah", "digest-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	args := append(r.global(), "push", "--retry", "2", "--retry-delay", "1s", "--digestfile", digestFile)
	args = append(args, r.registryOpts(refHost(tag))...)
	args = append(args, tag, "docker://"+tag)
	tail, err := r.exec(ctx, append([]string{r.e.binary()}, args...))
	if err != nil {
		return "", enginehost.PushError(ctx, Name, tag, tail, lastLine(tail), err)
	}
	return enginehost.ReadDigest("buildah push "+tag, digestFile)
}

// exec runs argv (buildah, or buildah in its sandbox), streaming every
// output line to the sink, and returns the last lines of its output. When
// ctx ends the command's whole process group is killed.
func (r *run) exec(ctx context.Context, argv []string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = r.env
	cmd.Dir = r.req.WorkDir
	// Its own group, so that cancelling kills buildah's children too; and
	// killed with the worker, since the worker's executor kills only the
	// worker's group. (Pdeathsig follows the forking thread, which Go
	// keeps alive unless a goroutine locks and leaves it; this package
	// locks none.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// The group holds buildah's re-executed children and the build's
		// RUN processes.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", fmt.Errorf("buildah: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", fmt.Errorf("buildah: %w", err)
	}
	r.e.Log().Debug("run buildah", "args", argv)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start buildah: %w", err)
	}
	t := &enginehost.Tail{}
	var wg sync.WaitGroup
	for _, p := range []io.Reader{stdout, stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.stream(p, t)
		}()
	}
	wg.Wait()
	err = cmd.Wait()
	// Whatever buildah left behind in its group goes with it.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	return t.String(), err
}

// stepLine matches buildah's and Docker's step headers.
// buildah prefixes the steps of a multi-stage build with "[stage/stages] ".
var stepLine = regexp.MustCompile(`^(\[\d+/\d+\] )?(STEP \d+/\d+: |Step \d+/\d+ : )`)

// maxLineBytes bounds one line of output kept for the log: the rest of a
// longer line is dropped (and counted), the lines after it are kept. The
// build manager cuts lines shorter still (BUILD_LOG_MAX_LINE_BYTES).
const maxLineBytes = 1 << 20

// stream sends every line of p to the sink and keeps the last ones.
func (r *run) stream(p io.Reader, t *enginehost.Tail) {
	rd := bufio.NewReaderSize(p, 64*1024)
	var line []byte
	dropped := 0
	emit := func() {
		text := dockerfile.HideValues(strings.TrimRight(string(line), "\r"), r.shown)
		if dropped > 0 {
			text += fmt.Sprintf(" [line cut: %d more bytes]", dropped)
		}
		typ := engine.LineOutput
		if stepLine.MatchString(text) {
			typ = engine.LineCommand
		}
		r.sink.Log(typ, text)
		t.Add(text)
		line, dropped = line[:0], 0
	}
	for {
		chunk, err := rd.ReadSlice('\n')
		complete := err == nil
		if complete {
			chunk = chunk[:len(chunk)-1]
		}
		keep := min(len(chunk), maxLineBytes-len(line))
		dropped += len(chunk) - keep
		line = append(line, chunk[:keep]...)
		switch {
		case complete:
			emit()
		case errors.Is(err, bufio.ErrBufferFull):
			// The line goes on.
		default:
			if len(line) > 0 || dropped > 0 {
				emit()
			}
			return
		}
	}
}

// lastLine returns the last non-empty line of s, without buildah's
// "Error: " prefix.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	l = strings.TrimPrefix(l, "Error: ")
	return strings.TrimPrefix(l, "error: ")
}

func lastMatch(re *regexp.Regexp, s string) []string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if m := re.FindStringSubmatch(lines[i]); m != nil {
			return m
		}
	}
	return nil
}

// isUnreachable reports whether output tells of a registry that could not
// be reached at all (an infrastructure failure, not a missing image).
func isUnreachable(s string) bool {
	for _, p := range []string{"connection refused", "i/o timeout", "connection reset", "TLS handshake timeout", "server misbehaving", "EOF"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var _ engine.Checker = (*Engine)(nil)

// Check reports whether this machine can run builds in the engine's
// sandbox, naming the check that failed (sandbox.Preflight): the worker
// runs it when its executor asks (`berth worker --check`). dir is scratch
// space of the caller's.
func (e *Engine) Check(ctx context.Context, dir string) error {
	if _, err := exec.LookPath(e.binary()); err != nil {
		return fmt.Errorf("%w: %s is not installed", sandbox.ErrUnavailable, e.binary())
	}
	return e.Sandbox.Preflight(ctx, Name, []string{"runc"}, dir)
}
