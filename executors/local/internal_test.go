package local

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestInstallBinaryReusesAndRepairs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("copies are only made, and only trusted, when root-owned")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "berth")
	if err := os.WriteFile(src, []byte("#!/bin/sh\nexit 0\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	first, err := installBinary(src, bin)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(first)
	if err != nil || fi.Mode().Perm() != 0o755 || !strings.HasPrefix(filepath.Base(first), "berth-") {
		t.Fatalf("copy %s: %v %v", first, fi.Mode(), err)
	}
	before := fi.ModTime()
	time.Sleep(10 * time.Millisecond)
	second, err := installBinary(src, bin)
	if err != nil || second != first {
		t.Fatalf("second install = %s, %v; want reuse of %s", second, err, first)
	}
	if fi, _ := os.Stat(second); !fi.ModTime().Equal(before) {
		t.Error("an identical copy was rewritten instead of reused")
	}
	// A copy whose content no longer matches its name is replaced.
	if err := os.WriteFile(first, []byte("tampered"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := installBinary(src, bin); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(first); !bytes.Equal(got, []byte("#!/bin/sh\nexit 0\n")) {
		t.Errorf("tampered copy kept: %q", got)
	}
	old := filepath.Join(bin, "berth-0000000000000000")
	if err := os.WriteFile(old, []byte("older server"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := pruneBinaries(bin, first); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(bin); len(ents) != 1 || ents[0].Name() != filepath.Base(first) {
		t.Errorf("after pruning bin holds %v, want only %s", ents, filepath.Base(first))
	}
}

func TestLineLogger(t *testing.T) {
	var buf bytes.Buffer
	l := newLineLogger(slog.New(slog.NewTextHandler(&buf, nil)), "stderr")
	_, _ = l.Write([]byte("first\nsec"))
	_, _ = l.Write([]byte("ond\r\n\npartial"))
	if n := strings.Count(buf.String(), "msg=\"worker output\""); n != 2 {
		t.Fatalf("%d records before flush, want 2:\n%s", n, buf.String())
	}
	l.flush()
	out := buf.String()
	for _, want := range []string{"line=first", "line=second", "line=partial", "stream=stderr"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// New ends processes a dead server's workers left (found by their marker,
// even outside any process group it knew) and removes their directories.
func TestNewRemovesStaleExecutions(t *testing.T) {
	root, err := os.MkdirTemp("/var/tmp", "berth-builds-stale-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	stale := filepath.Join(root, "builds", "old-build-0123")
	if err := os.MkdirAll(filepath.Join(stale, "storage"), 0o700); err != nil {
		t.Fatal(err)
	}
	leftover := exec.Command("sleep", "300")
	leftover.Env = []string{"PATH=" + defaultPath, markerVar + "=old-build-0123"}
	leftover.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	other := exec.Command("sleep", "300")
	other.Env = []string{"PATH=" + defaultPath, markerVar + "=old-build-01234"}
	for _, c := range []*exec.Cmd{leftover, other} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	e, err := New(context.Background(), Config{Command: []string{"/bin/true"}, BuildRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	done := make(chan error, 1)
	go func() { done <- leftover.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("leftover ended with %v, want killed", err)
		}
	case <-time.After(10 * time.Second):
		_ = leftover.Process.Kill()
		t.Fatal("New left the stale worker's process running")
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale build directory: %v", err)
	}
	var ws syscall.WaitStatus
	if pid, err := syscall.Wait4(other.Process.Pid, &ws, syscall.WNOHANG, nil); pid != 0 || err != nil {
		t.Errorf("a process of another execution ended (wait4 %d, %v, %v)", pid, ws, err)
	}
}
