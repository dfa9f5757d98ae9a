// Package harness drives a real `berth serve` for the build system's
// end-to-end tests (test/builds) and its benchmark (test/builds/bench): it
// starts and restarts the server, talks to its build API, builds context
// archives, finds build workers through /proc, and runs buildah, podman and
// skopeo over an isolated storage root.
//
// It is ordinary (non-test) code so that the benchmark program can share
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

// healthTimeout bounds how long a server may take to answer ready.
const healthTimeout = 60 * time.Second

// ServerOptions describe one berth server.
type ServerOptions struct {
	// Bin is the berth binary.
	Bin string
	// Dir holds the data directory, the config file and the server log.
	Dir string
	// Addr is the loopback address to listen on ("" picks a free port).
	Addr string
	// Config is the config.yaml text.
	Config string
	// User and Password name the superuser created on first start.
	User, Password string
}

// Server is a running `berth serve`.
type Server struct {
	Opts    ServerOptions
	Addr    string // 127.0.0.1:port
	DataDir string
	LogPath string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	addr := l.Addr().String()
	return addr, l.Close()
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
	s := &Server{Opts: o, Addr: o.Addr, DataDir: filepath.Join(o.Dir, "data"), LogPath: filepath.Join(o.Dir, "server.log")}
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	if err := os.WriteFile(s.configPath(), []byte(o.Config), 0o600); err != nil {
		return nil, fmt.Errorf("writing config: %w", err)
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) configPath() string { return filepath.Join(s.Opts.Dir, "config.yaml") }

func (s *Server) start(ctx context.Context) error {
	logFile, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening server log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(s.Opts.Bin, "serve", "--listen", s.Addr, "--data-dir", s.DataDir, "--config", s.configPath())
	cmd.Env = append(os.Environ(), "BERTH_ADMIN_USER="+s.Opts.User, "BERTH_ADMIN_PASSWORD="+s.Opts.Password)
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
	if err := s.waitReady(ctx); err != nil {
		_ = s.Kill()
		return fmt.Errorf("berth on %s: %w\n%s", s.Addr, err, s.Tail(40))
	}
	return nil
}

// URL is an absolute URL on the server.
func (s *Server) URL(path string) string { return "http://" + s.Addr + path }

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	last := ""
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL("/health/instance"), nil)
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

// Stop sends SIGTERM and waits up to 20 s; a server that ignores it is
// killed and that is an error, as is a non-zero exit status.
func (s *Server) Stop() error {
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
	case <-time.After(20 * time.Second):
		_ = s.Kill()
		return errors.New("berth ignored SIGTERM for 20 s and was killed")
	}
}

// Kill ends the server with SIGKILL and waits for it.
func (s *Server) Kill() error {
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

// Start starts a stopped server again on the same data directory, config
// and port.
func (s *Server) Start(ctx context.Context) error {
	select {
	case <-s.exited:
	default:
		return errors.New("berth is still running")
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
