package worker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/worker/engine"
)

// checkingEngine is an engine with a check, which records its call.
type checkingEngine struct {
	fakeEngine
	err     error
	checked *[]string
	name    string
}

func (c *checkingEngine) Check(_ context.Context, dir string) error {
	*c.checked = append(*c.checked, c.name+" in "+dir)
	return c.err
}

func TestCheck(t *testing.T) {
	var checked []string
	missing := errors.New("rootlesskit is not installed")
	engines := map[string]engine.Engine{
		"a": &checkingEngine{name: "a", checked: &checked},
		"b": &fakeEngine{},
		"c": &checkingEngine{name: "c", checked: &checked, err: missing},
	}
	err := Check(context.Background(), Config{Engines: engines}, "/scratch")
	if !errors.Is(err, missing) || err.Error() != "worker check: rootlesskit is not installed" {
		t.Errorf("Check = %v, want the failing engine's error", err)
	}
	if want := []string{"a in /scratch", "c in /scratch"}; !slices.Equal(checked, want) {
		t.Errorf("checked %v, want %v", checked, want)
	}
	delete(engines, "c")
	if err := Check(context.Background(), Config{Engines: engines}, "/scratch"); err != nil {
		t.Errorf("Check with passing engines = %v", err)
	}
}

// A worker given no engines makes those the binary carries, from its
// environment.
func TestEnginesFromRegistry(t *testing.T) {
	var got engine.Options
	engine.Register("worker-test", func(opts engine.Options) (engine.Engine, error) {
		got = opts
		return &fakeEngine{}, nil
	})
	t.Setenv("BERTH_WORKER_TEST_SETTING", "set")
	cfg := Config{}
	cfg.defaults()
	if err := cfg.makeEngines(); err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Engines["worker-test"]; !ok {
		t.Errorf("engines = %v, want the registered one", cfg.Engines)
	}
	if got.Logger != cfg.Logger || got.Getenv("BERTH_WORKER_TEST_SETTING") != "set" {
		t.Errorf("the factory got %+v, want the worker's logger and environment", got)
	}
}

// BERTH_ENGINES limits the engines a worker makes, so `worker --check`
// checks only those; a name the binary lacks is refused, naming what it
// carries.
func TestCheckOnlyNamedEngines(t *testing.T) {
	var checked []string
	engine.Register("worker-test-named", func(engine.Options) (engine.Engine, error) {
		return &checkingEngine{name: "named", checked: &checked}, nil
	})
	engine.Register("worker-test-unnamed", func(engine.Options) (engine.Engine, error) {
		return &checkingEngine{name: "unnamed", checked: &checked, err: errors.New("buildkitd is not installed")}, nil
	})
	t.Setenv(pb.EnginesEnv, "worker-test-named")
	if err := Check(context.Background(), Config{}, "/scratch"); err != nil {
		t.Errorf("Check with %s=worker-test-named = %v, want only that engine checked", pb.EnginesEnv, err)
	}
	if want := []string{"named in /scratch"}; !slices.Equal(checked, want) {
		t.Errorf("checked %v, want %v", checked, want)
	}
	t.Setenv(pb.EnginesEnv, "worker-test-named, kaniko")
	err := Check(context.Background(), Config{}, "/scratch")
	if !errors.Is(err, engine.ErrUnknown) || !strings.Contains(err.Error(), pb.EnginesEnv) ||
		!strings.Contains(err.Error(), `"kaniko"`) || !strings.Contains(err.Error(), "worker-test-named, worker-test-unnamed") {
		t.Errorf("Check with an unknown engine = %v, want an error naming %s, the engine and what the binary carries", err, pb.EnginesEnv)
	}
}
