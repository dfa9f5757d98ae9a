package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/test/harness"
)

// containerEnv is the suite's isolated podman, buildah, skopeo and oras
// environment: its own vfs storage, configuration and auth file, removed
// with the suite's work dir.
type containerEnv struct{ *harness.Tools }

// containers is the shared tool environment.
func containers(t testing.TB) *containerEnv {
	t.Helper()
	if tools == nil {
		t.Fatal("the suite's setup made no tool environment")
	}
	return &containerEnv{tools}
}

// exec runs name with args in the isolated environment, feeding stdin if
// non-empty. The target's password appears in the test log as "***".
func (c *containerEnv) exec(t testing.TB, stdin string, name string, args ...string) harness.Result {
	t.Helper()
	return c.execIn(t, "", stdin, name, args...)
}

// execIn is exec in working directory dir ("" for the environment's own).
func (c *containerEnv) execIn(t testing.TB, dir, stdin string, name string, args ...string) harness.Result {
	t.Helper()
	return c.RunT(t, harness.Cmd{Name: name, Args: args, Stdin: stdin, Dir: dir, Secrets: []string{tgt.password}})
}

// run is exec that fails the test when the command fails.
func (c *containerEnv) run(t testing.TB, name string, args ...string) string {
	t.Helper()
	r := c.exec(t, "", name, args...)
	if r.Err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s", name, redact(strings.Join(args, " ")), r.Err, r.Stdout)
	}
	return r.Stdout
}

func redact(s string) string { return harness.Redact(s, tgt.password) }

// creds is the user:password argument podman, buildah and skopeo take.
func creds() string { return tgt.user + ":" + tgt.password }

// ref is a docker:// reference to repository:tag on the server.
func (s *server) ref(repository, tag string) string { return s.Ref(repository + ":" + tag) }

// baseImage is a tiny image built locally from Debian's static busybox: no
// registry is needed to get one, and it runs.
type baseImage struct {
	name   string // containers-storage name
	ociDir string // OCI image layout holding the same image, tagged "latest"
	marker string // content of /berth-e2e.txt inside the image
}

var (
	baseOnce sync.Once
	base     *baseImage
	baseErr  error
)

// busyboxImage builds the base image once per test binary.
func busyboxImage(t testing.TB) *baseImage {
	t.Helper()
	c := containers(t)
	baseOnce.Do(func() {
		// Stays the answer if the build below ends the first caller's test.
		baseErr = errors.New("the base image build failed in an earlier test")
		base, baseErr = buildBusyboxImage(t, c, "localhost/berth-e2e/busybox:latest", "amd64", "berth-e2e base image\n")
	})
	if baseErr != nil {
		t.Fatalf("building the busybox base image: %v", baseErr)
	}
	return base
}

// buildBusyboxImage makes a harness.Busybox image with /berth-e2e.txt
// holding marker, labelled for arch/linux, and copies it into an OCI
// layout.
func buildBusyboxImage(t testing.TB, c *containerEnv, name, arch, marker string) (*baseImage, error) {
	t.Helper()
	ctx := context.Background()
	tl := c.WithLog(t.Logf)
	if err := tl.BuildBusybox(ctx, harness.Busybox{Name: name, Arch: arch, Files: map[string]string{"berth-e2e.txt": marker}}); err != nil {
		return nil, err
	}
	ociDir := filepath.Join(c.Dir, "oci-"+harness.RandomHex(4))
	if r := tl.Exec(ctx, "", "buildah", "push", name, "oci:"+ociDir+":latest"); r.Err != nil {
		return nil, r.Err
	}
	return &baseImage{name: name, ociDir: ociDir, marker: marker}, nil
}
