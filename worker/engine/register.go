package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

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

// Factory makes an engine. It does no I/O: a worker makes every engine its
// executor lets it use (Make) and uses the one its job names.
type Factory func(opts Options) (Engine, error)

var engines = plugin.NewTable[Factory]("build engine")

// Register makes an engine available under name, the name a job gives
// (Engine.Name). An engine's package calls it from an init function; it
// panics when f is nil or name is taken.
func Register(name string, f Factory) { engines.Register(name, f) }

// ErrUnknown is Make's error for a name no engine registered.
var ErrUnknown = errors.New("no build engine")

// Make makes one engine of each name in names, or of each registered when
// names is empty, by name. A name not registered is an error naming those
// the binary carries.
func Make(opts Options, names []string) (map[string]Engine, error) {
	carried := engines.Names()
	if len(names) == 0 {
		names = carried
	}
	all := map[string]Engine{}
	for _, name := range names {
		f, ok := engines.Lookup(name)
		if !ok {
			return nil, fmt.Errorf("%w %q: this binary carries %s", ErrUnknown, name, strings.Join(carried, ", "))
		}
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
