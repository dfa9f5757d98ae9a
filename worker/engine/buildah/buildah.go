// Package buildah is the build engine that drives the buildah CLI: rootless
// when the worker is unprivileged (a user namespace from /etc/subuid),
// chroot isolation, and storage, registry and trust configuration private to
// each build, so that nothing from the host's or another build's
// configuration leaks in.
package buildah

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

	"github.com/berth-dev/berth/worker/engine"
)

// Engine builds with the buildah CLI.
type Engine struct {
	// Binary is the buildah program ("buildah" on PATH when empty).
	Binary string
	// StorageDriver is the containers/storage driver ("vfs" when empty):
	// vfs needs no kernel or FUSE support, which unprivileged containers
	// often lack.
	StorageDriver string
	// Logger receives the engine's own diagnostics (nil: slog.Default()).
	Logger *slog.Logger
}

// New returns an engine using buildah from PATH with vfs storage.
func New() *Engine { return &Engine{} }

// Name implements engine.Engine.
func (e *Engine) Name() string { return "buildah" }

func (e *Engine) binary() string {
	if e.Binary != "" {
		return e.Binary
	}
	return "buildah"
}

func (e *Engine) driver() string {
	if e.StorageDriver != "" {
		return e.StorageDriver
	}
	return "vfs"
}

func (e *Engine) logger() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return slog.Default()
}

// run is one build's configuration on disk and in the environment.
type run struct {
	e       *Engine
	req     engine.Request
	sink    engine.LogSink
	env     []string
	policy  string
	certDir string
}

// Build implements engine.Engine.
func (e *Engine) Build(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
	if len(req.Tags) == 0 {
		return engine.Result{}, errors.New("buildah: no tags to push")
	}
	r := &run{e: e, req: req, sink: sink}
	if err := r.configure(); err != nil {
		return engine.Result{}, err
	}
	defer r.cleanup()

	if err := r.phase(ctx, engine.PhasePulling); err != nil {
		return engine.Result{}, err
	}
	for _, img := range req.BaseImages {
		if err := r.pull(ctx, img); err != nil {
			return engine.Result{}, err
		}
	}
	if err := r.phase(ctx, engine.PhaseBuilding); err != nil {
		return engine.Result{}, err
	}
	if err := r.build(ctx); err != nil {
		return engine.Result{}, err
	}
	if err := r.phase(ctx, engine.PhasePushing); err != nil {
		return engine.Result{}, err
	}
	res := engine.Result{Digests: map[string]string{}}
	for _, tag := range req.Tags {
		d, err := r.push(ctx, tag)
		if err != nil {
			return engine.Result{}, err
		}
		res.Digests[tag] = d
	}
	return res, nil
}

func (r *run) phase(ctx context.Context, p engine.Phase) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.req.OnPhase == nil {
		return nil
	}
	return r.req.OnPhase(ctx, p)
}

// configure writes the build's private configuration files under WorkDir
// and prepares the environment buildah runs in.
func (r *run) configure() error {
	dir := filepath.Join(r.req.WorkDir, "buildah")
	tmp := filepath.Join(dir, "tmp")
	home := filepath.Join(dir, "home")
	for _, d := range []string{dir, tmp, home, r.req.StorageRoot, r.req.RunRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("buildah: create %s: %w", d, err)
		}
	}
	reg := r.req.Registry
	// Credentials only for berth's registry: bases elsewhere are pulled
	// anonymously.
	auths := map[string]any{}
	if reg.Username != "" && reg.Host != "" {
		auths[reg.Host] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))}
	}
	authJSON, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		return fmt.Errorf("buildah: auth file: %w", err)
	}
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
		"auth.json":       authJSON,
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
		"BUILDAH_ISOLATION=chroot",
		"REGISTRY_AUTH_FILE="+filepath.Join(dir, "auth.json"),
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

