// Package builds proves berth's build system end to end through the real
// binaries: one `bin/berth serve` with the ephemeral build manager and the
// local executor (workers as the unprivileged berth-worker user, buildah
// with chroot isolation), a busybox base image pushed into it, and builds
// requested through the REST API and `berth build`, checked by pulling the
// results with podman.
//
// TestMain builds nothing (the Makefile builds bin/berth first; BERTH_BIN
// names another binary). Tests skip, loudly, only when bin/berth is missing
// or the build endpoints answer 404; anything else that is missing is a
// failure.
package builds

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/builds/harness"
)

const (
	adminUser = "admin"
	// workerCount is ALLOWED_WORKER_COUNT of the shared server.
	workerCount = 2
	// timeLimit is BUILD_TIME_LIMIT: short, so a hung build fails the
	// test run rather than stalling it.
	timeLimit = 3 * time.Minute
	// buildTimeout bounds how long a test waits for one build to end.
	buildTimeout = 3 * time.Minute
)

// env is what every test shares.
type env struct {
	bin    string
	srv    *harness.Server
	client *harness.Client
	tools  *harness.Tools
	// base is the base image's reference (host/admin/base:latest).
	base string
}

// creds is user:password for podman, buildah and skopeo.
func (e *env) creds() string { return e.srv.Opts.User + ":" + e.srv.Opts.Password }

var (
	shared *env
	// skipAll says why every test skips (bin/berth missing).
	skipAll string
	// setupErr is why the shared environment could not be made: a failure
	// of every test, not a skip.
	setupErr error
	// buildsMissing is set when the build endpoints answer 404: the
	// feature is not in the binary yet.
	buildsMissing string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	bin, err := harness.BerthBinary()
	if err != nil {
		fmt.Fprintf(os.Stderr, "builds: %v\n", err)
		return 1
	}
	if _, err := os.Stat(bin); err != nil {
		skipAll = fmt.Sprintf("%s not found (run `make build`): SKIPPING every build-system end-to-end test", bin)
		fmt.Fprintf(os.Stderr, "builds: %s\n", skipAll)
		return m.Run()
	}
	// The server's data dir and the isolated tool storage must be
	// reachable by nobody but root; the worker never reads them.
	work, err := os.MkdirTemp("", "berth-builds-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "builds: %v\n", err)
		return 1
	}
	defer harness.RemoveAll(work)

	ctx := context.Background()
	shared, setupErr = setup(ctx, bin, work)
	if setupErr != nil {
		fmt.Fprintf(os.Stderr, "builds: setup failed: %v\n", setupErr)
	}
	code := m.Run()
	if shared != nil && shared.srv != nil {
		stopErr := shared.srv.Stop()
		if stopErr != nil {
			fmt.Fprintf(os.Stderr, "builds: stopping the server: %v\n", stopErr)
			if code == 0 {
				code = 1
			}
		}
		if code != 0 {
			fmt.Fprintln(os.Stderr, shared.srv.Tail(150))
			// The work dir goes away; the whole server log is what a
			// red run needs next.
			if data, err := os.ReadFile(shared.srv.LogPath); err == nil {
				keep := filepath.Join(os.TempDir(), "berth-builds-server-"+time.Now().Format("20060102-150405")+".log")
				if os.WriteFile(keep, data, 0o600) == nil {
					fmt.Fprintf(os.Stderr, "builds: full server log kept at %s\n", keep)
				}
			}
		}
	}
	return code
}

// setup starts the server, pushes the base image and probes the build API.
func setup(ctx context.Context, bin, work string) (*env, error) {
	e := &env{bin: bin}
	var err error
	e.srv, err = harness.StartServer(ctx, harness.ServerOptions{
		Bin: bin, Dir: filepath.Join(work, "server"), Config: harness.BuildManagerConfig(workerCount, timeLimit),
		User: adminUser, Password: harness.RandomHex(16),
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "builds: berth listening on %s (log %s)\n", e.srv.Addr, e.srv.LogPath)
	e.client = harness.NewClient(e.srv)
	toolDir := filepath.Join(work, "tools")
	if err := os.MkdirAll(toolDir, 0o700); err != nil {
		return e, err
	}
	if e.tools, err = harness.NewTools(toolDir); err != nil {
		return e, err
	}
	for _, tool := range []string{"buildah", "podman", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			return e, fmt.Errorf("%s is not installed (run scripts/install-deps.sh): %w", tool, err)
		}
	}
	e.base = e.srv.Addr + "/" + adminUser + "/base:latest"
	start := time.Now()
	if err := e.tools.PushBusybox(ctx, e.base, e.creds()); err != nil {
		return e, fmt.Errorf("pushing the busybox base image: %w", err)
	}
	fmt.Fprintf(os.Stderr, "builds: base image %s pushed in %s\n", e.base, time.Since(start).Round(time.Millisecond))

	// A 404 from either route means the build API is not in the binary.
	if _, _, err := e.client.Filedrop(ctx); harness.IsNotFound(err) {
		buildsMissing = "POST /api/v1/filedrop/ answers 404: the build API (api.RegisterBuilds) is not wired into `berth serve` yet"
	} else if err != nil {
		return e, fmt.Errorf("probing the filedrop API: %w", err)
	} else if _, err := e.client.ListBuilds(ctx, adminUser+"/base"); harness.IsNotFound(err) {
		buildsMissing = "GET /api/v1/repository/{ns}/{repo}/build/ answers 404: the build routes are not registered"
	} else if err != nil {
		return e, fmt.Errorf("probing the build API: %w", err)
	}
	if buildsMissing != "" {
		fmt.Fprintf(os.Stderr, "builds: !!! %s — build tests will SKIP !!!\n", buildsMissing)
	}
	return e, nil
}

// requireEnv returns the shared environment, skipping only when bin/berth
// is missing or the build API is not in it.
func requireEnv(t *testing.T) *env {
	t.Helper()
	if skipAll != "" {
		t.Skip(skipAll)
	}
	if setupErr != nil {
		t.Fatalf("shared setup failed: %v", setupErr)
	}
	if buildsMissing != "" {
		t.Skipf("MISSING FEATURE: %s", buildsMissing)
	}
	return shared
}

// toolsFor is the shared tool environment logging to t.
func (e *env) toolsFor(t *testing.T) *harness.Tools {
	c := *e.tools
	c.Log = t.Logf
	return &c
}
