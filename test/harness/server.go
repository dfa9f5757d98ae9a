// Package harness drives real programs for berth's end-to-end tests
// (test/e2e, test/tenancy, test/builds, test/triggers) and their benchmarks
// (test/builds/bench, test/triggers/bench): it starts and restarts `berth
// serve` (or distribution's registry, the e2e baseline), runs a test
// package's shared setup and teardown (Suite), talks to the build API,
// builds context archives, finds build workers through /proc, and runs
// buildah, podman, skopeo and oras over an isolated storage root.
//
// It is ordinary (non-test) code so that the benchmark programs can share
// it; nothing outside test/ imports it.
package harness

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
	"time"
)

const (
	// healthTimeout bounds how long a server may take to answer ready.
	healthTimeout = 60 * time.Second
	// defaultStopTimeout is how long Stop waits after SIGTERM unless
	// ServerOptions.StopTimeout says otherwise.
	defaultStopTimeout = 20 * time.Second
)

// ServerOptions describe one server.
type ServerOptions struct {
	// Bin is the berth binary (distribution's registry with Distribution).
	Bin string
	// Dir holds the data directory (Dir/data), the config file and the
	// server log.
	Dir string
	// Addr is the loopback address to listen on ("" picks a free port).
	Addr string
	// Config is the config.yaml text; berth runs without --config when it
	// is empty.
	Config string
	// User and Password name the superuser created on first start (a
	// random password when Password is empty).
	User, Password string
	// StopTimeout is how long Stop lets the server take to exit after
	// SIGTERM (20 s when zero).
	StopTimeout time.Duration
	// Distribution runs distribution's registry instead of berth: Bin is
	// its binary and Config its configuration, which must name Addr and
	// Dir/data itself. It is ready when /v2/ answers, and it may exit
	// non-zero on SIGTERM, as it does by design.
	Distribution bool
}

