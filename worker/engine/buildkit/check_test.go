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
	"github.com/berth-dev/berth/worker/engine/enginetest"
	"github.com/berth-dev/berth/worker/sandbox"
)

// TestCheck: `berth worker --check` finds that buildkitd starts in the
// sandbox here, and names a missing buildkitd. It runs as a build user
// (TestEngineSuiteUnprivileged runs it).
func TestCheck(t *testing.T) {
	requireBuildUser(t)
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
	requireBuildUser(t)
	b := enginetest.StartBuildRegistry(t, "b3rth-df")
	dir := t.TempDir()
	ctxDir, dfDir := filepath.Join(dir, "context"), filepath.Join(dir, "elsewhere")
	enginetest.WriteFiles(t, ctxDir, map[string]string{"data.txt": "from the context\n"})
	enginetest.WriteFiles(t, dfDir, map[string]string{"Build.dockerfile": "FROM " + b.Base + "\nCOPY data.txt /data.txt\n"})
	req := b.Request(t, dir, ctxDir, filepath.Join(dfDir, "Build.dockerfile"), "test/df")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := &enginetest.Log{}
	res, err := New().Build(ctx, req, log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.Text())
	}
	ref := b.Host + "/test/df@" + res.Digests[req.Tags[0]]
	got, err := os.ReadFile(filepath.Join(testenv.ExtractImage(t, ref, b.Creds), "data.txt"))
	if err != nil || string(got) != "from the context\n" {
		t.Errorf("/data.txt = %q, %v", got, err)
	}
}
