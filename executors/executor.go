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
)

// ErrUnknownWorker reports a Stop of a worker the executor does not know
// (already gone, or never started by this executor).
var ErrUnknownWorker = errors.New("executors: unknown worker")

// WorkerSpec is what a worker needs to find the build manager.
type WorkerSpec struct {
	// BuildID identifies the build; executors use it to name things.
	BuildID string
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

// Exited is optionally implemented by executors that learn when a worker
// exits on its own (a local child process). The channel receives the
// execution ID of every worker that exits without a Stop; the build
// manager uses it to fail the attempt over at once instead of waiting for
// the lease to lapse.
type Exited interface {
	Exited() <-chan string
}
