package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
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
	// failure is the error of a build that does not complete.
	failure string

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

// newFakeBerth serves over TLS when secure.
func newFakeBerth(t *testing.T, finish string, secure bool) *fakeBerth {
	f := &fakeBerth{t: t, finish: finish, digest: "sha256:" + strings.Repeat("cd", 32), failure: "RUN false: exit status 1"}
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
				v["error"] = f.failure
			}
		}
		json.NewEncoder(w).Encode(v)
	})
	f.srv = httptest.NewUnstartedServer(mux)
	if secure {
		// The refused plain-HTTP probe and unknown CA are expected.
		f.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
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
	f := newFakeBerth(t, "complete", false)
	dir := contextDir(t)
	var stdout, stderr bytes.Buffer
	env := map[string]string{"BERTH_TOKEN": "tok123"}
	err := buildMain(context.Background(), []string{"-t", "alice/app:v1", "-t", "alice/app", "--build-arg", "A=1=2",
		"--server", f.srv.URL, dir}, console{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }})
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
	f := newFakeBerth(t, "error", false)
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
		console{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }})
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
	if !strings.HasPrefix(err.Error(), "build b1 ended error: ") {
		t.Errorf("error %q does not say how the build ended", err)
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
		if err := buildMain(context.Background(), args, console{stdout: &out, stderr: &out, getenv: func(string) string { return "" }}); err == nil {
			t.Errorf("berth build %v succeeded", args)
		}
	}
}

// The credentials files are those of containers-auth.json(5), in its
// order, with podman's /run/containers/<uid> when XDG_RUNTIME_DIR is unset.
func TestAuthFiles(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HOME": "/h"},
			"/run/containers/1234/auth.json /h/.config/containers/auth.json /h/.docker/config.json /h/.dockercfg(legacy)"},
		{map[string]string{"HOME": "/h", "XDG_RUNTIME_DIR": "/run/user/1234", "XDG_CONFIG_HOME": "/cfg", "DOCKER_CONFIG": "/dk"},
			"/run/user/1234/containers/auth.json /cfg/containers/auth.json /dk/config.json /h/.dockercfg(legacy)"},
		{map[string]string{"HOME": "/h", "XDG_RUNTIME_DIR": "/run/user/1234", "REGISTRY_AUTH_FILE": "/a.json"},
			"/a.json /h/.config/containers/auth.json /h/.docker/config.json /h/.dockercfg(legacy)"},
		{map[string]string{}, "/run/containers/1234/auth.json"},
	} {
		var got []string
		for _, f := range authFiles(func(k string) string { return c.env[k] }, 1234) {
			if f.legacy {
				f.path += "(legacy)"
			}
			got = append(got, f.path)
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("env %v: files %q, want %q", c.env, got, c.want)
		}
	}
}

func TestFindLogin(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	write := func(name, content string) authFile {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return authFile{path: p, legacy: name == ".dockercfg"}
	}
	missing := authFile{path: filepath.Join(t.TempDir(), "none.json")}
	podman := write("auth.json", `{"auths":{"other.example":{"auth":"`+b64("o:p")+`"},`+
		`"reg.example/alice":{"auth":"`+b64("ns:p")+`"},"reg.example":{"auth":"`+b64("host:p")+`"}}}`)
	docker := write("config.json", `{"auths":{"https://reg.example/v1/":{"auth":"`+b64("docker:p")+`"}},"credsStore":"desktop"}`)
	legacy := write(".dockercfg", `{"https://reg.example":{"auth":"`+b64("legacy:p")+`","email":"x@example"}}`)
	for _, c := range []struct {
		files      []authFile
		repo, want string
		from       authFile
	}{
		// The most specific key of the first file that has one.
		{[]authFile{missing, podman, docker}, "alice/app", "ns:p", podman},
		{[]authFile{missing, podman, docker}, "bob/app", "host:p", podman},
		// docker's config.json and the legacy ~/.dockercfg, as podman
		// falls back to them.
		{[]authFile{missing, docker, legacy}, "alice/app", "docker:p", docker},
		{[]authFile{missing, legacy}, "alice/app", "legacy:p", legacy},
	} {
		l, err := findLogin(c.files, "REG.example", c.repo)
		if err != nil || l == nil {
			t.Errorf("%s: %v, %v", c.repo, l, err)
			continue
		}
		if l.header != "Basic "+b64(c.want) || l.file != c.from.path {
			t.Errorf("%s: login %q from %s, want %q from %s", c.repo, l.header, l.file, c.want, c.from.path)
		}
	}
	if l, err := findLogin([]authFile{missing, podman}, "nowhere.example", "alice/app"); l != nil || err != nil {
		t.Errorf("a host without a login: %v, %v", l, err)
	}
	bad := write("bad.json", `{"auths":{"reg.example":{"auth":"not base64!"}}}`)
	if _, err := findLogin([]authFile{bad}, "reg.example", "alice/app"); err == nil || !strings.Contains(err.Error(), bad.path) {
		t.Errorf("an undecodable login: %v", err)
	}
}

