// Package e2e drives a real berth binary with the clients people use against
// a registry: the OCI conformance suite, podman, buildah, skopeo and oras.
//
// TestMain starts one `bin/berth serve` on a free loopback port with a fresh
// data directory and an admin user, waits for /health/instance, and every test
// shares it. Tests that need a server skip, saying why, only when bin/berth has
// not been built; any other missing piece (a tool, a port) is a failure.
//
// BERTH_E2E_TARGET picks what to test:
//
//	""             bin/berth when it exists, otherwise skip
//	berth          bin/berth, failing when it is missing
//	distribution   .tools/bin/registry (distribution v3.1.2, no auth): checks
//	               the harness itself, and is the baseline for `make bench`
package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	targetBerth        = "berth"
	targetDistribution = "distribution"

	adminUser = "admin"
	// healthTimeout bounds how long a fresh server may take to answer ready.
	healthTimeout = 60 * time.Second
)

// target is the registry program under test and how to log in to it.
type target struct {
	kind     string // targetBerth or targetDistribution
	bin      string // absolute path of the program
	user     string
	password string
}

// hasAuth reports whether the target checks credentials; distribution runs
// without auth, so tests that assert refusals cannot run against it.
func (t *target) hasAuth() bool { return t.kind == targetBerth }

var (
	// repoRoot is the module root (two levels above this package).
	repoRoot string
	// tgt is nil when there is nothing to test (bin/berth missing).
	tgt *target
	// skipReason says why tgt is nil.
	skipReason string
	// shared is the server every test but the restart test talks to.
	shared *server
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "go.mod"))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot find the module root: %v\n", err)
		return 1
	}
	repoRoot = root

	tgt, skipReason, err = chooseTarget()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	if tgt == nil {
		fmt.Fprintf(os.Stderr, "e2e: %s\n", skipReason)
		code := m.Run()
		cleanupContainerEnv()
		return code
	}

	work, err := os.MkdirTemp("", "berth-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(work)

	addr, err := freeLoopbackAddr()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	ctx := context.Background()
	shared, err = startServer(ctx, tgt, filepath.Join(work, "server"), addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: %s listening on %s (log %s)\n", tgt.kind, shared.addr, shared.logPath)

	code := m.Run()
	cleanupContainerEnv()
	stopErr := shared.stop()
	if stopErr != nil {
		fmt.Fprintf(os.Stderr, "e2e: stopping the server: %v\n", stopErr)
	}
	if code != 0 || stopErr != nil {
		// The server's own account of what went wrong is the first thing
		// anyone debugging a red run needs; the temp dir is about to go.
		shared.dumpLog(os.Stderr, 200)
	}
	if code == 0 && stopErr != nil {
		return 1
	}
	return code
}

// chooseTarget reads BERTH_E2E_TARGET and finds the program to run.
func chooseTarget() (*target, string, error) {
	berthBin := os.Getenv("BERTH_BIN")
	if berthBin == "" {
		berthBin = filepath.Join(repoRoot, "bin", "berth")
	}
	password := randomHex(16)
	switch kind := os.Getenv("BERTH_E2E_TARGET"); kind {
	case "", targetBerth:
		if _, err := os.Stat(berthBin); err != nil {
			if kind == "" {
				return nil, fmt.Sprintf("%s not found (run `make build`): skipping berth end-to-end tests", berthBin), nil
			}
			return nil, "", fmt.Errorf("BERTH_E2E_TARGET=berth but %s is missing: %w", berthBin, err)
		}
		return &target{kind: targetBerth, bin: berthBin, user: adminUser, password: password}, "", nil
	case targetDistribution:
		bin := filepath.Join(repoRoot, ".tools", "bin", "registry")
		if _, err := os.Stat(bin); err != nil {
			return nil, "", fmt.Errorf("BERTH_E2E_TARGET=distribution needs %s (run scripts/install-deps.sh): %w", bin, err)
		}
		return &target{kind: targetDistribution, bin: bin, user: adminUser, password: password}, "", nil
	default:
		return nil, "", fmt.Errorf("BERTH_E2E_TARGET=%q: want berth or distribution", kind)
	}
}

// requireServer returns the shared server, skipping the test when no target
// binary exists.
func requireServer(t testing.TB) *server {
	t.Helper()
	if tgt == nil {
		t.Skip(skipReason)
	}
	return shared
}

// requireAuth skips tests that need a registry which enforces permissions.
func requireAuth(t testing.TB) {
	t.Helper()
	if !tgt.hasAuth() {
		t.Skipf("the %s target has no auth or visibility; this test is for berth", tgt.kind)
	}
}

// repo names a repository in the admin's namespace, where a push by the admin
// creates it (private).
func repo(name string) string { return tgt.user + "/" + name }

// server is one running registry process.
type server struct {
	target  *target
	addr    string // 127.0.0.1:port
	dataDir string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// freeLoopbackAddr asks the kernel for a free port on 127.0.0.1. The port is
// released before the server binds it; nothing else on a test machine races
// for ephemeral ports often enough to matter.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("releasing %s: %w", addr, err)
	}
	return addr, nil
}

