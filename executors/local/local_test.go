package local_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/executors"
	"github.com/berth-dev/berth/executors/executortest"
	"github.com/berth-dev/berth/executors/local"
)

// workerCommand is the worker the tests start: the real `berth worker`
// when cmd/berth has it, else the protocol stand-in in internal/testworker
// (BERTH_TEST_WORKER=/path/to/berth forces a prebuilt binary). It is built
// into, or copied to, a root-only directory, as a server binary may be.
var workerCommand []string

const helperEnv = "BERTH_LOCAL_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "server" {
		os.Exit(helperServer())
	}
	dir, err := os.MkdirTemp("", "berth-local-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		bin, from, err := buildWorker(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "executor tests use the worker from %s\n", from)
		workerCommand = []string{bin, "worker"}
		return m.Run()
	}()
	os.Exit(code)
}

// buildWorker puts the worker binary in dir (mode 0700) and says where it
// came from.
func buildWorker(dir string) (bin, from string, err error) {
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", "", err
	}
	if pre := os.Getenv("BERTH_TEST_WORKER"); pre != "" {
		bin = filepath.Join(dir, "berth")
		if out, err := exec.Command("cp", pre, bin).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("copy %s: %v: %s", pre, err, out)
		}
		return bin, pre, nil
	}
	goBuild := func(pkg, out string) error {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building the worker (%s): %w", pkg, err)
		}
		return nil
	}
	if _, err := os.Stat("../../cmd/berth/worker.go"); err == nil {
		bin = filepath.Join(dir, "berth")
		if err := goBuild("../../cmd/berth", bin); err != nil {
			return "", "", err
		}
		// Until main dispatches to it, the command is not there to run.
		out, _ := exec.Command(bin, "worker", "-h").CombinedOutput()
		if !strings.Contains(string(out), "unknown command") {
			return bin, "./cmd/berth (berth worker)", nil
		}
		fmt.Fprintln(os.Stderr, "cmd/berth does not dispatch `worker` yet")
	}
	bin = filepath.Join(dir, "testworker")
	if err := goBuild("./internal/testworker", bin); err != nil {
		return "", "", err
	}
	return bin, "./internal/testworker (stand-in)", nil
}

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// buildRoot makes a build root the worker user can reach (the test's own
// temporary directories are root-only).
func buildRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "berth-builds-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newExecutor(t *testing.T, root string) *local.Executor {
	t.Helper()
	ex, err := local.New(context.Background(), local.Config{
		Name:      "local-test",
		Command:   workerCommand,
		BuildRoot: root,
		StopGrace: 3 * time.Second,
		Logger:    testLogger(),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := ex.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return ex
}

// trackLocal checks, once a worker is reported gone, that its process
// group is empty and its build directory removed.
func trackLocal(t *testing.T, ex executors.Executor, id string) func() error {
	info, ok := ex.(*local.Executor).Worker(id)
	if !ok {
		t.Errorf("Worker(%s) not found while it runs", id)
		return nil
	}
	if _, err := os.Stat(info.WorkDir); err != nil {
		t.Errorf("work dir of a running worker: %v", err)
	}
	return func() error {
		var errs []error
		if err := syscall.Kill(-info.PID, 0); !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("process group %d still has members (kill 0: %v)", info.PID, err))
		}
		if _, err := os.Stat(info.Dir); !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("build directory %s still there (stat: %v)", info.Dir, err))
		}
		return errors.Join(errs...)
	}
}

func TestContract(t *testing.T) {
	executortest.Run(t, func(t *testing.T) executors.Executor {
		return newExecutor(t, buildRoot(t))
	}, executortest.Options{Track: trackLocal})
}

// procStatus reads the fields of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.Lines(string(data)) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func parseIDs(t *testing.T, s string) []uint32 {
	t.Helper()
	var ids []uint32
	for f := range strings.FieldsSeq(s) {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			t.Fatalf("id %q: %v", f, err)
		}
		ids = append(ids, uint32(n))
	}
	return ids
}

