package buildmanager

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/buildmanager/buildmanagertest"
	"github.com/berth-dev/berth/buildmanager/queue"
	"github.com/berth-dev/berth/executors"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/store"
)

func TestPhasesInOrder(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		h := start(t, e, always(behaveOK), nil)
		sub := h.Events().Subscribe(16)
		b := h.submit(t)
		got := h.waitEnd(t, b.ID, 10*time.Second)
		if got.Phase != store.PhaseComplete || got.Attempts != 1 {
			t.Fatalf("build ended %s after %d attempts: %s", got.Phase, got.Attempts, got.ErrorMessage)
		}
		if got.ManifestDigests["latest"] == "" || got.ManifestDigests["v1"] == "" {
			t.Errorf("digests %v", got.ManifestDigests)
		}
		es := h.logsOf(t, b.ID)
		want := []string{"build-scheduled", "unpacking", "pulling", "building", "pushing", "complete"}
		if p := phasesOf(es); !reflect.DeepEqual(p, want) {
			t.Errorf("phases %v, want %v", p, want)
		}
		if es[0].Data["datetime"] == nil {
			t.Errorf("entry without datetime: %+v", es[0])
		}
		var commands int
		for _, e := range es {
			if e.Type == LogCommand {
				commands++
			}
		}
		if commands != 1 {
			t.Errorf("%d command entries, want 1", commands)
		}
		// The log was archived and is served from there the same way.
		// Archiving follows the terminal phase closely.
		for deadline := time.Now().Add(2 * time.Second); got.LogsArchive == "" && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			got, _ = h.Get(context.Background(), b.ID)
		}
		if got.LogsArchive == "" {
			t.Fatal("log not archived")
		}
		// The archive is recorded first and the live log dropped after it,
		// so the drop may still be on its way.
		n, err := h.logs.length(context.Background(), b.ID)
		for deadline := time.Now().Add(2 * time.Second); n != 0 && err == nil && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			n, err = h.logs.length(context.Background(), b.ID)
		}
		if n != 0 || err != nil {
			t.Errorf("live log kept after archiving: %d entries, %v", n, err)
		}
		tail, total := h.logsFrom(t, b.ID, 3, -1)
		if total != len(es) || len(tail) != len(es)-3 || tail[0].Message != es[3].Message || tail[0].Index != 3 {
			t.Errorf("ReadLog(start=3) = %d entries of %d", len(tail), total)
		}
		var kinds []events.Kind
		for len(kinds) < 3 {
			select {
			case ev := <-sub.C:
				kinds = append(kinds, ev.Kind)
				if ev.Kind == events.BuildSuccess {
					d := ev.Data.(events.BuildData)
					if d.BuildID != b.ID || d.ManifestDigests["latest"] == "" || ev.Namespace != "alice" {
						t.Errorf("success event %+v", ev)
					}
				}
			case <-time.After(2 * time.Second):
				t.Fatalf("events so far %v", kinds)
			}
		}
		if !reflect.DeepEqual(kinds, []events.Kind{events.BuildQueued, events.BuildStart, events.BuildSuccess}) {
			t.Errorf("events %v", kinds)
		}
	})
}

func TestUserErrorEndsAtOnce(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		h := start(t, e, always(behaveUserError), nil)
		b := h.submit(t)
		got := h.waitEnd(t, b.ID, 10*time.Second)
		// Read the log the moment the phase is visible: the error entry
		// must already be there.
		es, _ := h.logsFrom(t, b.ID, 0, -1)
		if got.Phase != store.PhaseError || got.Attempts != 1 || got.ErrorMessage != "RUN false: exit status 1" {
			t.Fatalf("build %s after %d attempts: %q", got.Phase, got.Attempts, got.ErrorMessage)
		}
		i := slices.IndexFunc(es, func(e LogEntry) bool { return e.Type == LogError })
		if i < 0 || es[i].Message != "RUN false: exit status 1" || es[i-1].Message != "exit status 1" {
			t.Fatalf("no error entry after the step output: %+v", es)
		}
		if h.ex.Starts(b.ID) != 1 {
			t.Errorf("%d workers started, want 1 (no retry)", h.ex.Starts(b.ID))
		}
	})
}

