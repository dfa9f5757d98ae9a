package buildkit

import (
	"os"
	"testing"

	"github.com/berth-dev/berth/worker/sandbox"
)

// TestMain lets the test binary stand in for berth as the sandbox's init:
// the engine under test runs `<test binary> sandbox-init …` inside
// rootlesskit, before buildkitd.
func TestMain(m *testing.M) {
	sandbox.InitIfAsked()
	os.Exit(m.Run())
}
