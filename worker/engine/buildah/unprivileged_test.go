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
	if err != nil {
		t.Fatalf("suite as %s: %v\n%s", name, err, out)
	}
	// An inner test that skipped (a tool missing) skips this one with its
	// reason; one that did not report a pass fails it.
	var skipped []string
	for _, inner := range []string{"TestEngineSuite", "TestSandboxNetwork"} {
		switch result, reason := innerResult(string(out), inner); result {
		case "PASS":
		case "SKIP":
			skipped = append(skipped, inner+" skipped: "+reason)
		default:
			t.Fatalf("suite as %s: %s did not pass\n%s", name, inner, out)
		}
	}
	if testing.Verbose() {
		t.Logf("suite as %s:\n%s", name, out)
	}
	if len(skipped) > 0 {
		t.Skipf("as %s, %s", name, strings.Join(skipped, "; "))
	}
}

// innerResult finds top-level test name's result in `go test -v` output:
// PASS, FAIL or SKIP, or "" when the output has none. reason is what the
// test logged, joined into one line: -v streams it in the indented lines
// just above the result line (after a === RUN or === CONT of that test),
// and without streaming it follows the result line.
func innerResult(out, name string) (result, reason string) {
	lines := strings.Split(out, "\n")
	indented := func(l string) bool { return strings.HasPrefix(l, "    ") }
	for i, line := range lines {
		for _, r := range []string{"PASS", "FAIL", "SKIP"} {
			if !strings.HasPrefix(line, "--- "+r+": "+name+" (") {
				continue
			}
			from, to := i, i+1
			for from > 0 && indented(lines[from-1]) {
				from--
			}
			for to < len(lines) && indented(lines[to]) {
				to++
			}
			var logged []string
			for _, l := range append(lines[from:i:i], lines[i+1:to]...) {
				logged = append(logged, strings.TrimSpace(l))
			}
			return r, strings.Join(logged, " ")
		}
	}
	return "", ""
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