func TestLostWorkerRetried(t *testing.T) {
	for _, lost := range []behaviour{behaveDie, behaveSilent, behaveRetryable} {
		t.Run(string(lost), func(t *testing.T) {
			eachEnv(t, func(t *testing.T, e *env) {
				h := start(t, e, func(_ string, attempt int) behaviour {
					if attempt == 1 {
						return lost
					}
					return behaveOK
				}, nil)
				b := h.submit(t)
				got := h.waitEnd(t, b.ID, 15*time.Second)
				if got.Phase != store.PhaseComplete || got.Attempts != 2 {
					t.Fatalf("build %s after %d attempts: %s", got.Phase, got.Attempts, got.ErrorMessage)
				}
				es := h.logsOf(t, b.ID)
				i := slices.IndexFunc(es, func(e LogEntry) bool { return strings.HasPrefix(e.Message, "Attempt 1 of 3 failed") })
				if i < 0 || es[i+1].Message != "waiting" {
					t.Fatalf("failed attempt not logged: %v", es)
				}
				want := []string{"build-scheduled", "waiting", "build-scheduled", "unpacking", "pulling", "building", "pushing", "complete"}
				if lost == behaveRetryable {
					want = append([]string{"build-scheduled", "unpacking", "pulling", "building"}, want[1:]...)
				}
				if p := phasesOf(es); !reflect.DeepEqual(p, want) {
					t.Errorf("phases %v, want %v", p, want)
				}
			})
		})
	}
}

// An executor's news of a worker (a pod waiting for a node, an image that
// cannot be pulled) reaches the build log at once, and an end it reports
// fails the attempt over with its words, long before the lease lapses.
func TestExecutorEventsReachTheLog(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		h := start(t, e, func(_ string, attempt int) behaviour {
			if attempt == 1 {
				return behaveSilent
			}
			return behaveOK
		}, func(o *Options) { o.SetupTime = time.Minute })
		b := h.submit(t)
		running := buildmanagertest.WaitBuild(t, h, b.ID, 10*time.Second, "a worker started", func(b *store.Build) bool {
			return b.Attempts == 1 && b.ExecutionID != ""
		})
		h.ex.Report(executors.Event{ExecutionID: running.ExecutionID, Reason: "the pod waits for a node: 0/1 nodes are available"})
		h.ex.Report(executors.Event{ExecutionID: running.ExecutionID, Ended: true, Reason: "the worker image cannot be pulled"})
		got := h.waitEnd(t, b.ID, 10*time.Second)
		if got.Phase != store.PhaseComplete || got.Attempts != 2 {
			t.Fatalf("build %s after %d attempts: %s", got.Phase, got.Attempts, got.ErrorMessage)
		}
		es := h.logsOf(t, b.ID)
		var msgs []string
		for _, e := range es {
			msgs = append(msgs, e.Message)
		}
		news := slices.Index(msgs, "the pod waits for a node: 0/1 nodes are available")
		failed := slices.Index(msgs, "Attempt 1 of 3 failed: the worker image cannot be pulled; retrying")
		if news < 0 || failed < news {
			t.Fatalf("the executor's words are not in the log in order: %q", msgs)
		}
	})
}

func TestThreeLostAttemptsInternalError(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		h := start(t, e, always(behaveDie), nil)
		sub := h.Events().Subscribe(16, events.BuildFailure)
		b := h.submit(t)
		got := h.waitEnd(t, b.ID, 15*time.Second)
		if got.Phase != store.PhaseInternalError || got.Attempts != 3 || h.ex.Starts(b.ID) != 3 {
			t.Fatalf("build %s after %d attempts (%d starts)", got.Phase, got.Attempts, h.ex.Starts(b.ID))
		}
		es := h.logsOf(t, b.ID)
		if last := es[len(es)-2]; last.Type != LogError || !strings.Contains(last.Message, "failed 3 times") {
			t.Errorf("last entries %+v", es[len(es)-2:])
		}
		select {
		case ev := <-sub.C:
			if ev.Data.(events.BuildData).Phase != "internalerror" {
				t.Errorf("failure event %+v", ev)
			}
		case <-time.After(2 * time.Second):
			t.Error("no build_failure event")
		}
	})
}

