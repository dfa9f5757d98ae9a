package builds

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// buildKitStep is how BuildKit's Dockerfile frontend names a RUN step
// ("[2/3] RUN …"); buildah logs "STEP 2/3: RUN …".
var buildKitStep = regexp.MustCompile(`^\[\d+/\d+\] RUN `)

// TestBuildKitExecutor: a server whose only executor says ENGINE: buildkit
// builds with BuildKit (its workers are told to make only that engine, and
// the server's start checked it), a RUN step and all.
func TestBuildKitExecutor(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	buildkitd, err := harness.LookTool("buildkitd")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// buildkitd may be in .tools/bin, which the worker's PATH lacks.
	path := filepath.Dir(buildkitd) + string(os.PathListSeparator) + os.Getenv("PATH")
	srv, err := harness.StartServer(ctx, harness.ServerOptions{Bin: suite.Bin, Dir: t.TempDir(), User: adminUser,
		Config: fmt.Sprintf(`BUILD_MANAGER:
- ephemeral
- ALLOWED_WORKER_COUNT: 1
  BUILD_TIME_LIMIT: %d
  EXECUTORS:
  - EXECUTOR: local
    NAME: kit
    ENGINE: buildkit
    ENV: {PATH: %q}
`, int(timeLimit/time.Second), path)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	kit := &env{bin: e.bin, srv: srv, client: harness.NewClient(srv), tools: e.tools}
	if kit.base, err = pushBase(ctx, kit); err != nil {
		t.Fatal(err)
	}
	repo := newRepo(t, kit, "buildkit")
	b := submit(t, kit, repo, harness.BuildRequest{DockerTags: []string{"v1"}},
		harness.Entry{Name: "Dockerfile", Body: kit.dockerfile(`RUN echo built > /out`, "COPY file /file")},
		harness.Entry{Name: "file", Body: "content\n"})
	b, _ = await(t, kit, repo, b.ID, nil)
	entries := logsOf(t, kit, repo, b.ID)
	if b.Phase != "complete" || !digestPattern.MatchString(b.ManifestDigests["v1"]) {
		t.Fatalf("build ended %s (error %v, digests %v), want complete with a digest\n%s",
			b.Phase, deref(b.Error), b.ManifestDigests, formatLog(entries))
	}
	if indexOf(entries, 0, matches(buildKitStep)) < 0 {
		t.Errorf("no BuildKit RUN step (%s) in the log\n%s", buildKitStep, formatLog(entries))
	}
}

// pushBase pushes the busybox base image into e's server as admin/base.
func pushBase(ctx context.Context, e *env) (string, error) {
	ref := e.srv.Ref(adminUser + "/base:latest")
	return ref, e.tools.PushBusybox(ctx, ref, e.creds())
}
