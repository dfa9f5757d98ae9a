package worker

import (
	"fmt"
	"os"
	"testing"

	"github.com/berth-dev/berth/worker/sandbox"
)

// TestMain lets the test binary stand in for berth as the build sandbox's
// init when TestRunBuildah runs the real engine.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "sandbox-init" {
		err := sandbox.Init(os.Args[2:])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(125)
	}
	os.Exit(m.Run())
}
