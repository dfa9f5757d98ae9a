package forge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/triggers/forge"
)

// call is one request a fake forge received.
type call struct {
	Method, Path, Query, Auth string
	Body                      map[string]any
}

// fakeForge records every request and answers from a route table keyed by
// "METHOD escaped-path".
type fakeForge struct {
	t      *testing.T
	mu     sync.Mutex
	calls  []call
	routes map[string]string
	srv    *httptest.Server
}

func newFakeForge(t *testing.T, routes map[string]string) *fakeForge {
	f := &fakeForge{t: t, routes: routes}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		c := call{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Auth: r.Header.Get("Authorization")}
		if r.Header.Get("Private-Token") != "" {
			c.Auth = "PRIVATE-TOKEN " + r.Header.Get("Private-Token")
		}
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &c.Body); err != nil {
				t.Errorf("%s %s: body is not a JSON object: %q", r.Method, r.URL.Path, raw)
			}
		}
		f.mu.Lock()
		f.calls = append(f.calls, c)
		f.mu.Unlock()
		resp, ok := f.routes[r.Method+" "+c.Path]
		if !ok {
			http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if resp == "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
		io.WriteString(w, resp)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeForge) only(t *testing.T) call {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 1 {
		t.Fatalf("want exactly one request, got %d: %+v", len(f.calls), f.calls)
	}
	c := f.calls[0]
	f.calls = nil
	return c
}

func wantCall(t *testing.T, got call, method, path, auth string, body map[string]any) {
	t.Helper()
	if got.Method != method || got.Path != path {
		t.Errorf("request = %s %s, want %s %s", got.Method, got.Path, method, path)
	}
	if got.Auth != auth {
		t.Errorf("auth = %q, want %q", got.Auth, auth)
	}
	if body != nil && !reflect.DeepEqual(got.Body, body) {
		t.Errorf("body = %#v\nwant   %#v", got.Body, body)
	}
}

var ctx = context.Background()

