package buildmanager

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/executors"
	"github.com/berth-dev/berth/internal/store"
)

// floodExecutor starts in-process workers that print lines of size bytes
// as fast as the manager takes them, the review's repro of finding F4 (a
// RUN step printing 100,000 lines of 1 KiB). A worker waits on hold, if
// set, after its last line is acknowledged and before it finishes.
type floodExecutor struct {
	lines, size int
	// long, if set, is printed once before the flood.
	long string
	// flooded is closed when a worker's last line is acknowledged.
	flooded chan struct{}
	hold    chan struct{}

	mu      sync.Mutex
	next    int
	workers map[string]context.CancelFunc
	running atomic.Int32
}

func newFloodExecutor(lines, size int) *floodExecutor {
	return &floodExecutor{lines: lines, size: size, flooded: make(chan struct{}), workers: map[string]context.CancelFunc{}}
}

func (f *floodExecutor) Name() string { return "flood" }

func (f *floodExecutor) Running(context.Context) (int, error) { return int(f.running.Load()), nil }

func (f *floodExecutor) Start(_ context.Context, spec executors.WorkerSpec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	id := fmt.Sprintf("flood-%d", f.next)
	ctx, cancel := context.WithCancel(context.Background())
	f.workers[id] = cancel
	f.running.Add(1)
	go func() {
		defer f.running.Add(-1)
		f.work(ctx, spec)
	}()
	return id, nil
}

func (f *floodExecutor) Stop(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cancel, ok := f.workers[id]; ok {
		cancel()
		return nil
	}
	return executors.ErrUnknownWorker
}

func (f *floodExecutor) work(ctx context.Context, spec executors.WorkerSpec) {
	conn, err := grpc.NewClient(spec.ManagerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return
	}
	defer conn.Close()
	c := workerpb.NewBuildManagerClient(conn)
	job, err := c.Register(ctx, &workerpb.RegisterRequest{RegistrationToken: spec.RegistrationToken, WorkerInfo: "flood"})
	if err != nil {
		return
	}
	tok := job.GetJobToken()
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_, _ = c.Heartbeat(ctx, &workerpb.HeartbeatRequest{JobToken: tok})
			}
		}
	}()
	for i, p := range []workerpb.Phase{workerpb.Phase_PHASE_UNPACKING, workerpb.Phase_PHASE_PULLING, workerpb.Phase_PHASE_BUILDING} {
		if _, err := c.SetPhase(ctx, &workerpb.SetPhaseRequest{JobToken: tok, SequenceNumber: int64(i + 1), Phase: p}); err != nil {
			return
		}
	}
	stream, err := c.StreamLog(ctx)
	if err != nil {
		return
	}
	seq := int64(0)
	send := func(msgs ...string) bool {
		batch := &workerpb.LogBatch{JobToken: tok}
		for _, m := range msgs {
			seq++
			batch.Entries = append(batch.Entries, &workerpb.LogEntry{SequenceNumber: seq, Message: m, TimeUnixNano: time.Now().UnixNano()})
		}
		if stream.Send(batch) != nil {
			return false
		}
		ack, err := stream.Recv()
		return err == nil && ack.GetSequenceNumber() == seq
	}
	if f.long != "" && !send(f.long) {
		return
	}
	line := strings.Repeat("x", f.size)
	batch := make([]string, 0, 256)
	for i := 0; i < f.lines; i++ {
		batch = append(batch, line)
		if len(batch) == cap(batch) || i == f.lines-1 {
			if !send(batch...) {
				return
			}
			batch = batch[:0]
		}
	}
	_ = stream.CloseSend()
	close(f.flooded)
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return
		}
	}
	if _, err := c.SetPhase(ctx, &workerpb.SetPhaseRequest{JobToken: tok, SequenceNumber: 4, Phase: workerpb.Phase_PHASE_PUSHING}); err != nil {
		return
	}
	_, _ = c.Finish(ctx, &workerpb.FinishRequest{JobToken: tok, LastLogSequence: seq,
		Result: &workerpb.FinishRequest_Success{Success: &workerpb.Success{Digests: map[string]string{"latest": "sha256:" + strings.Repeat("ab", 32)}}}})
}

