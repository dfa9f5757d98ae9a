package buildah

import (
	"net/netip"
	"testing"

	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/engine/enginetest"
)

// TestSandboxNetwork: a RUN step cannot reach a service on the build host's
// own address, and reaches it once BUILD_ALLOWED_NETWORKS (the engine's
// AllowedNetworks) names that address, through slirp4netns. It runs as a
// build user (TestEngineSuiteUnprivileged runs it).
func TestSandboxNetwork(t *testing.T) {
	enginetest.RequireBuildUser(t, "buildah", "skopeo")
	enginetest.SandboxNetwork(t, func(allowed []netip.Prefix) engine.Engine {
		eng := New()
		eng.Sandbox.AllowedNetworks = allowed
		return eng
	}, "")
}
