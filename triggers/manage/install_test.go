package manage

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
)

// fakeBitbucketAPI stands in for a Bitbucket-compatible server at a
// configured API_ENDPOINT (Bitbucket's own API is not reachable from the
// tests): repository answers name clone links on its own git host, and
// hook and deploy-key calls succeed. It records the paths asked.
func fakeBitbucketAPI(t *testing.T, repoAnswer string) (*httptest.Server, *[]string) {
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/2.0/repositories/analytical/engine":
			_, _ = io.WriteString(w, repoAnswer)
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/deploy-keys"):
			_, _ = io.WriteString(w, `{"id": 123}`)
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/hooks"):
			_, _ = io.WriteString(w, `{"uuid": "{hook-1}"}`)
		default:
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &paths
}

func bitbucketTrigger(t *testing.T, cfg string) *store.Trigger {
	return &store.Trigger{UUID: "u1", Service: triggers.ServiceBitbucket, Config: json.RawMessage(cfg), PublicKey: "ssh-ed25519 AAAA k"}
}

// Activation records the SSH clone link the repository's API names, and a
// push's build clones from it, not from git@bitbucket.org.
func TestBitbucketActivationTakesCloneLinksFromFakeAPI(t *testing.T) {
	srv, paths := fakeBitbucketAPI(t, `{"links": {"clone": [
		{"name": "https", "href": "https://git.corp.example/scm/analytical/engine.git"},
		{"name": "ssh", "href": "ssh://git@git.corp.example:7999/analytical/engine.git"}]}}`)
	fg, err := forge.NewBitbucket(forge.BitbucketConfig{APIEndpoint: srv.URL + "/2.0/", AccessToken: "tok"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := bitbucketTrigger(t, `{"build_source": "analytical/engine", "dockerfile_path": "/Dockerfile", "forge_git_url": "ssh://attacker.example/x.git"}`)
	if err := RecordCloneLink(context.Background(), fg, tr); err != nil {
		t.Fatal(err)
	}
	if err := Install(context.Background(), fg, tr, "https://berth.example/webhooks/push/trigger/u1", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	if tr.HookID != "{hook-1}" || tr.DeployKeyID != "123" {
		t.Errorf("hook %q, deploy key %q", tr.HookID, tr.DeployKeyID)
	}
	if (*paths)[0] != "GET /2.0/repositories/analytical/engine" {
		t.Errorf("first call %q, want the repository, before anything is installed", (*paths)[0])
	}
	var cfg triggers.Config
	if err := json.Unmarshal(tr.Config, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.ForgeGitURL != "ssh://git@git.corp.example:7999/analytical/engine.git" || cfg.DockerfilePath != "/Dockerfile" || cfg.BuildSource != "analytical/engine" {
		t.Errorf("config after activation: %s", tr.Config)
	}

	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("X-Event-Key", "repo:push")
	ev, err := triggers.Bitbucket{}.Parse(r, []byte(`{"repository": {"full_name": "analytical/engine"},
		"push": {"changes": [{"new": {"type": "branch", "name": "main", "target": {"hash": "f00dfacecafe0123456789abcdef0123456789ab"}}}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	prep, sk := triggers.Prepare(cfg, *ev.Push)
	if sk.Skipped() || prep.Metadata.GitURL != cfg.ForgeGitURL {
		t.Errorf("the build clones %q (skip %v), want the API's link %q", prep.Metadata.GitURL, sk, cfg.ForgeGitURL)
	}
}

// A server that offers only HTTPS is cloned over HTTPS; one that names no
// clone link, or does not answer, stops the activation before a webhook or
// key is installed.
func TestBitbucketActivationCloneLinkFallbacksFromFakeAPI(t *testing.T) {
	srv, _ := fakeBitbucketAPI(t, `{"links": {"clone": [{"name": "https", "href": "https://git.corp.example/scm/analytical/engine.git"}]}}`)
	fg, err := forge.NewBitbucket(forge.BitbucketConfig{APIEndpoint: srv.URL + "/2.0/", AccessToken: "tok"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := bitbucketTrigger(t, `{"build_source": "analytical/engine"}`)
	if err := RecordCloneLink(context.Background(), fg, tr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(tr.Config), `"forge_git_url":"https://git.corp.example/scm/analytical/engine.git"`) {
		t.Errorf("config after activation: %s", tr.Config)
	}

	for name, answer := range map[string]string{"no links": `{"links": {}}`, "not found": ""} {
		srv, paths := fakeBitbucketAPI(t, answer)
		repo := "analytical/engine"
		if answer == "" {
			repo = "analytical/gone"
		}
		fg, err := forge.NewBitbucket(forge.BitbucketConfig{APIEndpoint: srv.URL + "/2.0/", AccessToken: "tok"}, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		tr := bitbucketTrigger(t, `{"build_source": "`+repo+`"}`)
		err = RecordCloneLink(context.Background(), fg, tr)
		if err == nil || !strings.Contains(err.Error(), "clone links of "+repo) {
			t.Errorf("%s: RecordCloneLink = %v, want an error about the clone links", name, err)
		}
		if len(*paths) != 1 || tr.HookID != "" || tr.DeployKeyID != "" {
			t.Errorf("%s: calls %v, hook %q, key %q: nothing should be installed", name, *paths, tr.HookID, tr.DeployKeyID)
		}
	}
}
