package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/testenv"
)

// buildServer is `berth serve` in this process whose builds never end by
// themselves: its worker passes the executor's check, then only sleeps, so
// a build stays scheduled until it is cancelled.
type buildServer struct {
	*servedBerth
	// authFile holds the superuser's login for the server, as podman
	// login writes it.
	authFile string
}

func serveBuilds(t *testing.T) *buildServer {
	t.Helper()
	root, err := os.MkdirTemp("", "berth-build-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	// The build users run the worker from here.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	worker := filepath.Join(root, "worker")
	script := "#!/bin/sh\nfor a; do [ \"$a\" = --check ] && exit 0; done\nexec sleep 600\n"
	if err := os.WriteFile(worker, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &servedBerth{addr: freeAddr(t), dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "server.log")}
	cfgPath := filepath.Join(dir, "config.yaml")
	config := fmt.Sprintf("BUILD_MANAGER:\n  - ephemeral\n  - EXECUTORS:\n      - EXECUTOR: local\n        BUILD_ROOT: %s\n        BUILDER_BINARY_LOCATION: %s\n",
		filepath.Join(root, "builds"), worker)
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_ADMIN_USER", testAdmin)
	t.Setenv("BERTH_ADMIN_PASSWORD", testPassword)
	stderr := os.Stderr
	os.Stderr = logFile
	defer func() { os.Stderr = stderr }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, []string{"--listen", s.addr, "--data-dir", s.dataDir, "--config", cfgPath})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("serve did not stop")
		}
		logFile.Close()
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + s.addr + "/health/instance"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready\n%s", s.log(t))
		}
	}
	b := &buildServer{servedBerth: s, authFile: filepath.Join(dir, "auth.json")}
	cred := base64.StdEncoding.EncodeToString([]byte(testAdmin + ":" + testPassword))
	if err := os.WriteFile(b.authFile, []byte(`{"auths":{"`+s.addr+`":{"auth":"`+cred+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// phase is the build's phase on the server.
func (b *buildServer) phase(t *testing.T, repo, id string) string {
	t.Helper()
	resp := b.request(t, http.MethodGet, "/api/v1/repository/"+repo+"/build/"+id+"/status", "", true, nil)
	var st buildStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("build status: %d, %v", resp.StatusCode, err)
	}
	return st.Phase
}

// berthProcess is `berth` run as its own process (this test binary, see
// TestMain), its standard error read line by line.
type berthProcess struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr bytes.Buffer // every line read so far
	stdout testenv.SyncBuffer
}

// output is what the process printed on standard output so far.
func (p *berthProcess) output() string { return p.stdout.String() }

func startBerth(t *testing.T, env []string, args ...string) *berthProcess {
	t.Helper()
	p := &berthProcess{cmd: exec.Command(os.Args[0], args...), lines: make(chan string, 100)}
	p.cmd.Env = append(append(os.Environ(), "BERTH_TEST_AS_BERTH=1"), env...)
	p.cmd.Stdout = &p.stdout
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill() })
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

// await reads standard error until a line matches re and returns the
// line's submatches.
func (p *berthProcess) await(t *testing.T, re string) []string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("berth ended before printing %q:\n%s", re, p.stderr.String())
			}
			p.stderr.WriteString(line + "\n")
			if m := regexp.MustCompile(re).FindStringSubmatch(line); m != nil {
				return m
			}
		case <-timeout:
			t.Fatalf("berth did not print %q within a minute:\n%s", re, p.stderr.String())
		}
	}
}

// wait waits for the process to end and returns its exit code.
func (p *berthProcess) wait(t *testing.T) int {
	t.Helper()
	for line := range p.lines {
		p.stderr.WriteString(line + "\n")
	}
	err := p.cmd.Wait()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return p.cmd.ProcessState.ExitCode()
}

// Ctrl-C on `berth build` cancels the build on the server and follows it to
// its end; a second Ctrl-C detaches, leaving the build running, and
// `berth build --attach` and `berth logs` follow it again.
func TestBuildInterrupt(t *testing.T) {
	b := serveBuilds(t)
	dir := contextDir(t)
	env := []string{"REGISTRY_AUTH_FILE=" + b.authFile, "BERTH_TOKEN=", "BERTH_SERVER=http://" + b.addr}

	t.Run("Ctrl-C cancels the build", func(t *testing.T) {
		p := startBerth(t, env, "build", "-t", "admin/app:v1", dir)
		id := p.await(t, `^Build (\S+) queued: `)[1]
		p.await(t, `^==> build-scheduled`)
		p.cmd.Process.Signal(syscall.SIGINT)
		p.await(t, `^Cancelling build `+id+` \(Ctrl-C again to detach`)
		p.await(t, `^==> cancelled`)
		if code := p.wait(t); code != 1 || !strings.Contains(p.stderr.String(), "berth build: build "+id+" ended cancelled") {
			t.Errorf("exit %d, stderr:\n%s", code, p.stderr.String())
		}
		if phase := b.phase(t, "admin/app", id); phase != "cancelled" {
			t.Errorf("the build is %s on the server, want cancelled", phase)
		}
		// The build page names the build by a short name, not the upload's
		// file ID.
		resp := b.request(t, http.MethodGet, "/repository/admin/app/build/"+id, "", true, nil)
		page, _ := io.ReadAll(resp.Body)
		title := regexp.MustCompile(`<title>Build (\S+) · admin/app</title>`).FindSubmatch(page)
		if title == nil || len(title[1]) != 7 {
			t.Errorf("page %d, title %q", resp.StatusCode, title)
		}
	})

	t.Run("attach and logs follow a running build", func(t *testing.T) {
		// SIGTERM ends the client alone: the build goes on.
		p := startBerth(t, env, "build", "-t", "admin/app:v2", dir)
		id := p.await(t, `^Build (\S+) queued: `)[1]
		p.await(t, `^==> build-scheduled`)
		p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t); code != 1 {
			t.Errorf("exit %d after SIGTERM, stderr:\n%s", code, p.stderr.String())
		}
		if phase := b.phase(t, "admin/app", id); store.BuildPhase(phase).TerminalView() {
			t.Fatalf("the abandoned build is %s, want it still running", phase)
		}

		logs := startBerth(t, env, "logs", "admin/app", id)
		attach := startBerth(t, env, "build", "--attach", id, "-t", "admin/app")
		attach.await(t, `^==> build-scheduled`)
		// The log so far reaches `berth logs` on standard output.
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.output(), "==> build-scheduled"); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("berth logs printed %q", logs.output())
			}
		}
		resp := b.request(t, http.MethodDelete, "/api/v1/repository/admin/app/build/"+id, "", true, nil)
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("cancel: %d", resp.StatusCode)
		}
		if code := attach.wait(t); code != 1 || !strings.Contains(attach.stderr.String(), "berth build: build "+id+" ended cancelled") {
			t.Errorf("attach: exit %d, stderr:\n%s", code, attach.stderr.String())
		}
		if code := logs.wait(t); code != 0 || !strings.HasSuffix(logs.output(), "==> cancelled\n") {
			t.Errorf("logs: exit %d, stdout:\n%s\nstderr:\n%s", code, logs.output(), logs.stderr.String())
		}
		if code := startBerth(t, env, "logs", "admin/app", "no-such-build").wait(t); code != 1 {
			t.Errorf("logs of an unknown build: exit %d", code)
		}
	})
}