// waitArchived waits until build id ended and its log was archived.
func (h *harness) waitArchived(t *testing.T, id string, within time.Duration) *store.Build {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := h.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if b.LogsArchive != "" {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s is %s and not archived after %s", id, b.Phase, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startFlood(t *testing.T, e *env, ex *floodExecutor, limits LogLimits) *harness {
	t.Helper()
	o := testOptions(e, testKey, Executor{Executor: ex})
	o.LogLimits = limits
	o.LeaseTimeout = 5 * time.Second
	return startWith(t, e, o)
}

// TestBuildLogLimits is the regression test of the review's finding F4:
// a build printing 100,000 lines of 1 KiB keeps the default limits' worth
// of its log, one marker says the rest was dropped, the build completes,
// and a line over the line limit is cut.
func TestBuildLogLimits(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		ex := newFloodExecutor(100_000, 1024)
		ex.long = strings.Repeat("L", 1<<20)
		h := startFlood(t, e, ex, LogLimits{})
		b := h.submit(t)
		if got := h.waitEnd(t, b.ID, 60*time.Second); got.Phase != store.PhaseComplete {
			t.Fatalf("build ended %s: %s", got.Phase, got.ErrorMessage)
		}
		es := h.logsOf(t, b.ID)
		var markers, output int
		var kept int64
		for _, e := range es {
			kept += int64(len(e.Message))
			switch {
			case strings.Contains(e.Message, "BUILD_LOG_MAX_BYTES"):
				markers++
			case strings.HasPrefix(e.Message, "xxx"):
				output++
			}
		}
		if markers != 1 {
			t.Errorf("%d limit markers, want 1", markers)
		}
		if kept > DefaultLogMaxBytes+1024 || output < DefaultLogMaxBytes/1024-100 {
			t.Errorf("log kept %d bytes in %d output lines of %d entries", kept, output, len(es))
		}
		long := es[slices.IndexFunc(es, func(e LogEntry) bool { return strings.HasPrefix(e.Message, "LLL") })].Message
		if !strings.HasPrefix(long, strings.Repeat("L", DefaultLogMaxLineBytes)+" [line cut: ") || len(long) > DefaultLogMaxLineBytes+200 {
			t.Errorf("the 1 MiB line was kept as %d bytes", len(long))
		}
		if p := phasesOf(es); p[len(p)-1] != "complete" {
			t.Errorf("phases %v", p)
		}
	})
}

// heapSampler records the largest heap seen while it runs.
type heapSampler struct {
	stop chan struct{}
	done chan struct{}
	peak atomic.Uint64
}

