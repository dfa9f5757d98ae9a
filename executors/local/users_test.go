package local_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/executors/executortest"
	"github.com/berth-dev/berth/executors/local"
)

// Two builds at once run as two different unprivileged users, each owning
// its build directory alone: neither can read the other's files, and when
// a build ends nothing of its user keeps running.
func TestBuildsRunAsUsersOfTheirOwn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: build users exist only when the server is root")
	}
	ex := newExecutor(t, buildRoot(t))
	m := executortest.NewManager(t, "")
	a, _ := startRegistered(t, ex, m, "tenant-a")
	b, _ := startRegistered(t, ex, m, "tenant-b")
	if a.UID == b.UID || a.UID == 0 || b.UID == 0 {
		t.Fatalf("builds run as uids %d and %d, want two different unprivileged ones", a.UID, b.UID)
	}
	for _, w := range []local.WorkerInfo{a, b} {
		if st := procStatus(t, w.PID); parseIDs(t, st["Uid"])[0] != uint32(w.UID) {
			t.Errorf("worker %d runs as %s, want uid %d", w.PID, st["Uid"], w.UID)
		}
		fi, err := os.Stat(w.Dir)
		if err != nil {
			t.Fatal(err)
		}
		if owner := fi.Sys().(*syscall.Stat_t).Uid; int(owner) != w.UID || fi.Mode().Perm() != 0o700 {
			t.Errorf("build dir %s owned by %d mode %v, want %d 0700", w.Dir, owner, fi.Mode().Perm(), w.UID)
		}
	}
	// The directory that holds the builds' directories lists nothing.
	if fi, err := os.Stat(filepath.Dir(a.Dir)); err != nil || fi.Mode().Perm() != 0o711 {
		t.Errorf("builds directory mode %v (%v), want 0711", fi.Mode().Perm(), err)
	}
	secret := filepath.Join(b.WorkDir, "secret")
	if err := os.WriteFile(secret, []byte("tenant b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(secret, b.UID, b.UID); err != nil {
		t.Fatal(err)
	}
	cat := func(uid int, path string) (string, error) {
		u, err := user.LookupId(strconv.Itoa(uid))
		if err != nil {
			t.Fatal(err)
		}
		gid, _ := strconv.Atoi(u.Gid)
		cmd := exec.Command("/bin/cat", path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := cat(a.UID, secret); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("build a's user read build b's file: %v %q", err, out)
	}
	if out, err := cat(b.UID, secret); err != nil || out != "tenant b" {
		t.Errorf("build b's user cannot read its own file: %v %q", err, out)
	}

	// A process build a's user started outside the worker's process group
	// goes when the build ends.
	stray := exec.Command("/bin/sleep", "300")
	stray.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: uint32(a.UID), Gid: uint32(a.UID)}}
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	defer stray.Process.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ex.Stop(ctx, a.ExecutionID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- stray.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("a process of build a's user (pid %d) outlived the build", stray.Process.Pid)
	}
	if uids := processesOf(t, a.UID); len(uids) > 0 {
		t.Errorf("processes of build a's user after it ended: %v", uids)
	}
}

// processesOf lists the processes whose real user ID is uid.
func processesOf(t *testing.T, uid int) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if errors.Is(err, os.ErrNotExist) || err != nil {
			continue
		}
		for line := range strings.Lines(string(data)) {
			if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
				if f := strings.Fields(rest); len(f) > 0 && f[0] == strconv.Itoa(uid) {
					found = append(found, e.Name())
				}
			}
		}
	}
	return found
}

// A worker whose check fails (a machine that cannot sandbox builds) stops
// New with the check's own words, instead of starting builds with weaker
// isolation.
func TestNewRefusesWhenTheWorkerCheckFails(t *testing.T) {
	script := filepath.Join(buildRoot(t), "worker.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'build sandbox unavailable: user namespaces are disabled' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := local.New(context.Background(), local.Config{Name: "refuse", Command: []string{script, "worker"}, BuildRoot: buildRoot(t), Logger: testLogger()})
	if err == nil || !strings.Contains(err.Error(), "builds cannot run on this machine") || !strings.Contains(err.Error(), "user namespaces are disabled") {
		t.Fatalf("New = %v, want a refusal naming the failed check", err)
	}
}

// The worker's check and the workers themselves are told the executor's
// engine (BERTH_ENGINES), so they make and check only that one; buildah
// when the executor names none.
func TestWorkersGetTheEngine(t *testing.T) {
	script := filepath.Join(buildRoot(t), "worker.sh")
	// The check reports what it was told and fails, so New says it.
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"engines=$BERTH_ENGINES\" >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for engine, want := range map[string]string{"": "engines=buildah", "buildkit": "engines=buildkit"} {
		_, err := local.New(context.Background(), local.Config{Name: "engine", Command: []string{script, "worker"},
			BuildRoot: buildRoot(t), Engine: engine, Logger: testLogger()})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Engine %q: New = %v, want the check to have been told %s", engine, err, want)
		}
	}
}