// startServer runs the target on addr with its state in dataDir (created if
// missing, reused if not) and waits until it reports ready.
func startServer(ctx context.Context, tg *target, dataDir, addr string) (*server, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	logPath := filepath.Join(filepath.Dir(dataDir), filepath.Base(dataDir)+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening server log: %w", err)
	}
	defer logFile.Close()

	var cmd *exec.Cmd
	healthPath := "/health/instance"
	switch tg.kind {
	case targetBerth:
		cmd = exec.Command(tg.bin, "serve", "--listen", addr, "--data-dir", dataDir)
		cmd.Env = append(os.Environ(), "BERTH_ADMIN_USER="+tg.user, "BERTH_ADMIN_PASSWORD="+tg.password)
	case targetDistribution:
		conf, err := writeDistributionConfig(dataDir, addr)
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(tg.bin, "serve", conf)
		cmd.Env = os.Environ()
		healthPath = "/v2/"
	default:
		return nil, fmt.Errorf("unknown target %q", tg.kind)
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Its own process group, so a Ctrl-C aimed at `go test` reaches the
	// server only through stop().
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", tg.bin, err)
	}
	s := &server{target: tg, addr: addr, dataDir: dataDir, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx, healthPath); err != nil {
		_ = s.kill()
		var tail strings.Builder
		s.dumpLog(&tail, 50)
		return nil, fmt.Errorf("%s on %s: %w\n%s", tg.kind, addr, err, tail.String())
	}
	return s, nil
}

// writeDistributionConfig writes a filesystem-backed, auth-less config. The
// fixed http.secret keeps upload URLs valid across a restart, as berth's are.
func writeDistributionConfig(dataDir, addr string) (string, error) {
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: berth-e2e-fixed-secret
`, dataDir, addr)
	path := filepath.Join(filepath.Dir(dataDir), filepath.Base(dataDir)+"-config.yml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return "", fmt.Errorf("writing distribution config: %w", err)
	}
	return path, nil
}

func (s *server) url(path string) string { return "http://" + s.addr + path }

// waitReady polls healthPath until it answers 200, the process exits, or
// healthTimeout passes.
func (s *server) waitReady(ctx context.Context, healthPath string) error {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url(healthPath), nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited before becoming ready: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s (last answer: %s)", healthTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// kill ends the process with SIGKILL, as a crash or OOM kill would, and waits
// for it to be gone.
func (s *server) kill() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", s.target.kind, err)
	}
	<-s.exited
	return nil
}

// stop asks the process to shut down (SIGTERM) and kills it if it has not
// exited after ten seconds. A clean shutdown is part of what is tested, so an
// exit status other than success is reported.
func (s *server) stop() error {
	select {
	case <-s.exited:
		return fmt.Errorf("%s had already exited: %v", s.target.kind, s.waitErr)
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signalling %s: %w", s.target.kind, err)
	}
	select {
	case <-s.exited:
		var exitErr *exec.ExitError
		// distribution v3 exits non-zero on SIGTERM by design; only berth's
		// exit status is part of the contract.
		if s.waitErr != nil && s.target.kind == targetBerth && errors.As(s.waitErr, &exitErr) {
			return fmt.Errorf("berth exited with %v after SIGTERM", s.waitErr)
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = s.kill()
		return fmt.Errorf("%s ignored SIGTERM for 10s and was killed", s.target.kind)
	}
}

// dumpLog writes the last n lines of the server's log to w.
func (s *server) dumpLog(w io.Writer, n int) {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		fmt.Fprintf(w, "(no server log: %v)\n", err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Fprintf(w, "---- last %d lines of %s ----\n%s\n----\n", len(lines), s.logPath, strings.Join(lines, "\n"))
}
