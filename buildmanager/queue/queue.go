// Package queue delivers builds to the build manager's scheduler. The
// database is the source of truth for builds; the queue only says "run this
// build now", at most Concurrency at a time per process, and redelivers a
// build whose handler failed or whose process died.
package queue

import (
	"context"
	"errors"
	"time"
)

// ErrNotQueued reports a Remove of a build that is not waiting in the queue
// (absent, or already being handled).
var ErrNotQueued = errors.New("queue: build not queued")

// Task asks for one build to run.
type Task struct {
	BuildID string
	// Priority > 0 runs before 0, which runs before < 0.
	Priority int
	// Timeout bounds one delivery: the handler's context ends after it.
	Timeout time.Duration
	// Delay postpones the first delivery.
	Delay time.Duration
}

// Handler handles one delivery of a build. Returning nil ends the task;
// returning an error redelivers it after the queue's retry delay, while
// retries remain.
type Handler func(ctx context.Context, buildID string) error

// Queue is the build queue.
//
// Contract (checked by the shared tests for every implementation):
//   - Enqueue is idempotent per build ID: a build already queued, waiting
//     for a retry or being handled is not queued twice, and Enqueue
//     returns nil.
//   - Remove takes a build that is waiting (not being handled) out of the
//     queue; ErrNotQueued otherwise.
//   - Missing returns those of buildIDs the queue does not hold (neither
//     queued, nor waiting for a retry, nor being handled), in the order
//     given: the builds Enqueue would queue. It answers for many builds at
//     once in a number of round trips that does not grow with theirs (for
//     Asynq, one per priority queue), so that reconciling a page of builds
//     costs one call, not one per build.
//   - Run delivers tasks to h until ctx ends, never more than the
//     configured concurrency at once in this process, higher priorities
//     first; it returns after in-flight handlers returned.
type Queue interface {
	Enqueue(ctx context.Context, t Task) error
	Remove(ctx context.Context, buildID string) error
	Missing(ctx context.Context, buildIDs []string) ([]string, error)
	Run(ctx context.Context, h Handler) error
}
