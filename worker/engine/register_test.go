package engine

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

type namedEngine struct {
	name string
	opts Options
}

func (e *namedEngine) Name() string { return e.name }

func (e *namedEngine) Build(context.Context, Request, LogSink) (Result, error) {
	return Result{}, errors.New("not a real engine")
}

// Make makes each registered engine with the worker's options; the tests
// after it register a factory that fails, so they run in this order.
func TestMakeAll(t *testing.T) {
	Register("test-engine", func(opts Options) (Engine, error) { return &namedEngine{name: "test-engine", opts: opts}, nil })
	log := slog.New(slog.DiscardHandler)
	all, err := Make(Options{Logger: log, Getenv: func(k string) string { return "value of " + k }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := all["test-engine"].(*namedEngine)
	if len(all) != 1 || !ok {
		t.Fatalf("Make(nil) = %v", all)
	}
	if e.opts.Logger != log || e.opts.Getenv("X") != "value of X" {
		t.Errorf("the factory got %+v", e.opts)
	}
}

// Make with names makes only those: a failing factory not named is never
// called, and a name not registered is refused with what is carried.
func TestMakeNamed(t *testing.T) {
	Register("test-other", func(opts Options) (Engine, error) { return &namedEngine{name: "test-other"}, nil })
	Register("test-unwanted", func(Options) (Engine, error) { return nil, errors.New("made although not named") })
	some, err := Make(Options{}, []string{"test-other"})
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := some["test-other"]; len(some) != 1 || !ok || e.Name() != "test-other" {
		t.Errorf("Make(test-other) = %v, want only test-other", some)
	}
	_, err = Make(Options{}, []string{"test-other", "kaniko"})
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), `"kaniko"`) ||
		!strings.Contains(err.Error(), "test-other, test-unwanted") {
		t.Errorf("Make with an unknown name = %v, want ErrUnknown naming it and what is carried", err)
	}
}

func TestMakeFails(t *testing.T) {
	Register("test-broken", func(Options) (Engine, error) { return nil, errors.New("bad setting") })
	if _, err := Make(Options{}, nil); err == nil || !strings.Contains(err.Error(), "test-broken: bad setting") {
		t.Errorf("Make with a failing factory = %v, want its error naming the engine", err)
	}
}

func TestRegisterPanics(t *testing.T) {
	Register("test-dup", func(Options) (Engine, error) { return nil, errors.New("never made") })
	for name, register := range map[string]func(){
		"duplicate":   func() { Register("test-dup", func(Options) (Engine, error) { return nil, nil }) },
		"nil factory": func() { Register("test-nil", nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Register did not panic")
				}
			}()
			register()
		})
	}
}
