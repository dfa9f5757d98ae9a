package buildah

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/buildhost"
)

// TestEngineSuiteUnprivileged runs the engine suite and TestSandboxNetwork
// as an unprivileged user with subordinate ID ranges of its own, the way executors run the
// worker: rootless buildah in a user namespace, its build in a sandbox. It
// needs root, to make that user (berth-test-build, or
// BERTH_TEST_UNPRIVILEGED_USER) and switch to it.
func TestEngineSuiteUnprivileged(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end build")
	}
	if os.Geteuid() != 0 {
		t.Skip("already unprivileged: TestEngineSuite covers it")
	}
	name := os.Getenv("BERTH_TEST_UNPRIVILEGED_USER")
	if name == "" {
		name = "berth-test-build"
	}
	if _, err := buildhost.EnsureUser(name, "/etc/subuid", "/etc/subgid"); err != nil {
		t.Fatal(err)
	}
	if err := buildhost.OpenTunDevice(slog.Default()); err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		t.Skip("runuser is not installed")
	}
	// The test binary sits in a root-only build cache: copy it where the
	// user can run it.
	// (t.TempDir's parent is private to root.)
	dir, err := os.MkdirTemp("", "berth-engine-test-")
	if err != nil {
		t.Fatal(err)
	}
	// Root removes what the user's builds left (layers owned by
	// subordinate ids included).
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "engine.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	// A home of the test's own, so that the tools the suite drives
	// (skopeo's caches) leave the user's real home alone.
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("runuser", "-u", name, "--", "env", "HOME="+home, "BERTH_TEST_EXPECT_UID="+u.Uid,
		bin, "-test.run", "^(TestEngineSuite|TestSandboxNetwork)$", "-test.v")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestEngineSuite") || !strings.Contains(string(out), "--- PASS: TestSandboxNetwork") {
		t.Fatalf("suite as %s: %v\n%s", name, err, out)
	}
	if testing.Verbose() {
		t.Logf("suite as %s:\n%s", name, out)
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
