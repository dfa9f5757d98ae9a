package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/test/gitserver"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
	"github.com/berth-dev/berth/triggers/manage"
	"github.com/berth-dev/berth/triggers/webhook"
)

var triggerViewKeys = []string{"id", "service", "is_active", "build_source", "repository_url", "config", "can_invoke",
	"enabled", "disabled_reason", "pull_robot", "connected_user"}

// fakeForgeAPI records the calls a forge received.
type fakeForgeAPI struct {
	mu    sync.Mutex
	calls []string
	srv   *httptest.Server
}

func newFakeForgeAPI(t *testing.T) *fakeForgeAPI {
	f := &fakeForgeAPI{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.calls = append(f.calls, r.Method+" "+r.URL.Path+" "+string(b))
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case strings.HasSuffix(r.URL.Path, "/keys"):
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"id": 42}`)
		case strings.HasSuffix(r.URL.Path, "/hooks"):
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"id": 777}`)
		default:
			_, _ = io.WriteString(w, `{"default_branch": "main"}`)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeForgeAPI) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// newTriggerEnv lets the API reach the tests' git servers on loopback.
func newTriggerEnv(t *testing.T) (*buildEnv, *fakeForgeAPI, *[]string) {
	return newTriggerEnvConfig(t, map[string]any{"OUTBOUND_ALLOWED_NETWORKS": []any{"127.0.0.0/8"}})
}

