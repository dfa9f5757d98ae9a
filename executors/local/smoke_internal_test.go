package local

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/buildhost"
)

// Rootless buildah works as a build user, through the same credential
// drop, environment and directories the executor gives a worker: the
// subordinate ID ranges of that user are mapped into the user namespace
// and a RUN step (an OCI container) can chown to a non-root ID.
func TestRootlessBuildahAsWorker(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the executor sets up the subordinate ID ranges only as root")
	}
	buildah, err := exec.LookPath("buildah")
	if err != nil {
		t.Skip("buildah is not installed")
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox is not installed")
	}
	root, err := os.MkdirTemp("/var/tmp", "berth-builds-smoke-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	e, err := New(context.Background(), Config{Command: []string{"/bin/true"}, BuildRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(t.Context()) })
	ident, user, err := e.takeUser()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.giveBack(user) })
	d, err := e.makeBuildDirs("smoke", ident)
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		base := []string{"--root", d.storage, "--runroot", filepath.Join(d.run, "containers"), "--storage-driver", "vfs"}
		cmd := e.command(d, ident, buildah, append(base, args...)...)
		cmd.Dir = d.work
		begin := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("buildah %s: %v", args[0], time.Since(begin).Round(time.Millisecond))
		if err != nil {
			t.Fatalf("buildah %s as uid %d: %v\n%s", strings.Join(args, " "), ident.UID, err, out)
		}
		return strings.TrimSpace(string(out))
	}

	run("info")
	uidMap := run("unshare", "cat", "/proc/self/uid_map")
	gidMap := run("unshare", "cat", "/proc/self/gid_map")
	t.Logf("uid_map as %s:\n%s\ngid_map:\n%s", ident.Name, uidMap, gidMap)
	for _, c := range []struct {
		r buildhost.Range
		m string
	}{{ident.SubUIDs, uidMap}, {ident.SubGIDs, gidMap}} {
		want := "1 " + strconv.Itoa(c.r.Start) + " " + strconv.Itoa(c.r.Count)
		if !strings.Contains(strings.Join(strings.Fields(c.m), " "), want) {
			t.Errorf("range %+v not mapped: %q", c.r, c.m)
		}
	}
	ctr := run("from", "scratch")
	run("copy", ctr, busybox, "/busybox")
	id := run("run", "--isolation", "oci", "--runtime", "runc", "--network", "none", ctr, "--", "/busybox", "id", "-u")
	if id != "0" {
		t.Errorf("uid inside the build = %q, want 0", id)
	}
	owner := run("run", "--isolation", "oci", "--runtime", "runc", "--network", "none", ctr, "--", "/busybox", "sh", "-c",
		"/busybox touch /f && /busybox chown 1000:1000 /f && /busybox stat -c %u:%g /f")
	if owner != "1000:1000" {
		t.Errorf("chown inside the build gave %q, want 1000:1000", owner)
	}
	run("commit", ctr, "smoke-image")
	e.removeDir(d.root)
	if _, err := os.Stat(d.root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("build directory with rootless storage not removed: %v", err)
	}
}