func TestExecutorFailover(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		down := newFakeExecutor("down", always(behaveOK))
		down.SetFailing(true)
		picky := newFakeExecutor("picky", always(behaveOK))
		up := newFakeExecutor("up", always(behaveOK))
		o := testOptions(e, testKey,
			Executor{Executor: down},
			// Would leave fewer than 5 retries: skipped.
			Executor{Executor: picky, MinimumRetryThreshold: 5},
			Executor{Executor: up})
		h := startWith(t, e, o)
		b := h.submit(t)
		got := h.waitEnd(t, b.ID, 10*time.Second)
		if got.Phase != store.PhaseComplete || got.ExecutorName != "up" || got.Attempts != 1 {
			t.Fatalf("build %s on %q after %d attempts", got.Phase, got.ExecutorName, got.Attempts)
		}
		if picky.Starts(b.ID) != 0 {
			t.Error("executor above its retry threshold was used")
		}
	})
}

func TestCancel(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		h := start(t, e, always(behaveHang), nil)
		sub := h.Events().Subscribe(16, events.BuildCancelled)
		running := h.submit(t)
		h.waitPhase(t, running.ID, store.PhaseBuildScheduled, 5*time.Second)
		// One worker slot: the second build waits in the queue.
		waiting := h.submit(t)
		time.Sleep(200 * time.Millisecond)
		if b, _ := h.Get(context.Background(), waiting.ID); b.Phase != store.PhaseWaiting {
			t.Fatalf("second build is %s", b.Phase)
		}
		if _, err := h.Cancel(context.Background(), waiting.ID); err != nil {
			t.Fatalf("cancel waiting: %v", err)
		}
		if missing, _ := h.q.Missing(context.Background(), []string{waiting.ID}); len(missing) != 1 {
			t.Error("cancelled build still queued")
		}
		b, _ := h.Get(context.Background(), running.ID)
		execID := b.ExecutionID
		if _, err := h.Cancel(context.Background(), running.ID); err != nil {
			t.Fatalf("cancel running: %v", err)
		}
		got := h.waitEnd(t, running.ID, time.Second)
		if got.Phase != store.PhaseCancelled || execID == "" || !h.ex.WasStopped(execID) {
			t.Fatalf("running build %s, worker %q stopped %v", got.Phase, execID, h.ex.WasStopped(execID))
		}
		if p := phasesOf(h.logsOf(t, running.ID)); p[len(p)-1] != "cancelled" {
			t.Errorf("phases %v", p)
		}
		if _, err := h.Cancel(context.Background(), running.ID); !errors.Is(err, ErrNotCancellable) {
			t.Errorf("second cancel: %v", err)
		}
		for range 2 {
			select {
			case <-sub.C:
			case <-time.After(2 * time.Second):
				t.Fatal("missing build_cancelled event")
			}
		}
		// The slot is free again: a new build runs.
		h.ex.SetScript(behaving(always(behaveOK)))
		if b := h.waitEnd(t, h.submit(t).ID, 10*time.Second); b.Phase != store.PhaseComplete {
			t.Errorf("build after cancellations: %s", b.Phase)
		}
	})
}

func TestTimeLimit(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		h := start(t, e, always(behaveHang), func(o *Options) { o.TimeLimit = time.Second })
		b := h.submit(t)
		got := h.waitEnd(t, b.ID, 10*time.Second)
		if got.Phase != store.PhaseError || !strings.Contains(got.ErrorMessage, "exceeded") || got.Attempts != 1 {
			t.Fatalf("build %s (%q) after %d attempts", got.Phase, got.ErrorMessage, got.Attempts)
		}
		if d := got.CompletedAt.Sub(got.StartedAt); d < time.Second || d > 3*time.Second {
			t.Errorf("ended after %s", d)
		}
		if n, _ := h.ex.Running(context.Background()); n != 0 {
			t.Error("worker still running")
		}
	})
}

