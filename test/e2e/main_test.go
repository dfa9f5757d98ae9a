// Package e2e drives a real berth binary with the clients people use against
// a registry: the OCI conformance suite, podman, buildah, skopeo and oras.
//
// TestMain (test/harness's Suite) starts one `bin/berth serve` on a free
// loopback port with a fresh data directory and an admin user, waits for
// /health/instance, and every test shares it. Tests that need a server skip, saying why, only when bin/berth has
// not been built; any other missing piece (a tool, a port) is a failure.
//
// BERTH_E2E_TARGET picks what to test:
//
//	""             bin/berth when it exists, otherwise skip
//	berth          bin/berth, failing when it is missing
//	distribution   .tools/bin/registry (distribution v3.1.2, no auth): checks
//	               the harness itself, and is the baseline for `make bench`
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

const (
	targetBerth        = "berth"
	targetDistribution = "distribution"

	adminUser = "admin"
	// stopTimeout is how long a server may take to exit after SIGTERM.
	stopTimeout = 10 * time.Second
)

// target is the registry program under test and how to log in to it.
type target struct {
	kind     string // targetBerth or targetDistribution
	user     string
	password string
}

// hasAuth reports whether the target checks credentials; distribution runs
// without auth, so tests that assert refusals cannot run against it.
func (t *target) hasAuth() bool { return t.kind == targetBerth }

var (
	suite = &harness.Suite{Name: "e2e"}
	tgt   *target
	// shared is the server every test but the restart test talks to.
	shared *server
	// tools runs podman, buildah, skopeo and oras for every test.
	tools *harness.Tools
)

// server is one running registry process.
type server struct{ *harness.Server }

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	tgt, suite.Bin, err = chooseTarget()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	return suite.Main(m, func(ctx context.Context) error {
		o, err := serverOptions(filepath.Join(suite.Work, "server"))
		if err != nil {
			return err
		}
		if err := suite.StartServer(ctx, o); err != nil {
			return err
		}
		shared = &server{suite.Server}
		tools, err = suite.NewTools()
		return err
	})
}

// chooseTarget reads BERTH_E2E_TARGET and finds the program to run ("" for
// the suite's default, bin/berth, whose absence skips the tests).
func chooseTarget() (*target, string, error) {
	password := harness.RandomHex(16)
	switch kind := os.Getenv("BERTH_E2E_TARGET"); kind {
	case "":
		return &target{kind: targetBerth, user: adminUser, password: password}, "", nil
	case targetBerth:
		bin, err := harness.BerthBinary()
		if err != nil {
			return nil, "", err
		}
		if _, err := os.Stat(bin); err != nil {
			return nil, "", fmt.Errorf("BERTH_E2E_TARGET=berth but %s is missing: %w", bin, err)
		}
		return &target{kind: targetBerth, user: adminUser, password: password}, bin, nil
	case targetDistribution:
		root, err := harness.ModuleRoot()
		if err != nil {
			return nil, "", err
		}
		bin := filepath.Join(root, ".tools", "bin", "registry")
		if _, err := os.Stat(bin); err != nil {
			return nil, "", fmt.Errorf("BERTH_E2E_TARGET=distribution needs %s (run scripts/install-deps.sh): %w", bin, err)
		}
		return &target{kind: targetDistribution, user: adminUser, password: password}, bin, nil
	default:
		return nil, "", fmt.Errorf("BERTH_E2E_TARGET=%q: want berth or distribution", kind)
	}
}

// requireServer returns the shared server, skipping the test when no target
// binary exists.
func requireServer(t testing.TB) *server {
	t.Helper()
	suite.Require(t)
	return shared
}

// requireAuth skips tests that need a registry which enforces permissions.
func requireAuth(t testing.TB) {
	t.Helper()
	if !tgt.hasAuth() {
		t.Skipf("the %s target has no auth or visibility; this test is for berth", tgt.kind)
	}
}

// repo names a repository in the admin's namespace, where a push by the admin
// creates it (private).
func repo(name string) string { return tgt.user + "/" + name }

// serverOptions run the target with its state in dir (the data directory is
// dir/data).
func serverOptions(dir string) (harness.ServerOptions, error) {
	o := harness.ServerOptions{
		Bin: suite.Bin, Dir: dir, User: tgt.user, Password: tgt.password, StopTimeout: stopTimeout,
	}
	if tgt.kind == targetDistribution {
		addr, err := harness.FreeAddr()
		if err != nil {
			return o, err
		}
		o.Addr, o.Distribution, o.Config = addr, true, distributionConfig(filepath.Join(dir, "data"), addr)
	}
	return o, nil
}

// distributionConfig is a filesystem-backed, auth-less config. The fixed
// http.secret keeps upload URLs valid across a restart, as berth's are.
func distributionConfig(dataDir, addr string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: berth-e2e-fixed-secret
`, dataDir, addr)
}
