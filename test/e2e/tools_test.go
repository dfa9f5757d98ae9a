package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// toolTimeout bounds one podman/buildah/skopeo/oras invocation.
const toolTimeout = 3 * time.Minute

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return hex.EncodeToString(b)
}

// containerEnv isolates podman, buildah and skopeo from the machine's own
// image store and logins: storage (vfs, so it works on any filesystem and
// needs no kernel overlay), podman's runtime state, and the auth file all live
// in one temp dir for the whole test binary.
type containerEnv struct {
	dir string
	env []string
}

var (
	ctrEnvOnce sync.Once
	ctrEnv     *containerEnv
	ctrEnvErr  error
)

func containers(t testing.TB) *containerEnv {
	t.Helper()
	ctrEnvOnce.Do(func() { ctrEnv, ctrEnvErr = newContainerEnv() })
	if ctrEnvErr != nil {
		t.Fatalf("setting up container tool config: %v", ctrEnvErr)
	}
	return ctrEnv
}

func newContainerEnv() (*containerEnv, error) {
	// Not t.TempDir: the image store is shared by tests and removed in
	// cleanupContainerEnv, after podman has let go of it.
	dir, err := os.MkdirTemp("", "berth-e2e-containers-")
	if err != nil {
		return nil, err
	}
	files := map[string]string{
		"storage.conf": fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n",
			filepath.Join(dir, "graph"), filepath.Join(dir, "run")),
		"containers.conf": fmt.Sprintf("[engine]\ntmp_dir = %q\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
			filepath.Join(dir, "libpod-tmp")),
		// No search registries: every name in the tests is fully qualified,
		// and nothing may resolve to a remote registry.
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
	return &containerEnv{dir: dir, env: env}, nil
}

// cleanupContainerEnv removes the shared image store. vfs layers of a root
// podman can include read-only dirs, hence the chmod pass on failure.
func cleanupContainerEnv() {
	if ctrEnv == nil {
		return
	}
	if err := os.RemoveAll(ctrEnv.dir); err != nil {
		_ = exec.Command("chmod", "-R", "u+w", ctrEnv.dir).Run()
		_ = os.RemoveAll(ctrEnv.dir)
	}
}

// toolPath finds a program: first the project's .tools/bin, then PATH.
func toolPath(t testing.TB, name string) string {
	t.Helper()
	local := filepath.Join(repoRoot, ".tools", "bin", name)
	if _, err := os.Stat(local); err == nil {
		return local
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (run scripts/install-deps.sh): %v", name, err)
	}
	return p
}

// cmdResult is what one tool invocation printed.
type cmdResult struct {
	stdout, stderr string
	err            error
}

// exec runs name with args in the isolated environment, feeding stdin if
// non-empty. Secrets appear in the test log as "***".
func (c *containerEnv) exec(t testing.TB, stdin string, name string, args ...string) cmdResult {
	t.Helper()
	return c.execIn(t, c.dir, stdin, name, args...)
}

// execIn is exec in working directory dir.
func (c *containerEnv) execIn(t testing.TB, dir, stdin string, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, toolPath(t, name), args...)
	cmd.Env = c.env
	cmd.Dir = dir
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("$ %s %s  (%s)", name, redact(strings.Join(args, " ")), time.Since(start).Round(time.Millisecond))
	return cmdResult{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// run is exec that fails the test when the command fails.
func (c *containerEnv) run(t testing.TB, name string, args ...string) string {
	t.Helper()
	r := c.exec(t, "", name, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, redact(strings.Join(args, " ")), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

func redact(s string) string {
	if tgt != nil && tgt.password != "" {
		s = strings.ReplaceAll(s, tgt.password, "***")
	}
	return s
}

// creds is the user:password argument podman, buildah and skopeo take.
func creds() string { return tgt.user + ":" + tgt.password }

// ref is a docker:// reference to repository:tag on the server.
func (s *server) ref(repository, tag string) string { return s.addr + "/" + repository + ":" + tag }

// baseImage is a tiny image built locally from Debian's static busybox: no
// registry is needed to get one, and it runs.
type baseImage struct {
	name   string // containers-storage name
	ociDir string // OCI image layout holding the same image, tagged "latest"
	marker string // content of /berth-e2e.txt inside the image
}

var (
	baseOnce sync.Once
	base     *baseImage
	baseErr  error
)

// busyboxImage builds the base image once per test binary.
func busyboxImage(t testing.TB) *baseImage {
	t.Helper()
	c := containers(t)
	baseOnce.Do(func() {
		// Stays the answer if the build below ends the first caller's test.
		baseErr = errors.New("the base image build failed in an earlier test")
		base, baseErr = buildBusyboxImage(t, c, "localhost/berth-e2e/busybox:latest", "amd64", "berth-e2e base image\n")
	})
	if baseErr != nil {
		t.Fatalf("building the busybox base image: %v", baseErr)
	}
	return base
}

// buildBusyboxImage makes a one-layer image: /bin/busybox with a few applet
// links and /berth-e2e.txt holding marker, labelled for arch/linux.
func buildBusyboxImage(t testing.TB, c *containerEnv, name, arch, marker string) (*baseImage, error) {
	t.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox-static is not installed: %w", err)
	}
	rootfs, err := os.MkdirTemp(c.dir, "rootfs-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(rootfs)
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		return nil, err
	}
	for _, applet := range []string{"sh", "echo", "cat", "ls"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "berth-e2e.txt"), []byte(marker), 0o644); err != nil {
		return nil, err
	}

	ctr := strings.TrimSpace(c.run(t, "buildah", "from", "scratch"))
	defer c.exec(t, "", "buildah", "rm", ctr)
	c.run(t, "buildah", "copy", ctr, rootfs, "/")
	c.run(t, "buildah", "config", "--arch", arch, "--os", "linux", "--cmd", "/bin/sh", ctr)
	c.run(t, "buildah", "commit", "--format", "oci", ctr, name)

	ociDir := filepath.Join(c.dir, "oci-"+randomHex(4))
	c.run(t, "buildah", "push", name, "oci:"+ociDir+":latest")
	return &baseImage{name: name, ociDir: ociDir, marker: marker}, nil
}
