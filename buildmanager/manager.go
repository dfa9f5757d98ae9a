// Package buildmanager runs builds: it records them (the database row is
// the truth), queues them, starts a worker for each through an executor,
// serves the gRPC service workers call, keeps and streams their logs,
// retries infrastructure failures and publishes events and metrics.
//
// The failure rule, one for everything: a user error (the worker finishes
// with a non-retryable error) ends the build in `error` at once and is never
// retried. An infrastructure failure (no executor could start a worker, the
// worker exited or stopped heartbeating, it reported a retryable error, the
// server shut down under it) logs the failed attempt and puts the build
// back to `waiting` while attempts remain, and ends it in `internalerror`
// when none do. A build running past its time limit ends in `error`.
package buildmanager

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/berth-dev/berth/buildmanager/queue"
	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/executors"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/logctx"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/storage"
)

// Defaults of Options.
const (
	DefaultMaxAttempts  = 3
	DefaultTimeLimit    = time.Hour
	DefaultSetupTime    = 5 * time.Minute
	DefaultLeaseTimeout = 10 * time.Second
)

var (
	// ErrNotCancellable reports a Cancel of a build that already ended.
	ErrNotCancellable = errors.New("build already ended")
	// ErrInvalidRequest is what every *InvalidRequestError is (errors.Is).
	ErrInvalidRequest = errors.New("invalid build request")
)

// InvalidRequestError is a build request the manager refuses; Reason is
// shown to the user as it is.
type InvalidRequestError struct{ Reason string }

func (e *InvalidRequestError) Error() string { return ErrInvalidRequest.Error() + ": " + e.Reason }

// Is makes every InvalidRequestError match ErrInvalidRequest.
func (e *InvalidRequestError) Is(target error) bool { return target == ErrInvalidRequest }

// QueueLimitError reports that the namespace has as many unfinished builds
// as it may (the API answers 429).
type QueueLimitError struct {
	Namespace string
	Limit     int
}

func (e *QueueLimitError) Error() string {
	return fmt.Sprintf("namespace %s already has the maximum of %d queued builds", e.Namespace, e.Limit)
}

// Executor is a configured executor with its scheduling settings.
type Executor struct {
	executors.Executor
	// MinimumRetryThreshold skips this executor for an attempt after which
	// fewer attempts than this would remain (Quay's failover rule: keep
	// expensive executors for builds with retries left).
	MinimumRetryThreshold int
	// SetupTime bounds how long a started worker may take to register
	// (default Options.SetupTime).
	SetupTime time.Duration
	// Engine builds what this executor runs when the build names no
	// engine ("": workerpb.DefaultEngine).
	Engine string
}

// RegistryTarget is where workers pull from and push to.
type RegistryTarget struct {
	// Addr is host[:port] as the worker reaches berth's registry.
	Addr string
	// Insecure means berth serves plain HTTP.
	Insecure bool
	// CAPEM is berth's CA when it serves HTTPS with a private CA.
	CAPEM string
}

// GitSourceFunc completes a git build's source with the trigger's secrets
// (deploy key, known hosts, HTTPS token).
type GitSourceFunc func(ctx context.Context, b *store.Build) (*workerpb.GitSource, error)

// Store is what the manager keeps in the metadata store: the build
// records, and the uploaded files of its default context store.
type Store interface {
	CreateBuild(ctx context.Context, b *store.Build) error
	GetBuild(ctx context.Context, id string) (*store.Build, error)
	ListBuilds(ctx context.Context, repoID int64, since time.Time, limit int) ([]store.Build, error)
	ListUnfinishedBuilds(ctx context.Context, after *store.Build, limit int) ([]store.Build, error)
	CountNamespaceBuilds(ctx context.Context, namespaceID int64, phases ...store.BuildPhase) (int, error)
	UpdateBuild(ctx context.Context, b *store.Build) error
	RenewBuildLease(ctx context.Context, id string, attempt int, until time.Time) error
	SetBuildExecution(ctx context.Context, id string, attempt int, executorName, executionID string) error
	SetBuildLogsArchive(ctx context.Context, id, ref string) error
	BuildFileStore
}

