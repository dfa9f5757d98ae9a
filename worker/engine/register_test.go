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

// All makes each registered engine with the worker's options; the second
// test registers a factory that fails, so they run in this order.
func TestAll(t *testing.T) {
	Register("test-engine", func(opts Options) (Engine, error) { return &namedEngine{name: "test-engine", opts: opts}, nil })
	log := slog.New(slog.DiscardHandler)
	all, err := All(Options{Logger: log, Getenv: func(k string) string { return "value of " + k }})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := all["test-engine"].(*namedEngine)
	if len(all) != 1 || !ok {
		t.Fatalf("All() = %v", all)
	}
	if e.opts.Logger != log || e.opts.Getenv("X") != "value of X" {
		t.Errorf("the factory got %+v", e.opts)
	}
}

func TestAllFails(t *testing.T) {
	Register("test-broken", func(Options) (Engine, error) { return nil, errors.New("bad setting") })
	if _, err := All(Options{}); err == nil || !strings.Contains(err.Error(), "test-broken: bad setting") {
		t.Errorf("All with a failing factory = %v, want its error naming the engine", err)
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
