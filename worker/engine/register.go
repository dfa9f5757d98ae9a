package engine

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/berth-dev/berth/internal/plugin"
)

// Options are what the worker gives every engine it makes.
type Options struct {
	// Logger receives the engine's own diagnostics.
	Logger *slog.Logger
	// Getenv reads the worker's environment, where the executor hands
	// down the engine's settings (os.Getenv in `berth worker`).
	Getenv func(key string) string
}

// Factory makes an engine. It does no I/O: a worker makes every engine it
// carries and uses the one its job names.
type Factory func(opts Options) (Engine, error)

var engines = plugin.NewTable[Factory]("build engine")

// Register makes an engine available under name, the name a job gives
// (Engine.Name). An engine's package calls it from an init function; it
// panics when f is nil or name is taken.
func Register(name string, f Factory) { engines.Register(name, f) }

// All makes one engine of each registered, by name.
func All(opts Options) (map[string]Engine, error) {
	all := map[string]Engine{}
	for _, name := range engines.Names() {
		f, _ := engines.Lookup(name)
		e, err := f(opts)
		if err != nil {
			return nil, fmt.Errorf("build engine %s: %w", name, err)
		}
		all[name] = e
	}
	return all, nil
}

// Checker is implemented by engines that need something of the machine to
// build as they must (buildah: its sandbox). `berth worker --check` runs
// Check where a build would run, and the executor refuses to start when it
// fails; dir is scratch space of the caller's. The error names what is
// missing.
type Checker interface {
	Check(ctx context.Context, dir string) error
}
