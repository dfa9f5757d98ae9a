package buildkit

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/worker/engine"
)

// requireBuildUser skips a test that builds unless it runs as a build
// user with the engine's programs at hand.
func requireBuildUser(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end build")
	}
	if os.Geteuid() == 0 {
		t.Skip("builds never run as root: TestEngineSuiteUnprivileged runs this as a build user")
	}
	testenv.RequireTools(t, "buildkitd", "skopeo", "runc", "rootlesskit")
}

// testBuild is a registry demanding a password, with a busybox base image
// in it, for a test's builds.
type testBuild struct {
	reg   *testenv.Registry
	creds testenv.Creds
	base  string
}

func newTestBuild(t *testing.T, password string) *testBuild {
	t.Helper()
	creds := testenv.Creds{Username: "builder", Password: password}
	reg := testenv.StartDistributionAuth(t, creds)
	return &testBuild{reg: reg, creds: creds, base: testenv.BusyboxImage(t, reg.Host, "lib/busybox", creds)}
}

// request is a build of the Dockerfile at dockerfile with context ctxDir,
// pushed to repo:latest, with its engine directories under dir.
func (b *testBuild) request(t *testing.T, dir, ctxDir, dockerfile, repo string) engine.Request {
	t.Helper()
	req := engine.Request{
		ContextDir: ctxDir, DockerfilePath: dockerfile,
		Tags:        []string{b.reg.Host + "/" + repo + ":latest"},
		Registry:    engine.Registry{Host: b.reg.Host, Username: b.creds.Username, Password: b.creds.Password, Insecure: true},
		StorageRoot: filepath.Join(dir, "storage"), RunRoot: filepath.Join(dir, "run"), WorkDir: filepath.Join(dir, "work"),
		BaseImages: []string{b.base},
	}
	if err := os.MkdirAll(req.WorkDir, 0o700); err != nil {
		t.Fatal(err)
	}
	return req
}

// writeFiles writes name → content under dir, creating dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
