// Package executors defines how the build manager gets a worker started
// somewhere: a local child process, a Kubernetes Job, a VM. An executor only
// starts and stops workers; the worker itself then dials the build manager
// over gRPC with the registration token it was given. Every executor passes
// the shared suite in executortest and registers itself by kind (Register)
// from its package's init.
package executors

import (
	"context"
	"errors"
	"time"
)

// ErrUnknownWorker reports a Stop of a worker the executor does not know
// (already gone, or never started by this executor).
var ErrUnknownWorker = errors.New("executors: unknown worker")

// WorkerSpec is what a worker needs to find the build manager.
type WorkerSpec struct {
	// BuildID identifies the build; executors use it to name things.
	BuildID string
	// Attempt counts the build's attempts from 1; executors label with it.
	Attempt int
	// Lifetime bounds the worker's life: the build's setup and time limit.
	// The build manager stops a worker that outlives it; an executor that
	// can have the platform enforce it too (a Job's activeDeadlineSeconds)
	// does. Zero: no bound beyond the executor's own.
	Lifetime time.Duration
	// RegistrationToken is the short-lived token the worker registers with.
	RegistrationToken string
	// ManagerAddr is the build manager's gRPC address (host:port) as seen
	// from where the worker runs.
	ManagerAddr string
	// ManagerInsecure means the manager speaks plain-text gRPC (h2c).
	ManagerInsecure bool
	// ManagerCAPEM is the manager's CA when it uses a private CA.
	ManagerCAPEM string
}

// Executor starts and stops build workers.
//
// Contract (checked by executortest.Run for every implementation):
//   - Start returns once the worker has been launched (not once it has
//     registered) and returns an execution ID that Stop accepts. A Start
//     that fails leaves nothing running.
//   - Stop ends the worker and releases what the executor made for it; it
//     is idempotent after the worker exited on its own, and returns
//     ErrUnknownWorker for an ID it never issued.
//   - Running counts workers started and not yet stopped or exited.
//   - Methods are safe for concurrent use; ctx bounds the call, not the
//     worker's life.
type Executor interface {
	// Name is the configured name of this executor (unique per server).
	Name() string
	Start(ctx context.Context, spec WorkerSpec) (executionID string, err error)
	Stop(ctx context.Context, executionID string) error
	Running(ctx context.Context) (int, error)
}

// Event is news of a worker that its executor learned by itself, not
// through a Stop.
type Event struct {
	ExecutionID string
	// Ended is true when the worker is gone, or will never start (it
	// exited, was killed, its pod was evicted or its image cannot be
	// pulled): the attempt is over. False when the worker is still on its
	// way and Reason is news for the build log (a pod waiting for a node).
	Ended bool
	// Reason says what happened in words a build log reader understands;
	// empty for a worker that merely exited.
	Reason string
}

// Reporter is implemented by executors that learn what happens to their
// workers (a local child process exits; a pod cannot be scheduled, cannot
// pull its image, is OOM-killed). The build manager writes each Reason into
// the build's log at once and, when Ended, fails the attempt over instead of
// waiting for the lease to lapse. Events of workers that were stopped are
// not reported.
type Reporter interface {
	Events() <-chan Event
}

// Worker is a worker an executor knows of.
type Worker struct {
	ExecutionID string
	BuildID     string
}

// Lister is implemented by executors whose workers outlive the server that
// started them (a Job in a cluster). At start the build manager stops
// those whose build has ended, is unknown, or has moved on to another
// worker.
type Lister interface {
	Workers(ctx context.Context) ([]Worker, error)
}
