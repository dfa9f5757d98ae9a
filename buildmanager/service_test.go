package buildmanager

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/buildmanager/buildmanagertest"
	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// newAwaitService is a service whose manager has only a file log store, in
// which build "b1" has stored worker lines up to sequence 2.
func newAwaitService(t *testing.T) *service {
	t.Helper()
	logs, err := newFileLogs(filepath.Join(t.TempDir(), "logs"), LogLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := logs.appendSeq(context.Background(), "b1", []int64{1, 2},
		[]LogEntry{{Message: "one"}, {Message: "two"}}); err != nil {
		t.Fatal(err)
	}
	return &service{m: &Manager{logs: logs, log: slog.New(slog.DiscardHandler)}}
}

// TestFinishStopsWaitingForLogsWhenTheWorkerHangsUp: Finish waits up to
// logWait for log lines the worker says it sent, but a worker that has gone
// (its call's context ended) ends the wait at once.
func TestFinishStopsWaitingForLogsWhenTheWorkerHangsUp(t *testing.T) {
	s := newAwaitService(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	err := s.awaitLogs(ctx, "b1", 3)
	if took := time.Since(start); took > logWait/2 {
		t.Errorf("awaitLogs returned %v after the worker hung up, want well under %v", took, logWait)
	}
	if status.Code(err) != codes.Canceled {
		t.Errorf("awaitLogs = %v, want code Canceled", err)
	}
}

// TestFinishReturnsOnceTheLastLogLineIsStored: no wait when the worker's
// last line is already stored, and a wait that ends when it arrives.
func TestFinishReturnsOnceTheLastLogLineIsStored(t *testing.T) {
	s := newAwaitService(t)
	if err := s.awaitLogs(context.Background(), "b1", 2); err != nil {
		t.Fatalf("awaitLogs with every line stored = %v, want nil", err)
	}
	time.AfterFunc(50*time.Millisecond, func() {
		_, _ = s.m.logs.appendSeq(context.Background(), "b1", []int64{3}, []LogEntry{{Message: "three"}})
	})
	start := time.Now()
	if err := s.awaitLogs(context.Background(), "b1", 3); err != nil {
		t.Fatalf("awaitLogs = %v, want nil", err)
	}
	if took := time.Since(start); took > logWait/2 {
		t.Errorf("awaitLogs returned %v after the last line was stored, want well under %v", took, logWait)
	}
	got, err := s.m.logs.storedSeq(context.Background(), "b1")
	if err != nil || got != 3 {
		t.Errorf("stored sequence = %d, %v; want 3", got, err)
	}
}

// TestJobEngine: the job names the build's own engine when it has one,
// else the engine of the executor that started the attempt (not the first
// configured), else buildah.
func TestJobEngine(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		var mu sync.Mutex
		engines := map[string]string{} // build ID -> the job's engine
		record := func(script buildmanagertest.Script) buildmanagertest.Script {
			return func(ctx context.Context, w *buildmanagertest.Worker) {
				mu.Lock()
				engines[w.BuildID] = w.Job.GetEngine()
				mu.Unlock()
				script(ctx, w)
			}
		}
		down := buildmanagertest.NewExecutor("down", record(behaving(always(behaveOK))))
		down.SetFailing(true)
		kit := buildmanagertest.NewExecutor("kit", record(behaving(always(behaveOK))))
		plain := buildmanagertest.NewExecutor("plain", record(behaving(always(behaveOK))))
		h := startWith(t, e, testOptions(e, testKey,
			Executor{Executor: down, Engine: workerpb.EngineBuildah},
			Executor{Executor: kit, Engine: workerpb.EngineBuildKit},
			Executor{Executor: plain}))
		submit := func(engine string) string {
			t.Helper()
			b, err := h.Submit(context.Background(), BuildRequest{
				Repository: h.repo, Requester: h.user, Tags: []string{"latest"},
				Request: store.BuildRequest{FileID: "f-" + randHex(4), DockerfilePath: "Dockerfile", Engine: engine},
			})
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			if got := h.waitEnd(t, b.ID, 10*time.Second); got.Phase != store.PhaseComplete {
				t.Fatalf("build on %q ended %s", got.ExecutorName, got.Phase)
			}
			mu.Lock()
			defer mu.Unlock()
			return engines[b.ID]
		}
		if got := submit(""); got != workerpb.EngineBuildKit {
			t.Errorf("a build naming no engine, started by the buildkit executor after buildah's failed, got engine %q", got)
		}
		if got := submit(workerpb.EngineBuildah); got != workerpb.EngineBuildah {
			t.Errorf("a build naming buildah, on the buildkit executor, got engine %q", got)
		}
		kit.SetFailing(true)
		if got := submit(""); got != workerpb.EngineBuildah {
			t.Errorf("a build naming no engine, on an executor naming none, got engine %q", got)
		}
	})
}
