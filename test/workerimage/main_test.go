// Package workerimage proves that berth builds its own worker image: one
// `bin/berth serve` with the ephemeral build manager and the local executor
// on loopback, `make worker-image` pointed at it (the Debian base from
// worker-image/base.sh pushed into it, then `berth build` of the worker's
// Containerfile on top), and the image pulled back with podman and run.
//
// Tests skip, loudly, only when bin/berth is missing or when neither
// mmdebstrap nor debootstrap is installed and this process cannot install
// one (it is not root); anything else that is missing is a failure.
package workerimage

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

const (
	adminUser = "admin"
	// timeLimit is the server's BUILD_TIME_LIMIT. The worker image's build
	// pulls a Debian base of about 150 MB into vfs storage and commits a
	// layer of berth's binary, which takes a few minutes on a loaded
	// two-core machine.
	timeLimit = 15 * time.Minute
)

var suite = &harness.Suite{Name: "workerimage"}

func TestMain(m *testing.M) {
	os.Exit(suite.Main(m, setup))
}

func setup(ctx context.Context) error {
	if err := harness.RequireTools("buildah", "podman", "skopeo", "make", "go"); err != nil {
		return err
	}
	return suite.StartServer(ctx, harness.ServerOptions{
		Config: harness.BuildManagerConfig(1, timeLimit), User: adminUser,
	})
}
