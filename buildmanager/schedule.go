package buildmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/berth-dev/berth/executors"
	"github.com/berth-dev/berth/internal/logctx"
	"github.com/berth-dev/berth/internal/store"
)

// errRetry asks the queue to deliver the build again after its retry
// delay: the attempt failed and the build went back to waiting.
var errRetry = errors.New("build attempt failed; retrying")

// handle is the queue handler: it runs one attempt of a waiting build, or
// supervises a running build whose previous handler died with its server,
// until the attempt ends. It holds one of ALLOWED_WORKER_COUNT slots
// throughout.
func (m *Manager) handle(ctx context.Context, id string) error {
	ctx = logctx.With(ctx, slog.String("build_id", id))
	for {
		b, err := m.st.GetBuild(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil // its repository was deleted
		}
		if err != nil {
			return err
		}
		switch {
		case b.Phase.Terminal():
			return nil
		case b.Phase.Running():
			ctx := logctx.With(ctx, slog.Int("attempt", b.Attempts))
			m.log.InfoContext(ctx, "supervising a build left running by an earlier server")
			var ex executors.Executor
			for _, e := range m.o.Executors {
				if e.Name() == b.ExecutorName {
					ex = e.Executor
				}
			}
			if ex != nil && b.ExecutionID != "" {
				// What the executor reports of the worker reaches this
				// supervisor too.
				m.mu.Lock()
				m.byExecution[b.ExecutorName+"\x00"+b.ExecutionID] = b.ID
				m.mu.Unlock()
			}
			return m.supervise(ctx, b.ID, b.Attempts, ex, b.ExecutionID, time.Now().Add(m.o.TimeLimit))
		}
		err = m.attempt(ctx, b)
		if errors.Is(err, store.ErrStale) {
			continue // cancelled or changed meanwhile: look again
		}
		return err
	}
}

// attempt starts a worker for waiting build b and supervises it.
func (m *Manager) attempt(ctx context.Context, b *store.Build) error {
	attempt := b.Attempts + 1
	ctx = logctx.With(ctx, slog.Int("attempt", attempt))
	now := time.Now()
	b.Phase, b.Attempts = store.PhaseBuildScheduled, attempt
	if b.StartedAt.IsZero() {
		b.StartedAt = now
	}
	b.ExecutorName, b.ExecutionID, b.LeaseExpiry = "", "", now.Add(m.o.SetupTime)
	if err := m.st.UpdateBuild(ctx, b); err != nil {
		return err
	}
	if attempt == 1 {
		m.metrics.queueTime.Observe(now.Sub(b.CreatedAt).Seconds())
	}
	a := &activeAttempt{wake: make(chan struct{}, 1)}
	m.mu.Lock()
	m.active[b.ID] = a
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.active[b.ID] == a {
			delete(m.active, b.ID)
		}
		m.mu.Unlock()
	}()
	if err := m.logs.resetSeq(ctx, b.ID); err != nil {
		return err
	}
	if err := m.logs.append(ctx, b.ID, newEntry(LogPhase, string(store.PhaseBuildScheduled), now)); err != nil {
		return err
	}

	remaining := m.o.MaxAttempts - attempt
	var (
		started executors.Executor
		execID  string
		lastErr error
	)
	for _, e := range m.o.Executors {
		if e.MinimumRetryThreshold > remaining {
			continue
		}
		token, err := m.tokens.issue(typRegistration, b.ID, attempt, e.SetupTime+30*time.Second)
		if err != nil {
			return err
		}
		if err := m.st.RenewBuildLease(ctx, b.ID, attempt, time.Now().Add(e.SetupTime)); err != nil {
			return err
		}
		// The executor is recorded before the worker starts: a fast worker
		// can finish the build before Start returns, and a finished build
		// takes no more execution updates.
		if err := m.st.SetBuildExecution(ctx, b.ID, attempt, e.Name(), ""); err != nil && !errors.Is(err, store.ErrStale) {
			m.log.WarnContext(ctx, "recording the executor failed", "err", err)
		}
		id, err := e.Start(ctx, executors.WorkerSpec{
			BuildID:           b.ID,
			Attempt:           attempt,
			Lifetime:          e.SetupTime + m.o.TimeLimit,
			RegistrationToken: token,
			ManagerAddr:       m.WorkerAddr(),
			ManagerInsecure:   m.o.WorkerAddr == "" || m.o.WorkerInsecure,
			ManagerCAPEM:      m.o.WorkerCAPEM,
		})
		if err != nil {
			lastErr = err
			m.metrics.failovers.WithLabelValues(e.Name()).Inc()
			m.log.WarnContext(ctx, "executor could not start a worker; trying the next", "executor", e.Name(), "err", err)
			continue
		}
		started, execID = e.Executor, id
		m.mu.Lock()
		m.byExecution[e.Name()+"\x00"+id] = b.ID
		m.mu.Unlock()
		if err := m.st.SetBuildExecution(ctx, b.ID, attempt, e.Name(), id); err != nil && !errors.Is(err, store.ErrStale) {
			m.log.WarnContext(ctx, "recording the worker failed", "err", err)
		}
		m.log.InfoContext(ctx, "worker started", "executor", e.Name(), "execution", id)
		break
	}
	if started == nil {
		reason := "no executor could start a worker"
		if lastErr != nil {
			reason += ": " + lastErr.Error()
		}
		return m.failAttempt(ctx, b.ID, attempt, reason)
	}
	return m.supervise(ctx, b.ID, attempt, started, execID, now.Add(m.o.TimeLimit))
}

