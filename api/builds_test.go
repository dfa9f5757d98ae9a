package api

import (
	"bufio"
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
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/buildmanager/buildmanagertest"
	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/storage/filesystem"
)

// buildEnv is the API with the build routes over a real Manager (SQLite,
// embedded Redis, filesystem blobs). Its Manager only runs (and so only
// schedules builds) when run is called.
type buildEnv struct {
	*env
	m        *buildmanager.Manager
	builds   *Builds
	contexts buildmanager.ContextStore
	// release lets the scripted workers finish.
	release chan struct{}
}

const maxTestContext = 1024

func newBuildEnv(t *testing.T, raw map[string]any) *buildEnv {
	t.Helper()
	return newBuildEnvOn(t, newEnv(t, raw))
}

// newBuildEnvOn adds the build routes to e, with workers that act out
// scripted.
func newBuildEnvOn(t *testing.T, e *env) *buildEnv {
	t.Helper()
	release := make(chan struct{})
	be := newBuildEnvWith(t, e, func(ctx context.Context, w *buildmanagertest.Worker) { scripted(ctx, w, release) }, nil)
	be.release = release
	return be
}

// newBuildEnvWith adds the build routes to e over a Manager whose workers
// run work; tweak, if set, adjusts the Manager's options.
func newBuildEnvWith(t *testing.T, e *env, work buildmanagertest.Script, tweak func(*buildmanager.Options)) *buildEnv {
	t.Helper()
	blobs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	contexts := &buildmanager.BlobContextStore{Blobs: blobs, Store: e.store, MaxBytes: maxTestContext}
	o := buildmanager.Options{
		Store: e.store, Blobs: blobs, Contexts: contexts, Redis: buildmanagertest.Redis(t), Prefix: "t-", SigningKey: key,
		Executors:    []buildmanager.Executor{{Executor: buildmanagertest.NewExecutor("scripted", work)}},
		PollInterval: 50 * time.Millisecond, LeaseTimeout: 2 * time.Second, SetupTime: 5 * time.Second,
		TimeLimit: 30 * time.Second, RetryDelay: 50 * time.Millisecond,
		Registry: buildmanager.RegistryTarget{Addr: "127.0.0.1:1", Insecure: true},
		Logger:   slog.New(slog.DiscardHandler),
	}
	if tweak != nil {
		tweak(&o)
	}
	m, err := buildmanager.New(o)
	if err != nil {
		t.Fatal(err)
	}
	limits, err := FiledropLimitsFromConfig(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := RegisterBuilds(e.api, BuildOptions{Manager: m, Contexts: contexts,
		FiledropKey: bytes.Repeat([]byte("k"), 32), Heartbeat: 50 * time.Millisecond, Limits: limits})
	return &buildEnv{env: e, m: m, builds: b, contexts: contexts}
}

// run starts the Manager until the test ends.
func (e *buildEnv) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.m.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

// setup makes alice's private repository alice/app with carol reading,
// dave writing and bob a stranger.
func (e *buildEnv) setup() {
	for _, n := range []string{"alice", "bob", "carol", "dave"} {
		e.user(n, false)
	}
	e.must(201, http.MethodPost, "/api/v1/repository", basic("alice"), map[string]any{"repository": "app", "visibility": "private", "description": ""})
	e.must(201, http.MethodPost, "/api/v1/repository", basic("alice"), map[string]any{"repository": "other", "visibility": "private", "description": ""})
	e.must(200, http.MethodPut, "/api/v1/repository/alice/app/permissions/user/carol", basic("alice"), map[string]any{"role": "read"})
	e.must(200, http.MethodPut, "/api/v1/repository/alice/app/permissions/user/dave", basic("alice"), map[string]any{"role": "write"})
}

// put sends a request to the filedrop handler.
func (e *buildEnv) put(rawURL string, body string) (int, string) {
	e.t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		e.t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPut, u.RequestURI(), strings.NewReader(body))
	w := httptest.NewRecorder()
	e.builds.FiledropHandler().ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// upload drops content and returns its file ID.
func (e *buildEnv) upload(c cred, content string) string {
	e.t.Helper()
	r := e.must(200, http.MethodPost, "/api/v1/filedrop/", c, map[string]any{"mimeType": "application/octet-stream"})
	m := keys(e.t, "filedrop", r.v, "url", "file_id")
	if code, body := e.put(m["url"].(string), content); code != 200 {
		e.t.Fatalf("PUT upload: %d %s", code, body)
	}
	return m["file_id"].(string)
}

var buildViewKeys = []string{"id", "phase", "started", "display_name", "status", "subdirectory", "dockerfile_path",
	"context", "tags", "manual_user", "is_writer", "trigger", "trigger_metadata", "resource_key", "pull_robot",
	"repository", "error", "archive_url", "manifest_digests"}

func TestBuildRequestListGetCancel(t *testing.T) {
	e := newBuildEnv(t, nil)
	e.setup()
	fid := e.upload(basic("alice"), "FROM scratch\n")
	body := map[string]any{"file_id": fid, "docker_tags": []string{"latest", "v1"},
		"build_args": map[string]string{"VERSION": "1.2"}, "labels": map[string]string{"org.example.team": "x"},
		"target": "final", "no_cache": true}
	r := e.must(201, http.MethodPost, "/api/v1/repository/alice/app/build/", basic("alice"), body)
	v := keys(t, "BuildView", r.v, buildViewKeys...)
	id, _ := v["id"].(string)
	if v["phase"] != "waiting" || v["resource_key"] != fid || v["manual_user"] != "alice" || v["is_writer"] != true ||
		v["context"] != "/" || v["dockerfile_path"] != "/Dockerfile" || v["error"] != nil || v["trigger"] != nil ||
		v["pull_robot"] != nil || fmt.Sprint(v["tags"]) != "[latest v1]" || fmt.Sprint(v["repository"]) != "map[name:app namespace:alice]" {
		t.Fatalf("BuildView: %s", r.body)
	}
	if _, err := time.Parse(DateFormat, v["started"].(string)); err != nil {
		t.Errorf("started %v: %v", v["started"], err)
	}
	if loc := r.hdr.Get("Location"); loc != "http://quay-server.example.com/api/v1/repository/alice/app/build/"+id+"/status" {
		t.Errorf("Location %q", loc)
	}
	stored, err := e.m.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if rq := stored.Request; rq.BuildArgs["VERSION"] != "1.2" || rq.Labels["org.example.team"] != "x" || rq.Target != "final" || !rq.NoCache || rq.FileID != fid {
		t.Fatalf("stored request %+v", rq)
	}

	// A second build (by the writer dave) is listed first.
	time.Sleep(1100 * time.Millisecond) // creation times have second precision on some stores
	r = e.must(201, http.MethodPost, "/api/v1/repository/alice/app/build/", basic("dave"), map[string]any{"archive_url": "https://example.com/ctx.tar.gz"})
	id2 := r.obj()["id"].(string)
	if r.obj()["archive_url"] != "https://example.com/ctx.tar.gz" || r.obj()["resource_key"] != nil {
		t.Fatalf("archive build: %s", r.body)
	}
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app/build/", basic("carol"), nil)
	list := keys(t, "list", r.v, "builds")["builds"].([]any)
	if len(list) != 2 || list[0].(map[string]any)["id"] != id2 || list[1].(map[string]any)["id"] != id {
		t.Fatalf("list: %s", r.body)
	}
	first := keys(t, "listed view", list[0], buildViewKeys...)
	if first["is_writer"] != false || first["archive_url"] != nil {
		t.Errorf("a reader sees %v", first)
	}
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app/build/?limit=1", basic("alice"), nil)
	if n := len(r.obj()["builds"].([]any)); n != 1 {
		t.Errorf("limit=1 gave %d builds", n)
	}
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app/build/?since="+future, basic("alice"), nil)
	if n := len(r.obj()["builds"].([]any)); n != 0 {
		t.Errorf("since=future gave %d builds", n)
	}
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app/build/?limit=x", basic("alice"), nil), 400, "invalid_request")

	for _, p := range []string{"/build/" + id, "/build/" + id + "/status"} {
		r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app"+p, basic("carol"), nil)
		if keys(t, p, r.v, buildViewKeys...)["id"] != id {
			t.Errorf("%s: %s", p, r.body)
		}
	}
	// Hidden from strangers and anonymous callers; a build is only found
	// under its own repository.
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app/build/"+id, basic("bob"), nil), 404, "not_found")
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app/build/"+id, anon, nil), 401, "invalid_token")
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/other/build/"+id, basic("alice"), nil), 404, "not_found")
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app/build/nope", basic("alice"), nil), 404, "not_found")

	// Logs need write: the reader is refused.
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app/build/"+id+"/logs", basic("carol"), nil), 403, "insufficient_scope")
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app/build/"+id+"/logs", basic("dave"), nil)
	if m := keys(t, "logs", r.v, "start", "total", "logs"); m["total"] != float64(0) || len(m["logs"].([]any)) != 0 {
		t.Fatalf("logs of a waiting build: %s", r.body)
	}

	// Cancel: readers no, a writer not someone else's build, the admin yes.
	assertError(t, e.call(http.MethodDelete, "/api/v1/repository/alice/app/build/"+id, basic("carol"), nil), 403, "insufficient_scope")
	assertError(t, e.call(http.MethodDelete, "/api/v1/repository/alice/app/build/"+id, basic("dave"), nil), 403, "insufficient_scope")
	r = e.must(201, http.MethodDelete, "/api/v1/repository/alice/app/build/"+id2, basic("dave"), nil)
	if r.v != "Okay" {
		t.Errorf("cancel answered %s", r.body)
	}
	e.must(201, http.MethodDelete, "/api/v1/repository/alice/app/build/"+id, basic("alice"), nil)
	assertError(t, e.call(http.MethodDelete, "/api/v1/repository/alice/app/build/"+id, basic("alice"), nil), 400, "invalid_request")
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app/build/"+id, basic("alice"), nil)
	if r.obj()["phase"] != "cancelled" {
		t.Fatalf("after cancel: %s", r.body)
	}
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app/build/"+id+"/logs?start=0", basic("alice"), nil)
	logs := r.obj()["logs"].([]any)
	if r.obj()["total"] != float64(1) || len(logs) != 1 || fmt.Sprint(logs[0].(map[string]any)["message"]) != "cancelled" {
		t.Fatalf("logs after cancel: %s", r.body)
	}
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app/build/"+id+"/logs?start=1", basic("alice"), nil)
	if r.obj()["start"] != float64(1) || r.obj()["total"] != float64(1) || len(r.obj()["logs"].([]any)) != 0 {
		t.Fatalf("logs from 1: %s", r.body)
	}
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app/build/"+id+"/logs?start=-1", basic("alice"), nil), 400, "invalid_request")
}

func TestBuildRequestValidation(t *testing.T) {
	e := newBuildEnv(t, nil)
	e.setup()
	fid := e.upload(basic("alice"), "FROM scratch\n")
	e.must(201, http.MethodPut, "/api/v1/user/robots/puller", basic("alice"), nil)
	bad := map[string]any{
		"no source":        map[string]any{"docker_tags": []string{"x"}},
		"two sources":      map[string]any{"file_id": fid, "archive_url": "https://example.com/a.tar"},
		"subdir and path":  map[string]any{"file_id": fid, "subdirectory": "a", "dockerfile_path": "a/Dockerfile"},
		"ftp archive":      map[string]any{"archive_url": "ftp://example.com/a.tar"},
		"unknown file":     map[string]any{"file_id": "00000000-0000-0000-0000-000000000000"},
		"empty tags":       map[string]any{"file_id": fid, "docker_tags": []string{}},
		"bad tag":          map[string]any{"file_id": fid, "docker_tags": []string{"-x"}},
		"duplicate tag":    map[string]any{"file_id": fid, "docker_tags": []string{"a", "a"}},
		"number build arg": map[string]any{"file_id": fid, "build_args": map[string]any{"A": 1}},
		"bad build arg":    map[string]any{"file_id": fid, "build_args": map[string]string{"A B": "1"}},
		"empty label":      map[string]any{"file_id": fid, "labels": map[string]string{" ": "1"}},
		"tags not array":   map[string]any{"file_id": fid, "docker_tags": "latest"},
		"unknown robot":    map[string]any{"file_id": fid, "pull_robot": "alice+nobody"},
		"robot no plus":    map[string]any{"file_id": fid, "pull_robot": "carol"},
	}
	for name, body := range bad {
		t.Run(name, func(t *testing.T) {
			assertError(t, e.call(http.MethodPost, "/api/v1/repository/alice/app/build/", basic("alice"), body), 400, "invalid_request")
		})
	}
	assertError(t, e.call(http.MethodPost, "/api/v1/repository/alice/app/build/", basic("alice"), "{"), 400, "invalid_request")
	// Permissions: reader 403, stranger 404, anonymous 401 (private).
	ok := map[string]any{"file_id": fid}
	assertError(t, e.call(http.MethodPost, "/api/v1/repository/alice/app/build/", basic("carol"), ok), 403, "insufficient_scope")
	assertError(t, e.call(http.MethodPost, "/api/v1/repository/alice/app/build/", basic("bob"), ok), 404, "not_found")
	assertError(t, e.call(http.MethodPost, "/api/v1/repository/alice/app/build/", anon, ok), 401, "invalid_token")
	assertError(t, e.call(http.MethodPost, "/api/v1/repository/alice/nope/build/", basic("alice"), ok), 404, "not_found")
	// A pull robot needs its namespace's admin: the writer dave is not.
	assertError(t, e.call(http.MethodPost, "/api/v1/repository/alice/app/build/", basic("dave"),
		map[string]any{"file_id": fid, "pull_robot": "alice+puller"}), 403, "insufficient_scope")
	r := e.must(201, http.MethodPost, "/api/v1/repository/alice/app/build/", basic("alice"),
		map[string]any{"file_id": fid, "pull_robot": "alice+puller", "subdirectory": "sub"})
	v := r.obj()
	if fmt.Sprint(v["pull_robot"]) != "map[is_robot:true kind:user name:alice+puller]" ||
		v["subdirectory"] != "sub" || v["context"] != "sub" || v["dockerfile_path"] != "sub/Dockerfile" || fmt.Sprint(v["tags"]) != "[latest]" {
		t.Fatalf("robot build: %s", r.body)
	}
	r = e.must(201, http.MethodPost, "/api/v1/repository/alice/app/build/", basic("alice"),
		map[string]any{"file_id": fid, "dockerfile_path": "/docker/Dockerfile.prod"})
	if v := r.obj(); v["context"] != "/docker" || v["dockerfile_path"] != "/docker/Dockerfile.prod" {
		t.Fatalf("dockerfile_path build: %s", r.body)
	}
}

func TestFiledrop(t *testing.T) {
	e := newBuildEnv(t, nil)
	e.setup()
	assertError(t, e.call(http.MethodPost, "/api/v1/filedrop/", anon, map[string]any{"mimeType": "x"}), 401, "invalid_token")
	assertError(t, e.call(http.MethodPost, "/api/v1/filedrop/", basic("bob"), map[string]any{}), 400, "invalid_request")

	drop := func() (string, string) {
		r := e.must(200, http.MethodPost, "/api/v1/filedrop/", basic("bob"), map[string]any{"mimeType": "application/x-tar"})
		m := keys(t, "filedrop", r.v, "url", "file_id")
		u := m["url"].(string)
		if !strings.HasPrefix(u, "http://quay-server.example.com/filedrop/"+m["file_id"].(string)+"?") {
			t.Fatalf("url %q", u)
		}
		return u, m["file_id"].(string)
	}
	u, id := drop()
	// Tampered: another file ID, a later expiry, a changed signature.
	other := strings.Replace(u, id, "11111111-2222-3333-4444-555555555555", 1)
	pu, _ := url.Parse(u)
	q := pu.Query()
	exp, _ := strconv.ParseInt(q.Get("expires"), 10, 64)
	if d := time.Until(time.Unix(exp, 0)); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("URL expires in %s", d)
	}
	q.Set("expires", strconv.FormatInt(exp+3600, 10))
	later := pu.Scheme + "://" + pu.Host + pu.Path + "?" + q.Encode()
	q = pu.Query()
	q.Set("sig", strings.Repeat("A", len(q.Get("sig"))))
	forged := pu.Scheme + "://" + pu.Host + pu.Path + "?" + q.Encode()
	for _, bad := range []string{other, later, forged, pu.Scheme + "://" + pu.Host + pu.Path} {
		if code, body := e.put(bad, "data"); code != 403 {
			t.Errorf("PUT %s: %d %s", bad, code, body)
		}
	}
	if code, body := e.put(u, "FROM scratch\n"); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	rc, size, err := e.contexts.Open(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "FROM scratch\n" || size != int64(len(got)) {
		t.Fatalf("stored %q (%d)", got, size)
	}
	// Single use.
	if code, body := e.put(u, "other bytes"); code != 403 || !strings.Contains(body, "already used") {
		t.Errorf("reused URL: %d %s", code, body)
	}
	// Too large.
	u2, id2 := drop()
	if code, body := e.put(u2, strings.Repeat("x", maxTestContext+1)); code != 413 {
		t.Errorf("too large: %d %s", code, body)
	}
	if _, _, err := e.contexts.Open(context.Background(), id2); err == nil {
		t.Error("an oversized upload was kept")
	}
	// Expired: the clock moves past the hour.
	u3, _ := drop()
	e.api.o.Now = func() time.Time { return time.Now().Add(time.Hour + time.Minute) }
	if code, body := e.put(u3, "FROM scratch\n"); code != 403 || !strings.Contains(body, "expired") {
		t.Errorf("expired URL: %d %s", code, body)
	}
}

// sseEvent is one server-sent event (or a comment, when comment is set).
type sseEvent struct {
	id      int
	entry   buildmanager.LogEntry
	comment bool
}

// readSSE parses a stream into events until it ends.
func readSSE(t *testing.T, body io.Reader) <-chan sseEvent {
	out := make(chan sseEvent, 100)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(body)
		ev := sseEvent{id: -1}
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, ":"):
				out <- sseEvent{comment: true}
			case strings.HasPrefix(line, "id: "):
				ev.id, _ = strconv.Atoi(line[4:])
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(line[6:]), &ev.entry); err != nil {
					t.Errorf("event data %q: %v", line, err)
				}
			case line == "" && ev.id >= 0:
				out <- ev
				ev = sseEvent{id: -1}
			}
		}
	}()
	return out
}

