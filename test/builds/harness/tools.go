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
	"time"
)

// Tools runs podman, buildah and skopeo isolated from the machine's own
// image store and logins: vfs storage, runtime state and the auth file all
// live in Dir.
type Tools struct {
	Dir string
	Env []string
	// Log, when set, receives each command line and how long it took.
	Log func(format string, args ...any)
}

// NewTools prepares an isolated tool environment in dir.
func NewTools(dir string) (*Tools, error) {
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

// Result is what one command printed.
type Result struct {
	Stdout, Stderr string
	Err            error
}

// Exec runs name with args in the isolated environment; redact is removed
// from the logged command line.
func (t *Tools) Exec(ctx context.Context, redact string, name string, args ...string) Result {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Dir = t.Env, t.Dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if t.Log != nil {
		line := strings.Join(args, " ")
		if redact != "" {
			line = strings.ReplaceAll(line, redact, "***")
		}
		t.Log("$ %s %s  (%s)", name, line, time.Since(start).Round(time.Millisecond))
	}
	if err != nil {
		err = fmt.Errorf("%s %s: %w\n%s", name, args[0], err, strings.TrimSpace(stderr.String()))
	}
	return Result{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
}

// busyboxApplets are linked to /bin/busybox in the base image.
var busyboxApplets = []string{"sh", "cat", "echo", "ls", "sleep", "test", "true", "false", "id", "printf", "env"}

// PushBusybox builds a one-layer image from the host's static busybox
// (Debian's busybox-static) with buildah and pushes it to ref over plain
// HTTP with creds ("user:password").
func (t *Tools) PushBusybox(ctx context.Context, ref, creds string) error {
	busybox := "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		return fmt.Errorf("%s is missing (install busybox-static): %w", busybox, err)
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
	if err := os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("root:x:0:0:root:/:/bin/sh\n"), 0o644); err != nil {
		return err
	}
	r := t.Exec(ctx, "", "buildah", "from", "scratch")
	if r.Err != nil {
		return r.Err
	}
	ctr := strings.TrimSpace(r.Stdout)
	defer t.Exec(context.WithoutCancel(ctx), "", "buildah", "rm", ctr)
	steps := [][]string{
		{"copy", ctr, rootfs + "/", "/"},
		{"config", "--env", "PATH=/bin", "--cmd", "/bin/sh", "--os", "linux", "--arch", "amd64", ctr},
		{"commit", "--quiet", "--format", "oci", ctr, "localhost/berth-builds-base:latest"},
		{"push", "--tls-verify=false", "--creds", creds, "localhost/berth-builds-base:latest", "docker://" + ref},
	}
	for _, s := range steps {
		if r := t.Exec(ctx, creds, "buildah", s...); r.Err != nil {
			return r.Err
		}
	}
	return nil
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