// Options configure a Manager. Store, Blobs, Redis and SigningKey are
// required.
type Options struct {
	Store Store
	// Blobs keeps archived logs (and uploaded contexts when Contexts is nil).
	// It must not be the registry's blob storage, whose garbage collection
	// would take these blobs, which no manifest refers to, for garbage.
	Blobs storage.Driver
	// Contexts keeps uploaded contexts (default: a BlobContextStore).
	Contexts ContextStore
	// Redis holds the queue, and live logs unless LogDir is set.
	Redis redis.UniversalClient
	// LogDir keeps live build logs in files under it rather than in Redis:
	// for the embedded Redis, which lives in the server's memory. Leave it
	// empty when several servers share a Redis.
	LogDir string
	// LogLimits bound each build's log.
	LogLimits LogLimits
	// Prefix starts every Redis key and queue name (ORCHESTRATOR_PREFIX).
	Prefix string
	// Queue overrides the asynq queue built over Redis.
	Queue queue.Queue
	// Executors are tried in order.
	Executors []Executor
	// SigningKey signs registration and job tokens.
	SigningKey ed25519.PrivateKey
	// Events receives build events (default: a private bus, see Events).
	Events *events.Bus

	// AllowedWorkerCount bounds the workers this process runs at once
	// (ALLOWED_WORKER_COUNT, default 1).
	AllowedWorkerCount int
	MaxAttempts        int
	TimeLimit          time.Duration
	SetupTime          time.Duration
	// LeaseTimeout is how long a worker may go without a heartbeat.
	LeaseTimeout time.Duration
	// RetryDelay is the pause before a failed attempt's retry (default 1 s).
	RetryDelay time.Duration
	// PollInterval is how often a running build's row is checked (default
	// 250 ms); workers' own calls wake the check at once.
	PollInterval time.Duration
	// MaxQueuedPerNamespace bounds unfinished builds per namespace (0: none).
	MaxQueuedPerNamespace int

	// WorkerAddr is the gRPC address workers dial (host:port). Empty: Run
	// serves GRPCServer on WorkerListen and uses the address it got.
	WorkerAddr string
	// WorkerListen is where Run serves workers when WorkerAddr is empty
	// (default an ephemeral loopback port, which suits the local
	// executor; workers in a cluster need an address they can reach).
	WorkerListen   string
	WorkerInsecure bool
	WorkerCAPEM    string

	Registry RegistryTarget
	// Credentials issues workers' registry credentials (nil: none).
	Credentials Credentials
	GitSource   GitSourceFunc

	// Context limits handed to workers (0: the worker's defaults).
	MaxContextBytes     int64
	MaxUnpackedBytes    int64
	MaxEntries          int64
	MaxCompressionRatio int64

	Logger *slog.Logger
}

// BuildRequest asks for a build.
type BuildRequest struct {
	Repository *store.Repository
	// Requester is who asked (nil: nobody, e.g. an ownerless trigger).
	Requester   *store.Account
	DisplayName string
	// Tags to push (default ["latest"]).
	Tags            []string
	Request         store.BuildRequest
	Priority        int
	TriggerID       string
	TriggerMetadata json.RawMessage
	// TriggerKind ("github", "custom-git", ...) goes into events.
	TriggerKind string
}

// Manager runs builds. Create it with New, start it with Run.
type Manager struct {
	o        Options
	st       Store
	q        queue.Queue
	ownQueue *queue.Asynq
	tokens   *tokens
	logs     liveLogStore
	bus      *events.Bus
	metrics  *metrics
	grpc     *grpc.Server
	log      *slog.Logger

	workerAddr atomic.Pointer[string]

	mu sync.Mutex
	// active holds the attempts handled by this process, by build ID.
	active map[string]*activeAttempt
	// byExecution maps "executor\x00executionID" to a build ID.
	byExecution map[string]string

	// reconcilePageSize is reconcilePageSize outside tests.
	reconcilePageSize int
}

// activeAttempt lets gRPC calls and executor exits wake the handler
// supervising an attempt.
type activeAttempt struct {
	wake   chan struct{}
	exited atomic.Bool
	// exitReason is the executor's words for the worker's end, if any.
	exitReason atomic.Pointer[string]
}