func startRegistered(t *testing.T, ex *local.Executor, m *executortest.Manager, buildID string) (local.WorkerInfo, string) {
	t.Helper()
	tok := m.Expect(buildID)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id, err := ex.Start(ctx, executors.WorkerSpec{BuildID: buildID, RegistrationToken: tok, ManagerAddr: m.Addr(), ManagerInsecure: true})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, err := m.WaitRegistered(ctx, tok); err != nil {
		t.Fatalf("worker did not register: %v", err)
	}
	info, ok := ex.Worker(id)
	if !ok {
		t.Fatalf("worker %s is not running", id)
	}
	return info, tok
}

// As root, the worker runs with no root identity at all, from a copy of a
// binary the worker user could not reach, cannot read the server's
// root-only data directory, and still works (registers, heartbeats).
func TestWorkerIsUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: checks the privilege drop")
	}
	root := buildRoot(t)
	ex := newExecutor(t, root)
	m := executortest.NewManager(t, "")
	info, tok := startRegistered(t, ex, m, "unpriv")

	st := procStatus(t, info.PID)
	uids, gids, groups := parseIDs(t, st["Uid"]), parseIDs(t, st["Gid"]), parseIDs(t, st["Groups"])
	t.Logf("worker pid %d: Uid %v Gid %v Groups %v", info.PID, uids, gids, groups)
	for _, id := range append(append(uids, gids...), groups...) {
		if id == 0 {
			t.Fatalf("worker has a root identity: Uid %v Gid %v Groups %v", uids, gids, groups)
		}
	}
	if len(uids) != 4 || len(gids) != 4 {
		t.Fatalf("unexpected status lines Uid %q Gid %q", st["Uid"], st["Gid"])
	}
	if st["CapEff"] != "0000000000000000" {
		t.Errorf("worker has effective capabilities %s", st["CapEff"])
	}

	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", info.PID))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(exe, filepath.Join(root, "bin")+"/") {
		t.Errorf("worker runs %s, want the root-owned copy under %s/bin", exe, root)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", info.PID))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cmdline), tok) {
		t.Errorf("registration token is on the command line: %q", cmdline)
	}
	fi, err := os.Stat(info.WorkDir)
	if err != nil {
		t.Fatal(err)
	}
	if owner := fi.Sys().(*syscall.Stat_t).Uid; owner != uids[0] || fi.Mode().Perm() != 0o700 {
		t.Errorf("work dir owned by %d mode %v, want %d 0700", owner, fi.Mode().Perm(), uids[0])
	}

	// The server's data directory: root-owned, 0700, with a world-readable
	// file inside that only the directory's mode protects.
	dataDir := t.TempDir()
	if err := os.Chmod(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dataDir, "token-signing.pem")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	cred := &syscall.Credential{Uid: uids[0], Gid: gids[0], Groups: groups}
	probe := func(path string) (string, error) {
		cmd := exec.Command("/bin/cat", path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := probe(secret); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("the worker's identity read the data directory: err %v, output %q", err, out)
	}
	// The probe itself works: the same identity reads what it may.
	readable := filepath.Join(root, "readable")
	if err := os.WriteFile(readable, []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := probe(readable); err != nil || out != "ok" {
		t.Errorf("probe as the worker's identity failed on a readable file: %v %q", err, out)
	}

	before := m.Heartbeats(tok)
	deadline := time.Now().Add(10 * time.Second)
	for m.Heartbeats(tok) <= before {
		if time.Now().After(deadline) {
			t.Fatal("the worker stopped heartbeating")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The worker dies with the server (parent-death signal), and the next
// server start removes what it left in the build root.
func TestWorkerDiesWithServer(t *testing.T) {
	root := buildRoot(t)
	m := executortest.NewManager(t, "")
	tok := m.Expect("orphan")
	server := exec.Command(os.Args[0])
	server.Env = append(os.Environ(), helperEnv+"=server", "HELPER_BUILD_ROOT="+root,
		"HELPER_MANAGER="+m.Addr(), "HELPER_TOKEN="+tok, "HELPER_WORKER="+strings.Join(workerCommand, "\x1f"))
	server.Stderr = os.Stderr
	out, err := server.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer server.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper server: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "worker ")))
	if err != nil {
		t.Fatalf("helper server said %q", line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.WaitRegistered(ctx, tok); err != nil {
		t.Fatalf("worker did not register: %v", err)
	}
	if err := server.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = server.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("worker %d survived its server", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	builds := filepath.Join(root, "builds")
	if ents, _ := os.ReadDir(builds); len(ents) != 1 {
		t.Fatalf("expected the dead server's build directory to be left, found %d entries", len(ents))
	}
	newExecutor(t, root)
	if ents, err := os.ReadDir(builds); err != nil || len(ents) != 0 {
		t.Errorf("New left %d stale build directories (err %v)", len(ents), err)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// helperServer is a server that starts one worker, prints its pid and
// waits to be killed.
func helperServer() int {
	ex, err := local.New(context.Background(), local.Config{
		Command:   strings.Split(os.Getenv("HELPER_WORKER"), "\x1f"),
		BuildRoot: os.Getenv("HELPER_BUILD_ROOT"),
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	id, err := ex.Start(context.Background(), executors.WorkerSpec{BuildID: "orphan",
		RegistrationToken: os.Getenv("HELPER_TOKEN"), ManagerAddr: os.Getenv("HELPER_MANAGER"), ManagerInsecure: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	info, _ := ex.Worker(id)
	fmt.Printf("worker %d\n", info.PID)
	select {}
}

func TestMaxLifetimeEndsWorker(t *testing.T) {
	ex, err := local.New(context.Background(), local.Config{Command: workerCommand, BuildRoot: buildRoot(t),
		MaxLifetime: 2 * time.Second, StopGrace: time.Second, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ex.Close(context.Background()) })
	m := executortest.NewManager(t, "")
	info, _ := startRegistered(t, ex, m, "too-long")
	select {
	case ev := <-ex.Events():
		if ev.ExecutionID != info.ExecutionID || !ev.Ended {
			t.Errorf("Events reported %+v, want the end of %s", ev, info.ExecutionID)
		}
		if !strings.Contains(ev.Reason, "MAX_LIFETIME_S") {
			t.Errorf("the reason %q does not name MAX_LIFETIME_S", ev.Reason)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a worker past its maximum lifetime was not ended")
	}
	if alive(info.PID) {
		t.Errorf("worker %d still alive", info.PID)
	}
}

func TestCloseStopsWorkersAndRefusesStart(t *testing.T) {
	parent := buildRoot(t)
	if err := os.Chmod(parent, 0o755); err != nil { // the worker user must reach root
		t.Fatal(err)
	}
	root := filepath.Join(parent, "instance")
	ex, err := local.New(context.Background(), local.Config{Command: workerCommand, BuildRoot: root, StopGrace: time.Second, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	m := executortest.NewManager(t, "")
	info, _ := startRegistered(t, ex, m, "closing")
	if err := ex.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if alive(info.PID) {
		t.Errorf("worker %d alive after Close", info.PID)
	}
	if _, err := os.Stat(info.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("build dir after Close: %v", err)
	}
	// Nothing is left in it, so the instance's build root goes too.
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("build root after Close: %v", err)
	}
	if _, ok := <-ex.Events(); ok {
		t.Error("Events reported a worker ended by Close, or was not closed")
	}
	_, err = ex.Start(context.Background(), executors.WorkerSpec{BuildID: "late", RegistrationToken: "t", ManagerAddr: m.Addr()})
	if !errors.Is(err, local.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}

func TestNewRejectsBuildRootInDataDir(t *testing.T) {
	data := t.TempDir()
	_, err := local.New(context.Background(), local.Config{Command: workerCommand, DataDir: data, BuildRoot: filepath.Join(data, "builds")})
	if err == nil || !strings.Contains(err.Error(), "outside the data directory") {
		t.Fatalf("New with the build root inside the data dir = %v", err)
	}
}

func TestBuildRootIsExclusive(t *testing.T) {
	root := buildRoot(t)
	newExecutor(t, root)
	if _, err := local.New(context.Background(), local.Config{Command: workerCommand, BuildRoot: root, Logger: testLogger()}); err == nil ||
		!strings.Contains(err.Error(), "in use") {
		t.Fatalf("second New on one build root = %v, want in-use error", err)
	}
}