func TestWorkerCountBound(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		h := start(t, e, always(behaveOK), func(o *Options) { o.AllowedWorkerCount = 2 })
		var ids []string
		for range 20 {
			ids = append(ids, h.submit(t).ID)
		}
		for _, id := range ids {
			if b := h.waitEnd(t, id, 60*time.Second); b.Phase != store.PhaseComplete {
				t.Errorf("build %s: %s", id, b.Phase)
			}
		}
		if p := h.ex.Peak(); p != 2 {
			t.Errorf("peak concurrent workers %d, want 2", p)
		}
	})
}

func TestQueueLimit(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		h := start(t, e, always(behaveHang), func(o *Options) { o.MaxQueuedPerNamespace = 2 })
		h.submit(t)
		h.submit(t)
		_, err := h.Submit(context.Background(), BuildRequest{Repository: h.repo, Request: store.BuildRequest{ArchiveURL: "http://x/y.tar"}})
		var le *QueueLimitError
		if !errors.As(err, &le) || le.Limit != 2 {
			t.Fatalf("third submit: %v", err)
		}
		if _, err := h.Submit(context.Background(), BuildRequest{Repository: h.repo}); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("submit without a source: %v", err)
		}
	})
}

// A new Manager over the same store and Redis finishes builds left queued
// and running by one that crashed (its queue lost, its worker gone).
func TestRestartReconciles(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		h := start(t, e, always(behaveOK), nil)
		h.stop()
		// What a crash leaves: a build recorded but never queued, and one
		// recorded as building whose worker's lease lapsed.
		queued := &store.Build{ID: "00000000-0000-0000-0000-00000000000a", RepoID: h.repo.ID, Tags: []string{"latest"},
			Request: store.BuildRequest{FileID: "f"}}
		running := &store.Build{ID: "00000000-0000-0000-0000-00000000000b", RepoID: h.repo.ID, Tags: []string{"latest"},
			Request: store.BuildRequest{FileID: "f"}}
		for _, b := range []*store.Build{queued, running} {
			if err := e.st.CreateBuild(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		running.Phase, running.Attempts, running.StartedAt = store.PhaseBuilding, 1, time.Now()
		running.ExecutorName, running.ExecutionID, running.LeaseExpiry = "fake", "gone-1", time.Now().Add(300*time.Millisecond)
		if err := e.st.UpdateBuild(ctx, running); err != nil {
			t.Fatal(err)
		}
		h2 := start(t, e, always(behaveOK), nil)
		for _, id := range []string{queued.ID, running.ID} {
			if b := h2.waitEnd(t, id, 15*time.Second); b.Phase != store.PhaseComplete {
				t.Fatalf("build %s after restart: %s (%s)", id, b.Phase, b.ErrorMessage)
			}
		}
		if b, _ := h2.Get(ctx, running.ID); b.Attempts != 2 {
			t.Errorf("interrupted build took %d attempts, want 2", b.Attempts)
		}
		if b, _ := h2.Get(ctx, queued.ID); b.Attempts != 1 {
			t.Errorf("queued build took %d attempts, want 1", b.Attempts)
		}
	})
}

