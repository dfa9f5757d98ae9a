package buildkit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/engine/enginetest"
	"github.com/berth-dev/berth/worker/sandbox"
)

// TestCheck: `berth worker --check` finds that buildkitd starts in the
// sandbox here, and names a missing buildkitd. It runs as a build user
// (TestEngineSuiteUnprivileged runs it).
func TestCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts buildkitd")
	}
	if os.Geteuid() == 0 {
		t.Skip("builds never run as root: TestEngineSuiteUnprivileged runs this as a build user")
	}
	testenv.RequireTools(t, "buildkitd", "skopeo", "runc", "rootlesskit")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := New().Check(ctx, t.TempDir()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	missing := &Engine{Buildkitd: "/nonexistent/buildkitd"}
	if err := missing.Check(ctx, t.TempDir()); !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "buildkitd") {
		t.Errorf("Check without buildkitd = %v, want ErrUnavailable naming it", err)
	}
}

// TestDockerfileOutsideContext: the Dockerfile may live outside the
// context directory, as a trigger's dockerfile_path allows; COPY still
// reads the context.
func TestDockerfileOutsideContext(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end build")
	}
	if os.Geteuid() == 0 {
		t.Skip("builds never run as root: TestEngineSuiteUnprivileged runs this as a build user")
	}
	testenv.RequireTools(t, "buildkitd", "skopeo", "runc", "rootlesskit")
	creds := testenv.Creds{Username: "builder", Password: "b3rth-df"}
	reg := testenv.StartDistributionAuth(t, creds)
	base := testenv.BusyboxImage(t, reg.Host, "lib/busybox", creds)
	dir := t.TempDir()
	ctxDir, dfDir := filepath.Join(dir, "context"), filepath.Join(dir, "elsewhere")
	for _, d := range []string{ctxDir, dfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "data.txt"), []byte("from the context\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	df := filepath.Join(dfDir, "Build.dockerfile")
	if err := os.WriteFile(df, []byte("FROM "+base+"\nCOPY data.txt /data.txt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	req := engine.Request{
		ContextDir: ctxDir, DockerfilePath: df,
		Tags:        []string{reg.Host + "/test/df:latest"},
		Registry:    engine.Registry{Host: reg.Host, Username: creds.Username, Password: creds.Password, Insecure: true},
		StorageRoot: filepath.Join(dir, "storage"), RunRoot: filepath.Join(dir, "run"), WorkDir: filepath.Join(dir, "work"),
		BaseImages: []string{base},
	}
	if err := os.MkdirAll(req.WorkDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := &enginetest.Log{}
	res, err := New().Build(ctx, req, log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.Text())
	}
	ref := reg.Host + "/test/df@" + res.Digests[req.Tags[0]]
	got, err := os.ReadFile(filepath.Join(testenv.ExtractImage(t, ref, creds), "data.txt"))
	if err != nil || string(got) != "from the context\n" {
		t.Errorf("/data.txt = %q, %v", got, err)
	}
}
