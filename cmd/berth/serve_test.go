package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/config"
)

// servedBerth is `berth serve` running in this process on a loopback port.
type servedBerth struct {
	addr    string
	dataDir string
	logPath string
}

const (
	testAdmin    = "admin"
	testPassword = "hardening-test-password"
)

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// serve runs runServe with config over dataDir (which may exist already)
// until the test ends, its log going to a file.
func serve(t *testing.T, config, dataDir string) *servedBerth {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	s := &servedBerth{addr: freeAddr(t), dataDir: dataDir, logPath: filepath.Join(dir, "server.log")}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	// The local executor checks its worker at start; these tests run no
	// build, so /bin/true passes for one, under a build root of their own
	// that the build users can reach.
	buildRoot, err := os.MkdirTemp("", "berth-serve-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(buildRoot) })
	if err := os.Chmod(buildRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	config += fmt.Sprintf(`
BUILD_MANAGER:
  - ephemeral
  - EXECUTORS:
      - EXECUTOR: local
        BUILD_ROOT: %s
        BUILDER_BINARY_LOCATION: /bin/true
`, filepath.Join(buildRoot, "builds"))
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_ADMIN_USER", testAdmin)
	t.Setenv("BERTH_ADMIN_PASSWORD", testPassword)
	// serve logs to standard error: the file takes it while the server
	// starts, so the test can read what it said.
	stderr := os.Stderr
	os.Stderr = logFile
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var serveErr error
	go func() {
		serveErr = runServe(ctx, []string{"--listen", s.addr, "--data-dir", dataDir, "--config", cfgPath})
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
			if serveErr != nil {
				t.Errorf("serve: %v", serveErr)
			}
		case <-time.After(60 * time.Second):
			t.Error("serve did not stop")
		}
		logFile.Close()
	})
	defer func() { os.Stderr = stderr }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + s.addr + "/health/instance")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-done:
			t.Fatalf("serve stopped: %v\n%s", serveErr, s.log(t))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready\n%s", s.log(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *servedBerth) log(t *testing.T) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// request sends a request as the superuser (or anonymously) with Host host
