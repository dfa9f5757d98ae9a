package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// toolTimeout bounds one tool invocation.
const toolTimeout = 3 * time.Minute

// Tools runs podman, buildah, skopeo and oras isolated from the machine's
// own image store and logins: vfs storage (it works on any filesystem and
// needs no kernel overlay), runtime state and the auth file all live in Dir.
type Tools struct {
	Dir string
	Env []string
	// Log, when set, receives each command line and how long it took.
	Log func(format string, args ...any)
}

// NewTools prepares an isolated tool environment in dir, creating it.
func NewTools(dir string) (*Tools, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	files := map[string]string{
		"storage.conf": fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n",
			filepath.Join(dir, "graph"), filepath.Join(dir, "run")),
		"containers.conf": fmt.Sprintf("[engine]\ntmp_dir = %q\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
			filepath.Join(dir, "libpod-tmp")),
		// Every name in the tests is fully qualified; nothing may resolve
		// to a remote registry.
		"registries.conf": "unqualified-search-registries = []\n",
		"auth.json":       "{}\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	env := append(os.Environ(),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"),
		"CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF="+filepath.Join(dir, "registries.conf"),
		"REGISTRY_AUTH_FILE="+filepath.Join(dir, "auth.json"),
		"DOCKER_CONFIG="+filepath.Join(dir, "docker"),
		"BUILDAH_ISOLATION=chroot",
	)
	return &Tools{Dir: dir, Env: env}, nil
}

// WithLog is a copy of t that logs each command with logf (a test's
// t.Logf), so that a shared environment logs to the test using it.
func (t *Tools) WithLog(logf func(format string, args ...any)) *Tools {
	c := *t
	c.Log = logf
	return &c
}

// LookTool finds a program: first in the module's .tools/bin, where
// scripts/install-deps.sh builds the test tools, then on PATH.
func LookTool(name string) (string, error) {
	if root, err := ModuleRoot(); err == nil {
		local := filepath.Join(root, ".tools", "bin", name)
		if _, err := os.Stat(local); err == nil {
			return local, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is not installed (run scripts/install-deps.sh): %w", name, err)
	}
	return p, nil
}

// RequireTools reports the first of names that LookTool cannot find.
func RequireTools(names ...string) error {
	for _, n := range names {
		if _, err := LookTool(n); err != nil {
			return err
		}
	}
	return nil
}

// Result is what one command printed.
type Result struct {
	Stdout, Stderr string
	Err            error
}

// Cmd is one tool invocation.
type Cmd struct {
	Name string
	Args []string
	// Stdin is fed to the program when not empty.
	Stdin string
	// Dir is the working directory ("" for the tools' Dir).
	Dir string
	// Secrets are replaced by *** in the logged command line.
	Secrets []string
}

// Run runs c in the isolated environment. A failure's error names the
// program and carries its stderr.
func (t *Tools) Run(ctx context.Context, c Cmd) Result {
	r, took := t.run(ctx, c)
	if t.Log != nil {
		t.Log("%s", c.logLine(took))
	}
	return r
}

// RunT runs c for test t: the command line is logged to t, and a program
// that is not installed fails t at once, so that a command expected to fail
// cannot pass for that reason.
func (t *Tools) RunT(tb testing.TB, c Cmd) Result {
	tb.Helper()
	if _, err := LookTool(c.Name); err != nil {
		tb.Fatal(err)
	}
	r, took := t.run(context.Background(), c)
	tb.Log(c.logLine(took))
	return r
}

func (t *Tools) run(ctx context.Context, c Cmd) (Result, time.Duration) {
	path, err := LookTool(c.Name)
	if err != nil {
		return Result{Err: err}, 0
	}
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, c.Args...)
	cmd.Env, cmd.Dir = t.Env, t.Dir
	if c.Dir != "" {
		cmd.Dir = c.Dir
	}
	if c.Stdin != "" {
		cmd.Stdin = strings.NewReader(c.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	if err != nil {
		sub := ""
		if len(c.Args) > 0 {
			sub = " " + c.Args[0]
		}
		err = fmt.Errorf("%s%s: %w\n%s", c.Name, sub, err, strings.TrimSpace(stderr.String()))
	}
	return Result{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}, took
}

// logLine is the command line as logged: secrets redacted, with how long
// it took.
func (c Cmd) logLine(took time.Duration) string {
	return fmt.Sprintf("$ %s %s  (%s)", c.Name, Redact(strings.Join(c.Args, " "), c.Secrets...), took.Round(time.Millisecond))
}

// Exec runs name with args in the isolated environment; redact is removed
// from the logged command line.
func (t *Tools) Exec(ctx context.Context, redact string, name string, args ...string) Result {
	return t.Run(ctx, Cmd{Name: name, Args: args, Secrets: []string{redact}})
}

// Redact replaces each non-empty secret in s by ***.
func Redact(s string, secrets ...string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "***")
		}
	}
	return s
}

