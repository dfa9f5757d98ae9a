package enginetest

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/buildhost"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/sandbox"
)

// Main is an engine package's TestMain: it lets the test binary stand in
// for berth as the sandbox's init, since the engine under test runs
// `<test binary> sandbox-init …` inside rootlesskit.
func Main(m *testing.M) {
	sandbox.InitIfAsked()
	os.Exit(m.Run())
}

// RequireBuildUser skips a test that builds unless it runs as a build user
// (never root: RunAsBuildUser runs it as one) with tools at hand, and fails
// it when RunAsBuildUser ran it as another user than it made.
func RequireBuildUser(t *testing.T, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end build")
	}
	if os.Geteuid() == 0 {
		t.Skip("builds never run as root: TestEngineSuiteUnprivileged runs this as a build user")
	}
	if want := os.Getenv("BERTH_TEST_EXPECT_UID"); want != "" && strconv.Itoa(os.Getuid()) != want {
		t.Fatalf("running as uid %d, want %s", os.Getuid(), want)
	}
	testenv.RequireTools(t, tools...)
}

// RunAsBuildUser runs the top-level tests inner of this test binary as an
// unprivileged user with subordinate ID ranges of its own, the way
// executors run the worker: rootless, the build in a sandbox. It needs
// root, to make that user (berth-test-build, or
// BERTH_TEST_UNPRIVILEGED_USER) and switch to it. Each inner test must
// pass; one that skipped (a tool missing) skips t with its reason.
func RunAsBuildUser(t *testing.T, inner ...string) {
	t.Helper()
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
	// it. Root removes what the user's builds left (layers owned by
	// subordinate ids included).
	dir, err := os.MkdirTemp("", "berth-engine-test-")
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
	bin := filepath.Join(dir, "engine.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	// A home of the test's own, so that the tools the tests drive
	// (skopeo's caches) leave the user's real home alone.
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("runuser", "-u", name, "--", "env", "HOME="+home, "PATH="+os.Getenv("PATH"), "BERTH_TEST_EXPECT_UID="+u.Uid,
		bin, "-test.run", "^("+strings.Join(inner, "|")+")$", "-test.v")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tests as %s: %v\n%s", name, err, out)
	}
	var skipped []string
	for _, test := range inner {
		switch result, reason := innerResult(string(out), test); result {
		case "PASS":
		case "SKIP":
			skipped = append(skipped, test+" skipped: "+reason)
		default:
			t.Fatalf("tests as %s: %s did not pass\n%s", name, test, out)
		}
	}
	if testing.Verbose() {
		t.Logf("tests as %s:\n%s", name, out)
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

// HostAddress is one of the build host's own non-loopback IPv4 addresses;
// without one the test is skipped.
func HostAddress(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok && ipnet.IP.To4() != nil && !ipnet.IP.IsLoopback() {
			addr, _ := netip.AddrFromSlice(ipnet.IP.To4())
			return addr
		}
	}
	t.Skip("the host has no non-loopback IPv4 address")
	return netip.Addr{}
}

// BuildRegistry is a registry demanding a password, with a busybox base
// image in it, for a test's own builds.
type BuildRegistry struct {
	// Host is the registry's host:port.
	Host  string
	Creds testenv.Creds
	// Base is the busybox image's reference.
	Base string
}

// StartBuildRegistry starts a BuildRegistry whose user has password.
func StartBuildRegistry(t *testing.T, password string) *BuildRegistry {
	t.Helper()
	creds := testenv.Creds{Username: "builder", Password: password}
	reg := testenv.StartDistributionAuth(t, creds)
	return &BuildRegistry{Host: reg.Host, Creds: creds, Base: testenv.BusyboxImage(t, reg.Host, "lib/busybox", creds)}
}

// Request is a build of the Dockerfile at dockerfile with context ctxDir,
// from the busybox base, pushed to repo:latest, with its engine
// directories under dir.
func (b *BuildRegistry) Request(t *testing.T, dir, ctxDir, dockerfile, repo string) engine.Request {
	t.Helper()
	req := engine.Request{
		ContextDir: ctxDir, DockerfilePath: dockerfile,
		Tags:        []string{b.Host + "/" + repo + ":latest"},
		Registry:    engine.Registry{Host: b.Host, Username: b.Creds.Username, Password: b.Creds.Password, Insecure: true},
		StorageRoot: filepath.Join(dir, "storage"), RunRoot: filepath.Join(dir, "run"), WorkDir: filepath.Join(dir, "work"),
		BaseImages: []string{b.Base},
	}
	if err := os.MkdirAll(req.WorkDir, 0o700); err != nil {
		t.Fatal(err)
	}
	return req
}

// WriteFiles writes name → content under dir, creating dir.
func WriteFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
