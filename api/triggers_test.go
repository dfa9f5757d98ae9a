package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
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

func newTriggerEnv(t *testing.T) (*buildEnv, *fakeForgeAPI, *[]string) {
	e := newBuildEnv(t, nil)
	e.setup()
	fake := newFakeForgeAPI(t)
	var scanned []string
	_, err := RegisterTriggers(e.api, TriggerOptions{Manager: e.m, Builds: e.builds,
		Forges: &webhook.Forges{GitHub: &forge.GitHubConfig{APIEndpoint: fake.srv.URL, AccessToken: "svc"}},
		ScanHostKey: func(_ context.Context, hostport string) (string, error) {
			scanned = append(scanned, hostport)
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

	// Manual start: custom-git needs a commit.
	assertError(t, e.call(http.MethodPost, base+id+"/start", basic("alice"), map[string]any{"branch_name": "dev"}), 400, "invalid_request")
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
	if a.obj()["status"] != "notimplemented" {
		t.Fatalf("analyze %s", a.body)
	}

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
	e, fake, _ := newTriggerEnv(t)
	const base = "/api/v1/repository/alice/app/trigger/"
	r := e.must(201, http.MethodPost, base, basic("alice"), map[string]any{"service": "github",
		"config": map[string]any{"build_source": "octo-org/hello-app", "concurrency": "serial"}})
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
	sec, err := e.api.o.Secrets.Open(tr.SealedSecret, webhook.SecretPurpose(id))
	if err != nil || hook.Config["secret"] != string(sec) || hook.Config["url"] != hookURL || tr.HookID != "777" || tr.DeployKeyID != "42" {
		t.Fatalf("hook %v, trigger %+v, %v", hook.Config, tr, err)
	}
	assertError(t, e.call(http.MethodPost, base, basic("alice"), map[string]any{"service": "github",
		"config": map[string]any{"build_source": "octo-org/hello-app", "concurrency": "sometimes"}}), 400, "invalid_request")
	assertError(t, e.call(http.MethodPost, base, basic("alice"), map[string]any{"service": "gitlab",
		"config": map[string]any{"build_source": "g/r"}}), 400, "invalid_request")
	fake.take()

	// A manual run of a forge trigger builds a branch's head.
	r = e.must(201, http.MethodPost, base+id+"/start", basic("alice"), map[string]any{"branch_name": "main"})
	if tags := r.obj()["tags"].([]any); len(tags) != 2 || tags[0] != "main" || tags[1] != "latest" {
		t.Fatalf("manual run tags %s", r.body)
	}
	fake.take()

	e.must(204, http.MethodDelete, base+id, basic("alice"), nil)
	calls = fake.take()
	if len(calls) != 2 || !strings.HasPrefix(calls[0], "DELETE /repos/octo-org/hello-app/hooks/777") ||
		!strings.HasPrefix(calls[1], "DELETE /repos/octo-org/hello-app/keys/42") {
		t.Fatalf("delete calls %q", calls)
	}
}
