// Package tenancy proves, against a real `bin/berth serve`, that berth's
// users, organizations, teams, robots, permissions and OAuth tokens behave as
// Red Hat Quay's do: a permission matrix walked through both /v2 and
// /api/v1, the seeds' curl examples replayed with their shapes asserted,
// podman driven as a robot and as an OAuth token, and bad input refused in
// Quay's error shape.
//
// TestMain starts one server for the whole package on a free loopback port,
// with a fresh data directory, a superuser from BERTH_ADMIN_USER/PASSWORD
// and a generated config.yaml. BERTH_E2E_DB picks the metadata database:
//
//	sqlite     (default) the embedded SQLite file in the data directory
//	postgres   a fresh database with a unique name, created in the local
//	           PostgreSQL (BERTH_E2E_PG_URL, default
//	           postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)
//	           and dropped at the end
//
// The tests skip, saying why, only when bin/berth has not been built (run
// `make build`); a missing tool or an unreachable PostgreSQL is a failure.
package tenancy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	adminUser = "admin"
	// healthTimeout bounds how long a fresh server may take to answer ready.
	healthTimeout = 60 * time.Second
	defaultPGURL  = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

// server is the one berth process every test talks to.
type server struct {
	bin        string
	addr       string // 127.0.0.1:port
	dataDir    string
	configPath string
	logPath    string
	adminPass  string
	cmd        *exec.Cmd
	exited     chan struct{}
	waitErr    error
}

var (
	// repoRoot is the module root (two levels above this package).
	repoRoot string
	// srv is nil when bin/berth is missing; skipReason says so.
	srv        *server
	skipReason string
	// dbKind is "sqlite" or "postgres", for test logs.
	dbKind string
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "go.mod"))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tenancy: cannot find the module root: %v\n", err)
		return 1
	}
	repoRoot = root
	bin := os.Getenv("BERTH_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot, "bin", "berth")
	}
	if _, err := os.Stat(bin); err != nil {
		skipReason = fmt.Sprintf("%s not found (run `make build`): skipping tenancy end-to-end tests", bin)
		fmt.Fprintf(os.Stderr, "tenancy: %s\n", skipReason)
		return m.Run()
	}

	work, err := os.MkdirTemp("", "berth-tenancy-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "tenancy: %v\n", err)
		return 1
	}
	defer os.RemoveAll(work)

	ctx := context.Background()
	dbKind = os.Getenv("BERTH_E2E_DB")
	var dbURI string
	switch dbKind {
	case "", "sqlite":
		dbKind = "sqlite"
	case "postgres":
		uri, drop, err := createPostgresDB(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tenancy: BERTH_E2E_DB=postgres: %v\n", err)
			return 1
		}
		defer func() {
			if err := drop(); err != nil {
				fmt.Fprintf(os.Stderr, "tenancy: dropping the test database: %v\n", err)
			}
		}()
		dbURI = uri
	default:
		fmt.Fprintf(os.Stderr, "tenancy: BERTH_E2E_DB=%q: want sqlite or postgres\n", dbKind)
		return 1
	}

	srv, err = startServer(ctx, bin, work, dbURI)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tenancy: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "tenancy: berth on %s with %s (log %s)\n", srv.addr, dbKind, srv.logPath)

	code := m.Run()
	cleanupContainerEnv()
	stopErr := srv.stop()
	if stopErr != nil {
		fmt.Fprintf(os.Stderr, "tenancy: stopping the server: %v\n", stopErr)
	}
	if code != 0 || stopErr != nil {
		srv.dumpLog(os.Stderr, 100)
	}
	srv.removeBuildRoot()
	if code == 0 && stopErr != nil {
		return 1
	}
	return code
}

// requireServer returns the shared server, skipping when bin/berth is
// missing.
func requireServer(t testing.TB) *server {
	t.Helper()
	if srv == nil {
		t.Skip(skipReason)
	}
	return srv
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return hex.EncodeToString(b)
}