func TestFakeGitHubActivationAndStatuses(t *testing.T) {
	f := newFakeForge(t, map[string]string{
		"POST /api/v3/repos/octo-org/hello-app/hooks":                                             `{"id": 12345678}`,
		"DELETE /api/v3/repos/octo-org/hello-app/hooks/12345678":                                  "",
		"POST /api/v3/repos/octo-org/hello-app/keys":                                              `{"id": 42, "read_only": true}`,
		"DELETE /api/v3/repos/octo-org/hello-app/keys/42":                                         "",
		"POST /api/v3/repos/octo-org/hello-app/statuses/9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d": `{"id": 1}`,
		"GET /api/v3/repos/octo-org/hello-app/compare/0d1a26e...9a3c5f7":                          `{"files":[{"filename":"a.go"},{"filename":"new/b.go","previous_filename":"old/b.go"}]}`,
		"GET /api/v3/repos/octo-org/hello-app":                                                    `{"default_branch":"trunk"}`,
	})
	gh, err := forge.NewGitHub(forge.GitHubConfig{APIEndpoint: f.srv.URL + "/api/v3", AccessToken: "cfg-token"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	const auth = "Bearer cfg-token"

	id, err := gh.CreateHook(ctx, "octo-org/hello-app", "https://berth.example.com/webhooks/push/trigger/u1", []byte("hook-secret"))
	if err != nil || id != "12345678" {
		t.Fatalf("CreateHook = %q, %v", id, err)
	}
	wantCall(t, f.only(t), "POST", "/api/v3/repos/octo-org/hello-app/hooks", auth, map[string]any{
		"name": "web", "active": true, "events": []any{"push"},
		"config": map[string]any{"url": "https://berth.example.com/webhooks/push/trigger/u1", "content_type": "json", "secret": "hook-secret", "insecure_ssl": "0"},
	})

	kid, err := gh.AddDeployKey(ctx, "octo-org/hello-app", "berth builder", "ssh-ed25519 AAAAC3Nza berth")
	if err != nil || kid != "42" {
		t.Fatalf("AddDeployKey = %q, %v", kid, err)
	}
	wantCall(t, f.only(t), "POST", "/api/v3/repos/octo-org/hello-app/keys", auth, map[string]any{
		"title": "berth builder", "key": "ssh-ed25519 AAAAC3Nza berth", "read_only": true,
	})

	for _, st := range []forge.State{forge.StatePending, forge.StateSuccess, forge.StateFailure, forge.StateError} {
		err := gh.SetCommitStatus(ctx, "octo-org/hello-app", "9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d", forge.Status{
			State: st, TargetURL: "https://berth.example.com/repository/o/r/build/b1", Description: "Build " + string(st),
		})
		if err != nil {
			t.Fatal(err)
		}
		wantCall(t, f.only(t), "POST", "/api/v3/repos/octo-org/hello-app/statuses/9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d", auth, map[string]any{
			"state": string(st), "target_url": "https://berth.example.com/repository/o/r/build/b1",
			"description": "Build " + string(st), "context": "berth/build",
		})
	}
	if err := gh.SetCommitStatus(ctx, "octo-org/hello-app", "abc", forge.Status{State: "queued"}); err == nil {
		t.Error("unknown state accepted")
	}

	files, err := gh.GetChangedFiles(ctx, "octo-org/hello-app", "0d1a26e", "9a3c5f7")
	if err != nil || !slices.Equal(files, []string{"a.go", "new/b.go", "old/b.go"}) {
		t.Fatalf("GetChangedFiles = %q, %v", files, err)
	}
	f.only(t)

	if b, err := gh.DefaultBranch(ctx, "octo-org/hello-app"); err != nil || b != "trunk" {
		t.Fatalf("DefaultBranch = %q, %v", b, err)
	}
	f.only(t)

	if err := gh.DeleteHook(ctx, "octo-org/hello-app", id); err != nil {
		t.Fatal(err)
	}
	wantCall(t, f.only(t), "DELETE", "/api/v3/repos/octo-org/hello-app/hooks/12345678", auth, nil)
	if err := gh.DeleteDeployKey(ctx, "octo-org/hello-app", kid); err != nil {
		t.Fatal(err)
	}
	wantCall(t, f.only(t), "DELETE", "/api/v3/repos/octo-org/hello-app/keys/42", auth, nil)

	if _, err := gh.CreateHook(ctx, "octo-org/hello-app", "https://x", nil); err == nil {
		t.Error("hook without secret accepted")
	}
	if _, err := gh.CreateHook(ctx, "no-slash", "https://x", []byte("s")); !errors.Is(err, forge.ErrBadRepo) {
		t.Errorf("bad repo: %v", err)
	}
	if err := gh.DeleteHook(ctx, "octo-org/hello-app", "99"); err == nil {
		t.Error("404 from the forge not reported")
	}
}

// GitHub's compare API stops at 300 files; a list that long may be missing
// the very file a path filter looks for.
func TestFakeGitHubChangedFilesAtTheCompareLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"files":[`)
	for i := range 300 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"filename":"f%d.go"}`, i)
	}
	b.WriteString(`]}`)
	f := newFakeForge(t, map[string]string{
		"GET /api/v3/repos/octo-org/big/compare/aaa...bbb": b.String(),
	})
	gh, err := forge.NewGitHub(forge.GitHubConfig{APIEndpoint: f.srv.URL + "/api/v3", AccessToken: "t"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	files, err := gh.GetChangedFiles(ctx, "octo-org/big", "aaa", "bbb")
	if !errors.Is(err, forge.ErrIncompleteFileList) || files != nil {
		t.Fatalf("GetChangedFiles at the limit = %d files, %v; want ErrIncompleteFileList", len(files), err)
	}
}

func TestFakeGitHubPerTriggerTokenWins(t *testing.T) {
	f := newFakeForge(t, map[string]string{"GET /repos/o/r": `{"default_branch":"main"}`})
	gh, err := forge.NewGitHub(forge.GitHubConfig{APIEndpoint: f.srv.URL, AccessToken: "cfg"}, "user-oauth", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gh.DefaultBranch(ctx, "o/r"); err != nil {
		t.Fatal(err)
	}
	wantCall(t, f.only(t), "GET", "/repos/o/r", "Bearer user-oauth", nil)
	if _, err := forge.NewGitHub(forge.GitHubConfig{}, "", nil); err == nil {
		t.Error("client without any token accepted")
	}
}

func TestFakeGitLabActivationAndStatuses(t *testing.T) {
	f := newFakeForge(t, map[string]string{
		"POST /api/v4/projects/mike%2Fdiaspora/hooks":             `{"id": 7}`,
		"DELETE /api/v4/projects/mike%2Fdiaspora/hooks/7":         "",
		"POST /api/v4/projects/mike%2Fdiaspora/deploy_keys":       `{"id": 9, "can_push": false}`,
		"DELETE /api/v4/projects/mike%2Fdiaspora/deploy_keys/9":   "",
		"POST /api/v4/projects/mike%2Fdiaspora/statuses/da15608":  `{"id": 1}`,
		"GET /api/v4/projects/mike%2Fdiaspora/repository/compare": `{"diffs":[{"new_path":"a","old_path":"a"},{"new_path":"c","old_path":"b","renamed_file":true}]}`,
		"GET /api/v4/projects/mike%2Fdiaspora":                    `{"id": 15, "default_branch":"main"}`,
	})
	gl, err := forge.NewGitLab(forge.GitLabConfig{GitLabEndpoint: f.srv.URL, AccessToken: "glpat-x"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	const auth = "PRIVATE-TOKEN glpat-x"
	id, err := gl.CreateHook(ctx, "mike/diaspora", "https://berth.example.com/webhooks/push/trigger/u2", []byte("tok"))
	if err != nil || id != "7" {
		t.Fatalf("CreateHook = %q, %v", id, err)
	}
	wantCall(t, f.only(t), "POST", "/api/v4/projects/mike%2Fdiaspora/hooks", auth, map[string]any{
		"url": "https://berth.example.com/webhooks/push/trigger/u2", "push_events": true, "tag_push_events": true,
		"token": "tok", "enable_ssl_verification": true,
	})
	kid, err := gl.AddDeployKey(ctx, "mike/diaspora", "berth builder", "ssh-ed25519 AAAA k")
	if err != nil || kid != "9" {
		t.Fatalf("AddDeployKey = %q, %v", kid, err)
	}
	wantCall(t, f.only(t), "POST", "/api/v4/projects/mike%2Fdiaspora/deploy_keys", auth, map[string]any{
		"title": "berth builder", "key": "ssh-ed25519 AAAA k", "can_push": false,
	})
	for st, want := range map[forge.State]string{forge.StatePending: "pending", forge.StateSuccess: "success", forge.StateFailure: "failed", forge.StateError: "failed"} {
		if err := gl.SetCommitStatus(ctx, "mike/diaspora", "da15608", forge.Status{State: st, TargetURL: "https://b/build/1", Description: "d"}); err != nil {
			t.Fatal(err)
		}
		wantCall(t, f.only(t), "POST", "/api/v4/projects/mike%2Fdiaspora/statuses/da15608", auth, map[string]any{
			"state": want, "target_url": "https://b/build/1", "description": "d", "name": "berth/build",
		})
	}
	files, err := gl.GetChangedFiles(ctx, "mike/diaspora", "95790bf", "da15608")
	if err != nil || !slices.Equal(files, []string{"a", "c", "b"}) {
		t.Fatalf("GetChangedFiles = %q, %v", files, err)
	}
	if c := f.only(t); c.Query != "from=95790bf&to=da15608" {
		t.Errorf("compare query = %q", c.Query)
	}
	if b, err := gl.DefaultBranch(ctx, "mike/diaspora"); err != nil || b != "main" {
		t.Fatalf("DefaultBranch = %q, %v", b, err)
	}
	f.only(t)
	if err := gl.DeleteHook(ctx, "mike/diaspora", id); err != nil {
		t.Fatal(err)
	}
	wantCall(t, f.only(t), "DELETE", "/api/v4/projects/mike%2Fdiaspora/hooks/7", auth, nil)
	if err := gl.DeleteDeployKey(ctx, "mike/diaspora", kid); err != nil {
		t.Fatal(err)
	}
	wantCall(t, f.only(t), "DELETE", "/api/v4/projects/mike%2Fdiaspora/deploy_keys/9", auth, nil)
}

func TestFakeBitbucketActivationAndStatuses(t *testing.T) {
	f := newFakeForge(t, map[string]string{
		"POST /2.0/repositories/analytical/engine/hooks":                                              `{"uuid": "{a1b2c3d4-0000-4000-8000-000000000001}"}`,
		"DELETE /2.0/repositories/analytical/engine/hooks/%7Ba1b2c3d4-0000-4000-8000-000000000001%7D": "",
		"POST /2.0/repositories/analytical/engine/deploy-keys":                                        `{"id": 123, "key": "ssh-ed25519 AAAA"}`,
		"DELETE /2.0/repositories/analytical/engine/deploy-keys/123":                                  "",
		"POST /2.0/repositories/analytical/engine/commit/f00dfac/statuses/build":                      `{"state":"INPROGRESS"}`,
		"GET /2.0/repositories/analytical/engine/diffstat/f00dfac..a1b2c3d":                           `{"values":[{"status":"modified","old":{"path":"a"},"new":{"path":"a"}},{"status":"added","old":null,"new":{"path":"b"}}],"next":"PAGE2"}`,
		"GET /2.0/repositories/analytical/engine/diffstat/page2":                                      `{"values":[{"status":"removed","old":{"path":"c"},"new":null}]}`,
		"GET /2.0/repositories/analytical/engine":                                                     `{"mainbranch":{"type":"branch","name":"develop"}}`,
	})
	// The first diffstat page links to the second by absolute URL, as Bitbucket does.
	f.routes["GET /2.0/repositories/analytical/engine/diffstat/f00dfac..a1b2c3d"] = `{"values":[{"status":"modified","old":{"path":"a"},"new":{"path":"a"}},{"status":"added","old":null,"new":{"path":"b"}}],"next":"` + f.srv.URL + `/2.0/repositories/analytical/engine/diffstat/page2?page=2"}`
	bb, err := forge.NewBitbucket(forge.BitbucketConfig{APIEndpoint: f.srv.URL + "/2.0", AccessToken: "bb-token"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	const auth = "Bearer bb-token"
	id, err := bb.CreateHook(ctx, "analytical/engine", "https://berth.example.com/webhooks/push/trigger/u3", []byte("bbsecret"))
	if err != nil || id != "{a1b2c3d4-0000-4000-8000-000000000001}" {
		t.Fatalf("CreateHook = %q, %v", id, err)
	}
	wantCall(t, f.only(t), "POST", "/2.0/repositories/analytical/engine/hooks", auth, map[string]any{
		"description": "berth build trigger", "url": "https://berth.example.com/webhooks/push/trigger/u3",
		"active": true, "events": []any{"repo:push"}, "secret": "bbsecret",
	})
	kid, err := bb.AddDeployKey(ctx, "analytical/engine", "berth builder", "ssh-ed25519 AAAA k")
	if err != nil || kid != "123" {
		t.Fatalf("AddDeployKey = %q, %v", kid, err)
	}
	wantCall(t, f.only(t), "POST", "/2.0/repositories/analytical/engine/deploy-keys", auth, map[string]any{
		"key": "ssh-ed25519 AAAA k", "label": "berth builder",
	})
	for st, want := range map[forge.State]string{forge.StatePending: "INPROGRESS", forge.StateSuccess: "SUCCESSFUL", forge.StateFailure: "FAILED", forge.StateError: "FAILED"} {
		if err := bb.SetCommitStatus(ctx, "analytical/engine", "f00dfac", forge.Status{State: st, TargetURL: "https://b/build/1", Description: "d"}); err != nil {
			t.Fatal(err)
		}
		wantCall(t, f.only(t), "POST", "/2.0/repositories/analytical/engine/commit/f00dfac/statuses/build", auth, map[string]any{
			"key": "berth/build", "name": "berth/build", "state": want, "url": "https://b/build/1", "description": "d",
		})
	}
	if err := bb.SetCommitStatus(ctx, "analytical/engine", "f00dfac", forge.Status{State: forge.StatePending}); err == nil {
		t.Error("status without a target URL accepted")
	}
	files, err := bb.GetChangedFiles(ctx, "analytical/engine", "a1b2c3d", "f00dfac")
	if err != nil || !slices.Equal(files, []string{"a", "b", "c"}) {
		t.Fatalf("GetChangedFiles = %q, %v", files, err)
	}
	f.mu.Lock()
	if len(f.calls) != 2 || f.calls[0].Query != "pagelen=500" || f.calls[1].Query != "page=2" {
		t.Errorf("diffstat requests = %+v", f.calls)
	}
	f.calls = nil
	f.mu.Unlock()
	if b, err := bb.DefaultBranch(ctx, "analytical/engine"); err != nil || b != "develop" {
		t.Fatalf("DefaultBranch = %q, %v", b, err)
	}
	f.only(t)
	if err := bb.DeleteHook(ctx, "analytical/engine", id); err != nil {
		t.Fatal(err)
	}
	wantCall(t, f.only(t), "DELETE", "/2.0/repositories/analytical/engine/hooks/%7Ba1b2c3d4-0000-4000-8000-000000000001%7D", auth, nil)
	if err := bb.DeleteDeployKey(ctx, "analytical/engine", kid); err != nil {
		t.Fatal(err)
	}
	wantCall(t, f.only(t), "DELETE", "/2.0/repositories/analytical/engine/deploy-keys/123", auth, nil)
	var apiErr *forge.APIError
	if err := bb.DeleteHook(ctx, "analytical/engine", "{nope}"); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Errorf("DeleteHook(unknown) = %v, want a 404 APIError", err)
	}
}

// A Bitbucket-compatible server behind a configured API_ENDPOINT (faked
// here: Bitbucket's own API is not reachable from the tests) names clone
// links on its own git host; the client returns them as the API gives them.
func TestBitbucketCloneLinksFromFakeAPI(t *testing.T) {
	f := newFakeForge(t, map[string]string{
		"GET /rest/2.0/repositories/analytical/engine": `{"full_name":"analytical/engine","links":{"clone":[
			{"name":"https","href":"https://git.corp.example/scm/analytical/engine.git"},
			{"name":"ssh","href":"ssh://git@git.corp.example:7999/analytical/engine.git"}]}}`,
		"GET /rest/2.0/repositories/analytical/bare": `{"full_name":"analytical/bare","links":{"html":{"href":"https://x"}}}`,
	})
	bb, err := forge.NewBitbucket(forge.BitbucketConfig{APIEndpoint: f.srv.URL + "/rest/2.0/", AccessToken: "bb-token"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	links, err := bb.CloneLinks(ctx, "analytical/engine")
	if err != nil {
		t.Fatal(err)
	}
	want := forge.CloneLinks{HTTPS: "https://git.corp.example/scm/analytical/engine.git", SSH: "ssh://git@git.corp.example:7999/analytical/engine.git"}
	if links != want {
		t.Errorf("CloneLinks = %+v, want %+v", links, want)
	}
	wantCall(t, f.only(t), "GET", "/rest/2.0/repositories/analytical/engine", "Bearer bb-token", nil)
	if _, err := bb.CloneLinks(ctx, "analytical/bare"); err == nil || !strings.Contains(err.Error(), "no https or ssh clone link") {
		t.Errorf("a repository without clone links: %v", err)
	}
	var apiErr *forge.APIError
	if _, err := bb.CloneLinks(ctx, "analytical/missing"); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown repository: %v, want a 404 APIError", err)
	}
}

// Every forge satisfies the interface.
var _ = []forge.Forge{(*forge.GitHub)(nil), (*forge.GitLab)(nil), (*forge.Bitbucket)(nil)}
