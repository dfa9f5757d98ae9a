package queue

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// taskType is the asynq task type of a build delivery.
const taskType = "berth:build"

// AsynqOptions configure an Asynq queue. Every asynq setting that matters is
// explicit: asynq's own defaults (25 retries, 30-minute timeout) suit
// neither builds nor their failure rule.
type AsynqOptions struct {
	// Redis is the connection, shared with the rest of the build manager.
	Redis redis.UniversalClient
	// Prefix starts every queue name, isolating several berth installations
	// (or tests) sharing one Redis. Quay's ORCHESTRATOR_PREFIX.
	Prefix string
	// Concurrency is the number of builds handled at once by this process
	// (ALLOWED_WORKER_COUNT). Default 1.
	Concurrency int
	// MaxRetry is how often a delivery whose handler failed is retried.
	// The build manager counts build attempts itself; this only covers a
	// handler that failed to record its outcome. Default 3.
	MaxRetry int
	// RetryDelay is the pause before a retry. Default 1 s.
	RetryDelay time.Duration
	// PollInterval is how often an idle process looks for tasks, and
	// promotes retries whose delay is over. Default 100 ms: queue latency
	// is part of the time from "build" to a running worker.
	PollInterval time.Duration
	Logger       *slog.Logger
}

// Asynq is the Queue over asynq (github.com/hibiken/asynq).
type Asynq struct {
	o         AsynqOptions
	client    *asynq.Client
	inspector *asynq.Inspector
}

var _ Queue = (*Asynq)(nil)

// NewAsynq returns a queue over o.Redis.
func NewAsynq(o AsynqOptions) *Asynq {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = 3
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Asynq{
		o:         o,
		client:    asynq.NewClientFromRedisClient(o.Redis),
		inspector: asynq.NewInspectorFromRedisClient(o.Redis),
	}
}

// queues returns the queue names from highest to lowest priority.
func (q *Asynq) queues() []string {
	return []string{q.o.Prefix + "builds-high", q.o.Prefix + "builds", q.o.Prefix + "builds-low"}
}

func (q *Asynq) queueFor(priority int) string {
	qs := q.queues()
	switch {
	case priority > 0:
		return qs[0]
	case priority < 0:
		return qs[2]
	}
	return qs[1]
}

// Enqueue queues t unless the build is already queued or running. A task
// left archived or completed by an earlier run is replaced.
func (q *Asynq) Enqueue(ctx context.Context, t Task) error {
	if t.Timeout <= 0 {
		return fmt.Errorf("queue: enqueue build %s: no timeout", t.BuildID)
	}
	opts := []asynq.Option{
		asynq.TaskID(t.BuildID),
		asynq.Queue(q.queueFor(t.Priority)),
		asynq.MaxRetry(q.o.MaxRetry),
		asynq.Timeout(t.Timeout),
	}
	if t.Delay > 0 {
		opts = append(opts, asynq.ProcessIn(t.Delay))
	}
	task := asynq.NewTask(taskType, []byte(t.BuildID), opts...)
	for range 2 {
		_, err := q.client.EnqueueContext(ctx, task)
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			if err != nil {
				return fmt.Errorf("queue: enqueue build %s: %w", t.BuildID, err)
			}
			return nil
		}
		live, err := q.holds(ctx, t.BuildID)
		if err != nil || live {
			return err
		}
	}
	return fmt.Errorf("queue: enqueue build %s: task ID keeps conflicting", t.BuildID)
}

// Remove deletes a waiting task.
func (q *Asynq) Remove(ctx context.Context, buildID string) error {
	for _, name := range q.queues() {
		info, err := q.inspector.GetTaskInfo(name, buildID)
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("queue: remove build %s: %w", buildID, err)
		}
		switch info.State {
		case asynq.TaskStatePending, asynq.TaskStateScheduled, asynq.TaskStateRetry:
		default:
			return ErrNotQueued
		}
		err = q.inspector.DeleteTask(name, buildID)
		if errors.Is(err, asynq.ErrTaskNotFound) {
			return ErrNotQueued
		}
		if err != nil {
			// The task became active between the two calls.
			return fmt.Errorf("%w: %w", ErrNotQueued, err)
		}
		return nil
	}
	return ErrNotQueued
}

// holds reports whether the build is pending, scheduled, retrying or
// active. An archived or completed leftover is deleted so that the build can
// be queued again.
func (q *Asynq) holds(ctx context.Context, buildID string) (bool, error) {
	for _, name := range q.queues() {
		info, err := q.inspector.GetTaskInfo(name, buildID)
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("queue: look up build %s: %w", buildID, err)
		}
		switch info.State {
		case asynq.TaskStateArchived, asynq.TaskStateCompleted:
			if err := q.inspector.DeleteTask(name, buildID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
				return false, fmt.Errorf("queue: drop leftover task of build %s: %w", buildID, err)
			}
			continue
		}
		return true, nil
	}
	return false, nil
}

// taskStates returns, for each of KEYS (task hashes of one queue), the
// state asynq recorded in it, or "" when the task does not exist. One
// script answers for a whole page of builds in one command; all its keys
// share the queue's hash tag, so it runs on Redis Cluster too.
var taskStates = redis.NewScript(`
local states = {}
for i, key in ipairs(KEYS) do
	states[i] = redis.call("HGET", key, "state") or ""
end
return states`)

