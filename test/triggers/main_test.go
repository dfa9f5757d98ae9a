// Package triggers proves issue 5's build triggers end to end through the
// real binary: one `bin/berth serve` (ephemeral build manager, local
// executor), a busybox base image pushed into it as admin/base:latest, real
// git servers on loopback (sshd and git daemon from test/gitserver), a
// post-receive hook that POSTs the custom-git payload with curl, and forge
// payloads (GitHub, GitLab, Bitbucket) delivered the way each forge signs
// them. The forges' REST APIs are a local recording HTTP server (fakeForge)
// that config.yaml's *_TRIGGER_CONFIG endpoints point at, so the tests that
// use it are named TestFake<Forge>….
//
// Tests skip only when bin/berth is missing (run `make build`); anything else
// missing is a failure.
package triggers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/test/harness"
)

const (
	adminUser   = "admin"
	workerCount = 2
	timeLimit   = 3 * time.Minute
	// buildTimeout bounds how long a test waits for one build to end.
	buildTimeout = 3 * time.Minute
	// Tokens the fake forges expect; berth reads them from config.yaml.
	githubToken    = "gh-test-token"
	gitlabToken    = "glpat-test-token"
	bitbucketToken = "bb-test-token"
)

// env is what every test shares.
type env struct {
	srv   *harness.Server
	tools *harness.Tools
	forge *fakeForge
	http  *http.Client
	// base is the base image's reference (host/admin/base:latest).
	base string
}

func (e *env) creds() string { return e.srv.Creds() }

var (
	suite  = &harness.Suite{Name: "triggers"}
	shared = &env{}
)

func TestMain(m *testing.M) {
	os.Exit(suite.Main(m, setup))
}

// forgeConfig points the three forges' APIs at the fake.
func forgeConfig(fakeURL string) string {
	return fmt.Sprintf(`GITHUB_TRIGGER_CONFIG:
  GITHUB_ENDPOINT: %[1]s/github/
  API_ENDPOINT: %[1]s/github/api/v3/
  CLIENT_ID: berth-test
  CLIENT_SECRET: unused
  ACCESS_TOKEN: %[2]s
GITLAB_TRIGGER_CONFIG:
  GITLAB_ENDPOINT: %[1]s/gitlab
  CLIENT_ID: berth-test
  CLIENT_SECRET: unused
  ACCESS_TOKEN: %[3]s
BITBUCKET_TRIGGER_CONFIG:
  CONSUMER_KEY: berth-test
  CONSUMER_SECRET: unused
  API_ENDPOINT: %[1]s/bitbucket/2.0
  ACCESS_TOKEN: %[4]s
`, fakeURL, githubToken, gitlabToken, bitbucketToken)
}

func setup(ctx context.Context) error {
	e := shared
	e.forge, e.http = newFakeForge(), &http.Client{Timeout: 30 * time.Second}
	suite.Cleanup(e.forge.srv.Close)
	if err := harness.RequireTools("buildah", "podman", "skopeo", "git", "curl"); err != nil {
		return err
	}
	err := suite.StartServer(ctx, harness.ServerOptions{
		Config: harness.BuildManagerConfig(workerCount, timeLimit) + harness.LoopbackEgressConfig + forgeConfig(e.forge.srv.URL),
		User:   adminUser,
	})
	if err != nil {
		return err
	}
	e.srv = suite.Server
	if e.tools, err = suite.NewTools(); err != nil {
		return err
	}
	e.base, err = suite.PushBase(ctx, e.tools)
	return err
}

// requireEnv returns the shared environment, skipping only when bin/berth
// is missing.
func requireEnv(t *testing.T) *env {
	t.Helper()
	suite.Require(t)
	return shared
}

func (e *env) toolsFor(t *testing.T) *harness.Tools { return e.tools.WithLog(t.Logf) }

// ---- berth's REST API ----