// supervise watches attempt `attempt` of build id until it ends: the build
// reaches a terminal phase, goes back to waiting, exceeds deadline, or its
// worker exits or stops heartbeating. ex and execID name the worker (ex is
// nil when no executor here knows it).
func (m *Manager) supervise(ctx context.Context, id string, attempt int, ex executors.Executor, execID string, deadline time.Time) error {
	m.mu.Lock()
	a := m.active[id]
	if a == nil {
		a = &activeAttempt{wake: make(chan struct{}, 1)}
		m.active[id] = a
		defer func() {
			m.mu.Lock()
			delete(m.active, id)
			m.mu.Unlock()
		}()
	}
	m.mu.Unlock()
	stop := func() {
		if ex != nil {
			m.stopWorker(ctx, ex.Name(), execID)
		}
	}
	tick := time.NewTicker(m.o.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// The server is shutting down: stop the worker, and count the
			// attempt as failed so the build runs again after a restart.
			stop()
			bg := context.WithoutCancel(ctx)
			if err := m.failAttempt(bg, id, attempt, "the build server shut down during the build"); err != nil && !errors.Is(err, errRetry) {
				m.log.WarnContext(ctx, "recording an interrupted attempt failed", "err", err)
			}
			return ctx.Err()
		case <-a.wake:
		case <-tick.C:
		}
		b, err := m.st.GetBuild(ctx, id)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				stop()
				m.revokeCredentials(ctx, id, attempt)
				return nil
			}
			m.log.WarnContext(ctx, "reading a running build failed", "err", err)
			continue
		}
		now := time.Now()
		switch {
		case b.Phase.Terminal():
			stop()
			return nil
		case b.Attempts != attempt || b.Phase == store.PhaseWaiting:
			// The worker reported a retryable failure (recorded already).
			stop()
			return errRetry
		case now.After(deadline):
			stop()
			msg := fmt.Sprintf("The build exceeded its time limit of %s and was stopped", m.o.TimeLimit)
			if err := m.end(ctx, b, store.PhaseError, msg, nil); errors.Is(err, store.ErrStale) {
				continue
			} else if err != nil {
				return err
			}
			return nil
		case a.exited.Load():
			stop()
			reason := "the worker exited without reporting a result"
			if r := a.exitReason.Load(); r != nil {
				reason = *r
			}
			return m.failAttempt(ctx, id, attempt, reason)
		case !b.LeaseExpiry.IsZero() && now.After(b.LeaseExpiry):
			stop()
			reason := "lost contact with the worker (no heartbeat)"
			if b.Phase == store.PhaseBuildScheduled {
				reason = "the worker did not register in time"
			}
			return m.failAttempt(ctx, id, attempt, reason)
		}
	}
}

// failAttempt records an infrastructure failure of attempt `attempt`: the
// build goes back to waiting (errRetry is returned, so the queue delivers
// it again) while attempts remain, and ends in internalerror otherwise.
func (m *Manager) failAttempt(ctx context.Context, id string, attempt int, reason string) error {
	for {
		b, err := m.st.GetBuild(ctx, id)
		if err != nil {
			return err
		}
		if b.Phase.Terminal() || b.Attempts != attempt || b.Phase == store.PhaseWaiting {
			if b.Phase == store.PhaseWaiting {
				return errRetry
			}
			return nil // someone else decided first
		}
		now := time.Now()
		if attempt >= m.o.MaxAttempts {
			msg := fmt.Sprintf("The build failed %d times for internal reasons; last: %s", attempt, reason)
			err := m.end(ctx, b, store.PhaseInternalError, msg, nil)
			if errors.Is(err, store.ErrStale) {
				continue
			}
			if err == nil {
				m.metrics.retries.WithLabelValues("internalerror").Inc()
			}
			return err
		}
		msg := fmt.Sprintf("Attempt %d of %d failed: %s; retrying", attempt, m.o.MaxAttempts, reason)
		if err := m.logs.append(ctx, id, newEntry("", msg, now), newEntry(LogPhase, string(store.PhaseWaiting), now)); err != nil {
			return err
		}
		b.Phase, b.ExecutorName, b.ExecutionID, b.LeaseExpiry = store.PhaseWaiting, "", "", time.Time{}
		if err := m.st.UpdateBuild(ctx, b); errors.Is(err, store.ErrStale) {
			continue
		} else if err != nil {
			return err
		}
		m.revokeCredentials(ctx, id, attempt)
		m.metrics.retries.WithLabelValues("retried").Inc()
		m.log.WarnContext(ctx, "build attempt failed; retrying", "reason", reason)
		m.mu.Lock()
		a := m.active[id]
		m.mu.Unlock()
		if a != nil {
			a.poke()
		}
		return errRetry
	}
}
