package buildkit

import (
	"testing"

	"github.com/berth-dev/berth/worker/engine/enginetest"
)

// requireBuildUser skips a test that builds unless it runs as a build
// user with the engine's programs at hand.
func requireBuildUser(t *testing.T) {
	t.Helper()
	enginetest.RequireBuildUser(t, "buildkitd", "skopeo", "runc", "rootlesskit")
}