// newTriggerEnvConfig is newTriggerEnv with raw config keys.
func newTriggerEnvConfig(t *testing.T, raw map[string]any) (*buildEnv, *fakeForgeAPI, *[]string) {
	e := newBuildEnv(t, raw)
	e.setup()
	fake := newFakeForgeAPI(t)
	var scanned []string
	_, err := RegisterTriggers(e.api, TriggerOptions{Manager: e.m, Builds: e.builds,
		Forges: &triggers.Forges{Configs: map[string]forge.Config{
			triggers.ServiceGitHub: forge.GitHubConfig{APIEndpoint: fake.srv.URL, AccessToken: "svc"}}},
		ScanHostKey: func(_ context.Context, hostport string) (string, error) {
			scanned = append(scanned, hostport)
			if strings.HasPrefix(hostport, "unreachable.") {
				return "", errors.New("dial tcp: connection refused")
			}
			return "[" + strings.Split(hostport, ":")[0] + "]:22 ssh-ed25519 HOSTKEY", nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return e, fake, &scanned
}

func TestTriggerCustomGitLifecycle(t *testing.T) {
	e, _, scanned := newTriggerEnv(t)
	const base = "/api/v1/repository/alice/app/trigger/"
	cfg := map[string]any{"build_source": "git@git.example.com:team/app.git", "tag_templates": []string{"${commit_info.short_sha}"}}

	// Repository admins only.
	assertError(t, e.call(http.MethodPost, base, basic("dave"), map[string]any{"service": "custom-git", "config": cfg}), 403, "insufficient_scope")
	assertError(t, e.call(http.MethodGet, base, basic("bob"), nil), 404, "not_found")
	assertError(t, e.call(http.MethodPost, base, basic("alice"), map[string]any{"service": "svn", "config": cfg}), 400, "invalid_request")
	r := e.call(http.MethodPost, base, basic("alice"), map[string]any{"service": "custom-git",
		"config": map[string]any{"build_source": "x", "tag_templates": []string{"${commit_info}"}}})
	assertError(t, r, 400, "invalid_request")
	if !strings.Contains(r.obj()["detail"].(string), "commit_info.short_sha") {
		t.Fatalf("template error: %s", r.body)
	}
	if l := e.must(200, http.MethodGet, base, basic("alice"), nil); len(l.obj()["triggers"].([]any)) != 0 {
		t.Fatalf("a refused trigger was kept: %s", l.body)
	}

	r = e.must(201, http.MethodPost, base, basic("alice"), map[string]any{"service": "custom-git", "config": cfg})
	v := keys(t, "trigger", r.v, triggerViewKeys...)
	id := v["id"].(string)
	if v["service"] != "custom-git" || v["is_active"] != true || v["enabled"] != true || v["build_source"] != cfg["build_source"] ||
		v["repository_url"] != nil || v["disabled_reason"] != nil || v["pull_robot"] != nil || v["connected_user"] != "alice" || v["can_invoke"] != true {
		t.Fatalf("view %s", r.body)
	}
	creds := v["config"].(map[string]any)["credentials"].([]any)
	if len(creds) != 2 {
		t.Fatalf("credentials %v", creds)
	}
	pub := creds[0].(map[string]any)
	hook := creds[1].(map[string]any)
	if pub["name"] != triggers.CredentialSSHPublicKey || !strings.HasPrefix(pub["value"].(string), "ssh-ed25519 ") ||
		hook["name"] != triggers.CredentialWebhookURL {
		t.Fatalf("credentials %v", creds)
	}
	u, err := url.Parse(hook["value"].(string))
	if err != nil || u.Host != "quay-server.example.com" || u.Path != "/webhooks/push/trigger/"+id || u.User.Username() != "$token" {
		t.Fatalf("webhook URL %q", hook["value"])
	}
	secret, _ := u.User.Password()
	if len(secret) < 32 || len(*scanned) != 1 || (*scanned)[0] != "git.example.com:22" {
		t.Fatalf("secret %q, host keys scanned %v", secret, *scanned)
	}
	tr, err := e.store.GetTrigger(context.Background(), id)
	if err != nil || tr.KnownHosts != "[git.example.com]:22 ssh-ed25519 HOSTKEY" || strings.Contains(string(tr.Config), "credentials") ||
		strings.Contains(string(tr.SealedSecret), secret) {
		t.Fatalf("stored trigger %+v, %v", tr, err)
	}

	// The webhook URL it shows is accepted by the webhook handler.
	h := webhook.NewHandler(webhook.Options{Store: e.store, Manager: e.m, Secrets: e.api.o.Secrets})
	req := httptest.NewRequest(http.MethodPost, u.Path, strings.NewReader(`{"commit":"abcdef1234","ref":"refs/heads/main","default_branch":"main"}`))
	req.SetBasicAuth("$token", secret)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 {
		t.Fatalf("webhook: %d %s", w.Code, w.Body)
	}

	l := e.must(200, http.MethodGet, base, basic("alice"), nil)
	if ts := l.obj()["triggers"].([]any); len(ts) != 1 || ts[0].(map[string]any)["id"] != id {
		t.Fatalf("list %s", l.body)
	}
	e.must(200, http.MethodGet, base+id, basic("alice"), nil)
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/other/trigger/"+id, basic("alice"), nil), 404, "not_found")
	assertError(t, e.call(http.MethodPost, base+id+"/activate", basic("alice"), map[string]any{"config": cfg}), 400, "invalid_request")

	// Manual start without a commit asks the git server for the branch's
	// head; this one's recorded host key cannot even be parsed.
	r = e.call(http.MethodPost, base+id+"/start", basic("alice"), map[string]any{"branch_name": "dev"})
	assertError(t, r, 400, "invalid_request")
	if !strings.Contains(r.obj()["detail"].(string), "Could not read the trigger's git repository") {
		t.Fatalf("start without a commit: %s", r.body)
	}
	r = e.must(201, http.MethodPost, base+id+"/start", basic("alice"), map[string]any{"commit_sha": "0123456789abcdef", "refs": map[string]any{"kind": "tag", "name": "v2"}})
	bv := keys(t, "build", r.v, buildViewKeys...)
	if bv["display_name"] != "0123456" || bv["trigger"].(map[string]any)["id"] != id || r.hdr.Get("Location") == "" {
		t.Fatalf("started build %s", r.body)
	}
	if tags := bv["tags"].([]any); len(tags) != 2 || tags[0] != "0123456" || tags[1] != "v2" {
		t.Fatalf("tags %v", tags)
	}
	b := e.must(200, http.MethodGet, base+id+"/builds", basic("alice"), nil)
	if bs := b.obj()["builds"].([]any); len(bs) != 2 {
		t.Fatalf("trigger builds %s", b.body)
	}
	d := e.must(200, http.MethodGet, base+id+"/deliveries", basic("alice"), nil)
	ds := d.obj()["deliveries"].([]any)
	if len(ds) != 1 {
		t.Fatalf("deliveries %s", d.body)
	}
	dv := keys(t, "delivery", ds[0], "id", "received_at", "event", "status", "reason", "build_id")
	if dv["status"] != "accepted" || dv["event"] != "push" || dv["build_id"] == nil {
		t.Fatalf("delivery %v", dv)
	}
	a := e.must(200, http.MethodPost, base+id+"/analyze", basic("alice"), map[string]any{"config": cfg})
	if a.obj()["status"] != "error" || !strings.Contains(a.obj()["message"].(string), "could not be read") {
		t.Fatalf("analyze of an unreadable source %s", a.body)
	}
	assertError(t, e.call(http.MethodPost, base+id+"/analyze", basic("dave"), map[string]any{"config": cfg}), 403, "insufficient_scope")

	// Disable, and runs are refused; enable again.
	assertError(t, e.call(http.MethodPut, base+id, basic("alice"), map[string]any{}), 400, "invalid_request")
	r = e.must(200, http.MethodPut, base+id, basic("alice"), map[string]any{"enabled": false})
	if r.obj()["enabled"] != false || r.obj()["disabled_reason"] != store.DisabledByUser {
		t.Fatalf("disabled view %s", r.body)
	}
	assertError(t, e.call(http.MethodPost, base+id+"/start", basic("alice"), map[string]any{"commit_sha": "abcdef1"}), 400, "invalid_request")
	r = e.must(200, http.MethodPut, base+id, basic("alice"), map[string]any{"enabled": true})
	if r.obj()["enabled"] != true || r.obj()["disabled_reason"] != nil {
		t.Fatalf("enabled view %s", r.body)
	}

	e.must(204, http.MethodDelete, base+id, basic("alice"), nil)
	assertError(t, e.call(http.MethodGet, base+id, basic("alice"), nil), 404, "not_found")
}

func TestFakeGitHubTriggerActivationAndDelete(t *testing.T) {
	e, fake, scanned := newTriggerEnv(t)
	const base = "/api/v1/repository/alice/app/trigger/"
	// Builds clone the mirror clone_url names, a real git server.
	g := gitserver.NewRepo(t)
	head := g.Commit("first", map[string]string{"Dockerfile": "FROM busybox\n"})
	g.Push("main")
	cloneURL := gitserver.ServeGitDaemon(t, g.Root) + "/" + g.Name
	r := e.must(201, http.MethodPost, base, basic("alice"), map[string]any{"service": "github",
		"config": map[string]any{"build_source": "octo-org/hello-app", "concurrency": "serial", "clone_url": cloneURL}})
	v := keys(t, "trigger", r.v, triggerViewKeys...)
	id := v["id"].(string)
	if v["repository_url"] != "https://github.com/octo-org/hello-app" || v["is_active"] != true {
		t.Fatalf("view %s", r.body)
	}
	creds := v["config"].(map[string]any)["credentials"].([]any)
	hookURL := creds[1].(map[string]any)["value"].(string)
	if strings.Contains(hookURL, "$token") || strings.Contains(hookURL, "%24token") || !strings.HasSuffix(hookURL, "/webhooks/push/trigger/"+id) {
		t.Fatalf("forge webhook URL carries credentials: %q", hookURL)
	}
	if len(*scanned) != 0 {
		t.Fatalf("a git:// clone_url needs no host key, yet %q was scanned", *scanned)
	}
	calls := fake.take()
	if len(calls) != 2 || !strings.HasPrefix(calls[0], "POST /repos/octo-org/hello-app/keys ") ||
		!strings.Contains(calls[0], `"read_only":true`) || !strings.HasPrefix(calls[1], "POST /repos/octo-org/hello-app/hooks ") {
		t.Fatalf("activation calls %q", calls)
	}
	var hook struct {
		Config map[string]any `json:"config"`
	}
	_ = json.Unmarshal([]byte(strings.SplitN(calls[1], " ", 3)[2]), &hook)
	tr, _ := e.store.GetTrigger(context.Background(), id)
	sec, err := e.api.o.Secrets.Open(tr.SealedSecret, manage.SecretPurpose(id))
	if err != nil || hook.Config["secret"] != string(sec) || hook.Config["url"] != hookURL || tr.HookID != "777" || tr.DeployKeyID != "42" {
		t.Fatalf("hook %v, trigger %+v, %v", hook.Config, tr, err)
	}
	assertError(t, e.call(http.MethodPost, base, basic("alice"), map[string]any{"service": "github",
		"config": map[string]any{"build_source": "octo-org/hello-app", "concurrency": "sometimes"}}), 400, "invalid_request")
	assertError(t, e.call(http.MethodPost, base, basic("alice"), map[string]any{"service": "gitlab",
		"config": map[string]any{"build_source": "g/r"}}), 400, "invalid_request")
	fake.take()

	// A manual run of a forge trigger builds a branch's head, resolved
	// when it is queued.
	r = e.must(201, http.MethodPost, base+id+"/start", basic("alice"), map[string]any{"branch_name": "main"})
	if tags := r.obj()["tags"].([]any); len(tags) != 2 || tags[0] != "main" || tags[1] != "latest" {
		t.Fatalf("manual run tags %s", r.body)
	}
	if c := triggerCommit(t, r); c != head {
		t.Fatalf("manual run of main builds %q, want its head %s", c, head)
	}
	fake.take()

	e.must(204, http.MethodDelete, base+id, basic("alice"), nil)
	calls = fake.take()
	if len(calls) != 2 || !strings.HasPrefix(calls[0], "DELETE /repos/octo-org/hello-app/hooks/777") ||
		!strings.HasPrefix(calls[1], "DELETE /repos/octo-org/hello-app/keys/42") {
		t.Fatalf("delete calls %q", calls)
	}

	// Without clone_url, builds fetch from the forge's SSH host with the
	// deploy key: its host key is recorded at activation.
	r = e.must(201, http.MethodPost, base, basic("alice"), map[string]any{"service": "github",
		"config": map[string]any{"build_source": "octo-org/hello-app"}})
	if want := []string{"github.com:22"}; !slices.Equal(*scanned, want) {
		t.Fatalf("scanned %q, want %q", *scanned, want)
	}
	tr, _ = e.store.GetTrigger(context.Background(), r.obj()["id"].(string))
	if !strings.Contains(tr.KnownHosts, "ssh-ed25519 HOSTKEY") {
		t.Fatalf("forge host key not recorded: %q", tr.KnownHosts)
	}
	// An SSH clone_url the admin gave must have a host key berth can record.
	*scanned = nil
	assertError(t, e.call(http.MethodPost, base, basic("alice"), map[string]any{"service": "github",
		"config": map[string]any{"build_source": "octo-org/hello-app", "clone_url": "ssh://git@unreachable.example/octo-org/hello-app.git"}}),
		400, "invalid_request")
	if want := []string{"unreachable.example:22"}; !slices.Equal(*scanned, want) {
		t.Fatalf("scanned %q, want %q", *scanned, want)
	}
	fake.take()
}

// triggerCommit is the commit a started build's trigger_metadata names.
func triggerCommit(t *testing.T, r resp) string {
	t.Helper()
	md, _ := r.obj()["trigger_metadata"].(map[string]any)
	c, _ := md["commit"].(string)
	return c
}

// analyzeDockerfiles are the Dockerfiles TestTriggerAnalyze reads, by
// directory. quay-server.example.com is the API's external host, and
// example.com the Host of the test's requests: both are this registry.
var analyzeDockerfiles = map[string]string{
	"external":    "FROM busybox:1.36\n",
	"public":      "FROM quay-server.example.com/alice/pub:1\n",
	"public-host": "FROM example.com/alice/pub@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
	"private":     "FROM quay-server.example.com/alice/base\nRUN true\n",
	"hidden":      "FROM quay-server.example.com/erin/secret:latest\n",
	"missing":     "FROM quay-server.example.com/alice/nope\n",
	"not-a-repo":  "FROM quay-server.example.com/alice\n",
	"multi": "FROM golang:1 AS build\nFROM build AS test\nFROM quay-server.example.com/alice/pub AS pub\n" +
		"FROM quay-server.example.com/alice/base\nCOPY --from=build /x /x\nFROM busybox\n",
	"multi-error": "FROM quay-server.example.com/alice/base\nFROM quay-server.example.com/alice/nope\n",
	"multi-stage": "FROM busybox AS base\nFROM base\nFROM scratch\n",
	"arg":         "ARG NS\nFROM quay-server.example.com/$NS/base\n",
	"arg-default": "ARG NS=alice\nFROM quay-server.example.com/${NS}/base\n",
	"arg-empty":   "ARG BASE\nFROM $BASE\n",
	"no-from":     "ARG X=1\n",
	"syntax":      "FROM a b c\n",
}

// TestTriggerAnalyze covers every analyzer status against a custom-git
// trigger whose Dockerfiles are served by git daemon: the read happens on
// the server, from the default branch.
func TestTriggerAnalyze(t *testing.T) {
	e, _, _ := newTriggerEnv(t)
	e.user("erin", false)
	e.user("frank", false)
	for _, r := range []struct {
		owner, name, visibility string
	}{{"alice", "pub", "public"}, {"alice", "base", "private"}, {"erin", "secret", "private"}} {
		e.must(201, http.MethodPost, "/api/v1/repository", basic(r.owner), map[string]any{"repository": r.name, "visibility": r.visibility, "description": ""})
	}
	// frank administers alice/app but not alice's namespace, and cannot
	// read alice/base.
	e.must(200, http.MethodPut, "/api/v1/repository/alice/app/permissions/user/frank", basic("alice"), map[string]any{"role": "admin"})
	e.must(201, http.MethodPut, "/api/v1/user/robots/reader", basic("alice"), nil)
	e.must(201, http.MethodPut, "/api/v1/user/robots/idle", basic("alice"), nil)
	e.must(200, http.MethodPut, "/api/v1/repository/alice/base/permissions/user/alice+reader", basic("alice"), map[string]any{"role": "read"})

	g := gitserver.NewRepo(t)
	files := map[string]string{}
	for dir, content := range analyzeDockerfiles {
		files[dir+"/Dockerfile"] = content
	}
	g.Commit("Dockerfiles", files)
	g.Push("main")
	// Another branch has a Dockerfile the default branch lacks: analyze
	// reads the default branch only.
	g.Branch("feature")
	g.Commit("feature only", map[string]string{"feature/Dockerfile": "FROM busybox\n"})
	g.Push("feature")
	gitURL := gitserver.ServeGitDaemon(t, g.Root) + "/" + g.Name

	const base = "/api/v1/repository/alice/app/trigger/"
	tr := e.must(201, http.MethodPost, base, basic("alice"), map[string]any{"service": "custom-git",
		"config": map[string]any{"build_source": gitURL}})
	id := tr.obj()["id"].(string)
	analyze := func(c cred, cfg map[string]any) map[string]any {
		t.Helper()
		r := e.must(200, http.MethodPost, base+id+"/analyze", c, map[string]any{"config": cfg})
		return keys(t, "analysis", r.v, "namespace", "name", "robots", "status", "message", "is_admin")
	}
	df := func(dir string) map[string]any { return map[string]any{"dockerfile_path": "/" + dir + "/Dockerfile"} }
	robots := func(v map[string]any) map[string]bool {
		t.Helper()
		out := map[string]bool{}
		for _, r := range v["robots"].([]any) {
			m := keys(t, "robot", r, "name", "kind", "is_robot", "can_read")
			if m["kind"] != "user" || m["is_robot"] != true {
				t.Fatalf("robot %v", m)
			}
			out[m["name"].(string)] = m["can_read"].(bool)
		}
		return out
	}

	cases := []struct {
		name    string
		cfg     map[string]any
		status  string
		repo    string // "namespace/name", "" for null
		message string
		canRead map[string]bool
	}{
		{"external base", df("external"), "publicbase", "", "busybox:1.36", map[string]bool{"alice+reader": false, "alice+idle": false}},
		{"public local base", df("public"), "publicbase", "alice/pub", "public", map[string]bool{"alice+reader": true, "alice+idle": true}},
		{"public base by the request's host", df("public-host"), "publicbase", "alice/pub", "public", nil},
		{"private base", df("private"), "requiresrobot", "alice/base", "alice/base", map[string]bool{"alice+reader": true, "alice+idle": false}},
		{"private base of another namespace", df("hidden"), "error", "", "erin/secret was not found", map[string]bool{"alice+reader": false, "alice+idle": false}},
		{"missing base repository", df("missing"), "error", "", "alice/nope was not found", nil},
		{"not a repository path", df("not-a-repo"), "warning", "", "namespace/name", nil},
		{"missing Dockerfile", df("nothing"), "warning", "", "not found", nil},
		{"Dockerfile only on another branch", df("feature"), "warning", "", "default branch", nil},
		{"Dockerfile named by its directory", map[string]any{"dockerfile_path": "private/"}, "requiresrobot", "alice/base", "", nil},
		{"Dockerfile outside the context", map[string]any{"dockerfile_path": "/private/Dockerfile", "context": "/public"}, "error", "", "not inside the build context", nil},
		{"path leaving the repository", map[string]any{"dockerfile_path": "../Dockerfile"}, "error", "", "leaves the repository", nil},
		{"syntax error", df("syntax"), "error", "", "cannot be parsed", nil},
		{"no FROM", df("no-from"), "warning", "", "no FROM", nil},
		{"unresolved ARG", df("arg"), "warning", "", "NS", nil},
		{"FROM of an ARG without a value", df("arg-empty"), "warning", "", "BASE", nil},
		{"ARG with a default", df("arg-default"), "requiresrobot", "alice/base", "", nil},
		// Multi-stage: stages building on earlier ones pull nothing; the
		// gravest base is reported, the first among equals.
		{"multi-stage needing a robot", df("multi"), "requiresrobot", "alice/base", "line 4", map[string]bool{"alice+reader": true, "alice+idle": false}},
		{"multi-stage with a missing base", df("multi-error"), "error", "", "line 2", nil},
		{"stages only", df("multi-stage"), "publicbase", "", "busybox", nil},
		// The proposed config's keys win over the stored ones.
		{"unreachable proposed source", map[string]any{"build_source": "git://127.0.0.1:1/nothing.git", "dockerfile_path": "/private/Dockerfile"},
			"error", "", "could not be read", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := analyze(basic("alice"), c.cfg)
			if v["status"] != c.status || !strings.Contains(v["message"].(string), c.message) || v["is_admin"] != true {
				t.Fatalf("analysis %v, want status %s with a message mentioning %q", v, c.status, c.message)
			}
			gotRepo := ""
			if v["namespace"] != nil {
				gotRepo = v["namespace"].(string) + "/" + v["name"].(string)
			} else if v["name"] != nil {
				t.Fatalf("name without namespace: %v", v)
			}
			if gotRepo != c.repo {
				t.Errorf("base repository %q, want %q", gotRepo, c.repo)
			}
			got := robots(v)
			if len(got) != 2 {
				t.Errorf("robots %v, want alice's two", got)
			}
			for name, want := range c.canRead {
				if got[name] != want {
					t.Errorf("robot %s can_read %v, want %v", name, got[name], want)
				}
			}
		})
	}

	// frank administers the trigger's repository only: no robots, and
	// alice/base, which he cannot read, is reported as missing.
	t.Run("repository admin who cannot read the base", func(t *testing.T) {
		v := analyze(basic("frank"), df("private"))
		missing := analyze(basic("frank"), df("missing"))
		if v["status"] != "error" || v["namespace"] != nil || v["name"] != nil || v["is_admin"] != false ||
			len(v["robots"].([]any)) != 0 {
			t.Fatalf("analysis for frank %v", v)
		}
		if strings.ReplaceAll(v["message"].(string), "alice/base", "X") != strings.ReplaceAll(missing["message"].(string), "alice/nope", "X") {
			t.Errorf("an unreadable base (%q) is told apart from a missing one (%q)", v["message"], missing["message"])
		}
		if v := analyze(basic("frank"), df("public")); v["status"] != "publicbase" || v["namespace"] != "alice" || len(v["robots"].([]any)) != 0 {
			t.Errorf("public base for frank %v", v)
		}
	})
	t.Run("callers without admin", func(t *testing.T) {
		assertError(t, e.call(http.MethodPost, base+id+"/analyze", basic("dave"), map[string]any{"config": df("private")}), 403, "insufficient_scope")
		assertError(t, e.call(http.MethodPost, base+id+"/analyze", basic("bob"), map[string]any{"config": df("private")}), 404, "not_found")
	})
	t.Run("stored config", func(t *testing.T) {
		// No proposed config: the stored one (/Dockerfile, absent) is read.
		r := e.must(200, http.MethodPost, base+id+"/analyze", basic("alice"), nil)
		if r.obj()["status"] != "warning" || !strings.Contains(r.obj()["message"].(string), "/Dockerfile") {
			t.Fatalf("analysis of the stored config %s", r.body)
		}
	})
}

// TestTriggerStartResolvesHead: a manual run without commit_sha builds the
// ref's head as the git server has it when the run is queued.
func TestTriggerStartResolvesHead(t *testing.T) {
	e, _, _ := newTriggerEnv(t)
	g := gitserver.NewRepo(t)
	tagged := g.Commit("tagged", map[string]string{"Dockerfile": "FROM busybox\n"})
	g.Tag("v1")
	mainHead := g.Commit("main", map[string]string{"Dockerfile": "FROM busybox:1\n"})
	g.Branch("feature")
	featureHead := g.Commit("feature", map[string]string{"Dockerfile": "FROM busybox:2\n"})
	g.Push("main", "feature", "refs/tags/v1")
	gitURL := gitserver.ServeGitDaemon(t, g.Root) + "/" + g.Name

	const base = "/api/v1/repository/alice/app/trigger/"
	tr := e.must(201, http.MethodPost, base, basic("alice"), map[string]any{"service": "custom-git",
		"config": map[string]any{"build_source": gitURL, "tag_templates": []string{"c-${commit}"}}})
	id := tr.obj()["id"].(string)
	start := func(body map[string]any) resp {
		t.Helper()
		return e.must(201, http.MethodPost, base+id+"/start", basic("alice"), body)
	}
	check := func(r resp, commit, ref string, tags ...string) {
		t.Helper()
		if got := triggerCommit(t, r); got != commit {
			t.Errorf("trigger_metadata.commit %q, want %s", got, commit)
		}
		b, err := e.m.Get(context.Background(), r.obj()["id"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if b.Request.Git == nil || b.Request.Git.CommitSHA != commit || b.Request.Git.Ref != ref || b.Request.Git.URL != gitURL {
			t.Errorf("queued git source %+v, want %s at %s from %s", b.Request.Git, commit, ref, gitURL)
		}
		got := r.obj()["tags"].([]any)
		if len(got) != len(tags) {
			t.Fatalf("tags %v, want %v", got, tags)
		}
		for i := range tags {
			if got[i] != tags[i] {
				t.Errorf("tags %v, want %v", got, tags)
			}
		}
	}
	check(start(map[string]any{"branch_name": "feature"}), featureHead, "refs/heads/feature", "c-"+featureHead, "feature")
	// Nothing named: the default branch, which earns "latest".
	check(start(map[string]any{}), mainHead, "refs/heads/main", "c-"+mainHead, "main", "latest")
	// An annotated tag is peeled to its commit.
	check(start(map[string]any{"refs": map[string]any{"kind": "tag", "name": "v1"}}), tagged, "refs/tags/v1", "c-"+tagged, "v1")
	// A given commit is built as given.
	check(start(map[string]any{"branch_name": "feature", "commit_sha": mainHead}), mainHead, "refs/heads/feature", "c-"+mainHead, "feature")

	// The head moves: the next run builds the new one.
	g.Git("checkout", "--quiet", "main")
	moved := g.Commit("moved", map[string]string{"Dockerfile": "FROM busybox:3\n"})
	g.Push("main")
	check(start(map[string]any{"branch_name": "main"}), moved, "refs/heads/main", "c-"+moved, "main", "latest")

	r := e.call(http.MethodPost, base+id+"/start", basic("alice"), map[string]any{"branch_name": "nope"})
	assertError(t, r, 400, "invalid_request")
	if d := r.obj()["detail"].(string); !strings.Contains(d, `Branch "nope" does not exist`) {
		t.Errorf("missing branch: %q", d)
	}
	r = e.call(http.MethodPost, base+id+"/start", basic("alice"), map[string]any{"refs": map[string]any{"kind": "tag", "name": "v9"}})
	assertError(t, r, 400, "invalid_request")
	if d := r.obj()["detail"].(string); !strings.Contains(d, `Tag "v9" does not exist`) {
		t.Errorf("missing tag: %q", d)
	}
}
