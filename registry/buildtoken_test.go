package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
)

// buildToken is a build worker's registry token for alice's build in
// alice/app whose Dockerfile starts from alice/base (and alice/ghost,
// which does not exist), as the build manager issues it.
func (e *env) buildToken(t *testing.T) string {
	t.Helper()
	alice, err := e.st.GetAccountByName(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := e.tokens.IssueGrant(&auth.Principal{Account: alice}, "svc", []auth.ResourceActions{
		{Type: auth.TypeRepository, Name: "alice/app", Actions: []auth.Action{auth.Pull, auth.Push}},
		{Type: auth.TypeRepository, Name: "alice/base", Actions: []auth.Action{auth.Pull}},
		{Type: auth.TypeRepository, Name: "alice/ghost", Actions: []auth.Action{auth.Pull}},
	}, auth.BuildGrant("b1", 1), 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// doToken sends a request with the token as the $berthbuild password.
func (e *env) doToken(method, path, token string, body []byte) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.SetBasicAuth(auth.RegistryTokenUser, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func catalogOf(t *testing.T, resp *http.Response) []string {
	t.Helper()
	expect(t, resp, 200, "")
	var body struct{ Repositories []string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Repositories
}

// TestBuildTokenCatalog: the catalog a build token shows is its claim's
// existing repositories, not everything its requester may read (review
// finding F5: it listed all of the requester's repositories).
func TestBuildTokenCatalog(t *testing.T) {
	e := newEnv(t)
	for _, repo := range []string{"alice/app", "alice/base", "alice/resume", "alice/zeta"} {
		e.pushBlob("alice", repo, []byte(repo+" layer"))
	}
	tok := e.buildToken(t)
	if got, want := catalogOf(t, e.doToken("GET", "/v2/_catalog", tok, nil)), []string{"alice/app", "alice/base"}; !slices.Equal(got, want) {
		t.Errorf("catalog with the build token = %q, want %q", got, want)
	}
	resp := e.doToken("GET", "/v2/_catalog?n=1", tok, nil)
	if got := catalogOf(t, resp); !slices.Equal(got, []string{"alice/app"}) || resp.Header.Get("Link") == "" {
		t.Errorf("first page of 1 = %q, Link %q", got, resp.Header.Get("Link"))
	}
	if got := catalogOf(t, e.doToken("GET", "/v2/_catalog?n=1&last=alice/app", tok, nil)); !slices.Equal(got, []string{"alice/base"}) {
		t.Errorf("second page = %q", got)
	}
	// alice herself sees all of hers.
	if got := catalogOf(t, e.do("GET", "/v2/_catalog", "alice", nil)); len(got) != 4 {
		t.Errorf("alice's catalog = %q", got)
	}
}

// TestBuildTokenMount: a cross-repository mount with a build token needs
// pull on `from` in the token's claim; otherwise the registry opens an
// ordinary upload session (202), as the distribution spec says, and the
// blob stays out of reach (F5: 201 from a repository the pull robot could
// not read).
func TestBuildTokenMount(t *testing.T) {
	e := newEnv(t)
	secret := e.pushBlob("alice", "alice/resume", []byte("alice's resume"))
	base := e.pushBlob("alice", "alice/base", []byte("base layer"))
	e.pushBlob("alice", "alice/app", []byte("app layer"))
	tok := e.buildToken(t)

	resp := e.doToken("POST", "/v2/alice/app/blobs/uploads/?mount="+secret.String()+"&from=alice/resume", tok, nil)
	expect(t, resp, 202, "")
	if resp.Header.Get("Location") == "" {
		t.Error("the fallback upload has no Location")
	}
	expect(t, e.doToken("GET", "/v2/alice/app/blobs/"+secret.String(), tok, nil), 404, "BLOB_UNKNOWN")

	expect(t, e.doToken("POST", "/v2/alice/app/blobs/uploads/?mount="+base.String()+"&from=alice/base", tok, nil), 201, "")
	expect(t, e.doToken("GET", "/v2/alice/app/blobs/"+base.String(), tok, nil), 200, "")
}

// TestBuildTokenRevoked: once the build's grant is revoked (its attempt
// ended), its token answers 401 on /v2, cannot be traded for another at
// the token endpoint, and a bearer token got from it earlier dies too.
func TestBuildTokenRevoked(t *testing.T) {
	e := newEnv(t)
	e.pushBlob("alice", "alice/app", []byte("app layer"))
	tok := e.buildToken(t)
	expect(t, e.doToken("GET", "/v2/", tok, nil), 200, "")
	resp := e.doToken("GET", "/v2/auth?service=svc&scope=repository:alice/app:pull", tok, nil)
	expect(t, resp, 200, "")
	var body struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	bearer := func() int {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v2/alice/app/tags/list", nil)
		req.Header.Set("Authorization", "Bearer "+body.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := bearer(); code != 200 {
		t.Fatalf("bearer token from the build token: %d", code)
	}

	if err := e.tokens.Revoker.RevokeUntil(context.Background(), auth.BuildGrant("b1", 1), time.Now().Add(15*time.Minute)); err != nil {
		t.Fatal(err)
	}
	expect(t, e.doToken("GET", "/v2/", tok, nil), 401, "UNAUTHORIZED")
	expect(t, e.doToken("GET", "/v2/alice/app/tags/list", tok, nil), 401, "UNAUTHORIZED")
	expect(t, e.doToken("GET", "/v2/auth?service=svc&scope=repository:alice/app:pull", tok, nil), 401, "")
	if code := bearer(); code != 401 {
		t.Errorf("bearer token from the revoked build token: %d, want 401", code)
	}
}