// A second Ctrl-C while the server has not yet answered the cancellation
// detaches: the build is left to the server and the message says where
// to see it and how to follow it again.
func TestBuildSecondInterruptDetaches(t *testing.T) {
	cancelAsked := make(chan struct{})
	// Closed before the server's Close (deferred after it), so that no
	// handler below can keep Close waiting if the client leaves a
	// connection open.
	finished := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/repository/alice/app", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /api/v1/repository/alice/app/build/", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"id":"b1","phase":"waiting"}`))
	})
	mux.HandleFunc("GET /api/v1/repository/alice/app/build/b1/logs/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 0\ndata: {\"message\":\"building\",\"type\":\"phase\"}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-finished:
		}
	})
	mux.HandleFunc("DELETE /api/v1/repository/alice/app/build/b1", func(w http.ResponseWriter, r *http.Request) {
		close(cancelAsked)
		select {
		case <-r.Context().Done():
		case <-finished:
		}
	})
	srv := httptest.NewServer(mux)
	mux.HandleFunc("POST /api/v1/filedrop/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"url":%q,"file_id":"f1"}`, srv.URL+"/filedrop/f1")
	})
	mux.HandleFunc("PUT /filedrop/f1", func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	defer srv.Close()
	defer close(finished)

	interrupts := make(chan os.Signal, 1)
	stderr := &testenv.SyncBuffer{}
	errc := make(chan error, 1)
	go func() {
		errc <- buildMain(context.Background(), []string{"-t", "alice/app", "--server", srv.URL, "--token", "tok", contextDir(t)},
			console{stdout: io.Discard, stderr: stderr, getenv: func(string) string { return "" }, interrupts: interrupts})
	}()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), "==> building"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the log did not start:\n%s", stderr.String())
		}
	}
	interrupts <- os.Interrupt
	select {
	case <-cancelAsked:
	case <-time.After(30 * time.Second):
		t.Fatalf("the first Ctrl-C did not ask the server to cancel:\n%s", stderr.String())
	}
	interrupts <- os.Interrupt
	var err error
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		t.Fatalf("the second Ctrl-C did not detach:\n%s", stderr.String())
	}
	want := "detached from build b1, which goes on: " + srv.URL + "/repository/alice/app/build/b1\nfollow it again with: berth logs alice/app b1"
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
	if !strings.Contains(stderr.String(), "Cancelling build b1 (Ctrl-C again to detach and leave it running)") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}

// Ctrl-C during the upload stops it, and no build is asked for.
func TestBuildInterruptDuringUpload(t *testing.T) {
	uploading := make(chan struct{})
	var mu sync.Mutex
	var builds int
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/repository/alice/app", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /api/v1/repository/alice/app/build/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		builds++
		mu.Unlock()
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	// Closed before srv.Close, so that a failing run cannot leave the
	// upload handler waiting and Close hanging.
	finished := make(chan struct{})
	defer close(finished)
	mux.HandleFunc("POST /api/v1/filedrop/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"url":%q,"file_id":"f1"}`, srv.URL+"/filedrop/f1")
	})
	// The upload never answers; once the body is read, the server sees
	// the client go away.
	mux.HandleFunc("PUT /filedrop/f1", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		close(uploading)
		select {
		case <-r.Context().Done():
		case <-finished:
		}
	})
	interrupts := make(chan os.Signal, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- buildMain(context.Background(), []string{"-t", "alice/app", "--server", srv.URL, "--token", "tok", contextDir(t)},
			console{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }, interrupts: interrupts})
	}()
	select {
	case <-uploading:
	case <-time.After(30 * time.Second):
		t.Fatal("the upload did not start")
	}
	interrupts <- os.Interrupt
	select {
	case err := <-errc:
		if err == nil || err.Error() != "interrupted before the build was started" {
			t.Errorf("error %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Ctrl-C did not stop the upload")
	}
	mu.Lock()
	defer mu.Unlock()
	if builds != 0 {
		t.Errorf("%d builds requested", builds)
	}
}
