package worker

import (
	"os"
	"testing"

	"github.com/berth-dev/berth/worker/sandbox"
)

// TestMain lets the test binary stand in for berth as the build sandbox's
// init when TestRunBuildah runs the real engine.
func TestMain(m *testing.M) {
	sandbox.InitIfAsked()
	os.Exit(m.Run())
}
