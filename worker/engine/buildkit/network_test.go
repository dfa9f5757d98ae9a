package buildkit

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/engine/enginetest"
)

// TestSandboxNetwork: a RUN step under buildkitd cannot reach a service on
// the build host's own address, and reaches it once AllowedNetworks names
// that address. It runs as a build user (TestEngineSuiteUnprivileged runs
// it).
func TestSandboxNetwork(t *testing.T) {
	requireBuildUser(t)
	// The hostname too: RUN steps see BuildKit's, as under docker buildx.
	out := enginetest.SandboxNetwork(t, func(allowed []netip.Prefix) engine.Engine {
		eng := New()
		eng.Sandbox.AllowedNetworks = allowed
		return eng
	}, "hostname")
	if !strings.Contains(out, "\nbuildkitsandbox\n") {
		t.Errorf("the RUN step's hostname is not buildkitsandbox:\n%s", out)
	}
}