// api calls berth's REST API as the admin and decodes a JSON answer into
// out; it returns the status and the raw body.
func (e *env) api(t *testing.T, method, path string, body, out any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.srv.URL(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(e.srv.Opts.User, e.srv.Opts.Password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decoding %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode, string(data)
}

// createRepo creates the private repository admin/name.
func (e *env) createRepo(t *testing.T, name string) {
	t.Helper()
	body := map[string]string{"namespace": adminUser, "repository": name, "visibility": "private", "description": ""}
	if code, resp := e.api(t, http.MethodPost, "/api/v1/repository", body, nil); code != http.StatusCreated {
		t.Fatalf("creating repository %s: %d %s", name, code, resp)
	}
}

// triggerView is the part of Quay's TriggerView the tests read.
type triggerView struct {
	ID       string `json:"id"`
	Service  string `json:"service"`
	IsActive bool   `json:"is_active"`
	Config   struct {
		BuildSource string `json:"build_source"`
		ForgeGitURL string `json:"forge_git_url"`
		Credentials []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"credentials"`
	} `json:"config"`
}

func (v triggerView) credential(t *testing.T, name string) string {
	t.Helper()
	for _, c := range v.Config.Credentials {
		if c.Name == name {
			return c.Value
		}
	}
	t.Fatalf("trigger %s has no %q credential: %+v", v.ID, name, v.Config.Credentials)
	return ""
}

// triggerConfig is the build config every test's trigger uses.
func triggerConfig(buildSource string) map[string]any {
	return map[string]any{
		"build_source":              buildSource,
		"dockerfile_path":           "/Dockerfile",
		"context":                   "/",
		"tag_templates":             []string{"${commit_info.short_sha}"},
		"default_tag_from_ref":      true,
		"latest_for_default_branch": true,
	}
}

// createTrigger creates and activates a trigger on admin/repo.
func (e *env) createTrigger(t *testing.T, repo, service, buildSource string) triggerView {
	t.Helper()
	var v triggerView
	code, resp := e.api(t, http.MethodPost, "/api/v1/repository/"+adminUser+"/"+repo+"/trigger/",
		map[string]any{"service": service, "config": triggerConfig(buildSource)}, &v)
	if code != http.StatusCreated {
		t.Fatalf("creating the %s trigger: %d %s", service, code, resp)
	}
	if v.ID == "" || !v.IsActive || v.Service != service {
		t.Fatalf("created trigger = %+v, want an active %s trigger", v, service)
	}
	return v
}

// build is the part of a BuildView the tests read.
type build struct {
	ID              string            `json:"id"`
	Phase           string            `json:"phase"`
	Tags            []string          `json:"tags"`
	Error           *string           `json:"error"`
	ManifestDigests map[string]string `json:"manifest_digests"`
	TriggerMetadata json.RawMessage   `json:"trigger_metadata"`
}

// triggerBuilds lists the builds trigger id started, newest first.
func (e *env) triggerBuilds(t *testing.T, repo, id string) []build {
	t.Helper()
	var out struct {
		Builds []build `json:"builds"`
	}
	code, resp := e.api(t, http.MethodGet, "/api/v1/repository/"+adminUser+"/"+repo+"/trigger/"+id+"/builds?limit=50", nil, &out)
	if code != http.StatusOK {
		t.Fatalf("listing trigger builds: %d %s", code, resp)
	}
	return out.Builds
}

// waitBuild polls a build until it is terminal and fails the test unless
// it completed.
func (e *env) waitBuild(t *testing.T, repo, id string) build {
	t.Helper()
	deadline := time.Now().Add(buildTimeout)
	for {
		var b build
		code, resp := e.api(t, http.MethodGet, "/api/v1/repository/"+adminUser+"/"+repo+"/build/"+id, nil, &b)
		if code != http.StatusOK {
			t.Fatalf("reading build %s: %d %s", id, code, resp)
		}
		if store.BuildPhase(b.Phase).TerminalView() {
			if b.Phase != "complete" {
				e.dumpLogs(t, repo, id)
				msg := ""
				if b.Error != nil {
					msg = *b.Error
				}
				t.Fatalf("build %s ended in %s: %s", id, b.Phase, msg)
			}
			return b
		}
		if time.Now().After(deadline) {
			e.dumpLogs(t, repo, id)
			t.Fatalf("build %s still %s after %s", id, b.Phase, buildTimeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (e *env) dumpLogs(t *testing.T, repo, id string) {
	t.Helper()
	var out struct {
		Logs []struct {
			Message string `json:"message"`
		} `json:"logs"`
	}
	if code, _ := e.api(t, http.MethodGet, "/api/v1/repository/"+adminUser+"/"+repo+"/build/"+id+"/logs", nil, &out); code == http.StatusOK {
		for _, l := range out.Logs {
			t.Logf("build log: %s", l.Message)
		}
	}
}

// delivery is one entry of GET …/trigger/{uuid}/deliveries.
type delivery struct {
	ID      string  `json:"id"`
	Event   string  `json:"event"`
	Status  string  `json:"status"`
	Reason  string  `json:"reason"`
	BuildID *string `json:"build_id"`
}

func (e *env) deliveries(t *testing.T, repo, id string) []delivery {
	t.Helper()
	var out struct {
		Deliveries []delivery `json:"deliveries"`
	}
	code, resp := e.api(t, http.MethodGet, "/api/v1/repository/"+adminUser+"/"+repo+"/trigger/"+id+"/deliveries", nil, &out)
	if code != http.StatusOK {
		t.Fatalf("listing deliveries: %d %s", code, resp)
	}
	return out.Deliveries
}

// latestDelivery is the newest delivery, which must have status want.
func (e *env) latestDelivery(t *testing.T, repo, id, want string) delivery {
	t.Helper()
	ds := e.deliveries(t, repo, id)
	if len(ds) == 0 {
		t.Fatalf("trigger %s recorded no delivery", id)
	}
	if ds[0].Status != want {
		t.Fatalf("newest delivery = %+v, want status %q", ds[0], want)
	}
	return ds[0]
}

// post delivers a webhook payload and returns the status and body.
func (e *env) post(t *testing.T, url string, headers map[string]string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// checkImage pulls ref:tag for every tag with podman, asserts they all have
// the build's digest, and that the image's /out holds "built".
func (e *env) checkImage(t *testing.T, repo string, b build, tags ...string) {
	t.Helper()
	ctx := context.Background()
	tools := e.toolsFor(t)
	ref := e.srv.Addr + "/" + adminUser + "/" + repo
	digests := map[string]string{}
	for _, tag := range tags {
		if r := tools.Exec(ctx, e.creds(), "podman", "pull", "--quiet", "--tls-verify=false", "--creds", e.creds(), ref+":"+tag); r.Err != nil {
			t.Fatalf("podman pull %s:%s: %v", ref, tag, r.Err)
		}
		r := tools.Exec(ctx, "", "podman", "image", "inspect", "--format", "{{.Digest}}", ref+":"+tag)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		digests[tag] = strings.TrimSpace(r.Stdout)
	}
	first := digests[tags[0]]
	if !strings.HasPrefix(first, "sha256:") {
		t.Fatalf("pulled %s:%s has digest %q", ref, tags[0], first)
	}
	for tag, d := range digests {
		if d != first {
			t.Errorf("%s:%s has digest %s, %s:%s has %s", ref, tag, d, ref, tags[0], first)
		}
	}
	if len(b.ManifestDigests) > 0 && !slices.Contains(mapValues(b.ManifestDigests), first) {
		t.Errorf("pulled digest %s is not among the build's manifest_digests %v", first, b.ManifestDigests)
	}
	files, err := tools.ReadImageFiles(ctx, ref+":"+tags[0], e.creds(), "/out")
	if err != nil {
		t.Fatalf("reading /out from %s:%s: %v", ref, tags[0], err)
	}
	if got := strings.TrimSpace(files["/out"]); got != "built" {
		t.Errorf("/out in %s:%s = %q, want %q", ref, tags[0], got, "built")
	}
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// sameTags reports whether got and want hold the same tags in any order.
func sameTags(got, want []string) bool {
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

// dockerfile is the Dockerfile every test's repository builds.
func (e *env) dockerfile() string {
	return "FROM " + e.base + "\nRUN echo built > /out\n"
}

// ---- the fake forge APIs ----

// forgeCall is one request the fake forge received.
type forgeCall struct {
	Method, Path, Auth string
	Body               map[string]any
}

// fakeForge records every request under /github/api/v3, /gitlab/api/v4 and
// /bitbucket/2.0 and answers as each forge does for the calls triggers make.
type fakeForge struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls []forgeCall
}

func newFakeForge() *fakeForge {
	f := &fakeForge{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

func (f *fakeForge) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	c := forgeCall{Method: r.Method, Path: r.URL.EscapedPath(), Auth: r.Header.Get("Authorization")}
	if tok := r.Header.Get("Private-Token"); tok != "" {
		c.Auth = "PRIVATE-TOKEN " + tok
	}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &c.Body)
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	p := c.Path
	answer := func(code int, body string) {
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
	switch {
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	// GitHub
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/github/") && strings.HasSuffix(p, "/hooks"):
		answer(http.StatusCreated, `{"id": 12345678, "active": true}`)
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/github/") && strings.HasSuffix(p, "/keys"):
		answer(http.StatusCreated, `{"id": 42, "read_only": true}`)
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/github/") && strings.Contains(p, "/statuses/"):
		answer(http.StatusCreated, `{"id": 1}`)
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/github/") && strings.Contains(p, "/compare/"):
		answer(http.StatusOK, `{"files": []}`)
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/github/"):
		answer(http.StatusOK, `{"default_branch": "main"}`)
	// GitLab
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/gitlab/") && strings.HasSuffix(p, "/hooks"):
		answer(http.StatusCreated, `{"id": 7}`)
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/gitlab/") && strings.HasSuffix(p, "/deploy_keys"):
		answer(http.StatusCreated, `{"id": 9, "can_push": false}`)
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/gitlab/") && strings.Contains(p, "/statuses/"):
		answer(http.StatusCreated, `{"id": 1}`)
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/gitlab/") && strings.HasSuffix(p, "/repository/compare"):
		answer(http.StatusOK, `{"diffs": []}`)
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/gitlab/"):
		answer(http.StatusOK, `{"id": 15, "default_branch": "main"}`)
	// Bitbucket
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/bitbucket/") && strings.HasSuffix(p, "/hooks"):
		answer(http.StatusCreated, `{"uuid": "{a1b2c3d4-0000-4000-8000-000000000001}"}`)
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/bitbucket/") && strings.HasSuffix(p, "/deploy-keys"):
		answer(http.StatusOK, `{"id": 123}`)
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/bitbucket/") && strings.Contains(p, "/statuses/build"):
		answer(http.StatusCreated, `{"state": "INPROGRESS"}`)
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/bitbucket/") && strings.Contains(p, "/diffstat/"):
		answer(http.StatusOK, `{"values": [{"status": "modified", "old": {"path": "Dockerfile"}, "new": {"path": "Dockerfile"}}]}`)
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/bitbucket/"):
		// A Bitbucket-compatible server's git lives on a host of its own.
		answer(http.StatusOK, `{"mainbranch": {"type": "branch", "name": "main"}, "links": {"clone": [
			{"name": "https", "href": "https://git.bitbucket.test/analytical/engine.git"},
			{"name": "ssh", "href": "ssh://git@git.bitbucket.test:7999/analytical/engine.git"}]}}`)
	default:
		answer(http.StatusNotFound, `{"message": "Not Found"}`)
	}
}

// callsTo returns the recorded calls whose method is method and whose path
// starts with prefix.
func (f *fakeForge) callsTo(method, prefix string) []forgeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []forgeCall
	for _, c := range f.calls {
		if c.Method == method && strings.HasPrefix(c.Path, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// onlyCall is the one call to method prefix; more or fewer fail the test.
func (f *fakeForge) onlyCall(t *testing.T, method, prefix string) forgeCall {
	t.Helper()
	cs := f.callsTo(method, prefix)
	if len(cs) != 1 {
		t.Fatalf("fake forge got %d %s %s* calls, want 1: %+v", len(cs), method, prefix, cs)
	}
	return cs[0]
}

// waitStatuses polls the recorded commit status calls under prefix until
// stateOf finds want (in order) or the timeout passes.
func (f *fakeForge) waitStatuses(t *testing.T, prefix string, stateOf func(forgeCall) string, want []string, timeout time.Duration) []forgeCall {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		cs := f.callsTo(http.MethodPost, prefix)
		var states []string
		for _, c := range cs {
			states = append(states, stateOf(c))
		}
		if slices.Equal(states, want) {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("commit statuses at %s = %q, want %q (calls %+v)", prefix, states, want, cs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func bodyString(c forgeCall, keys ...string) string {
	var v any = c.Body
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[k]
	}
	s, _ := v.(string)
	return s
}
