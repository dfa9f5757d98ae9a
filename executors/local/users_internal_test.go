package local

import (
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/buildhost"
)

// A user taken from the pool has nothing of a previous build left running:
// a process of its uid, or of one of its subordinate uids (a RUN step's
// user), that a crashed server left behind is killed first. While held, the
// user is not handed out again; released, it is.
func TestTakenUserIsClearedFirst(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: build users exist only when the server is root")
	}
	pool, err := newUserPool("berth-test-pool-", t.TempDir()+"/users", 1, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	first, err := pool.ensure(1)
	if err != nil {
		t.Fatal(err)
	}
	leftovers := []*exec.Cmd{}
	for _, uid := range []int{first.UID, first.SubUIDs.Start + 999} {
		cmd := exec.Command("/bin/sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(first.GID)}}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		leftovers = append(leftovers, cmd)
	}
	// A sandbox's state that a killed worker left in /tmp.
	stale, err := os.MkdirTemp(buildhost.SandboxStateParent, "berth-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(stale) })
	if err := os.Chown(stale, first.UID, first.GID); err != nil {
		t.Fatal(err)
	}
	u, err := pool.acquire()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the user's leftover %s is still there (%v)", stale, err)
	}
	if u.ident.UID != first.UID {
		t.Fatalf("took uid %d, want the free first user %d", u.ident.UID, first.UID)
	}
	for _, cmd := range leftovers {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("the leftover process %d of the user was not killed when the user was taken", cmd.Process.Pid)
		}
	}
	second, err := pool.acquire()
	if err != nil {
		t.Fatal(err)
	}
	if second.ident.UID == u.ident.UID {
		t.Fatalf("a held user was handed out again (uid %d)", u.ident.UID)
	}
	pool.release(second)
	pool.release(u)
	again, err := pool.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer pool.release(again)
	if again.ident.UID != first.UID {
		t.Errorf("after release, took uid %d, want %d again", again.ident.UID, first.UID)
	}
}