func sampleHeap() *heapSampler {
	s := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > s.peak.Load() {
				s.peak.Store(ms.HeapAlloc)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *heapSampler) end() uint64 {
	close(s.stop)
	<-s.done
	return s.peak.Load()
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestBuildLogHeapBounded pushes 100 MB of log through the manager on the
// embedded configuration (SQLite, the in-process Redis, live logs in
// files) with limits high enough to keep all of it, then archives it and
// reads it back whole: the server's heap must not grow with the log. The
// review saw 48 MB grow to 890 MB; before live logs left the embedded
// Redis and reading stopped materialising the log, the live heap alone
// grew by more than the log.
func TestBuildLogHeapBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes 100 MB")
	}
	const (
		lines = 100_000
		size  = 1024
		// Generous: the log is 100 MB; garbage between collections and
		// gRPC's buffers come and go.
		maxGrowth = 48 << 20
	)
	eachEnv(t, func(t *testing.T, e *env) {
		if e.logDir == "" {
			t.Skip("the embedded configuration is measured")
		}
		ex := newFloodExecutor(lines, size)
		ex.hold = make(chan struct{})
		h := startFlood(t, e, ex, LogLimits{MaxBytes: 1 << 30, MaxLines: 1 << 20})
		base := liveHeap()
		peaks := sampleHeap()
		b := h.submit(t)
		select {
		case <-ex.flooded:
		case <-time.After(60 * time.Second):
			t.Fatal("the flood did not get through")
		}
		if n, _ := h.logs.length(context.Background(), b.ID); n != lines+4 {
			t.Fatalf("live log of %d entries, want %d", n, lines+4)
		}
		grown := int64(liveHeap()) - int64(base)
		t.Logf("live heap %d MiB at the start, grown by %d MiB holding the live log", base>>20, grown>>20)
		if grown > maxGrowth {
			t.Errorf("live heap grew by %d MiB holding a 100 MB live log", grown>>20)
		}
		close(ex.hold)
		got := h.waitArchived(t, b.ID, 60*time.Second)
		if got.Phase != store.PhaseComplete || got.LogsArchive == "" {
			t.Fatalf("build ended %s, archive %q: %s", got.Phase, got.LogsArchive, got.ErrorMessage)
		}
		// Read the archive back as the API pages through it.
		var read, total int
		for start := 0; ; start += 5000 {
			n := 0
			err := h.ReadLog(context.Background(), b.ID, start, 5000, func(length int, entries iter.Seq2[LogEntry, error]) error {
				total = length
				for e, err := range entries {
					if err != nil {
						return err
					}
					if e.Index != start+n {
						return fmt.Errorf("entry %d at %d", e.Index, start+n)
					}
					n++
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			read += n
			if n < 5000 {
				break
			}
		}
		if read != lines+6 || total != read {
			t.Errorf("read %d entries of %d, want %d", read, total, lines+6)
		}
		peak := peaks.end()
		t.Logf("heap peaked %d MiB above its start", (peak-base)>>20)
		if peak > base+2*maxGrowth {
			t.Errorf("heap peaked %d MiB above its start while the log went through", (peak-base)>>20)
		}
	})
}

// TestReadLogPagesAndArchive: a page is bounded and its entries carry their
// index, from the live log and from the archive alike, and an archive of
// the earlier format (one JSON array) still reads.
func TestReadLogPagesAndArchive(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		ex := newFloodExecutor(3000, 10)
		ex.hold = make(chan struct{})
		h := startFlood(t, e, ex, LogLimits{})
		b := h.submit(t)
		<-ex.flooded
		check := func(from string) {
			t.Helper()
			page, total := h.logsFrom(t, b.ID, 1000, 700)
			if total < 3004 || len(page) != 700 || page[0].Index != 1000 || page[699].Index != 1699 || page[0].Message != strings.Repeat("x", 10) {
				t.Fatalf("%s: page of %d entries of %d", from, len(page), total)
			}
			if tail, n := h.logsFrom(t, b.ID, total-1, 700); len(tail) != 1 || n != total {
				t.Fatalf("%s: tail of %d entries", from, len(tail))
			}
			if past, n := h.logsFrom(t, b.ID, total+5, 10); len(past) != 0 || n != total {
				t.Fatalf("%s: past the end: %d entries", from, len(past))
			}
		}
		check("live")
		if e.logDir != "" {
			// The embedded configuration keeps no log in its Redis, where
			// anything holding a connection could read or write it.
			if keys, err := e.rc.Keys(context.Background(), "*buildlogs*").Result(); err != nil || len(keys) != 0 {
				t.Errorf("build log keys in the embedded Redis: %v, %v", keys, err)
			}
		}
		close(ex.hold)
		h.waitArchived(t, b.ID, 30*time.Second)
		check("archive")
		all := h.logsOf(t, b.ID)

		// The same log archived the way berth did before.
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if err := json.NewEncoder(zw).Encode(all); err != nil {
			t.Fatal(err)
		}
		zw.Close()
		ref, _, err := putBlob(context.Background(), h.o.Blobs, "legacy-"+b.ID, &buf, -1)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.st.SetBuildLogsArchive(context.Background(), b.ID, ref); err != nil {
			t.Fatal(err)
		}
		check("legacy archive")
		if again := h.logsOf(t, b.ID); len(again) != len(all) || again[len(all)-1].Message != all[len(all)-1].Message {
			t.Fatalf("legacy archive read as %d entries, want %d", len(again), len(all))
		}
	})
}
