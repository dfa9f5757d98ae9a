package executortest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/executors"
)

// Options adapts the suite to an executor.
type Options struct {
	// ListenAddr is where the fake build manager listens; "127.0.0.1:0"
	// when empty.
	ListenAddr string
	// AdvertiseAddr turns the manager's listen address into the one given
	// to workers (a pod dials the node, not loopback); identity when nil.
	AdvertiseAddr func(listenAddr string) string
	// RegisterTimeout bounds the time from Start to Register (60 s when 0).
	RegisterTimeout time.Duration
	// EndTimeout bounds a Stop and the wait for a worker to exit on its
	// own (60 s when 0).
	EndTimeout time.Duration
	// Concurrency is how many workers the concurrent test starts (3 when 0).
	Concurrency int
	// Track is called once a worker registered. It returns a check that
	// the suite runs once the executor is done with the worker (Stop
	// returned, also after the worker exited on its own); the check
	// names what is left behind (processes, directories, cluster objects)
	// or returns nil. Nil skips these checks.
	Track func(t *testing.T, ex executors.Executor, executionID string) (leftovers func() error)
}

func (o *Options) defaults() {
	if o.AdvertiseAddr == nil {
		o.AdvertiseAddr = func(a string) string { return a }
	}
	if o.RegisterTimeout <= 0 {
		o.RegisterTimeout = 60 * time.Second
	}
	if o.EndTimeout <= 0 {
		o.EndTimeout = 60 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 3
	}
}

// Run checks the executors.Executor contract. newExecutor makes a fresh
// executor for each subtest (and arranges its own cleanup); the workers it
// starts must be real workers that speak workerpb.
func Run(t *testing.T, newExecutor func(t *testing.T) executors.Executor, opts Options) {
	opts.defaults()
	s := &suite{opts: opts, newExecutor: newExecutor}
	t.Run("StartRegisterStop", s.startRegisterStop)
	t.Run("StopUnknown", s.stopUnknown)
	t.Run("InvalidSpec", s.invalidSpec)
	t.Run("ExitOnItsOwn", s.exitOnItsOwn)
	t.Run("ConcurrentStarts", s.concurrentStarts)
}

type suite struct {
	opts        Options
	newExecutor func(t *testing.T) executors.Executor
}

// env is one subtest's executor and manager.
type env struct {
	t  *testing.T
	ex executors.Executor
	m  *Manager
	s  *suite
}

func (s *suite) env(t *testing.T) *env {
	m := NewManager(t, s.opts.ListenAddr)
	e := &env{t: t, ex: s.newExecutor(t), m: m, s: s}
	t.Cleanup(func() {
		if u := m.Unexpected(); len(u) > 0 {
			t.Errorf("workers registered with tokens that were never handed out: %q", u)
		}
	})
	return e
}

func (e *env) spec(buildID, token string) executors.WorkerSpec {
	return executors.WorkerSpec{
		BuildID:           buildID,
		RegistrationToken: token,
		ManagerAddr:       e.s.opts.AdvertiseAddr(e.m.Addr()),
		ManagerInsecure:   true,
	}
}

func (e *env) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	e.t.Cleanup(cancel)
	return ctx
}

// started is a worker that registered.
type started struct {
	id, token string
	leftovers func() error
}

// start starts a worker and waits for its registration with the token it
// was given. Safe to call from several goroutines.
func (e *env) start(buildID string) (started, error) {
	tok := e.m.Expect(buildID)
	id, err := e.ex.Start(e.ctx(e.s.opts.RegisterTimeout), e.spec(buildID, tok))
	if err != nil {
		return started{}, fmt.Errorf("executor Start: %w", err)
	}
	if id == "" {
		return started{}, errors.New("executor Start returned an empty execution ID")
	}
	begin := time.Now()
	if _, err := e.m.WaitRegistered(e.ctx(e.s.opts.RegisterTimeout), tok); err != nil {
		return started{id: id}, fmt.Errorf("worker %s did not register with its token within %v: %w", id, e.s.opts.RegisterTimeout, err)
	}
	e.t.Logf("worker %s registered %v after Start", id, time.Since(begin).Round(time.Millisecond))
	st := started{id: id, token: tok}
	if e.s.opts.Track != nil {
		st.leftovers = e.s.opts.Track(e.t, e.ex, id)
	}
	return st, nil
}

func (e *env) running() int {
	e.t.Helper()
	n, err := e.ex.Running(e.ctx(10 * time.Second))
	if err != nil {
		e.t.Fatalf("Running: %v", err)
	}
	return n
}

func (e *env) checkGone(st started) {
	e.t.Helper()
	if st.leftovers == nil {
		return
	}
	if err := st.leftovers(); err != nil {
		e.t.Errorf("worker %s left something behind: %v", st.id, err)
	}
}