// docker's login, which podman falls back to, is found by `berth build`
// itself.
func TestBuildUsesDockerConfig(t *testing.T) {
	f := newFakeBerth(t, "complete", false)
	home := t.TempDir()
	host := strings.TrimPrefix(f.srv.URL, "http://")
	cred := base64.StdEncoding.EncodeToString([]byte("alice:pw"))
	if err := os.MkdirAll(filepath.Join(home, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".docker", "config.json"), []byte(`{"auths":{"`+host+`":{"auth":"`+cred+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HOME": home}
	var stdout, stderr bytes.Buffer
	if err := buildMain(context.Background(), []string{"-t", host + "/alice/app:v1", contextDir(t)},
		console{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }}); err != nil {
		t.Fatalf("build: %v\n%s", err, stderr.String())
	}
	if len(f.auth) == 0 {
		t.Fatal("no API call")
	}
	for _, a := range f.auth {
		if a != "Basic "+cred {
			t.Errorf("API call with Authorization %q", a)
		}
	}
}

// Names are checked, and the repository made, before the context is
// uploaded; --pull-robot reaches the request; a refused token says so.
func TestBuildChecksBeforeUpload(t *testing.T) {
	dir := contextDir(t)
	run := func(f *fakeBerth, args ...string) (string, error) {
		var out bytes.Buffer
		err := buildMain(context.Background(), append(append([]string{"--server", f.srv.URL, "--token", "tok"}, args...), dir),
			console{stdout: &out, stderr: &out, getenv: func(string) string { return "" }})
		return out.String(), err
	}
	f := newFakeBerth(t, "complete", false)
	for _, name := range []string{"alice/App", "alice/app:-v1", "alice/app..x", "alice/a b"} {
		if _, err := run(f, "-t", name); err == nil || !strings.Contains(err.Error(), "not a valid") {
			t.Errorf("-t %s: %v", name, err)
		}
	}
	if f.context != nil || f.created != nil || len(f.auth) != 0 {
		t.Errorf("invalid names reached the server: %d calls, %d bytes uploaded", len(f.auth), len(f.context))
	}

	if out, err := run(f, "-t", "alice/app", "--pull-robot", "alice+reader"); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if f.request["pull_robot"] != "alice+reader" {
		t.Errorf("build request %v lacks the pull robot", f.request)
	}

	// A server that refuses to create the repository (or the token) gets
	// no context.
	for status, want := range map[int]string{
		http.StatusBadRequest:   "cannot create repository alice/app: Cannot create a repository named app: the name is reserved (400 Bad Request)",
		http.StatusUnauthorized: "the server refused the token (--token or BERTH_TOKEN): it is unknown, expired or revoked (401 Unauthorized)",
	} {
		var uploaded bool
		mux := http.NewServeMux()
		mux.HandleFunc("GET /api/v1/repository/alice/app", func(w http.ResponseWriter, r *http.Request) {
			if status == http.StatusUnauthorized {
				http.Error(w, `{"status":401,"detail":"Invalid username or password"}`, status)
				return
			}
			http.Error(w, `{"status":404,"detail":"Not Found"}`, http.StatusNotFound)
		})
		mux.HandleFunc("POST /api/v1/repository", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"status":400,"detail":"Cannot create a repository named app: the name is reserved"}`, status)
		})
		mux.HandleFunc("/api/v1/filedrop/", func(w http.ResponseWriter, r *http.Request) { uploaded = true })
		srv := httptest.NewServer(mux)
		_, err := run(&fakeBerth{srv: srv}, "-t", "alice/app")
		srv.Close()
		if err == nil || err.Error() != want {
			t.Errorf("%d: error %v, want %q", status, err, want)
		}
		if uploaded {
			t.Errorf("%d: the context was uploaded", status)
		}
	}
}

// Against a TLS server: https is inferred from an http URL, --ca-file
// trusts its CA, --tls-verify=false skips the check, and an unknown CA says
// which flag helps.
func TestBuildOverTLS(t *testing.T) {
	f := newFakeBerth(t, "complete", true)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(f.srv.URL, "https://")
	dir := contextDir(t)
	run := func(args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := buildMain(context.Background(), append(append([]string{"-t", "alice/app:v1", "--token", "tok"}, args...), dir),
			console{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }})
		return stdout.String(), stderr.String(), err
	}
	want := host + "/alice/app:v1@" + f.digest + "\n" + host + "/alice/app:latest@" + f.digest + "\n"
	stdout, stderr, err := run("--server", "http://"+host, "--ca-file", ca)
	if err != nil || stdout != want || !strings.Contains(stderr, host+" speaks TLS: using https://"+host) {
		t.Errorf("http URL with --ca-file: %v\nstdout %q\nstderr:\n%s", err, stdout, stderr)
	}
	// Nothing was sent in the clear but the probe, which carries no
	// credentials: every authenticated call went over TLS.
	for _, a := range f.auth {
		if a != "Bearer tok" {
			t.Errorf("API call with Authorization %q", a)
		}
	}
	if stdout, stderr, err := run("--server", f.srv.URL, "--tls-verify=false"); err != nil || stdout != want {
		t.Errorf("--tls-verify=false: %v\nstdout %q\nstderr:\n%s", err, stdout, stderr)
	}
	if _, _, err := run("--server", f.srv.URL); err == nil || !strings.Contains(err.Error(), "pass --ca-file") {
		t.Errorf("an unknown CA: %v", err)
	}
}

// An unreachable server is one sentence naming it.
func TestBuildUnreachableServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	for _, server := range []string{"http://" + addr, "https://" + addr} {
		err := buildMain(context.Background(), []string{"-t", "alice/app", "--server", server, "--token", "t", contextDir(t)},
			console{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }})
		if err == nil || !strings.HasPrefix(err.Error(), "cannot reach berth at "+server+": ") {
			t.Errorf("%s: %v", server, err)
		}
	}
}

// The server's advice to set pull_robot names the flag that does.
func TestBuildPullRobotAdvice(t *testing.T) {
	f := newFakeBerth(t, "error", false)
	f.failure = "cannot pull the base image example.com/private/base: for a private image set pull_robot to a robot account that may read it"
	err := buildMain(context.Background(), []string{"-t", "alice/app", "--server", f.srv.URL, "--token", "t", contextDir(t)},
		console{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }})
	if err == nil || !strings.HasSuffix(err.Error(), "may read it (berth build --pull-robot NAMESPACE+ROBOT)") {
		t.Errorf("error %v", err)
	}
}