// createPostgresDB creates a database with a unique name and returns its URI
// and a function that drops it (after the server has let go of it).
func createPostgresDB(ctx context.Context) (string, func() error, error) {
	base := os.Getenv("BERTH_E2E_PG_URL")
	if base == "" {
		base = defaultPGURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, fmt.Errorf("parsing %q: %w", base, err)
	}
	name := "berth_tenancy_" + randomHex(6)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	defer conn.Close(ctx)
	// The name is generated from hex digits, so quoting it is enough.
	if _, err := conn.Exec(cctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("creating database %s: %w", name, err)
	}
	u.Path = "/" + name
	drop := func() error {
		dctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(dctx, base)
		if err != nil {
			return err
		}
		defer c.Close(dctx)
		_, err = c.Exec(dctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		return err
	}
	return u.String(), drop, nil
}

// freeLoopbackAddr asks the kernel for a free port on 127.0.0.1.
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

// startServer writes config.yaml (DB_URI when dbURI is set) and runs
// `berth serve` until it reports ready.
func startServer(ctx context.Context, bin, work, dbURI string) (*server, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	s := &server{
		bin:        bin,
		addr:       addr,
		dataDir:    filepath.Join(work, "data"),
		configPath: filepath.Join(work, "config.yaml"),
		logPath:    filepath.Join(work, "server.log"),
		adminPass:  randomHex(16),
		exited:     make(chan struct{}),
	}
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		return nil, err
	}
	conf := "FEATURE_USER_INITIALIZE: true\n"
	if dbURI != "" {
		conf += fmt.Sprintf("DB_URI: %q\n", dbURI)
	}
	if err := os.WriteFile(s.configPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("writing config.yaml: %w", err)
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening server log: %w", err)
	}
	defer logFile.Close()
	s.cmd = exec.Command(bin, "serve", "--listen", addr, "--data-dir", s.dataDir, "--config", s.configPath)
	s.cmd.Env = append(os.Environ(), "BERTH_ADMIN_USER="+adminUser, "BERTH_ADMIN_PASSWORD="+s.adminPass)
	s.cmd.Stdout = logFile
	s.cmd.Stderr = logFile
	// Its own process group, so a Ctrl-C aimed at `go test` reaches the
	// server only through stop().
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		_ = s.kill()
		var tail strings.Builder
		s.dumpLog(&tail, 50)
		return nil, fmt.Errorf("berth on %s: %w\n%s", addr, err, tail.String())
	}
	return s, nil
}

func (s *server) url(path string) string { return "http://" + s.addr + path }

// waitReady polls /health/instance until it answers 200.
func (s *server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url("/health/instance"), nil)
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

func (s *server) kill() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing berth: %w", err)
	}
	<-s.exited
	return nil
}

// stop sends SIGTERM and expects a clean exit within ten seconds.
func (s *server) stop() error {
	select {
	case <-s.exited:
		return fmt.Errorf("berth had already exited: %v", s.waitErr)
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signalling berth: %w", err)
	}
	select {
	case <-s.exited:
		if s.waitErr != nil {
			return fmt.Errorf("berth exited with %v after SIGTERM", s.waitErr)
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = s.kill()
		return errors.New("berth ignored SIGTERM for 10s and was killed")
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

// removeBuildRoot deletes the per-instance directory the local build
// executor made outside the data directory (it holds a copy of the berth
// binary), which would otherwise pile up with every run. The path comes from
// the server's "local executor ready" log line and is removed only when it
// is one of the executor's default per-instance locations.
func (s *server) removeBuildRoot() {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return
	}
	_, after, ok := strings.Cut(string(data), " build_root=")
	if !ok {
		return
	}
	root, _, _ := strings.Cut(after, " ")
	root = filepath.Clean(root)
	parent := filepath.Dir(root)
	if parent != "/var/lib/berth-builds" && !strings.HasPrefix(parent, "/var/tmp/berth-builds-") {
		return
	}
	if err := os.RemoveAll(root); err != nil {
		fmt.Fprintf(os.Stderr, "tenancy: removing the executor's build root %s: %v\n", root, err)
	}
}
