package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/buildmanager/queue"
	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/executors"
	"github.com/berth-dev/berth/storage/filesystem"
)

// chattyExecutor starts in-process workers that print lines "line 1" …
// "line N", then wait for release before they finish.
type chattyExecutor struct {
	lines   int
	printed chan struct{}
	release chan struct{}

	mu      sync.Mutex
	n       int
	workers map[string]context.CancelFunc
}

func (c *chattyExecutor) Name() string { return "chatty" }

func (c *chattyExecutor) Running(context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.workers), nil
}

func (c *chattyExecutor) Start(_ context.Context, spec executors.WorkerSpec) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	id := "c" + strconv.Itoa(c.n)
	ctx, cancel := context.WithCancel(context.Background())
	c.workers[id] = cancel
	go c.work(ctx, spec)
	return id, nil
}

func (c *chattyExecutor) Stop(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cancel, ok := c.workers[id]; ok {
		cancel()
		delete(c.workers, id)
	}
	return nil
}

func (c *chattyExecutor) work(ctx context.Context, spec executors.WorkerSpec) {
	conn, err := grpc.NewClient(spec.ManagerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return
	}
	defer conn.Close()
	mc := workerpb.NewBuildManagerClient(conn)
	job, err := mc.Register(ctx, &workerpb.RegisterRequest{RegistrationToken: spec.RegistrationToken, WorkerInfo: "chatty"})
	if err != nil {
		return
	}
	tok := job.GetJobToken()
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_, _ = mc.Heartbeat(ctx, &workerpb.HeartbeatRequest{JobToken: tok})
			}
		}
	}()
	for i, p := range []workerpb.Phase{workerpb.Phase_PHASE_UNPACKING, workerpb.Phase_PHASE_PULLING, workerpb.Phase_PHASE_BUILDING} {
		if _, err := mc.SetPhase(ctx, &workerpb.SetPhaseRequest{JobToken: tok, SequenceNumber: int64(i + 1), Phase: p}); err != nil {
			return
		}
	}
	stream, err := mc.StreamLog(ctx)
	if err != nil {
		return
	}
	batch := &workerpb.LogBatch{JobToken: tok}
	for seq := int64(1); seq <= int64(c.lines); seq++ {
		batch.Entries = append(batch.Entries, &workerpb.LogEntry{SequenceNumber: seq, Message: "line " + strconv.FormatInt(seq, 10), TimeUnixNano: time.Now().UnixNano()})
		if len(batch.Entries) == 500 || seq == int64(c.lines) {
			if stream.Send(batch) != nil {
				return
			}
			if _, err := stream.Recv(); err != nil {
				return
			}
			batch = &workerpb.LogBatch{JobToken: tok}
		}
	}
	_ = stream.CloseSend()
	close(c.printed)
	select {
	case <-c.release:
	case <-ctx.Done():
		return
	}
	_, _ = mc.Finish(ctx, &workerpb.FinishRequest{JobToken: tok, LastLogSequence: int64(c.lines),
		Result: &workerpb.FinishRequest_Success{Success: &workerpb.Success{Digests: map[string]string{"v1": "sha256:" + strings.Repeat("ab", 32)}}}})
}