func (a *activeAttempt) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// New checks o and builds a Manager.
func New(o Options) (*Manager, error) {
	switch {
	case o.Store == nil:
		return nil, errors.New("buildmanager: no store")
	case o.Blobs == nil:
		return nil, errors.New("buildmanager: no blob storage")
	case o.Redis == nil:
		return nil, errors.New("buildmanager: no redis")
	case len(o.SigningKey) != ed25519.PrivateKeySize:
		return nil, errors.New("buildmanager: no signing key")
	}
	if o.AllowedWorkerCount <= 0 {
		o.AllowedWorkerCount = 1
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.TimeLimit <= 0 {
		o.TimeLimit = DefaultTimeLimit
	}
	if o.SetupTime <= 0 {
		o.SetupTime = DefaultSetupTime
	}
	if o.LeaseTimeout <= 0 {
		o.LeaseTimeout = DefaultLeaseTimeout
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 250 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Events == nil {
		o.Events = &events.Bus{}
	}
	if o.Contexts == nil {
		o.Contexts = &BlobContextStore{Blobs: o.Blobs, Store: o.Store, MaxBytes: o.MaxContextBytes}
	}
	names := map[string]bool{}
	for i, e := range o.Executors {
		if e.Executor == nil || names[e.Name()] {
			return nil, fmt.Errorf("buildmanager: executor %d is missing or its name is not unique", i)
		}
		names[e.Name()] = true
		if e.SetupTime <= 0 {
			o.Executors[i].SetupTime = o.SetupTime
		}
	}
	m := &Manager{
		o:           o,
		st:          o.Store,
		q:           o.Queue,
		tokens:      newTokens(o.SigningKey),
		bus:         o.Events,
		metrics:     newMetrics(),
		log:         o.Logger,
		active:      map[string]*activeAttempt{},
		byExecution: map[string]string{},

		reconcilePageSize: reconcilePageSize,
	}
	if o.LogDir != "" {
		fl, err := newFileLogs(o.LogDir, o.LogLimits)
		if err != nil {
			return nil, fmt.Errorf("buildmanager: %w", err)
		}
		m.logs = fl
	} else {
		m.logs = newRedisLogs(o.Redis, o.Prefix, o.LogLimits, o.Logger)
	}
	if m.q == nil {
		m.ownQueue = queue.NewAsynq(queue.AsynqOptions{
			Redis:       o.Redis,
			Prefix:      o.Prefix,
			Concurrency: o.AllowedWorkerCount,
			// Attempts are counted on the build row; asynq's retries only
			// cover a handler that failed to record an outcome, and the
			// re-queue after a failed attempt.
			MaxRetry:   o.MaxAttempts + 2,
			RetryDelay: o.RetryDelay,
			Logger:     o.Logger,
		})
		m.q = m.ownQueue
	}
	m.grpc = grpc.NewServer()
	workerpb.RegisterBuildManagerServer(m.grpc, &service{m: m})
	if o.WorkerAddr != "" {
		addr := o.WorkerAddr
		m.workerAddr.Store(&addr)
	}
	return m, nil
}

// GRPCServer is the service workers call. Serve it on the main listener
// (h2c: route requests with Content-Type application/grpc to it) and set
// Options.WorkerAddr, or leave WorkerAddr empty and Run serves it on an
// ephemeral loopback port.
func (m *Manager) GRPCServer() *grpc.Server { return m.grpc }

// WorkerAddr is the gRPC address handed to workers ("" until Run listens
// when Options.WorkerAddr is empty).
func (m *Manager) WorkerAddr() string {
	if p := m.workerAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// Events is the bus build events are published on.
func (m *Manager) Events() *events.Bus { return m.bus }

// Run reconciles the store with the queue, then handles builds until ctx
// ends; it stops this process's workers before returning.
func (m *Manager) Run(ctx context.Context) error {
	var ownListener net.Listener
	if m.WorkerAddr() == "" {
		listen := m.o.WorkerListen
		if listen == "" {
			listen = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("buildmanager: listen for workers: %w", err)
		}
		ownListener = ln
		addr := ln.Addr().String()
		m.workerAddr.Store(&addr)
		go func() {
			if err := m.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				m.log.Error("worker gRPC server stopped", "err", err)
			}
		}()
		m.log.Info("serving workers", "addr", addr)
	}
	var wg sync.WaitGroup
	for _, e := range m.o.Executors {
		if ex, ok := e.Executor.(executors.Reporter); ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.watchEvents(ctx, e.Name(), ex.Events())
			}()
		}
	}
	m.reconcileWorkers(ctx)
	if err := m.Reconcile(ctx); err != nil {
		m.log.Error("reconciling builds with the queue failed", "err", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Periodic reconciliation repairs a lost enqueue (Redis down when a
		// build was submitted) without a restart.
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := m.Reconcile(ctx); err != nil && ctx.Err() == nil {
					m.log.Warn("reconciling builds with the queue failed", "err", err)
				}
			}
		}
	}()
	err := m.q.Run(ctx, m.handle)
	wg.Wait()
	if ownListener != nil {
		stopGRPC(m.grpc)
	}
	if m.ownQueue != nil {
		err = errors.Join(err, m.ownQueue.Close())
	}
	return errors.Join(err, m.logs.close())
}

