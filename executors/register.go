package executors

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/berth-dev/berth/internal/plugin"
)

// Deps is what the server gives every executor it makes, beside the
// executor's own EXECUTORS entry: settings of the server, not of one
// executor. How workers reach the build manager is not here: it comes with
// each Start (WorkerSpec), as the manager's address may differ per start.
type Deps struct {
	// DataDir is the server's --data-dir. An executor keeps nothing in it,
	// but may derive names from it that two servers on one machine never
	// share.
	DataDir string
	// WorkerEnv is environment every worker must get: the server's
	// outbound network policy and the build sandbox's network exceptions.
	// It wins over environment the executor's entry sets. Shared by every
	// executor: read it, do not change it.
	WorkerEnv map[string]string
	// MaxWorkers is ALLOWED_WORKER_COUNT: the most workers the server runs
	// at once, across its executors.
	MaxWorkers int
	// Logger receives the executor's events.
	Logger *slog.Logger
}

// Factory makes an executor from its EXECUTORS entry: name is the entry's
// NAME (its kind when it has none), params the whole entry, whose keys the
// executor reads itself (the build manager's scheduling keys among them,
// to be ignored). A factory may check that its workers can run (the local
// executor runs the worker's own check) and fails when they cannot; ctx
// bounds that.
type Factory func(ctx context.Context, name string, params map[string]any, deps Deps) (Executor, error)

var kinds = plugin.NewTable[Factory]("executor kind")

// Register makes an executor available under kind, the EXECUTOR value of
// config.yaml's EXECUTORS entries. An executor's package calls it from an
// init function; it panics when f is nil or kind is taken.
func Register(kind string, f Factory) { kinds.Register(kind, f) }

// New makes the executor of kind that the EXECUTORS entry named name
// describes with params.
func New(ctx context.Context, kind, name string, params map[string]any, deps Deps) (Executor, error) {
	f, ok := kinds.Lookup(kind)
	if !ok {
		return nil, fmt.Errorf("kind %q is not supported (built in: %s)", kind, strings.Join(kinds.Names(), ", "))
	}
	return f(ctx, name, params, deps)
}

// Closer is implemented by executors that hold something of their own (a
// lock, a pool of users, a client): the server closes each after its build
// manager stopped, and Close stops the workers still running.
type Closer interface {
	Close(ctx context.Context) error
}