// cleanup removes the build's image storage and temporary files. Rootless vfs layers hold files
// owned by subordinate ids that only the user namespace may delete, so it
// runs inside `buildah unshare` when unprivileged.
func (r *run) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The temp dir too: a killed buildah leaves mount points there.
	paths := []string{r.req.StorageRoot, r.req.RunRoot, filepath.Join(r.req.WorkDir, "buildah", "tmp")}
	var err error
	if os.Geteuid() == 0 {
		for _, p := range paths {
			err = errors.Join(err, os.RemoveAll(p))
		}
	} else {
		args := append(r.global(), "unshare", "rm", "-rf")
		cmd := exec.CommandContext(ctx, r.e.binary(), append(args, paths...)...)
		cmd.Env = r.env
		if out, rerr := cmd.CombinedOutput(); rerr != nil {
			err = fmt.Errorf("%w: %s", rerr, bytes.TrimSpace(out))
		}
	}
	if err != nil {
		r.e.logger().Warn("remove build storage", "storage_root", r.req.StorageRoot, "err", err)
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

func (r *run) pull(ctx context.Context, img string) error {
	args := append(r.global(), "pull", "--retry", "1", "--retry-delay", "1s")
	args = append(args, r.registryOpts(refHost(img))...)
	args = append(args, img)
	tail, err := r.exec(ctx, args)
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

func (r *run) baseImageError(img, tail string, err error) error {
	msg := fmt.Sprintf("the base image %s cannot be pulled: it does not exist or is not readable", img)
	if r.req.Registry.PullRobot != "" {
		msg += fmt.Sprintf(" with the credentials of the pull robot %s; check the image name and that %s may read it", r.req.Registry.PullRobot, r.req.Registry.PullRobot)
	} else {
		msg += "; check the image name, and for a private image set pull_robot to a robot account that may read it"
	}
	if l := lastLine(tail); l != "" {
		msg += " (" + l + ")"
	}
	return &engine.UserError{Code: engine.CodeBaseImage, Message: msg, Err: err}
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

func (r *run) build(ctx context.Context) error {
	args := append(r.global(), "build", "--layers", "--isolation", "chroot", "--pull=false",
		"--retry", "1", "--retry-delay", "1s", "-f", r.req.DockerfilePath)
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
	for _, k := range sortedKeys(r.req.BuildArgs) {
		args = append(args, "--build-arg", k+"="+r.req.BuildArgs[k])
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
	tail, err := r.exec(ctx, args)
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

func (r *run) push(ctx context.Context, tag string) (string, error) {
	digestFile := filepath.Join(r.req.WorkDir, "buildah", "digest-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	args := append(r.global(), "push", "--retry", "2", "--retry-delay", "1s", "--digestfile", digestFile)
	args = append(args, r.registryOpts(refHost(tag))...)
	args = append(args, tag, "docker://"+tag)
	tail, err := r.exec(ctx, args)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		low := strings.ToLower(tail)
		if strings.Contains(low, "denied") || strings.Contains(low, "unauthorized") || strings.Contains(low, "authentication required") {
			return "", &engine.UserError{Code: engine.CodePush, Message: fmt.Sprintf("pushing %s was denied (%s)", tag, lastLine(tail)), Err: err}
		}
		return "", fmt.Errorf("buildah push %s: %w: %s", tag, err, lastLine(tail))
	}
	d, err := os.ReadFile(digestFile)
	if err != nil {
		return "", fmt.Errorf("buildah push %s: read digest: %w", tag, err)
	}
	return strings.TrimSpace(string(d)), nil
}

// tailLines is how much of a command's output is kept to explain a failure.
const tailLines = 20

// exec runs buildah with args, streaming every output line to the sink,
// and returns the last lines of its output. When ctx ends the command's
// whole process group is killed.
func (r *run) exec(ctx context.Context, args []string) (string, error) {
	cmd := exec.CommandContext(ctx, r.e.binary(), args...)
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
	r.e.logger().Debug("run buildah", "args", args)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start buildah: %w", err)
	}
	t := &tail{}
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

// stream sends every line of p to the sink and keeps the last ones.
func (r *run) stream(p io.Reader, t *tail) {
	sc := bufio.NewScanner(p)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		typ := engine.LineOutput
		if stepLine.MatchString(line) {
			typ = engine.LineCommand
		}
		r.sink.Log(typ, line)
		t.add(line)
	}
	// A line longer than the buffer ends scanning; drain so the program
	// does not block on a full pipe.
	_, _ = io.Copy(io.Discard, p)
}

// tail keeps the last lines of a command's output.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, l)
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
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