// stopGRPC stops gracefully, cutting streams still open after a few seconds.
func stopGRPC(s *grpc.Server) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		s.Stop()
	}
}

// watchEvents hands what executor name reports about its workers to the
// attempts this process supervises: a reason goes into the build's log at
// once, and an end wakes the supervisor to fail the attempt over.
func (m *Manager) watchEvents(ctx context.Context, name string, ch <-chan executors.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			m.mu.Lock()
			buildID := m.byExecution[name+"\x00"+ev.ExecutionID]
			a := m.active[buildID]
			m.mu.Unlock()
			if a == nil {
				continue
			}
			if ev.Reason != "" && !ev.Ended {
				bctx := logctx.With(ctx, slog.String("build_id", buildID))
				if err := m.logs.append(bctx, buildID, newEntry("", ev.Reason, time.Now())); err != nil {
					m.log.WarnContext(bctx, "recording the executor's news in the build log failed", "err", err)
				}
			}
			if ev.Ended {
				if ev.Reason != "" {
					reason := ev.Reason
					a.exitReason.Store(&reason)
				}
				a.exited.Store(true)
				a.poke()
			}
		}
	}
}

// reconcileWorkers stops the workers an earlier server left behind (Jobs
// in a cluster outlive it) whose build has ended, is gone, or has moved on
// to another worker. A worker of a build still running stays: the handler
// that picks the build up again supervises it.
func (m *Manager) reconcileWorkers(ctx context.Context) {
	for _, e := range m.o.Executors {
		l, ok := e.Executor.(executors.Lister)
		if !ok {
			continue
		}
		workers, err := l.Workers(ctx)
		if err != nil {
			m.log.WarnContext(ctx, "listing an executor's workers failed", "executor", e.Name(), "err", err)
			continue
		}
		for _, w := range workers {
			wctx := logctx.With(ctx, slog.String("build_id", w.BuildID))
			b, err := m.st.GetBuild(wctx, w.BuildID)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				m.log.WarnContext(wctx, "reading the build of a left-over worker failed", "err", err)
				continue
			case !b.Phase.Terminal() && b.ExecutorName == e.Name() && b.ExecutionID == w.ExecutionID:
				continue
			}
			m.log.InfoContext(wctx, "stopping a worker left by an earlier server", "executor", e.Name(), "execution", w.ExecutionID)
			m.stopWorker(wctx, e.Name(), w.ExecutionID)
		}
	}
}

// reconcilePageSize is how many unfinished builds Reconcile reads and
// looks up in the queue at once.
const reconcilePageSize = 500

// Reconcile queues every unfinished build the queue does not hold: waiting
// builds whose enqueue was lost, and running builds whose handler died with
// a server (they are then supervised until their worker's lease lapses).
// It walks the unfinished builds oldest first, a page at a time, with one
// queue lookup per page.
func (m *Manager) Reconcile(ctx context.Context) error {
	var (
		errs  []error
		after *store.Build
	)
	for {
		page, err := m.st.ListUnfinishedBuilds(ctx, after, m.reconcilePageSize)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("buildmanager: reconcile: %w", err))...)
		}
		if len(page) > 0 {
			if err := m.requeueMissing(ctx, page); err != nil {
				errs = append(errs, err)
			}
		}
		if len(page) < m.reconcilePageSize {
			return errors.Join(errs...)
		}
		after = &page[len(page)-1]
	}
}

// requeueMissing queues those of bs the queue does not hold.
func (m *Manager) requeueMissing(ctx context.Context, bs []store.Build) error {
	ids := make([]string, len(bs))
	byID := make(map[string]*store.Build, len(bs))
	for i := range bs {
		ids[i] = bs[i].ID
		byID[bs[i].ID] = &bs[i]
	}
	missing, err := m.q.Missing(ctx, ids)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range missing {
		b := byID[id]
		if err := m.q.Enqueue(ctx, m.task(b)); err != nil {
			errs = append(errs, err)
			continue
		}
		m.log.InfoContext(logctx.With(ctx, slog.String("build_id", b.ID)), "re-queued build missing from the queue", "phase", b.Phase)
	}
	return errors.Join(errs...)
}

