package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// server is a registry process the benchmark started and must stop.
type server struct {
	url     string
	dataDir string // where the registry keeps blobs and metadata
	tmpDir  string // removed on stop
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// freePort asks the kernel for an unused loopback port. The listener is
// closed before the server binds it; on a quiet machine the race is benign.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startBerth runs `berth serve` with a fresh data dir and the bootstrap
// admin taken from the environment, and waits for /health/instance.
func startBerth(ctx context.Context, bin, tmpRoot, user, pass string, timeout time.Duration) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(tmpRoot, "regbench-berth-")
	if err != nil {
		return nil, fmt.Errorf("make berth temp dir: %w", err)
	}
	data := filepath.Join(tmp, "data")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data-dir", data)
	cmd.Env = append(os.Environ(), "BERTH_ADMIN_USER="+user, "BERTH_ADMIN_PASSWORD="+pass)
	s := &server{url: "http://" + addr, dataDir: data, tmpDir: tmp, cmd: cmd}
	if err := s.start(ctx, "/health/instance", timeout); err != nil {
		return nil, fmt.Errorf("start berth: %w", err)
	}
	return s, nil
}

// startDistribution runs the distribution registry on filesystem storage
// with the settings of its stock configuration (in-memory blob descriptor
// cache, deletes enabled), no auth, and logging reduced to errors so that
// neither side pays for access logs.
func startDistribution(ctx context.Context, bin, tmpRoot string, timeout time.Duration) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(tmpRoot, "regbench-distribution-")
	if err != nil {
		return nil, fmt.Errorf("make distribution temp dir: %w", err)
	}
	data := filepath.Join(tmp, "data")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	conf := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: %s
`, data, addr)
	confPath := filepath.Join(tmp, "config.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("write distribution config: %w", err)
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("make distribution data dir: %w", err)
	}
	cmd := exec.Command(bin, "serve", confPath)
	cmd.Env = os.Environ()
	s := &server{url: "http://" + addr, dataDir: data, tmpDir: tmp, cmd: cmd}
	if err := s.start(ctx, "/v2/", timeout); err != nil {
		return nil, fmt.Errorf("start distribution: %w", err)
	}
	return s, nil
}

// start launches the process with its output in a log file and polls
// healthPath until it answers 200, the process exits, or timeout passes.
// On failure the temp dir is removed and the log's tail is in the error.
func (s *server) start(ctx context.Context, healthPath string, timeout time.Duration) error {
	s.logPath = filepath.Join(s.tmpDir, "server.log")
	logf, err := os.Create(s.logPath)
	if err != nil {
		_ = os.RemoveAll(s.tmpDir)
		return fmt.Errorf("create server log: %w", err)
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// The server must not outlive the benchmark, even if it is killed.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		_ = os.RemoveAll(s.tmpDir)
		return fmt.Errorf("exec %s: %w", s.cmd.Path, err)
	}
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		logf.Close()
		close(s.exited)
	}()

	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+healthPath, nil)
		if err != nil {
			s.stop()
			return fmt.Errorf("build health request: %w", err)
		}
		resp, err := hc.Do(req)
		if err == nil {
			drain(resp)
			if resp.StatusCode == http.StatusOK {
				hc.CloseIdleConnections()
				return nil
			}
		}
		select {
		case <-s.exited:
			tail := s.logTail()
			_ = os.RemoveAll(s.tmpDir)
			return fmt.Errorf("%s exited before it was healthy: %s", s.cmd.Path, tail)
		case <-ctx.Done():
			s.stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tail := s.logTail()
			s.stop()
			return fmt.Errorf("%s not healthy at %s%s after %s: %s", s.cmd.Path, s.url, healthPath, timeout, tail)
		}
	}
}

// stop asks the server to shut down, kills it if it does not within a few
// seconds, and removes its temp dir.
func (s *server) stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	_ = os.RemoveAll(s.tmpDir)
}

func (s *server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	if t := strings.TrimSpace(string(b)); t != "" {
		return t
	}
	return "(empty log)"
}

// findBinary returns path if it is executable, else looks it up on PATH.
func findBinary(path string) (string, error) {
	if st, err := os.Stat(path); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return filepath.Abs(path)
	}
	if !strings.ContainsRune(path, filepath.Separator) {
		if p, err := exec.LookPath(path); err == nil {
			return p, nil
		}
	}
	return "", errors.New(path + " not found or not executable")
}