func TestLogReplayAndLiveSubscription(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		h := start(t, e, always(behaveSlowLog), nil)
		b := h.submit(t)
		h.waitPhase(t, b.ID, store.PhaseBuilding, 5*time.Second)
		ctx := context.Background()
		ch, cancel, err := h.Subscribe(ctx, b.ID, 2)
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		var (
			got       []LogEntry
			latencies []time.Duration
		)
		for e := range ch {
			if len(got) > 0 && e.Index != got[len(got)-1].Index+1 {
				t.Fatalf("index %d after %d", e.Index, got[len(got)-1].Index)
			}
			got = append(got, e)
			if sent, ok := h.ex.SentAt(e.Message); ok && strings.HasPrefix(e.Message, "slow ") {
				latencies = append(latencies, time.Since(sent))
			}
		}
		if len(got) == 0 || got[0].Index != 2 {
			t.Fatalf("replay did not start at 2: %+v", got)
		}
		all := h.logsOf(t, b.ID)
		if len(got) != len(all)-2 || got[len(got)-1].Message != "complete" {
			t.Fatalf("subscriber saw %d entries, log has %d", len(got), len(all))
		}
		if len(latencies) < 10 {
			t.Fatalf("only %d live lines measured", len(latencies))
		}
		sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
		if p50 := latencies[len(latencies)/2]; p50 > 100*time.Millisecond {
			t.Errorf("p50 log latency %s, want < 100ms", p50)
		}
		// A subscription to an ended build replays and closes.
		ch, cancel2, err := h.Subscribe(ctx, b.ID, len(all)-1)
		if err != nil {
			t.Fatal(err)
		}
		defer cancel2()
		var rest []LogEntry
		for e := range ch {
			rest = append(rest, e)
		}
		if len(rest) != 1 || rest[0].Message != "complete" {
			t.Errorf("replay of an ended build: %+v", rest)
		}
	})
}

func TestTokensNotInterchangeable(t *testing.T) {
	tk := newTokens(testKey)
	reg, _ := tk.issue(typRegistration, "b1", 1, time.Minute)
	job, _ := tk.issue(typJob, "b1", 1, time.Minute)
	if _, _, err := tk.verify(typJob, reg); err == nil {
		t.Error("registration token accepted as a job token")
	}
	if _, _, err := tk.verify(typRegistration, job); err == nil {
		t.Error("job token accepted as a registration token")
	}
	if id, attempt, err := tk.verify(typJob, job); err != nil || id != "b1" || attempt != 1 {
		t.Errorf("verify = %s %d %v", id, attempt, err)
	}
	expired, _ := tk.issue(typJob, "b1", 1, -time.Minute)
	if _, _, err := tk.verify(typJob, expired); err == nil {
		t.Error("expired token accepted")
	}
	other := newTokens(func() []byte { _, k, _ := generateKey(); return k }())
	if _, _, err := other.verify(typJob, job); err == nil {
		t.Error("token of another key accepted")
	}
}

// recordingQueue counts the lookups Reconcile makes and the builds it
// queues.
type recordingQueue struct {
	queue.Queue
	mu       sync.Mutex
	lookups  [][]string
	enqueued []string
}

func (q *recordingQueue) Missing(ctx context.Context, ids []string) ([]string, error) {
	q.mu.Lock()
	q.lookups = append(q.lookups, ids)
	q.mu.Unlock()
	return q.Queue.Missing(ctx, ids)
}

func (q *recordingQueue) Enqueue(ctx context.Context, t queue.Task) error {
	q.mu.Lock()
	q.enqueued = append(q.enqueued, t.BuildID)
	q.mu.Unlock()
	return q.Queue.Enqueue(ctx, t)
}

// Reconcile walks more unfinished builds than fit one page: one queue
// lookup per page, every build missing from the queue queued (waiting and
// running alike), none twice, ended ones left alone.
func TestReconcilePages(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		aq := queue.NewAsynq(queue.AsynqOptions{Redis: e.rc, Prefix: e.prefix})
		defer aq.Close()
		rq := &recordingQueue{Queue: aq}
		o := testOptions(e, testKey)
		o.Queue = rq
		_, repo := aliceApp(t, e.st)
		m, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		defer m.logs.close()
		m.reconcilePageSize = 3

		var unfinished, wantQueued []string
		for i := range 9 {
			b := &store.Build{ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), RepoID: repo.ID,
				Tags: []string{"latest"}, Request: store.BuildRequest{FileID: "f"}}
			if err := e.st.CreateBuild(ctx, b); err != nil {
				t.Fatal(err)
			}
			switch i {
			case 2: // ended: not queued again
				b.Phase, b.CompletedAt = store.PhaseComplete, time.Now()
			case 4: // running, its handler gone with its server
				b.Phase, b.Attempts, b.StartedAt = store.PhaseBuilding, 1, time.Now()
			}
			if b.Phase != store.PhaseWaiting {
				if err := e.st.UpdateBuild(ctx, b); err != nil {
					t.Fatal(err)
				}
			}
			if b.Phase.Terminal() {
				continue
			}
			unfinished = append(unfinished, b.ID)
			if i == 6 { // still in the queue: left as it is
				if err := aq.Enqueue(ctx, m.task(b)); err != nil {
					t.Fatal(err)
				}
				continue
			}
			wantQueued = append(wantQueued, b.ID)
		}

		if err := m.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if want := [][]string{unfinished[0:3], unfinished[3:6], unfinished[6:8]}; !reflect.DeepEqual(rq.lookups, want) {
			t.Errorf("queue lookups %v, want pages of 3 oldest first %v", rq.lookups, want)
		}
		if !reflect.DeepEqual(rq.enqueued, wantQueued) {
			t.Errorf("queued %v, want %v", rq.enqueued, wantQueued)
		}
		if missing, err := aq.Missing(ctx, unfinished); err != nil || len(missing) != 0 {
			t.Errorf("after Reconcile, missing from the queue: %v, %v", missing, err)
		}

		// Nothing is missing any more: a second walk queues nothing.
		rq.enqueued = nil
		if err := m.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if len(rq.enqueued) != 0 {
			t.Errorf("second Reconcile queued %v", rq.enqueued)
		}
	})
}