// busyboxApplets are linked to /bin/busybox in a Busybox image.
var busyboxApplets = []string{"sh", "cat", "echo", "ls", "sleep", "test", "true", "false", "id", "printf", "env"}

// Busybox is a one-layer image made from the host's static busybox
// (Debian's busybox-static): /bin/busybox with applet links, /etc/passwd,
// /tmp, and Files. Nothing is pulled to make it.
type Busybox struct {
	// Name is the image's name in local storage.
	Name string
	// Arch is the architecture in its config ("" for amd64).
	Arch string
	// Files maps paths inside the image to their contents.
	Files map[string]string
}

// BuildBusybox commits b into local storage with buildah.
func (t *Tools) BuildBusybox(ctx context.Context, b Busybox) error {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("busybox is missing (install busybox-static): %w", err)
	}
	rootfs, err := os.MkdirTemp(t.Dir, "rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(rootfs)
	for _, d := range []string{"bin", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			return err
		}
	}
	files := map[string]string{"etc/passwd": "root:x:0:0:root:/:/bin/sh\n"}
	for p, content := range b.Files {
		files[p] = content
	}
	for p, content := range files {
		full := filepath.Join(rootfs, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			return err
		}
	}
	arch := b.Arch
	if arch == "" {
		arch = "amd64"
	}
	r := t.Exec(ctx, "", "buildah", "from", "scratch")
	if r.Err != nil {
		return r.Err
	}
	ctr := strings.TrimSpace(r.Stdout)
	defer t.Exec(context.WithoutCancel(ctx), "", "buildah", "rm", ctr)
	steps := [][]string{
		{"copy", ctr, rootfs + "/", "/"},
		{"config", "--env", "PATH=/bin", "--cmd", "/bin/sh", "--os", "linux", "--arch", arch, ctr},
		{"commit", "--quiet", "--format", "oci", ctr, b.Name},
	}
	for _, s := range steps {
		if r := t.Exec(ctx, "", "buildah", s...); r.Err != nil {
			return r.Err
		}
	}
	return nil
}

// PushBusybox builds a Busybox image with buildah and pushes it to ref
// over plain HTTP with creds ("user:password").
func (t *Tools) PushBusybox(ctx context.Context, ref, creds string) error {
	const local = "localhost/berth-builds-base:latest"
	if err := t.BuildBusybox(ctx, Busybox{Name: local}); err != nil {
		return err
	}
	return t.Exec(ctx, creds, "buildah", "push", "--tls-verify=false", "--creds", creds, local, "docker://"+ref).Err
}

// ReadImageFiles pulls ref with podman (plain HTTP, creds "user:password")
// and returns the contents of paths inside it: by running the image with
// cat, or, where no container can start here, by mounting the image.
// Podman writes RLIMIT_NOFILE/NPROC into every container's spec and some
// sandboxes refuse to raise them, so the limits this process has are
// passed explicitly when "host" is refused.
func (t *Tools) ReadImageFiles(ctx context.Context, ref, creds string, paths ...string) (map[string]string, error) {
	if r := t.Exec(ctx, creds, "podman", "pull", "--quiet", "--tls-verify=false", "--creds", creds, ref); r.Err != nil {
		return nil, r.Err
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil, err
	}
	attempts := [][]string{
		{"--ulimit", "host"},
		{"--ulimit", fmt.Sprintf("nofile=%d:%d", lim.Cur, lim.Max), "--ulimit", "nproc=32768:32768"},
	}
	var refusals []string
	for _, limits := range attempts {
		out := map[string]string{}
		var err error
		for _, p := range paths {
			args := append([]string{"run", "--rm", "--network", "none"}, limits...)
			r := t.Exec(ctx, "", "podman", append(args, ref, "cat", p)...)
			if r.Err != nil {
				err = r.Err
				break
			}
			out[p] = r.Stdout
		}
		if err == nil {
			return out, nil
		}
		refusals = append(refusals, err.Error())
	}
	r := t.Exec(ctx, "", "podman", "image", "mount", ref)
	if r.Err != nil {
		return nil, fmt.Errorf("cannot run (%s) nor mount the image: %w", strings.Join(refusals, "; "), r.Err)
	}
	defer t.Exec(context.WithoutCancel(ctx), "", "podman", "image", "unmount", ref)
	mnt := strings.TrimSpace(r.Stdout)
	out := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil {
			return nil, fmt.Errorf("reading %s from the mounted image: %w", p, err)
		}
		out[p] = string(b)
	}
	return out, nil
}

// Pullable reports whether ref's manifest can be fetched (skopeo inspect).
func (t *Tools) Pullable(ctx context.Context, ref, creds string) error {
	return t.Exec(ctx, creds, "skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", creds, "docker://"+ref).Err
}

// RemoveAll removes dir, first making every directory writable (vfs layers
// hold read-only directories).
func RemoveAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