// next is the next entry event, skipping comments; it fails the test
// after a few seconds.
func nextEntry(t *testing.T, ch <-chan sseEvent, comments *int) (sseEvent, bool) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return ev, false
			}
			if ev.comment {
				*comments++
				continue
			}
			return ev, true
		case <-timeout:
			t.Fatal("no event within 5 s")
		}
	}
}

func TestBuildLogStream(t *testing.T) {
	e := newBuildEnv(t, nil)
	e.setup()
	e.run()
	mux := http.NewServeMux()
	mux.Handle("/api/", e.api.Handler())
	mux.Handle(PagePath, e.builds.PageHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	fid := e.upload(basic("alice"), "FROM scratch\n")
	r := e.must(201, http.MethodPost, "/api/v1/repository/alice/app/build/", basic("alice"), map[string]any{"file_id": fid, "docker_tags": []string{"v1"}})
	id := r.obj()["id"].(string)
	streamURL := srv.URL + "/api/v1/repository/alice/app/build/" + id + "/logs/stream"

	get := func(u string, hdr map[string]string, c cred) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		c(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := get(streamURL, nil, basic("dave"))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header)
	}
	events := readSSE(t, resp.Body)
	comments := 0
	var got []sseEvent
	// The worker's first lines arrive while it still runs (it waits for
	// release before finishing).
	for {
		ev, ok := nextEntry(t, events, &comments)
		if !ok {
			t.Fatal("stream ended before the worker finished")
		}
		got = append(got, ev)
		if ev.entry.Message == "line a" {
			break
		}
	}
	time.Sleep(150 * time.Millisecond) // a few heartbeats while idle
	if comments == 0 {
		// Comments queued behind no entry are counted on the next read.
		select {
		case ev := <-events:
			if ev.comment {
				comments++
			}
		case <-time.After(time.Second):
		}
	}
	if comments == 0 {
		t.Error("no keep-alive comment while the log was idle")
	}
	close(e.release)
	for {
		ev, ok := nextEntry(t, events, &comments)
		if !ok {
			break
		}
		got = append(got, ev)
	}
	var msgs []string
	for i, ev := range got {
		if ev.id != i {
			t.Fatalf("event %d has id %d", i, ev.id)
		}
		if ev.entry.Data["datetime"] == nil {
			t.Errorf("entry %d has no datetime: %+v", i, ev.entry)
		}
		msgs = append(msgs, ev.entry.Type+":"+ev.entry.Message)
	}
	joined := strings.Join(msgs, " ")
	for _, want := range []string{"phase:unpacking", "phase:building", "command:STEP 1/2: FROM busybox", ":line a", ":line b", "phase:pushing"} {
		if !strings.Contains(joined, want) {
			t.Errorf("stream lacks %q: %s", want, joined)
		}
	}
	if last := got[len(got)-1].entry; last.Type != "phase" || last.Message != "complete" {
		t.Fatalf("stream did not end with the complete phase: %s", joined)
	}
	if strings.Index(joined, ":line a") > strings.Index(joined, ":line b") {
		t.Errorf("out of order: %s", joined)
	}
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app/build/"+id, basic("alice"), nil)
	if r.obj()["phase"] != "complete" || fmt.Sprint(r.obj()["manifest_digests"]) != "map[v1:sha256:"+strings.Repeat("ab", 32)+"]" {
		t.Fatalf("completed build: %s", r.body)
	}

	// Replay from Last-Event-ID: everything after it, same ids and entries.
	k := 2
	resp = get(streamURL, map[string]string{"Last-Event-ID": strconv.Itoa(k)}, basic("alice"))
	replay := readSSE(t, resp.Body)
	for i := k + 1; ; i++ {
		ev, ok := nextEntry(t, replay, &comments)
		if !ok {
			if i != len(got) {
				t.Fatalf("replay ended at %d of %d", i, len(got))
			}
			break
		}
		if ev.id != i || ev.entry.Message != got[i].entry.Message {
			t.Fatalf("replay event %d: %+v, want %+v", i, ev, got[i])
		}
	}
	// ?start= works too; past the end of an ended build: 204.
	resp = get(streamURL+"?start="+strconv.Itoa(len(got)-1), nil, basic("alice"))
	if ev, ok := nextEntry(t, readSSE(t, resp.Body), &comments); !ok || ev.id != len(got)-1 {
		t.Fatalf("start=%d: %+v", len(got)-1, ev)
	}
	if resp := get(streamURL, map[string]string{"Last-Event-ID": strconv.Itoa(len(got) - 1)}, basic("alice")); resp.StatusCode != 204 {
		t.Errorf("stream past the end: %d", resp.StatusCode)
	}
	// Permissions as for the logs.
	for c, want := range map[string]int{"carol": 403, "bob": 404} {
		if resp := get(streamURL, nil, basic(c)); resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", c, resp.StatusCode, want)
		}
	}

	// The page: Basic, or the session cookie without X-Requested-With.
	pageURL := srv.URL + PagePath + "alice/app/build/" + id
	resp = get(pageURL, nil, anon)
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("anonymous page: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := get(srv.URL+PagePath+"alice/app/build/00000000-0000-0000-0000-000000000000", nil, anon); resp.StatusCode != 401 {
		t.Errorf("anonymous page of a missing build: %d (must not differ from an existing one)", resp.StatusCode)
	}
	if resp := get(pageURL, nil, basic("carol")); resp.StatusCode != 403 {
		t.Errorf("reader's page: %d", resp.StatusCode)
	}
	resp = get(pageURL, nil, basic("alice"))
	html, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(html), `<span id="phase">complete</span>`) ||
		!strings.Contains(string(html), "STEP 1/2: FROM busybox") || !strings.Contains(string(html), "EventSource") ||
		!strings.Contains(string(html), "alice/app:v1@sha256:") {
		t.Fatalf("page: %d %s", resp.StatusCode, html)
	}
	r = e.must(200, http.MethodPost, "/api/v1/signin", anon, map[string]any{"username": "alice", "password": "pw-alice"})
	cookies := (&http.Response{Header: r.hdr}).Cookies()
	withCookie := func(r *http.Request) {
		for _, c := range cookies {
			r.AddCookie(c)
		}
	}
	resp = get(srv.URL+PagePath+"alice/app/build/"+id+"/logs/stream", nil, withCookie)
	if ev, ok := nextEntry(t, readSSE(t, resp.Body), &comments); resp.StatusCode != 200 || !ok || ev.id != 0 {
		t.Fatalf("page stream with cookie: %d %+v", resp.StatusCode, ev)
	}
	if resp := get(pageURL, nil, withCookie); resp.StatusCode != 200 {
		t.Errorf("page with cookie: %d", resp.StatusCode)
	}
}