// newChattyEnv is newBuildEnv with a chattyExecutor, its Manager running.
func newChattyEnv(t *testing.T, lines int) (*buildEnv, *chattyExecutor) {
	t.Helper()
	e := newEnv(t, nil)
	mr, err := queue.StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mr.Close)
	rc := mr.Client()
	t.Cleanup(func() { rc.Close() })
	blobs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	contexts := &buildmanager.BlobContextStore{Blobs: blobs, Store: e.store, MaxBytes: maxTestContext}
	ex := &chattyExecutor{lines: lines, printed: make(chan struct{}), release: make(chan struct{}), workers: map[string]context.CancelFunc{}}
	m, err := buildmanager.New(buildmanager.Options{
		Store: e.store, Blobs: blobs, Contexts: contexts, Redis: rc, Prefix: "t-", LogDir: t.TempDir(), SigningKey: key,
		Executors:    []buildmanager.Executor{{Executor: ex}},
		PollInterval: 50 * time.Millisecond, LeaseTimeout: 5 * time.Second, SetupTime: 5 * time.Second,
		TimeLimit: 30 * time.Second, RetryDelay: 50 * time.Millisecond,
		Registry: buildmanager.RegistryTarget{Addr: "127.0.0.1:1", Insecure: true},
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	b := RegisterBuilds(e.api, BuildOptions{Manager: m, Contexts: contexts,
		FiledropKey: bytes.Repeat([]byte("k"), 32), Heartbeat: 50 * time.Millisecond})
	be := &buildEnv{env: e, m: m, builds: b, contexts: contexts}
	be.setup()
	be.run()
	return be, ex
}

// TestBuildLogsPaged: GET …/logs answers Quay's {start, total, logs} with
// at most logPage entries; a client paging by start reads the whole log,
// from the live log and from the archive; the build page shows it whole.
func TestBuildLogsPaged(t *testing.T) {
	const lines = 12_000
	e, ex := newChattyEnv(t, lines)
	fid := e.upload(basic("alice"), "FROM scratch\n")
	r := e.must(201, http.MethodPost, "/api/v1/repository/alice/app/build/", basic("alice"), map[string]any{"file_id": fid, "docker_tags": []string{"v1"}})
	id := r.obj()["id"].(string)
	logsURL := "/api/v1/repository/alice/app/build/" + id + "/logs"

	type page struct {
		Start int               `json:"start"`
		Total int               `json:"total"`
		Logs  []json.RawMessage `json:"logs"`
	}
	readAll := func(from string, want int) []string {
		t.Helper()
		var msgs []string
		for start := 0; ; {
			r := e.must(200, http.MethodGet, logsURL+"?start="+strconv.Itoa(start), basic("dave"), nil)
			keys(t, "logs", r.v, "start", "total", "logs")
			var p page
			if err := json.Unmarshal(r.body, &p); err != nil {
				t.Fatalf("%s: %v", from, err)
			}
			if p.Start != start || p.Total != want || len(p.Logs) > logPage || len(p.Logs) != min(logPage, want-start) {
				t.Fatalf("%s: start=%d answered start=%d total=%d with %d entries", from, start, p.Start, p.Total, len(p.Logs))
			}
			for _, raw := range p.Logs {
				var entry map[string]any
				if err := json.Unmarshal(raw, &entry); err != nil {
					t.Fatal(err)
				}
				if _, ok := entry["data"].(map[string]any)["datetime"]; !ok {
					t.Fatalf("%s: entry %s", from, raw)
				}
				msgs = append(msgs, entry["message"].(string))
			}
			if start += len(p.Logs); start >= p.Total {
				return msgs
			}
		}
	}
	checkLines := func(from string, msgs []string) {
		t.Helper()
		n := 0
		for _, m := range msgs {
			if strings.HasPrefix(m, "line ") {
				n++
				if m != "line "+strconv.Itoa(n) {
					t.Fatalf("%s: %q where line %d belongs", from, m, n)
				}
			}
		}
		if n != lines {
			t.Fatalf("%s: %d lines of %d", from, n, lines)
		}
	}

	<-ex.printed
	// build-scheduled, unpacking, pulling, building, then the lines.
	checkLines("live", readAll("live", lines+4))
	close(ex.release)
	for deadline := time.Now().Add(10 * time.Second); ; {
		b, err := e.m.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if b.LogsArchive != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s not archived", b.Phase)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// pushing is not reported by this worker; complete ends the log.
	all := readAll("archive", lines+5)
	checkLines("archive", all)
	if all[len(all)-1] != "complete" {
		t.Errorf("last entry %q", all[len(all)-1])
	}
	r = e.must(200, http.MethodGet, logsURL+"?start=99999", basic("dave"), nil)
	if string(bytes.TrimSpace(r.body)) != fmt.Sprintf(`{"start":99999,"total":%d,"logs":[]}`, lines+5) {
		t.Errorf("past the end: %s", r.body)
	}

	// The page holds every entry, and its stream would start after them.
	srv := httptest.NewServer(e.builds.PageHandler())
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+PagePath+"alice/app/build/"+id, nil)
	basic("alice")(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := strings.Count(string(html), "<div>line "); resp.StatusCode != 200 || n != lines {
		t.Fatalf("page: %d with %d lines", resp.StatusCode, n)
	}
	next := regexp.MustCompile(`"\?start=" \+\s*(\d+)`).FindSubmatch(html)
	if next == nil || string(next[1]) != strconv.Itoa(lines+5) || !strings.Contains(string(html), "var ended =  true ") {
		t.Errorf("page's stream start %q", next)
	}
}