func (s *suite) startRegisterStop(t *testing.T) {
	e := s.env(t)
	if n := e.running(); n != 0 {
		t.Fatalf("Running before any Start = %d, want 0", n)
	}
	st, err := e.start("build-one")
	if err != nil {
		if st.id != "" {
			_ = e.ex.Stop(e.ctx(s.opts.EndTimeout), st.id)
		}
		t.Fatal(err)
	}
	if n := e.running(); n != 1 {
		t.Errorf("Running with one worker = %d, want 1", n)
	}
	if err := e.ex.Stop(e.ctx(s.opts.EndTimeout), st.id); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if n := e.running(); n != 0 {
		t.Errorf("Running after Stop = %d, want 0", n)
	}
	e.checkGone(st)
	if regs := e.m.Registrations(st.token); len(regs) != 1 {
		t.Errorf("worker registered %d times, want once", len(regs))
	}
	if err := e.ex.Stop(e.ctx(s.opts.EndTimeout), st.id); err != nil {
		t.Errorf("second Stop of %s: %v, want nil", st.id, err)
	}
	if x, ok := e.ex.(executors.Reporter); ok {
		select {
		case ev := <-x.Events():
			t.Errorf("Events reported %+v after the worker was stopped", ev)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (s *suite) stopUnknown(t *testing.T) {
	e := s.env(t)
	err := e.ex.Stop(e.ctx(s.opts.EndTimeout), "no-such-execution")
	if !errors.Is(err, executors.ErrUnknownWorker) {
		t.Fatalf("Stop of an unknown ID = %v, want ErrUnknownWorker", err)
	}
}

func (s *suite) invalidSpec(t *testing.T) {
	e := s.env(t)
	for name, spec := range map[string]executors.WorkerSpec{
		"no token":   {BuildID: "b", ManagerAddr: e.m.Addr(), ManagerInsecure: true},
		"no manager": {BuildID: "b", RegistrationToken: e.m.Expect("b"), ManagerInsecure: true},
	} {
		if id, err := e.ex.Start(e.ctx(s.opts.RegisterTimeout), spec); err == nil {
			t.Errorf("Start with %s = %q, nil; want an error", name, id)
			_ = e.ex.Stop(e.ctx(s.opts.EndTimeout), id)
		}
	}
	if n := e.running(); n != 0 {
		t.Errorf("Running after failed Starts = %d, want 0", n)
	}
}

func (s *suite) exitOnItsOwn(t *testing.T) {
	e := s.env(t)
	st, err := e.start("build-exits")
	if err != nil {
		if st.id != "" {
			_ = e.ex.Stop(e.ctx(s.opts.EndTimeout), st.id)
		}
		t.Fatal(err)
	}
	e.m.Release(st.token)
	deadline := time.Now().Add(s.opts.EndTimeout)
	if x, ok := e.ex.(executors.Reporter); ok {
		ended := false
		for !ended {
			select {
			case ev := <-x.Events():
				if ev.ExecutionID != st.id {
					t.Errorf("Events reported %+v, want only events of %q", ev, st.id)
				}
				ended = ev.Ended
			case <-time.After(s.opts.EndTimeout):
				t.Fatalf("Events did not report the end of %s within %v of the worker being told to stop", st.id, s.opts.EndTimeout)
			}
		}
		if n := e.running(); n != 0 {
			t.Errorf("Running after Events reported the worker's end = %d, want 0", n)
		}
	} else {
		for e.running() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("worker %s still counted as running %v after it was told to stop", st.id, s.opts.EndTimeout)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The build manager stops every worker whose end it learned of; an
	// executor may keep a finished worker's records until then (a Job
	// kept for inspection).
	if err := e.ex.Stop(e.ctx(s.opts.EndTimeout), st.id); err != nil {
		t.Errorf("Stop after the worker exited: %v, want nil", err)
	}
	e.checkGone(st)
}

func (s *suite) concurrentStarts(t *testing.T) {
	e := s.env(t)
	n := s.opts.Concurrency
	workers := make([]started, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { workers[i], errs[i] = e.start(fmt.Sprintf("build-concurrent-%d", i)) })
	}
	wg.Wait()
	stopAll := func() {
		var wg sync.WaitGroup
		for i, w := range workers {
			if w.id == "" {
				continue
			}
			wg.Go(func() {
				if err := e.ex.Stop(e.ctx(s.opts.EndTimeout), w.id); err != nil {
					t.Errorf("Stop worker %d (%s): %v", i, w.id, err)
				}
			})
		}
		wg.Wait()
	}
	if err := errors.Join(errs...); err != nil {
		stopAll()
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, w := range workers {
		if seen[w.id] {
			t.Errorf("execution ID %s issued twice", w.id)
		}
		seen[w.id] = true
		if regs := e.m.Registrations(w.token); len(regs) != 1 {
			t.Errorf("worker %s registered %d times, want once", w.id, len(regs))
		}
	}
	if got := e.running(); got != n {
		t.Errorf("Running with %d workers = %d", n, got)
	}
	stopAll()
	if got := e.running(); got != 0 {
		t.Errorf("Running after stopping all = %d, want 0", got)
	}
	for _, w := range workers {
		e.checkGone(w)
	}
}