// scripted is the work of the build routes' workers: register, report
// phases and two lines, wait for release, then log one more line and
// succeed.
func scripted(ctx context.Context, w *buildmanagertest.Worker, release <-chan struct{}) {
	w.Heartbeat(ctx)
	if w.Phase(ctx, workerpb.Phase_PHASE_UNPACKING, workerpb.Phase_PHASE_PULLING, workerpb.Phase_PHASE_BUILDING) != nil {
		return
	}
	_ = w.Log(ctx, workerpb.LogType_LOG_TYPE_COMMAND, "STEP 1/2: FROM busybox")
	_ = w.Log(ctx, workerpb.LogType_LOG_TYPE_UNSPECIFIED, "line a")
	select {
	case <-release:
	case <-ctx.Done():
		return
	}
	_ = w.Log(ctx, workerpb.LogType_LOG_TYPE_UNSPECIFIED, "line b")
	if w.Phase(ctx, workerpb.Phase_PHASE_PUSHING) != nil {
		return
	}
	digests := map[string]string{}
	for _, tag := range w.Job.GetTags() {
		digests[tag] = testDigest
	}
	_ = w.Succeed(ctx, digests)
}

// testDigest is the digest the scripted workers report for every tag.
var testDigest = "sha256:" + strings.Repeat("ab", 32)
