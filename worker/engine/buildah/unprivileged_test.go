package buildah

import (
	"testing"

	"github.com/berth-dev/berth/worker/engine/enginetest"
)

// TestEngineSuiteUnprivileged runs the engine suite and TestSandboxNetwork
// as a build user (enginetest.RunAsBuildUser): rootless buildah in a user
// namespace, its build in a sandbox.
func TestEngineSuiteUnprivileged(t *testing.T) {
	t.Parallel()
	enginetest.RunAsBuildUser(t, "TestEngineSuite", "TestSandboxNetwork")
}