func (m *Manager) task(b *store.Build) queue.Task {
	setup := m.o.SetupTime
	for _, e := range m.o.Executors {
		setup = max(setup, e.SetupTime)
	}
	// The handler enforces the time limit itself; the queue's timeout only
	// catches a handler that failed to.
	return queue.Task{BuildID: b.ID, Priority: b.Priority, Timeout: m.o.TimeLimit + setup + time.Minute}
}

// Submit records a build, queues it and publishes build_queued.
func (m *Manager) Submit(ctx context.Context, r BuildRequest) (*store.Build, error) {
	if err := validate(&r); err != nil {
		return nil, err
	}
	if limit := m.o.MaxQueuedPerNamespace; limit > 0 {
		n, err := m.st.CountNamespaceBuilds(ctx, r.Repository.NamespaceID, store.PhaseWaiting,
			store.PhaseBuildScheduled, store.PhaseUnpacking, store.PhasePulling, store.PhaseBuilding, store.PhasePushing)
		if err != nil {
			return nil, fmt.Errorf("buildmanager: submit: %w", err)
		}
		if n >= limit {
			return nil, &QueueLimitError{Namespace: r.Repository.Namespace, Limit: limit}
		}
	}
	b := &store.Build{
		ID:              uuid.NewString(),
		RepoID:          r.Repository.ID,
		Phase:           store.PhaseWaiting,
		DisplayName:     r.DisplayName,
		Tags:            r.Tags,
		Request:         r.Request,
		Priority:        r.Priority,
		TriggerID:       r.TriggerID,
		TriggerMetadata: r.TriggerMetadata,
	}
	if r.Requester != nil {
		b.RequesterID = r.Requester.ID
	}
	if err := m.st.CreateBuild(ctx, b); err != nil {
		return nil, fmt.Errorf("buildmanager: submit: %w", err)
	}
	if err := m.q.Enqueue(ctx, m.task(b)); err != nil {
		// The row is the truth: reconciliation queues the build later.
		m.log.ErrorContext(logctx.With(ctx, slog.String("build_id", b.ID)), "queueing build failed; it will be re-queued", "err", err)
	}
	m.publish(b, events.BuildQueued, r.TriggerKind)
	return b, nil
}

func validate(r *BuildRequest) error {
	if r.Repository == nil || r.Repository.ID == 0 {
		return &InvalidRequestError{Reason: "no repository"}
	}
	sources := 0
	if r.Request.FileID != "" {
		sources++
	}
	if r.Request.ArchiveURL != "" {
		sources++
	}
	if r.Request.Git != nil {
		sources++
		if r.Request.Git.URL == "" {
			return &InvalidRequestError{Reason: "git source without a URL"}
		}
	}
	if sources != 1 {
		return &InvalidRequestError{Reason: "exactly one of file_id, archive_url and a git source is required"}
	}
	if len(r.Tags) == 0 {
		r.Tags = []string{"latest"}
	}
	if r.DisplayName == "" {
		r.DisplayName = r.Request.FileID
		if r.Request.ArchiveURL != "" {
			r.DisplayName = r.Request.ArchiveURL
		}
		if g := r.Request.Git; g != nil {
			r.DisplayName = g.CommitSHA
			if len(r.DisplayName) > 7 {
				r.DisplayName = r.DisplayName[:7]
			}
		}
	}
	if r.TriggerMetadata != nil && !json.Valid(r.TriggerMetadata) {
		return &InvalidRequestError{Reason: "trigger metadata is not JSON"}
	}
	return nil
}

// Get returns a build.
func (m *Manager) Get(ctx context.Context, id string) (*store.Build, error) {
	return m.st.GetBuild(ctx, id)
}

// List returns a repository's builds, newest first, created at or after
// since (zero: any), at most limit (<= 0: all).
func (m *Manager) List(ctx context.Context, repoID int64, limit int, since time.Time) ([]store.Build, error) {
	return m.st.ListBuilds(ctx, repoID, since, limit)
}

// Cancel ends a build that has not ended: a waiting build leaves the
// queue; a running build's worker is stopped. ErrNotCancellable when the
// build already ended.
func (m *Manager) Cancel(ctx context.Context, id string) (*store.Build, error) {
	for {
		b, err := m.st.GetBuild(ctx, id)
		if err != nil {
			return nil, err
		}
		if b.Phase.Terminal() {
			return b, ErrNotCancellable
		}
		if b.Phase == store.PhaseWaiting {
			if err := m.q.Remove(ctx, id); err != nil && !errors.Is(err, queue.ErrNotQueued) {
				return nil, fmt.Errorf("buildmanager: cancel %s: %w", id, err)
			}
		}
		prev := *b
		err = m.end(ctx, b, store.PhaseCancelled, "", nil)
		if errors.Is(err, store.ErrStale) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("buildmanager: cancel %s: %w", id, err)
		}
		if prev.Phase.Running() {
			m.stopWorker(ctx, prev.ExecutorName, prev.ExecutionID)
		}
		return b, nil
	}
}