// Missing reads the state of the builds' tasks with one script call per
// priority queue (not a pipeline: the embedded server's in-memory
// connection does not buffer, so a long pipeline would wait on itself). A
// build whose tasks are all absent, archived or completed is missing:
// Enqueue replaces such leftovers.
func (q *Asynq) Missing(ctx context.Context, buildIDs []string) ([]string, error) {
	if len(buildIDs) == 0 {
		return nil, nil
	}
	held := make([]bool, len(buildIDs))
	keys := make([]string, len(buildIDs))
	for _, name := range q.queues() {
		for i, id := range buildIDs {
			keys[i] = taskKey(name, id)
		}
		states, err := taskStates.Run(ctx, q.o.Redis, keys).StringSlice()
		if err == nil && len(states) != len(keys) {
			err = fmt.Errorf("%d states for %d tasks", len(states), len(keys))
		}
		if err != nil {
			return nil, fmt.Errorf("queue: look up %d builds in %s: %w", len(buildIDs), name, err)
		}
		for i, state := range states {
			switch state {
			case "", asynq.TaskStateArchived.String(), asynq.TaskStateCompleted.String():
			default:
				held[i] = true
			}
		}
	}
	var missing []string
	for i, id := range buildIDs {
		if !held[i] {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// taskKey is the Redis hash in which asynq keeps a task of queue `name`
// with its state: the layout of asynq's internal/base.TaskKey, which the
// queue's tests check through tasks asynq itself created.
func taskKey(name, taskID string) string { return "asynq:{" + name + "}:t:" + taskID }

// Run serves tasks until ctx ends.
func (q *Asynq) Run(ctx context.Context, h Handler) error {
	weights := map[string]int{}
	for i, name := range q.queues() {
		weights[name] = 3 - i
	}
	srv := asynq.NewServerFromRedisClient(q.o.Redis, asynq.Config{
		Concurrency: q.o.Concurrency,
		// Handlers see the server's own end at once and stop their workers.
		BaseContext:              func() context.Context { return ctx },
		TaskCheckInterval:        q.o.PollInterval,
		DelayedTaskCheckInterval: q.o.PollInterval,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return q.o.RetryDelay },
		Queues:                   weights,
		StrictPriority:           true,
		Logger:                   slogAdapter{q.o.Logger},
		LogLevel:                 asynq.WarnLevel,
		ShutdownTimeout:          10 * time.Second,
		HealthCheckInterval:      time.Minute,
	})
	mux := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		return h(ctx, string(t.Payload()))
	})
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("queue: start: %w", err)
	}
	<-ctx.Done()
	srv.Shutdown()
	return nil
}

// Close releases the queue's clients (not the Redis connection it was given).
func (q *Asynq) Close() error {
	return errors.Join(q.client.Close(), q.inspector.Close())
}

// slogAdapter lets asynq log through slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debug(args ...any) { a.l.Debug("asynq", "msg", fmt.Sprint(args...)) }
func (a slogAdapter) Info(args ...any)  { a.l.Info("asynq", "msg", fmt.Sprint(args...)) }
func (a slogAdapter) Warn(args ...any)  { a.l.Warn("asynq", "msg", fmt.Sprint(args...)) }
func (a slogAdapter) Error(args ...any) { a.l.Error("asynq", "msg", fmt.Sprint(args...)) }
func (a slogAdapter) Fatal(args ...any) { a.l.Error("asynq fatal", "msg", fmt.Sprint(args...)) }

// RedisConfig is Quay's BUILD_MANAGER → ORCHESTRATOR block.
type RedisConfig struct {
	// Host is "host" or "host:port" (port 6379 when absent).
	Host     string
	Password string
	SSL      bool
	DB       int
}

// Dial connects to the configured Redis and checks it answers.
func (c RedisConfig) Dial(ctx context.Context) (*redis.Client, error) {
	addr := c.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), "6379")
	}
	o := &redis.Options{Addr: addr, Password: c.Password, DB: c.DB}
	if c.SSL {
		host, _, _ := net.SplitHostPort(addr)
		o.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	rc := redis.NewClient(o)
	if err := rc.Ping(ctx).Err(); err != nil {
		rc.Close()
		return nil, fmt.Errorf("queue: redis %s: %w", addr, err)
	}
	return rc, nil
}

// Embedded is an in-process Redis-protocol server, so that one berth
// process needs no Redis. It opens no socket: clients reach it through
// in-memory pipes, so no other process on the machine (a build's RUN step
// included) can connect to it, and every connection must still present a
// password drawn at start, so that a pipe handed out by mistake cannot be
// used by someone who does not hold Client. Its data lives in memory:
// after a restart the build manager re-enqueues from the database.
type Embedded struct {
	srv      *miniredis.Miniredis
	password string
	// closed stops Dial from restarting the server after Close.
	closed atomic.Bool
}

// errEmbeddedClosed reports a connection attempt after Close.
var errEmbeddedClosed = errors.New("queue: embedded redis is closed")

// StartEmbedded starts the embedded server.
func StartEmbedded() (*Embedded, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("queue: start embedded redis: %w", err)
	}
	e := &Embedded{srv: miniredis.NewMiniRedis(), password: hex.EncodeToString(secret)}
	e.srv.RequireAuth(e.password)
	// The first Dial starts the listener-less server.
	conn, err := e.srv.Dial()
	if err != nil {
		return nil, fmt.Errorf("queue: start embedded redis: %w", err)
	}
	conn.Close()
	return e, nil
}

// Client returns a new authenticated client of the server.
func (e *Embedded) Client() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:     "embedded",
		Password: e.password,
		Dialer: func(context.Context, string, string) (net.Conn, error) {
			if e.closed.Load() {
				return nil, errEmbeddedClosed
			}
			return e.srv.Dial()
		},
	})
}

// Close stops the server.
func (e *Embedded) Close() {
	e.closed.Store(true)
	e.srv.Close()
}