// Server is a running server.
type Server struct {
	Opts    ServerOptions
	Addr    string // 127.0.0.1:port
	DataDir string
	LogPath string
	// ConfigPath is the config file ("" when there is none).
	ConfigPath string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// FreeAddr returns a loopback address whose port was free a moment ago.
// The port is released before the server binds it; nothing else on a test
// machine races for ephemeral ports often enough to matter.
func FreeAddr() (string, error) {
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

// StartServer writes the config and starts the server, waiting until it
// reports ready.
func StartServer(ctx context.Context, o ServerOptions) (*Server, error) {
	if o.Addr == "" {
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		o.Addr = addr
	}
	if o.Password == "" {
		o.Password = RandomHex(16)
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = defaultStopTimeout
	}
	s := &Server{Opts: o, Addr: o.Addr, DataDir: filepath.Join(o.Dir, "data"), LogPath: filepath.Join(o.Dir, "server.log")}
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	if o.Config != "" || o.Distribution {
		s.ConfigPath = filepath.Join(o.Dir, "config.yaml")
		if err := os.WriteFile(s.ConfigPath, []byte(o.Config), 0o600); err != nil {
			return nil, fmt.Errorf("writing config: %w", err)
		}
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// name is what messages call the server.
func (s *Server) name() string {
	if s.Opts.Distribution {
		return "distribution"
	}
	return "berth"
}

func (s *Server) command() (cmd *exec.Cmd, healthPath string) {
	if s.Opts.Distribution {
		return exec.Command(s.Opts.Bin, "serve", s.ConfigPath), "/v2/"
	}
	args := []string{"serve", "--listen", s.Addr, "--data-dir", s.DataDir}
	if s.ConfigPath != "" {
		args = append(args, "--config", s.ConfigPath)
	}
	cmd = exec.Command(s.Opts.Bin, args...)
	cmd.Env = append(os.Environ(), "BERTH_ADMIN_USER="+s.Opts.User, "BERTH_ADMIN_PASSWORD="+s.Opts.Password)
	return cmd, "/health/instance"
}

func (s *Server) start(ctx context.Context) error {
	logFile, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening server log: %w", err)
	}
	defer logFile.Close()
	cmd, healthPath := s.command()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a Ctrl-C aimed at `go test` reaches the server
	// only through Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.Opts.Bin, err)
	}
	s.cmd, s.exited, s.waitErr = cmd, make(chan struct{}), nil
	exited := s.exited
	go func() {
		s.waitErr = cmd.Wait()
		close(exited)
	}()
	if err := s.waitReady(ctx, healthPath); err != nil {
		_ = s.Kill()
		return fmt.Errorf("%s on %s: %w\n%s", s.name(), s.Addr, err, s.Tail(50))
	}
	return nil
}

// URL is an absolute URL on the server.
func (s *Server) URL(path string) string { return "http://" + s.Addr + path }

// Ref is a reference to repo ("ns/name:tag" or "ns/name@digest") on the
// server.
func (s *Server) Ref(repo string) string { return s.Addr + "/" + repo }

// Creds is the superuser's "user:password", as podman, buildah and skopeo
// take it.
func (s *Server) Creds() string { return s.Opts.User + ":" + s.Opts.Password }

// waitReady polls healthPath until it answers 200, the process exits, or
// healthTimeout passes.
func (s *Server) waitReady(ctx context.Context, healthPath string) error {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	last := ""
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL(healthPath), nil)
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

// PID is the server's process ID.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop sends SIGTERM and waits up to Opts.StopTimeout; a server that
// ignores it is killed and that is an error. A clean shutdown is part of
// what is tested, so for berth so is a non-zero exit status.
func (s *Server) Stop() error {
	select {
	case <-s.exited:
		return fmt.Errorf("%s had already exited: %v", s.name(), s.waitErr)
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signalling %s: %w", s.name(), err)
	}
	select {
	case <-s.exited:
		if s.waitErr != nil && !s.Opts.Distribution {
			return fmt.Errorf("berth exited with %v after SIGTERM", s.waitErr)
		}
		return nil
	case <-time.After(s.Opts.StopTimeout):
		_ = s.Kill()
		return fmt.Errorf("%s ignored SIGTERM for %s and was killed", s.name(), s.Opts.StopTimeout)
	}
}

// Kill ends the server with SIGKILL, as a crash or an OOM kill would, and
// waits for it to be gone.
func (s *Server) Kill() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", s.name(), err)
	}
	<-s.exited
	return nil
}

// Start starts a stopped (or killed) server again on the same data
// directory, config and port.
func (s *Server) Start(ctx context.Context) error {
	select {
	case <-s.exited:
	default:
		return fmt.Errorf("%s is still running", s.name())
	}
	return s.start(ctx)
}

// Tail returns the last n lines of the server's log.
func (s *Server) Tail(n int) string {
	data, err := os.ReadFile(s.LogPath)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("---- last %d lines of %s ----\n%s\n----", len(lines), s.LogPath, strings.Join(lines, "\n"))
}

// LoopbackEgressConfig is a config.yaml line letting the server and its
// workers fetch from loopback (OUTBOUND_ALLOWED_NETWORKS), where the
// tests' git servers and archive hosts listen; berth refuses loopback
// without it.
const LoopbackEgressConfig = "OUTBOUND_ALLOWED_NETWORKS: [\"127.0.0.0/8\"]\n"

// BuildManagerConfig is a config.yaml with the ephemeral build manager,
// one local executor, workers bounded by workers and builds by timeLimit.
func BuildManagerConfig(workers int, timeLimit time.Duration) string {
	return fmt.Sprintf(`BUILD_MANAGER:
- ephemeral
- ALLOWED_WORKER_COUNT: %d
  BUILD_TIME_LIMIT: %d
  EXECUTORS:
  - EXECUTOR: local
    NAME: local
`, workers, int(timeLimit/time.Second))
}
