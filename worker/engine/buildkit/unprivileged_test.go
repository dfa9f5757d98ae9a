package buildkit

import (
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

// innerTests skip as root and run as a build user.
var innerTests = []string{"TestEngineSuite", "TestSandboxNetwork", "TestCheck", "TestDockerfileOutsideContext"}

// TestEngineSuiteUnprivileged runs the tests that build (innerTests) as an
// unprivileged user with subordinate ID ranges of its own, the way
// executors run the worker: rootless buildkitd in its sandbox. It needs
// root, to make that user (berth-test-build, or
// BERTH_TEST_UNPRIVILEGED_USER) and switch to it.
func TestEngineSuiteUnprivileged(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end build")
	}
	if os.Geteuid() != 0 {
		t.Skip("already unprivileged: TestEngineSuite covers it")
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		t.Skip("runuser is not installed")
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
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// The test binary sits in a root-only build cache, and t.TempDir's
	// parent is private to root: copy the binary where the user can run
	// it. Root removes what the user's builds left.
	dir, err := os.MkdirTemp("", "berth-buildkit-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "buildkit.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	// A home of the test's own, for skopeo's caches.
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("runuser", "-u", name, "--", "env", "HOME="+home, "PATH="+os.Getenv("PATH"), "BERTH_TEST_EXPECT_UID="+u.Uid,
		bin, "-test.run", "^("+strings.Join(innerTests, "|")+")$", "-test.v")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("suite as %s: %v\n%s", name, err, out)
	}
	if testing.Verbose() {
		t.Logf("suite as %s:\n%s", name, out)
	}
	// Each inner test must pass; one that skipped (a tool missing) skips
	// this one.
	for _, inner := range innerTests {
		switch {
		case strings.Contains(string(out), "--- PASS: "+inner+" ("):
		case strings.Contains(string(out), "--- SKIP: "+inner+" ("):
			t.Skipf("as %s, %s skipped:\n%s", name, inner, out)
		default:
			t.Fatalf("suite as %s: %s did not pass\n%s", name, inner, out)
		}
	}
}