// stopWorker stops a worker this process's executors started; a worker
// of an executor configured elsewhere is stopped by the process
// supervising it, which sees the build end.
func (m *Manager) stopWorker(ctx context.Context, executorName, executionID string) {
	if executionID == "" {
		return
	}
	for _, e := range m.o.Executors {
		if e.Name() != executorName {
			continue
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := e.Stop(sctx, executionID); err != nil && !errors.Is(err, executors.ErrUnknownWorker) {
			m.log.WarnContext(ctx, "stopping worker failed", "executor", executorName, "execution", executionID, "err", err)
		}
	}
	m.mu.Lock()
	delete(m.byExecution, executorName+"\x00"+executionID)
	m.mu.Unlock()
}

// end moves b to a terminal phase: its last log entries are stored first,
// then the phase (compare-and-set; store.ErrStale if b changed), then the
// log is archived and the event published.
func (m *Manager) end(ctx context.Context, b *store.Build, phase store.BuildPhase, message string, digests map[string]string) error {
	ctx = context.WithoutCancel(ctx)
	now := time.Now()
	var entries []LogEntry
	if phase == store.PhaseError || phase == store.PhaseInternalError {
		entries = append(entries, newEntry(LogError, message, now))
	}
	entries = append(entries, newEntry(LogPhase, string(phase), now))
	if err := m.logs.append(ctx, b.ID, entries...); err != nil {
		return err
	}
	from := b.Phase
	b.Phase, b.CompletedAt, b.ErrorMessage, b.LeaseExpiry = phase, now, message, time.Time{}
	if digests != nil {
		b.ManifestDigests = digests
	}
	if err := m.st.UpdateBuild(ctx, b); err != nil {
		return err
	}
	m.afterEnd(ctx, b, from)
	return nil
}

// afterEnd revokes the attempt's registry credentials, archives the log,
// wakes the build's handler and watchers and reports the result.
func (m *Manager) afterEnd(ctx context.Context, b *store.Build, from store.BuildPhase) {
	m.revokeCredentials(ctx, b.ID, b.Attempts)
	m.mu.Lock()
	a := m.active[b.ID]
	m.mu.Unlock()
	if a != nil {
		a.poke()
	}
	if err := m.archive(ctx, b); err != nil {
		// The live log stays readable (it expires after logTTL).
		m.log.ErrorContext(ctx, "archiving build log failed", "build", b.ID, "err", err)
	}
	if err := m.logs.publishEnd(ctx, b.ID); err != nil {
		m.log.WarnContext(ctx, "announcing build end failed", "build", b.ID, "err", err)
	}
	kind := events.BuildFailure
	switch b.Phase {
	case store.PhaseComplete:
		kind = events.BuildSuccess
	case store.PhaseCancelled:
		kind = events.BuildCancelled
	}
	m.publish(b, kind, "")
	if !b.StartedAt.IsZero() {
		m.metrics.duration.WithLabelValues(string(b.Phase), b.ExecutorName).Observe(b.CompletedAt.Sub(b.StartedAt).Seconds())
	}
	m.log.InfoContext(ctx, "build ended", "build", b.ID, "phase", b.Phase, "from", from, "attempts", b.Attempts)
}

func (m *Manager) publish(b *store.Build, kind events.Kind, triggerKind string) {
	data := events.BuildData{
		BuildID:      b.ID,
		BuildName:    b.DisplayName,
		DockerTags:   b.Tags,
		TriggerID:    b.TriggerID,
		TriggerKind:  triggerKind,
		ErrorMessage: b.ErrorMessage,
		Phase:        string(b.Phase),
	}
	if len(b.TriggerMetadata) > 0 {
		data.TriggerMetadata = b.TriggerMetadata
	}
	if kind == events.BuildSuccess {
		data.ManifestDigests = b.ManifestDigests
	}
	m.bus.Publish(events.Event{Kind: kind, Namespace: b.Namespace, Repository: b.Repository, Data: data})
}
