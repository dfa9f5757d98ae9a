package buildkit

import (
	"testing"

	"github.com/berth-dev/berth/worker/engine/enginetest"
)

// TestEngineSuiteUnprivileged runs the tests that build as a build user
// (enginetest.RunAsBuildUser): rootless buildkitd in its sandbox.
func TestEngineSuiteUnprivileged(t *testing.T) {
	t.Parallel()
	enginetest.RunAsBuildUser(t, "TestEngineSuite", "TestSandboxNetwork", "TestCheck", "TestDockerfileOutsideContext")
}