// listingExecutor is a fake executor whose workers outlive a server, as
// Jobs in a cluster do: it lists leftovers and records what is stopped.
type listingExecutor struct {
	*buildmanagertest.Executor
	leftovers []executors.Worker
	mu        sync.Mutex
	stops     []string
}

func (l *listingExecutor) Workers(context.Context) ([]executors.Worker, error) {
	return l.leftovers, nil
}

func (l *listingExecutor) Stop(ctx context.Context, id string) error {
	l.mu.Lock()
	l.stops = append(l.stops, id)
	l.mu.Unlock()
	return l.Executor.Stop(ctx, id)
}

// At start, workers an earlier server left behind are stopped when their
// build ended or is unknown; the worker of a build still running on it is
// left for the build's supervisor.
func TestRestartStopsLeftoverWorkers(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		var started atomic.Int32
		h := start(t, e, func(string, int) behaviour {
			if started.Add(1) == 1 {
				return behaveOK
			}
			return behaveHang
		}, nil)
		done := h.waitEnd(t, h.submit(t).ID, 10*time.Second)
		running := h.submit(t)
		h.waitPhase(t, running.ID, store.PhaseBuildScheduled, 10*time.Second)
		h.stop()
		if done.Phase != store.PhaseComplete {
			t.Fatalf("first build %s", done.Phase)
		}
		// The second build is recorded as running on worker "live-1". The
		// stopped manager's last writes may still land: read again when
		// the row changed under us.
		for try := 0; ; try++ {
			b, err := e.st.GetBuild(context.Background(), running.ID)
			if err != nil {
				t.Fatal(err)
			}
			b.Phase, b.Attempts, b.ExecutorName, b.ExecutionID = store.PhaseBuilding, 1, "fake", "live-1"
			b.LeaseExpiry = time.Now().Add(time.Hour)
			err = e.st.UpdateBuild(context.Background(), b)
			if err == nil {
				break
			}
			if !errors.Is(err, store.ErrStale) || try == 20 {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		ex := &listingExecutor{Executor: newFakeExecutor("fake", always(behaveHang)), leftovers: []executors.Worker{
			{ExecutionID: "ended-1", BuildID: done.ID},
			{ExecutionID: "gone-1", BuildID: "no-such-build"},
			{ExecutionID: "live-1", BuildID: running.ID},
		}}
		h2 := startWith(t, e, testOptions(e, testKey, Executor{Executor: ex}))
		defer h2.stop()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ex.mu.Lock()
			stops := slices.Clone(ex.stops)
			ex.mu.Unlock()
			if slices.Contains(stops, "ended-1") && slices.Contains(stops, "gone-1") {
				if slices.Contains(stops, "live-1") {
					t.Errorf("the worker of a running build was stopped at start: %v", stops)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("left-over workers stopped: %v, want ended-1 and gone-1", stops)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
