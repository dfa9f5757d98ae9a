package buildah

import (
	"fmt"
	"os"
	"testing"

	"github.com/berth-dev/berth/worker/sandbox"
)

// TestMain lets the test binary stand in for berth as the sandbox's init:
// the engine under test runs `<test binary> sandbox-init …` inside
// rootlesskit.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "sandbox-init" {
		err := sandbox.Init(os.Args[2:])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(125)
	}
	os.Exit(m.Run())
}
