// Package buildmanagertest drives a real build manager from tests: an
// executor whose workers are goroutines speaking the real workerpb gRPC
// protocol over loopback, each doing what the test's script says, a wait
// for a build to reach a state, and the embedded Redis the manager's queue
// runs on. The build manager's own tests and the API's use it; it imports
// no part of berth but the manager's wire contract and queue, so that the
// manager's in-package tests can import it too.
package buildmanagertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berth-dev/berth/buildmanager/queue"
	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/executors"
	"github.com/berth-dev/berth/internal/store"
)

// Script is what one fake worker does once it has registered. Its context
// ends when the executor stops the worker; the worker has ended when the
// script returns.
type Script func(ctx context.Context, w *Worker)

// Executor starts fake workers that run a Script. It reports a worker that
// ends without being stopped on Events, as a real executor does, and Stop
// returns once the worker has ended.
type Executor struct {
	name string

	mu      sync.Mutex
	script  Script
	failing bool
	next    int
	workers map[string]*runningWorker
	starts  map[string]int // by build
	stopped map[string]bool
	events  chan executors.Event

	running, peak atomic.Int32
	// sentAt records when each log line was sent, by message.
	sentAt sync.Map
}

// runningWorker is one started fake worker.
type runningWorker struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the worker has ended
}

var (
	_ executors.Executor = (*Executor)(nil)
	_ executors.Reporter = (*Executor)(nil)
)

// NewExecutor returns an executor called name whose workers run script.
func NewExecutor(name string, script Script) *Executor {
	return &Executor{name: name, script: script, workers: map[string]*runningWorker{},
		starts: map[string]int{}, stopped: map[string]bool{}, events: make(chan executors.Event, 100)}
}

func (e *Executor) Name() string                   { return e.name }
func (e *Executor) Events() <-chan executors.Event { return e.events }

// Report sends ev on Events, as a real executor does when it learns
// something about a worker (a pod that waits for a node, an image that
// cannot be pulled).
func (e *Executor) Report(ev executors.Event) { e.events <- ev }

func (e *Executor) Running(context.Context) (int, error) {
	return int(e.running.Load()), nil
}

func (e *Executor) Start(_ context.Context, spec executors.WorkerSpec) (string, error) {
	e.mu.Lock()
	if e.failing {
		e.mu.Unlock()
		return "", fmt.Errorf("executor %s is down", e.name)
	}
	e.next++
	id := fmt.Sprintf("%s-%d", e.name, e.next)
	e.starts[spec.BuildID]++
	attempt := e.starts[spec.BuildID]
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{cancel: cancel, done: make(chan struct{})}
	e.workers[id] = rw
	script := e.script
	e.mu.Unlock()
	n := e.running.Add(1)
	for p := e.peak.Load(); n > p && !e.peak.CompareAndSwap(p, n); p = e.peak.Load() {
	}
	go func() {
		defer close(rw.done)
		defer e.running.Add(-1)
		e.work(ctx, spec, attempt, script)
		cancel()
		e.mu.Lock()
		stopped := e.stopped[id]
		delete(e.workers, id)
		e.mu.Unlock()
		if !stopped {
			e.events <- executors.Event{ExecutionID: id, Ended: true}
		}
	}()
	return id, nil
}

// Stop ends the worker and returns once it has, as the Executor contract
// says: a worker still counted after Stop would break the manager's
// worker bound.
func (e *Executor) Stop(ctx context.Context, id string) error {
	e.mu.Lock()
	rw, ok := e.workers[id]
	if !ok {
		stopped := e.stopped[id]
		e.mu.Unlock()
		if stopped {
			return nil
		}
		return executors.ErrUnknownWorker
	}
	e.stopped[id] = true
	e.mu.Unlock()
	rw.cancel()
	select {
	case <-rw.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetScript makes the workers started from now on run script.
func (e *Executor) SetScript(script Script) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.script = script
}

// SetFailing makes Start fail (the executor is down) or work again.
func (e *Executor) SetFailing(failing bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failing = failing
}

// Starts is how many workers were started for buildID.
func (e *Executor) Starts(buildID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.starts[buildID]
}

// WasStopped reports whether the worker id was stopped through Stop.
func (e *Executor) WasStopped(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stopped[id]
}

// Peak is the most workers that ran at once.
func (e *Executor) Peak() int { return int(e.peak.Load()) }

// SentAt is when a worker sent the log line message.
func (e *Executor) SentAt(message string) (time.Time, bool) {
	at, ok := e.sentAt.Load(message)
	if !ok {
		return time.Time{}, false
	}
	return at.(time.Time), true
}

// work connects to the manager, registers and runs script.
func (e *Executor) work(ctx context.Context, spec executors.WorkerSpec, attempt int, script Script) {
	conn, err := grpc.NewClient(spec.ManagerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return
	}
	defer conn.Close()
	c := workerpb.NewBuildManagerClient(conn)
	job, err := c.Register(ctx, &workerpb.RegisterRequest{RegistrationToken: spec.RegistrationToken, WorkerInfo: e.name})
	if err != nil {
		return
	}
	script(ctx, &Worker{BuildID: spec.BuildID, Attempt: attempt, Job: job, c: c, sentAt: &e.sentAt})
}

// Worker is one registered fake worker: the calls a real worker makes, in
// the order the script makes them.
type Worker struct {
	BuildID string
	// Attempt counts this executor's starts of the build, from 1.
	Attempt int
	// Job is what Register answered.
	Job *workerpb.Job

	c       workerpb.BuildManagerClient
	stream  grpc.BidiStreamingClient[workerpb.LogBatch, workerpb.LogAck]
	logSeq  int64 // the last log line's sequence number
	phaseNo int64 // the last phase's sequence number
	sentAt  *sync.Map
}

// HeartbeatInterval is how often Heartbeat beats: well inside the lease
// the tests give a worker.
const HeartbeatInterval = 100 * time.Millisecond

// Heartbeat beats in the background until ctx ends or the manager answers
// stop.
func (w *Worker) Heartbeat(ctx context.Context) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(HeartbeatInterval):
			}
			r, err := w.c.Heartbeat(ctx, &workerpb.HeartbeatRequest{JobToken: w.Job.GetJobToken()})
			if err == nil && r.GetStop() {
				return
			}
		}
	}()
}

