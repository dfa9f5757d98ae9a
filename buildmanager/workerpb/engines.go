package workerpb

import (
	"fmt"
	"slices"
	"strings"
)

// The build engines a Job may name (Job.engine).
const (
	EngineBuildah  = "buildah"
	EngineBuildKit = "buildkit"
)

// DefaultEngine builds a job that names no engine.
const DefaultEngine = EngineBuildah

// Engines are the names an executor's ENGINE key may take.
var Engines = []string{EngineBuildah, EngineBuildKit}

// EnginesEnv is the worker's environment variable, set by its executor,
// that names the engines the worker makes and checks (comma-separated;
// every engine the binary carries when unset).
const EnginesEnv = "BERTH_ENGINES"

// SlirpInPlaceEnv is the worker's environment variable that asks its build
// sandbox to leave slirp4netns in the mount namespace it starts in ("true")
// instead of confining it to one of its own, which takes CAP_SYS_ADMIN: the
// Kubernetes executor's pods do without it, and set this.
const SlirpInPlaceEnv = "BERTH_SANDBOX_SLIRP_IN_PLACE"

// ParseEngine reads an executor's ENGINE value from its EXECUTORS entry:
// DefaultEngine when absent, else one of Engines. The build manager and
// the executor read the same entry, so both refuse the same values.
func ParseEngine(entry map[string]any) (string, error) {
	v, ok := entry["ENGINE"]
	if !ok || v == nil {
		return DefaultEngine, nil
	}
	name, _ := v.(string)
	if !slices.Contains(Engines, name) {
		return "", fmt.Errorf("ENGINE must be one of %s, not %v", strings.Join(Engines, ", "), v)
	}
	return name, nil
}
