package builds

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/test/harness"
)

// These tests run alone (not in parallel): one restarts the shared server,
// the other counts every worker on the host.

// TestRestartWithQueuedAndRunning: SIGTERM the server while builds run
// and wait, start it again on the same data directory and port, and every
// build completes.
func TestRestartWithQueuedAndRunning(t *testing.T) {
	e := requireEnv(t)
	repo := newRepo(t, e, "restart")
	const n = 4
	ids := make([]string, n)
	for i := range ids {
		// Long enough that a running build cannot finish while the
		// server shuts down: it must be stopped and run again.
		b := submit(t, e, repo, harness.BuildRequest{DockerTags: []string{fmt.Sprintf("r%d", i)}, BuildArgs: map[string]string{"N": fmt.Sprint(i)}},
			harness.Entry{Name: "Dockerfile", Body: e.dockerfile("ARG N", "RUN sleep 12 && echo $N > /n")})
		ids[i] = b.ID
	}
	// Wait until some run and some still wait.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var phases map[string]string
	for {
		phases = map[string]string{}
		running, waiting := 0, 0
		for _, id := range ids {
			b, err := e.client.GetBuild(ctx, repo, id)
			if err != nil {
				t.Fatal(err)
			}
			phases[id] = b.Phase
			switch {
			case b.Phase == "building":
				running++
			case b.Phase == "waiting":
				waiting++
			case store.BuildPhase(b.Phase).TerminalView():
				t.Fatalf("build %s ended %s before the restart\n%s", id, b.Phase, dumpLogs(e, repo, id))
			}
		}
		if running > 0 && waiting > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("never saw builds building and waiting at once: %v", phases)
		}
		time.Sleep(100 * time.Millisecond)
	}
	workers, err := harness.WorkerProcs()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stopping the server with phases %v and workers %+v", phases, workers)
	start := time.Now()
	if err := e.srv.Stop(); err != nil {
		t.Fatalf("stopping the server: %v", err)
	}
	t.Logf("SIGTERM to exit: %s", time.Since(start).Round(time.Millisecond))
	// serve stops its local workers on SIGTERM.
	for _, w := range workers {
		if alive(w.PID) {
			t.Errorf("worker %d of build %s outlived the server", w.PID, w.BuildID)
		}
	}
	start = time.Now()
	if err := e.srv.Start(ctx); err != nil {
		t.Fatalf("starting the server again: %v", err)
	}
	t.Logf("server ready again after %s", time.Since(start).Round(time.Millisecond))
	for _, id := range ids {
		b, _ := await(t, e, repo, id, nil)
		if b.Phase != "complete" {
			t.Errorf("build %s (%s at the restart) ended %s: %s\n%s", id, phases[id], b.Phase, deref(b.Error), dumpLogs(e, repo, id))
			continue
		}
		if !digestPattern.MatchString(b.ManifestDigests[b.Tags[0]]) {
			t.Errorf("build %s completed without a manifest digest: %v", id, b.ManifestDigests)
		}
		entries := logsOf(t, e, repo, id)
		switch n := attempts(entries); {
		case phases[id] == "building" && n != 2:
			t.Errorf("build %s was building at the restart and logs %d attempts, want 2 (stopped, then run again, with the failed attempt in the log)\n%s", id, n, formatLog(entries))
		case phases[id] == "waiting" && n != 1:
			t.Errorf("build %s was waiting at the restart and logs %d attempts, want 1\n%s", id, n, formatLog(entries))
		}
	}
}

// TestWorkerLimit: 20 builds queued at once with ALLOWED_WORKER_COUNT 2
// all complete, and never more than 2 workers run (counted from the
// processes on the host and from the builds' phases).
func TestWorkerLimit(t *testing.T) {
	e := requireEnv(t)
	repo := newRepo(t, e, "limit")
	const n = 20
	// Watch from before the first request.
	var maxProcs, maxRunning atomic.Int64
	// over holds the first sample with more workers than allowed.
	var overMu sync.Mutex
	var over []harness.WorkerProc
	var overAt time.Time
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sampleErr atomic.Value
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			procs, err := serverWorkers(e)
			if err != nil {
				sampleErr.Store(err)
				return
			}
			if c := int64(len(procs)); c > maxProcs.Load() {
				maxProcs.Store(c)
			}
			if len(procs) > workerCount {
				overMu.Lock()
				if over == nil {
					over, overAt = procs, time.Now()
				}
				overMu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for {
			bs, err := e.client.ListBuilds(ctx, repo)
			if err == nil {
				var c int64
				for _, b := range bs {
					if runningPhases[b.Phase] {
						c++
					}
				}
				if c > maxRunning.Load() {
					maxRunning.Store(c)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
		}
	}()
	ids := make([]string, n)
	for i := range ids {
		b := submit(t, e, repo, harness.BuildRequest{DockerTags: []string{fmt.Sprintf("t%d", i)}, BuildArgs: map[string]string{"N": fmt.Sprint(i)}},
			harness.Entry{Name: "Dockerfile", Body: e.dockerfile("ARG N", "RUN echo $N > /n")})
		ids[i] = b.ID
	}
	start := time.Now()
	failed := 0
	for _, id := range ids {
		b, _ := await(t, e, repo, id, nil)
		if b.Phase != "complete" {
			failed++
			t.Errorf("build %s ended %s: %s\n%s", id, b.Phase, deref(b.Error), dumpLogs(e, repo, id))
		}
	}
	close(stop)
	wg.Wait()
	if err, _ := sampleErr.Load().(error); err != nil {
		t.Fatalf("sampling worker processes: %v", err)
	}
	t.Logf("%d builds ended %s after the last request; at most %d worker processes and %d running builds seen",
		n, time.Since(start).Round(time.Millisecond), maxProcs.Load(), maxRunning.Load())
	if maxProcs.Load() > workerCount {
		t.Errorf("%d worker processes ran at once; ALLOWED_WORKER_COUNT is %d", maxProcs.Load(), workerCount)
		// Say where each of them was: a worker still exiting after its
		// build ended is told apart from one more build running.
		for _, p := range over {
			entries, err := e.client.Logs(context.Background(), repo, p.BuildID, 0)
			if err != nil {
				t.Logf("  worker %d of build %s (log unreadable: %v)", p.PID, p.BuildID, err)
				continue
			}
			last := ""
			for _, en := range entries {
				if en.Type == "phase" && !en.Time().After(overAt) {
					last = fmt.Sprintf("%s at %s (%s before the sample)", en.Message, en.Time().Format("15:04:05.000"), overAt.Sub(en.Time()).Round(time.Millisecond))
				}
			}
			t.Logf("  worker %d of build %s: last phase before the sample: %s", p.PID, p.BuildID, last)
		}
	}
	if maxRunning.Load() > workerCount {
		t.Errorf("%d builds were in running phases at once; ALLOWED_WORKER_COUNT is %d", maxRunning.Load(), workerCount)
	}
	if maxProcs.Load() < workerCount && failed == 0 {
		t.Errorf("never more than %d worker process at once: the %d slots were not used", maxProcs.Load(), workerCount)
	}
}

// serverWorkers lists the worker processes of this package's server only:
// other end-to-end packages run their own servers, and workers, at the
// same time.
func serverWorkers(e *env) ([]harness.WorkerProc, error) {
	procs, err := harness.WorkerProcs()
	if err != nil {
		return nil, err
	}
	own := procs[:0]
	for _, p := range procs {
		if p.PPID == e.srv.PID() {
			own = append(own, p)
		}
	}
	return own, nil
}
