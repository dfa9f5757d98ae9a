// Package builds proves berth's build system end to end through the real
// binaries: one `bin/berth serve` with the ephemeral build manager and the
// local executor (each build's worker as a build user of its own, buildah
// in its sandbox), a busybox base image pushed into it, and builds
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
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
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
func (e *env) creds() string { return e.srv.Creds() }

var (
	suite  = &harness.Suite{Name: "builds"}
	shared = &env{}
	// buildsMissing is set when the build endpoints answer 404: the
	// feature is not in the binary yet.
	buildsMissing string
)

func TestMain(m *testing.M) {
	os.Exit(suite.Main(m, setup))
}

// setup starts the server, pushes the base image and probes the build API.
func setup(ctx context.Context) error {
	e := shared
	e.bin = suite.Bin
	err := suite.StartServer(ctx, harness.ServerOptions{
		Config: harness.BuildManagerConfig(workerCount, timeLimit) + harness.LoopbackEgressConfig, User: adminUser,
	})
	if err != nil {
		return err
	}
	e.srv = suite.Server
	e.client = harness.NewClient(e.srv)
	if e.tools, err = suite.NewTools(); err != nil {
		return err
	}
	if err := harness.RequireTools("buildah", "podman", "skopeo"); err != nil {
		return err
	}
	if e.base, err = suite.PushBase(ctx, e.tools); err != nil {
		return err
	}

	// A 404 from either route means the build API is not in the binary.
	if _, _, err := e.client.Filedrop(ctx); harness.IsNotFound(err) {
		buildsMissing = "POST /api/v1/filedrop/ answers 404: the build API (api.RegisterBuilds) is not wired into `berth serve` yet"
	} else if err != nil {
		return fmt.Errorf("probing the filedrop API: %w", err)
	} else if _, err := e.client.ListBuilds(ctx, adminUser+"/base"); harness.IsNotFound(err) {
		buildsMissing = "GET /api/v1/repository/{ns}/{repo}/build/ answers 404: the build routes are not registered"
	} else if err != nil {
		return fmt.Errorf("probing the build API: %w", err)
	}
	if buildsMissing != "" {
		fmt.Fprintf(os.Stderr, "builds: !!! %s — build tests will SKIP !!!\n", buildsMissing)
	}
	return nil
}

// requireEnv returns the shared environment, skipping only when bin/berth
// is missing or the build API is not in it.
func requireEnv(t *testing.T) *env {
	t.Helper()
	suite.Require(t)
	if buildsMissing != "" {
		t.Skipf("MISSING FEATURE: %s", buildsMissing)
	}
	return shared
}

// toolsFor is the shared tool environment logging to t.
func (e *env) toolsFor(t *testing.T) *harness.Tools { return e.tools.WithLog(t.Logf) }