// Phase reports each of phases in turn.
func (w *Worker) Phase(ctx context.Context, phases ...workerpb.Phase) error {
	for _, p := range phases {
		w.phaseNo++
		if _, err := w.c.SetPhase(ctx, &workerpb.SetPhaseRequest{JobToken: w.Job.GetJobToken(), SequenceNumber: w.phaseNo, Phase: p}); err != nil {
			return err
		}
	}
	return nil
}

// Log sends msgs as one batch of lines of type typ and waits for the
// manager to acknowledge the last of them.
func (w *Worker) Log(ctx context.Context, typ workerpb.LogType, msgs ...string) error {
	if w.stream == nil {
		s, err := w.c.StreamLog(ctx)
		if err != nil {
			return err
		}
		w.stream = s
	}
	batch := &workerpb.LogBatch{JobToken: w.Job.GetJobToken()}
	for _, m := range msgs {
		w.logSeq++
		batch.Entries = append(batch.Entries, &workerpb.LogEntry{SequenceNumber: w.logSeq, Message: m, Type: typ, TimeUnixNano: time.Now().UnixNano()})
		w.sentAt.Store(m, time.Now())
	}
	if err := w.stream.Send(batch); err != nil {
		return err
	}
	ack, err := w.stream.Recv()
	if err != nil {
		return err
	}
	if got := ack.GetSequenceNumber(); got != w.logSeq {
		return fmt.Errorf("log acknowledged up to %d, sent up to %d", got, w.logSeq)
	}
	return nil
}

// EndLog closes the log stream: the worker will print no more.
func (w *Worker) EndLog() error {
	if w.stream == nil {
		return nil
	}
	return w.stream.CloseSend()
}

// Succeed ends the log and reports the build pushed with digests (by tag).
func (w *Worker) Succeed(ctx context.Context, digests map[string]string) error {
	return w.finish(ctx, &workerpb.FinishRequest{Result: &workerpb.FinishRequest_Success{Success: &workerpb.Success{Digests: digests}}})
}

// Fail ends the log and reports the build failed with be.
func (w *Worker) Fail(ctx context.Context, be *workerpb.BuildError) error {
	return w.finish(ctx, &workerpb.FinishRequest{Result: &workerpb.FinishRequest_Error{Error: be}})
}

func (w *Worker) finish(ctx context.Context, req *workerpb.FinishRequest) error {
	endErr := w.EndLog()
	req.JobToken, req.LastLogSequence = w.Job.GetJobToken(), w.logSeq
	_, err := w.c.Finish(ctx, req)
	return errors.Join(endErr, err)
}

// Builds reads builds by ID: the Manager does.
type Builds interface {
	Get(ctx context.Context, id string) (*store.Build, error)
}

// WaitBuild waits until build id satisfies done, which says what it waits
// for, and returns it; it fails the test when within passes first.
func WaitBuild(t testing.TB, builds Builds, id string, within time.Duration, what string, done func(*store.Build) bool) *store.Build {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := builds.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if done(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s is %s, not %s, after %s", id, b.Phase, what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Redis starts the embedded Redis the queue runs on without a server of
// its own, until the test ends.
func Redis(t testing.TB) redis.UniversalClient {
	t.Helper()
	mr, err := queue.StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mr.Close)
	rc := mr.Client()
	t.Cleanup(func() { rc.Close() })
	return rc
}