// ("" keeps the address).
func (s *servedBerth) request(t *testing.T, method, path, host string, super bool, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if super {
		req.SetBasicAuth(testAdmin, testPassword)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// The review's low findings against a real server (F12-F15).
func TestServeHardening(t *testing.T) {
	// F12: a data directory made 0755 by hand before the first start.
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dataDir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	s := serve(t, `
SERVER_HOSTNAME: registry.example.test
PREFERRED_URL_SCHEME: https
REQUEST_BODY_MINIMUM_BYTES_PER_SECOND: 1024
REQUEST_BODY_IDLE_TIMEOUT_SECONDS: 2
`, dataDir)

	t.Run("data directory and database are private", func(t *testing.T) {
		info, err := os.Stat(dataDir)
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o700 {
			t.Errorf("data directory mode %o, want 700", perm)
		}
		for _, f := range []string{"berth.db", "berth.db-wal", "berth.db-shm"} {
			info, err := os.Stat(filepath.Join(dataDir, f))
			if err != nil {
				t.Fatal(err)
			}
			if perm := info.Mode().Perm(); perm != 0o600 {
				t.Errorf("%s mode %o, want 600", f, perm)
			}
		}
	})

	t.Run("metrics need a superuser on the main listener", func(t *testing.T) {
		if resp := s.request(t, "GET", "/metrics", "", false, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("anonymous /metrics: %d, want 401", resp.StatusCode)
		}
		req, _ := http.NewRequest("GET", "http://"+s.addr+"/metrics", nil)
		req.SetBasicAuth(testAdmin, "wrong")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("/metrics with a wrong password: %d, want 401", resp.StatusCode)
		}
		resp = s.request(t, "GET", "/metrics", "", true, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "berth_") {
			t.Fatalf("superuser /metrics: %d %.200s", resp.StatusCode, body)
		}
	})

	const attacker = "attacker.example:8080"
	t.Run("SERVER_HOSTNAME decides URLs, never the Host header", func(t *testing.T) {
		resp := s.request(t, "GET", "/v2/", attacker, false, nil)
		if ch := resp.Header.Get("WWW-Authenticate"); !strings.Contains(ch, `realm="https://registry.example.test/v2/auth"`) {
			t.Errorf("challenge %q does not name SERVER_HOSTNAME", ch)
		}
		resp = s.request(t, "POST", "/v2/admin/app/blobs/uploads/", attacker, true, nil)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(loc, "https://registry.example.test/v2/admin/app/blobs/uploads/") {
			t.Errorf("upload: %d, Location %q", resp.StatusCode, loc)
		}
		resp = s.request(t, "POST", "/api/v1/filedrop/", attacker, true, strings.NewReader(`{"mimeType":"application/gzip"}`))
		var drop struct {
			URL string `json:"url"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&drop); err != nil || !strings.HasPrefix(drop.URL, "https://registry.example.test/") {
			t.Errorf("filedrop: %d, url %q, %v", resp.StatusCode, drop.URL, err)
		}
		if strings.Contains(s.log(t), "SERVER_HOSTNAME is not set") {
			t.Error("warned about SERVER_HOSTNAME although it is set")
		}
	})

	t.Run("a trickling body is cut off, a slow steady one is not", func(t *testing.T) {
		// F13's probe, at this server's 2 s budget: Content-Length 1000
		// and one byte every half second (the review sent one every 15 s
		// against no limit at all and gave up after 105 s).
		data := []byte(strings.Repeat("x", 1000))
		start := time.Now()
		c := rawUpload(t, s.addr, data)
		if _, closed := trickle(c, data, 1, 500*time.Millisecond, 15*time.Second); !closed {
			t.Fatalf("the connection of a trickling body was still open after %s", time.Since(start))
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("cut off after %s, want about 2 s", d)
		}
		// 12 KiB at 3 KiB/s: six times the idle budget, above the rate.
		data = []byte(strings.Repeat("y", 12<<10))
		start = time.Now()
		c = rawUpload(t, s.addr, data)
		if sent, closed := trickle(c, data, 300, 100*time.Millisecond, time.Minute); closed {
			t.Fatalf("the steady upload was cut off after %d bytes", sent)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || time.Since(start) < 3*time.Second {
			t.Fatalf("steady upload: %d after %s", resp.StatusCode, time.Since(start))
		}
	})
}

// rawUpload opens a TCP connection and sends the headers of a monolithic
// upload of data as the superuser.
func rawUpload(t *testing.T, addr string, data []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req, _ := http.NewRequest("POST", "http://"+addr+"/v2/admin/slow/blobs/uploads/?digest="+digest.FromBytes(data).String(), nil)
	req.SetBasicAuth(testAdmin, testPassword)
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n",
		req.URL.RequestURI(), addr, req.Header.Get("Authorization"), len(data))
	return c
}

// trickle writes data in pieces of n bytes every interval until it is all
// sent, the server closed the connection (a write fails) or limit passed.
// It returns how much was sent and whether the server closed.
func trickle(c net.Conn, data []byte, n int, interval, limit time.Duration) (int, bool) {
	sent := 0
	for end := time.Now().Add(limit); sent < len(data) && time.Now().Before(end); {
		k, err := c.Write(data[sent:min(sent+n, len(data))])
		sent += k
		if err != nil {
			return sent, true
		}
		time.Sleep(interval)
	}
	return sent, false
}

// With METRICS_LISTEN, /metrics is served there alone (for the monitoring
// network) and not on the main listener; without SERVER_HOSTNAME the
// server says at start that the Host header decides its URLs.
func TestServeMetricsListener(t *testing.T) {
	metricsAddr := freeAddr(t)
	s := serve(t, "METRICS_LISTEN: "+metricsAddr+"\n", filepath.Join(t.TempDir(), "data"))
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "berth_") {
		t.Fatalf("METRICS_LISTEN /metrics: %d %.200s", resp.StatusCode, body)
	}
	if resp := s.request(t, "GET", "/metrics", "", true, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("main listener /metrics with METRICS_LISTEN set: %d, want 404", resp.StatusCode)
	}
	if !strings.Contains(s.log(t), "SERVER_HOSTNAME is not set") {
		t.Errorf("no warning about SERVER_HOSTNAME:\n%s", s.log(t))
	}
	// Without SERVER_HOSTNAME the request's Host is used, as before.
	resp = s.request(t, "GET", "/v2/", "other.example:5000", false, nil)
	if ch := resp.Header.Get("WWW-Authenticate"); !strings.Contains(ch, `realm="http://other.example:5000/v2/auth"`) {
		t.Errorf("challenge %q", ch)
	}
}

func TestReadServeLimits(t *testing.T) {
	l, err := readServeLimits(map[string]any{})
	if err != nil || l.body.MinRate != 1024 || l.body.Idle != time.Minute || l.uploadsPerAccount != 16 ||
		l.webhookReplayWindow != 7*24*time.Hour || l.metricsListen != "" {
		t.Fatalf("defaults %+v, %v", l, err)
	}
	l, err = readServeLimits(map[string]any{"REQUEST_BODY_MINIMUM_BYTES_PER_SECOND": 0, "MAXIMUM_CONCURRENT_UPLOADS_PER_ACCOUNT": 0,
		"WEBHOOK_REPLAY_WINDOW_SECONDS": 0})
	if err != nil || l.body.MinRate != 0 || l.uploadsPerAccount >= 0 || l.webhookReplayWindow >= 0 {
		t.Fatalf("zeros %+v, %v", l, err)
	}
	for _, bad := range []map[string]any{
		{"REQUEST_BODY_IDLE_TIMEOUT_SECONDS": -1}, {"MAXIMUM_CONCURRENT_UPLOADS_PER_ACCOUNT": "many"}, {"METRICS_LISTEN": 9091},
	} {
		if _, err := readServeLimits(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := readServeLimits(map[string]any{"WEBHOOK_REPLAY_WINDOW_SECONDS": 3.5}); err == nil {
		t.Error("a fractional window accepted")
	}
	// The example configuration documents every key with a valid value.
	cfg, _, err := config.Load("../../deploy/config.example.yaml", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if l, err = readServeLimits(cfg.Raw); err != nil || l.metricsListen == "" || l.body.Idle == 0 {
		t.Fatalf("example: %+v, %v", l, err)
	}
}
