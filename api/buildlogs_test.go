package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/buildmanager/buildmanagertest"
	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/store"
)

// chatty is the script of workers that print lines "line 1" … "line N"
// in batches of 500, then wait for release before they finish.
type chatty struct {
	lines   int
	printed chan struct{}
	release chan struct{}
}

func (c *chatty) work(ctx context.Context, w *buildmanagertest.Worker) {
	w.Heartbeat(ctx)
	if w.Phase(ctx, workerpb.Phase_PHASE_UNPACKING, workerpb.Phase_PHASE_PULLING, workerpb.Phase_PHASE_BUILDING) != nil {
		return
	}
	batch := make([]string, 0, 500)
	for n := 1; n <= c.lines; n++ {
		batch = append(batch, "line "+strconv.Itoa(n))
		if len(batch) == cap(batch) || n == c.lines {
			if w.Log(ctx, workerpb.LogType_LOG_TYPE_UNSPECIFIED, batch...) != nil {
				return
			}
			batch = batch[:0]
		}
	}
	_ = w.EndLog()
	close(c.printed)
	select {
	case <-c.release:
	case <-ctx.Done():
		return
	}
	_ = w.Succeed(ctx, map[string]string{"v1": testDigest})
}

// newChattyEnv is newBuildEnv with chatty workers and live logs in files,
// its Manager running.
func newChattyEnv(t *testing.T, lines int) (*buildEnv, *chatty) {
	t.Helper()
	c := &chatty{lines: lines, printed: make(chan struct{}), release: make(chan struct{})}
	be := newBuildEnvWith(t, newEnv(t, nil), c.work, func(o *buildmanager.Options) {
		o.LogDir = t.TempDir()
		o.LeaseTimeout = 5 * time.Second
	})
	be.setup()
	be.run()
	return be, c
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
	buildmanagertest.WaitBuild(t, e.m, id, 10*time.Second, "archived", func(b *store.Build) bool { return b.LogsArchive != "" })
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
