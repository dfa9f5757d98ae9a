package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestPodman is the everyday loop: log in, push, forget the image, pull it
// back, and run it.
func TestPodman(t *testing.T) {
	s := requireServer(t)
	c := containers(t)
	img := busyboxImage(t)
	remote := s.ref(repo("podman-busybox"), "v1")

	r := c.exec(t, tgt.password+"\n", "podman", "login", "--tls-verify=false", "--username", tgt.user, "--password-stdin", s.Addr)
	if r.Err != nil {
		t.Fatalf("podman login: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
	}
	c.run(t, "podman", "tag", img.name, remote)
	c.run(t, "podman", "push", "--tls-verify=false", remote)
	wantID := imageID(t, c, remote)

	c.run(t, "podman", "rmi", remote)
	if r := c.exec(t, "", "podman", "image", "exists", remote); r.Err == nil {
		t.Fatalf("%s still exists locally after rmi", remote)
	}
	c.run(t, "podman", "pull", "--tls-verify=false", remote)
	if got := imageID(t, c, remote); got != wantID {
		t.Fatalf("pulled image ID %s, pushed %s", got, wantID)
	}

	// A wrong password must not log in. distribution has no auth to refuse.
	if tgt.hasAuth() {
		r := c.exec(t, "wrong-"+tgt.password+"\n", "podman", "login", "--tls-verify=false",
			"--authfile", filepath.Join(t.TempDir(), "auth.json"), "--username", tgt.user, "--password-stdin", s.Addr)
		if r.Err == nil {
			t.Errorf("podman login with a wrong password succeeded:\n%s%s", r.Stdout, r.Stderr)
		}
	}

	runPulledImage(t, c, remote, img.marker)
}

func imageID(t *testing.T, c *containerEnv, ref string) string {
	t.Helper()
	id := strings.TrimSpace(c.run(t, "podman", "image", "inspect", "--format", "{{.Id}}", ref))
	if id == "" {
		t.Fatalf("no image ID for %s", ref)
	}
	return id
}

// runPulledImage proves the pulled image is whole by running it. Podman
// always writes RLIMIT_NOFILE/NPROC into the OCI spec (4.x does so even for
// --ulimit host), and some sandboxes refuse to raise them, so the limits the
// test process itself has are passed explicitly when "host" is refused.
// Where no container can start at all, the image is mounted and the file
// checked instead, which still proves every layer arrived intact.
func runPulledImage(t *testing.T, c *containerEnv, ref, marker string) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	attempts := [][]string{
		{"--ulimit", "host"},
		{"--ulimit", fmt.Sprintf("nofile=%d:%d", lim.Cur, lim.Max), "--ulimit", "nproc=32768:32768"},
	}
	var failures []string
	for _, limits := range attempts {
		args := append([]string{"run", "--rm", "--network", "none"}, limits...)
		args = append(args, ref, "cat", "/berth-e2e.txt")
		r := c.exec(t, "", "podman", args...)
		if r.Err == nil {
			if r.Stdout != marker {
				t.Fatalf("container printed %q, want %q", r.Stdout, marker)
			}
			if len(failures) > 0 {
				t.Logf("ran with explicit limits %v; podman refused the earlier attempt:\n  %s", limits, strings.Join(failures, "\n  "))
			}
			return
		}
		failures = append(failures, r.Err.Error())
	}
	t.Logf("podman run is not possible here, checking the image's files instead:\n  %s", strings.Join(failures, "\n  "))
	mnt := strings.TrimSpace(c.run(t, "podman", "image", "mount", ref))
	defer c.exec(t, "", "podman", "image", "unmount", ref)
	got, err := os.ReadFile(filepath.Join(mnt, "berth-e2e.txt"))
	if err != nil {
		t.Fatalf("reading the marker from the mounted image: %v", err)
	}
	if string(got) != marker {
		t.Fatalf("marker in pulled image is %q, want %q", got, marker)
	}
	if _, err := exec.LookPath(filepath.Join(mnt, "bin", "busybox")); err != nil {
		t.Fatalf("busybox is not executable in the pulled image: %v", err)
	}
}
