package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// fakeBerth answers the build client's calls the way berth's API does.
type fakeBerth struct {
	t      *testing.T
	srv    *httptest.Server
	finish string // the final phase
	digest string

	mu        sync.Mutex
	auth      []string
	putAuth   string
	context   []byte
	request   map[string]any
	streams   []string // Last-Event-ID of each stream request
	delivered bool
	// created is the body of the repository creation, if one came.
	created map[string]any
}

func newFakeBerth(t *testing.T, finish string) *fakeBerth {
	f := &fakeBerth{t: t, finish: finish, digest: "sha256:" + strings.Repeat("cd", 32)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/repository/alice/app", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.created == nil {
			http.Error(w, `{"detail":"Not Found","status":404}`, http.StatusNotFound)
			return
		}
		w.Write([]byte(`{"namespace":"alice","name":"app"}`))
	})
	mux.HandleFunc("POST /api/v1/repository", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := json.NewDecoder(r.Body).Decode(&f.created); err != nil {
			t.Errorf("repository create body: %v", err)
		}
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"namespace":"alice","name":"app","kind":"image"}`))
	})
	mux.HandleFunc("POST /api/v1/filedrop/", func(w http.ResponseWriter, r *http.Request) {
		f.note(r)
		json.NewEncoder(w).Encode(map[string]string{"url": f.srv.URL + "/filedrop/f1?expires=1&sig=x", "file_id": "f1"})
	})
	mux.HandleFunc("PUT /filedrop/f1", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.putAuth, f.context = r.Header.Get("Authorization"), b
		f.mu.Unlock()
	})
	mux.HandleFunc("POST /api/v1/repository/alice/app/build/", func(w http.ResponseWriter, r *http.Request) {
		f.note(r)
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.request = body
		f.mu.Unlock()
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(map[string]any{"id": "b1", "phase": "waiting", "tags": body["docker_tags"]})
	})
	entries := []string{
		`{"message":"building","type":"phase","data":{}}`,
		`{"message":"STEP 1/2: FROM busybox","type":"command","data":{}}`,
		`{"message":"line a","data":{}}`,
		`{"message":"` + finish + `","type":"phase","data":{}}`,
	}
	mux.HandleFunc("GET /api/v1/repository/alice/app/build/b1/logs/stream", func(w http.ResponseWriter, r *http.Request) {
		f.note(r)
		last := r.Header.Get("Last-Event-ID")
		f.mu.Lock()
		f.streams = append(f.streams, last)
		first := len(f.streams) == 1
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		from, to := 0, 2 // the first connection drops after two entries
		if !first {
			fmt.Sscan(last, &from)
			from, to = from+1, len(entries)
		}
		for i := from; i < to; i++ {
			fmt.Fprintf(w, ": keep-alive\n\nid: %d\ndata: %s\n\n", i, entries[i])
		}
		if to == len(entries) {
			f.mu.Lock()
			f.delivered = true
			f.mu.Unlock()
		}
	})
	mux.HandleFunc("GET /api/v1/repository/alice/app/build/b1/status", func(w http.ResponseWriter, r *http.Request) {
		f.note(r)
		f.mu.Lock()
		done := f.delivered
		f.mu.Unlock()
		v := map[string]any{"id": "b1", "phase": "building", "tags": []string{"v1", "latest"}, "error": nil, "manifest_digests": map[string]string{}}
		if done {
			v["phase"] = finish
			if finish == "complete" {
				v["manifest_digests"] = map[string]string{"v1": f.digest, "latest": f.digest}
			} else {
				v["error"] = "RUN false: exit status 1"
			}
		}
		json.NewEncoder(w).Encode(v)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeBerth) note(r *http.Request) {
	f.mu.Lock()
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	f.mu.Unlock()
}

// contextDir writes a small build context with a .dockerignore.
func contextDir(t *testing.T) string {
	d := t.TempDir()
	files := map[string]string{
		"Dockerfile":             "FROM busybox\nCOPY . /app\n",
		".dockerignore":          "secret.txt\nnode_modules\n!node_modules/keep.js\n*.log\n",
		"src/main.go":            "package main\n",
		"secret.txt":             "hunter2",
		"debug.log":              "x",
		"node_modules/dep.js":    "x",
		"node_modules/keep.js":   "kept",
		"docs/sub/readme.md":     "hi",
		"docs/sub/trace.log.txt": "not a .log",
	}
	for name, content := range files {
		p := filepath.Join(d, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func tarNames(t *testing.T, gz []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = string(b)
	}
}

func TestBuildCommand(t *testing.T) {
	f := newFakeBerth(t, "complete")
	dir := contextDir(t)
	var stdout, stderr bytes.Buffer
	env := map[string]string{"BERTH_TOKEN": "tok123"}
	err := buildMain(context.Background(), []string{"-t", "alice/app:v1", "-t", "alice/app", "--build-arg", "A=1=2",
		"--server", f.srv.URL, dir}, &stdout, &stderr, func(k string) string { return env[k] }, false)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, stderr.String())
	}
	host := strings.TrimPrefix(f.srv.URL, "http://")
	want := fmt.Sprintf("%s/alice/app:v1@%s\n%s/alice/app:latest@%s\n", host, f.digest, host, f.digest)
	if stdout.String() != want {
		t.Errorf("stdout %q, want %q", stdout.String(), want)
	}
	if f.created["namespace"] != "alice" || f.created["repository"] != "app" || f.created["visibility"] != "private" {
		t.Errorf("repository created with %v, want alice/app private", f.created)
	}
	log := stderr.String()
	if strings.Count(log, "line a") != 1 || strings.Count(log, "STEP 1/2: FROM busybox") != 1 ||
		!strings.Contains(log, "==> complete") || !strings.Contains(log, "Uploading context [##############################] 100%") {
		t.Errorf("stderr:\n%s", log)
	}
	if fmt.Sprint(f.streams) != "[ 1]" {
		t.Errorf("stream requests with Last-Event-ID %q, want a resume after entry 1", f.streams)
	}
	for _, a := range f.auth {
		if a != "Bearer tok123" {
			t.Errorf("API call with Authorization %q", a)
		}
	}
	if f.putAuth != "" {
		t.Errorf("the upload sent credentials: %q", f.putAuth)
	}
	if got := fmt.Sprint(f.request); got != "map[build_args:map[A:1=2] context:/ docker_tags:[v1 latest] dockerfile_path:/Dockerfile file_id:f1]" {
		t.Errorf("build request %s", got)
	}
	names := tarNames(t, f.context)
	var listed []string
	for n := range names {
		listed = append(listed, n)
	}
	sort.Strings(listed)
	if got := strings.Join(listed, " "); got != ".dockerignore Dockerfile docs/ docs/sub/ docs/sub/readme.md docs/sub/trace.log.txt node_modules/keep.js src/ src/main.go" {
		t.Errorf("context holds %s", got)
	}
	if names["node_modules/keep.js"] != "kept" {
		t.Errorf("keep.js: %q", names["node_modules/keep.js"])
	}
}

func TestBuildCommandFailure(t *testing.T) {
	f := newFakeBerth(t, "error")
	dir := contextDir(t)
	// A Dockerfile outside the context travels inside the archive.
	df := filepath.Join(t.TempDir(), "Containerfile")
	if err := os.WriteFile(df, []byte("FROM x\nRUN false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	authFile := filepath.Join(t.TempDir(), "auth.json")
	host := strings.TrimPrefix(f.srv.URL, "http://")
	cred := base64.StdEncoding.EncodeToString([]byte("alice:pw"))
	if err := os.WriteFile(authFile, []byte(`{"auths":{"other.example":{"auth":"eDp5"},"`+host+`":{"auth":"`+cred+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REGISTRY_AUTH_FILE": authFile, "HOME": t.TempDir()}
	var stdout, stderr bytes.Buffer
	err := buildMain(context.Background(), []string{"-t", host + "/alice/app:v1", "-f", df, dir},
		&stdout, &stderr, func(k string) string { return env[k] }, false)
	if err == nil || !strings.Contains(err.Error(), "RUN false: exit status 1") || !strings.Contains(err.Error(), "error") {
		t.Fatalf("failed build returned %v", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q", stdout.String())
	}
	for _, a := range f.auth {
		if a != "Basic "+cred {
			t.Errorf("API call with Authorization %q", a)
		}
	}
	if f.request["dockerfile_path"] != "/.berth.Dockerfile" {
		t.Errorf("dockerfile_path %v", f.request["dockerfile_path"])
	}
	if names := tarNames(t, f.context); names[".berth.Dockerfile"] != "FROM x\nRUN false\n" {
		t.Errorf("archive lacks the Dockerfile: %v", names)
	}
}

func TestBuildCommandArguments(t *testing.T) {
	for _, args := range [][]string{
		{"."},
		{"-t", "alice/app", "-t", "alice/other", "."},
		{"-t", "app:v1", "."},
		{"-t", "alice/app@sha256:00", "."},
		{"-t", "alice/app"},
		{"-t", "alice/app", "--build-arg", "NOVALUE", "."},
		{"-t", "reg.example/alice/app", "--server", "http://127.0.0.1:1", "."},
	} {
		var out bytes.Buffer
		if err := buildMain(context.Background(), args, &out, &out, func(string) string { return "" }, false); err == nil {
			t.Errorf("berth build %v succeeded", args)
		}
	}
}
