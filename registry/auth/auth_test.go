package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	iauth "github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

// fakeStore is the store the policy and the authenticator read: users and
// repositories, without teams, permissions, robots or access tokens.
type fakeStore struct {
	accounts  map[string]*store.Account
	repos     map[string]*store.Repository
	down      atomic.Bool
	repoCalls atomic.Int64
}

var errDBDown = errors.New("database down")

func (f *fakeStore) GetAccountByName(ctx context.Context, name string) (*store.Account, error) {
	if f.down.Load() {
		return nil, errDBDown
	}
	a, ok := f.accounts[name]
	if !ok {
		return nil, fmt.Errorf("account %s: %w", name, store.ErrNotFound)
	}
	c := *a
	return &c, nil
}

// The fake holds no teams or permissions: ownership and visibility decide.
func (f *fakeStore) EffectiveRepoRoles(ctx context.Context, repoID, accountID int64) ([]store.Role, error) {
	return nil, nil
}

func (f *fakeStore) OrgTeamRoles(ctx context.Context, orgID, accountID int64) ([]store.TeamRole, error) {
	return nil, nil
}

var (
	_ iauth.PolicyStore = (*fakeStore)(nil)
	_ iauth.LoginStore  = (*fakeStore)(nil)
)

func (f *fakeStore) GetAccountByID(ctx context.Context, id int64) (*store.Account, error) {
	if f.down.Load() {
		return nil, errDBDown
	}
	for _, a := range f.accounts {
		if a.ID == id {
			c := *a
			return &c, nil
		}
	}
	return nil, fmt.Errorf("account %d: %w", id, store.ErrNotFound)
}

func (f *fakeStore) GetRobotInfo(ctx context.Context, id int64) (*store.RobotInfo, error) {
	return nil, fmt.Errorf("robot %d: %w", id, store.ErrNotFound)
}

func (f *fakeStore) TouchRobot(ctx context.Context, id int64, at time.Time) error {
	return fmt.Errorf("robot %d: %w", id, store.ErrNotFound)
}

func (f *fakeStore) GetAccessTokenByHash(ctx context.Context, hash string) (*store.AccessToken, error) {
	return nil, fmt.Errorf("access token: %w", store.ErrNotFound)
}

func (f *fakeStore) GetRepository(ctx context.Context, ns, name string) (*store.Repository, error) {
	f.repoCalls.Add(1)
	if f.down.Load() {
		return nil, errDBDown
	}
	r, ok := f.repos[ns+"/"+name]
	if !ok {
		return nil, fmt.Errorf("repository %s/%s: %w", ns, name, store.ErrNotFound)
	}
	c := *r
	return &c, nil
}

var hashes = sync.OnceValues(func() (map[string]string, error) {
	m := map[string]string{}
	for _, pw := range []string{"pw-alice", "pw-bob", "pw-root"} {
		h, err := iauth.HashPassword(pw)
		if err != nil {
			return nil, err
		}
		m[pw] = h
	}
	return m, nil
})

type testEnv struct {
	srv   *Server
	store *fakeStore
	now   time.Time
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	h, err := hashes()
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeStore{accounts: map[string]*store.Account{}, repos: map[string]*store.Repository{}}
	for i, u := range []struct {
		name, pw string
		super    bool
	}{{"alice", "pw-alice", false}, {"bob", "pw-bob", false}, {"root", "pw-root", true}} {
		fs.accounts[u.name] = &store.Account{ID: int64(i + 1), Kind: store.KindUser, Name: u.name,
			PasswordHash: h[u.pw], Superuser: u.super, Enabled: true}
	}
	for i, r := range []struct {
		ns, name string
		vis      store.Visibility
	}{{"alice", "private", store.Private}, {"alice", "public", store.Public}, {"bob", "private", store.Private}} {
		fs.repos[r.ns+"/"+r.name] = &store.Repository{ID: int64(i + 1), Namespace: r.ns, Name: r.name, Visibility: r.vis}
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{store: fs, now: time.Now()}
	tokens := iauth.NewTokenService(key, 0)
	tokens.Now = func() time.Time { return e.now }
	e.srv = &Server{
		Policy:        &iauth.Policy{Store: fs},
		Authenticator: &iauth.Authenticator{Store: fs},
		Tokens:        tokens,
		ExternalURL:   func(*http.Request) string { return "https://reg.example/" },
		Service:       func(*http.Request) string { return "reg.example" },
	}
	return e
}

// token asks the token endpoint; user "" sends no credentials.
func (e *testEnv) token(t testing.TB, user, pw string, query string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/v2/auth?"+query, nil)
	if user != "" {
		r.SetBasicAuth(user, pw)
	}
	w := httptest.NewRecorder()
	e.srv.TokenHandler().ServeHTTP(w, r)
	return w
}

// grantedAccess gets a token and returns its verified access claim.
func (e *testEnv) grantedAccess(t *testing.T, user, pw string, scopes ...string) []iauth.ResourceActions {
	t.Helper()
	q := url.Values{"service": {"reg.example"}, "scope": scopes}
	w := e.token(t, user, pw, q.Encode())
	if w.Code != http.StatusOK {
		t.Fatalf("token for %q %v: %d %s", user, scopes, w.Code, w.Body)
	}
	var resp tokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	c, err := e.srv.Tokens.Verify(context.Background(), resp.Token)
	if err != nil {
		t.Fatal(err)
	}
	return c.Access
}

func repoScope(name string, acts ...iauth.Action) iauth.ResourceActions {
	return iauth.ResourceActions{Type: iauth.TypeRepository, Name: name, Actions: acts}
}

func TestTokenResponse(t *testing.T) {
	e := newEnv(t)
	w := e.token(t, "alice", "pw-alice", "service=elsewhere.example&scope=repository:alice/private:pull")
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
	var resp map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp["token"] == "" || resp["token"] != resp["access_token"] || resp["expires_in"] != float64(300) {
		t.Fatalf("response %v", resp)
	}
	issued, err := time.Parse(time.RFC3339, resp["issued_at"].(string))
	if err != nil || issued.Sub(e.now).Abs() > time.Second {
		t.Fatalf("issued_at %v (%v)", resp["issued_at"], err)
	}
	c, err := e.srv.Tokens.Verify(context.Background(), resp["token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	// An unexpected service is taken as the audience, not refused.
	if c.Subject != "alice" || !reflect.DeepEqual([]string(c.Audience), []string{"elsewhere.example"}) {
		t.Fatalf("claims sub %q aud %v", c.Subject, c.Audience)
	}

	// Without a service parameter the audience is the configured service.
	w = e.token(t, "", "", "")
	json.Unmarshal(w.Body.Bytes(), &resp)
	c, err = e.srv.Tokens.Verify(context.Background(), resp["token"].(string))
	if err != nil || c.Subject != "" || len(c.Access) != 0 || !reflect.DeepEqual([]string(c.Audience), []string{"reg.example"}) {
		t.Fatalf("anonymous token: %+v, %v", c, err)
	}
}

func TestTokenGrants(t *testing.T) {
	e := newEnv(t)
	P, U, D, A := iauth.Pull, iauth.Push, iauth.Delete, iauth.All
	catalog := iauth.ResourceActions{Type: iauth.TypeRegistry, Name: "catalog", Actions: []iauth.Action{A}}
	for _, tc := range []struct {
		name, user, pw string
		scopes         []string
		want           []iauth.ResourceActions
	}{
		{"anonymous public pull", "", "", []string{"repository:alice/public:pull"}, []iauth.ResourceActions{repoScope("alice/public", P)}},
		{"anonymous public push", "", "", []string{"repository:alice/public:pull,push"}, []iauth.ResourceActions{repoScope("alice/public", P)}},
		{"anonymous private", "", "", []string{"repository:alice/private:pull"}, nil},
		{"owner private", "alice", "pw-alice", []string{"repository:alice/private:pull,push"}, []iauth.ResourceActions{repoScope("alice/private", P, U)}},
		{"owner star", "alice", "pw-alice", []string{"repository:alice/private:*"}, []iauth.ResourceActions{repoScope("alice/private", A)}},
		{"owner creates on push", "alice", "pw-alice", []string{"repository:alice/new/app:pull,push"}, []iauth.ResourceActions{repoScope("alice/new/app", P, U)}},
		{"no delete before it exists", "alice", "pw-alice", []string{"repository:alice/new:delete"}, nil},
		{"other private", "bob", "pw-bob", []string{"repository:alice/private:pull"}, nil},
		{"other public push", "bob", "pw-bob", []string{"repository:alice/public:pull,push"}, []iauth.ResourceActions{repoScope("alice/public", P)}},
		{"other cannot create", "bob", "pw-bob", []string{"repository:alice/new:pull,push"}, nil},
		{"superuser", "root", "pw-root", []string{"repository:bob/private:pull,push,delete"}, []iauth.ResourceActions{repoScope("bob/private", P, U, D)}},
		{"catalog superuser", "root", "pw-root", []string{"registry:catalog:*"}, []iauth.ResourceActions{catalog}},
		{"catalog user", "alice", "pw-alice", []string{"registry:catalog:*"}, nil},
		{"no namespace", "alice", "pw-alice", []string{"repository:alice:pull"}, nil},
		{"several params merge", "alice", "pw-alice",
			[]string{"repository:alice/private:pull repository:bob/private:pull", "repository:alice/private:push repository:alice/public:pull"},
			[]iauth.ResourceActions{repoScope("alice/private", P, U), repoScope("alice/public", P)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := e.grantedAccess(t, tc.user, tc.pw, tc.scopes...)
			if len(got) == 0 && len(tc.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("granted %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTokenRefusals(t *testing.T) {
	e := newEnv(t)
	many := make([]string, MaxScopes+1)
	for i := range many {
		many[i] = fmt.Sprintf("repository:alice/r%d:pull", i)
	}
	for _, tc := range []struct {
		name, user, pw, query string
		status                int
		code                  string
	}{
		{"wrong password", "alice", "nope", "scope=repository:alice/private:pull", 401, CodeUnauthorized},
		{"unknown user", "mallory", "x", "", 401, CodeUnauthorized},
		{"empty user", "", "", "", 200, ""},
		{"bad scope", "alice", "pw-alice", "scope=repository:Alice/x:pull", 400, "INVALID_REQUEST"},
		{"too many scopes", "alice", "pw-alice", url.Values{"scope": {strings.Join(many, " ")}}.Encode(), 400, "INVALID_REQUEST"},
		{"scope too long", "alice", "pw-alice", "scope=" + strings.Repeat("x", maxScopeBytes+1), 400, "INVALID_REQUEST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := e.token(t, tc.user, tc.pw, tc.query)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.code != "" && !strings.Contains(w.Body.String(), `"code":"`+tc.code+`"`) {
				t.Fatalf("body %s lacks code %s", w.Body, tc.code)
			}
		})
	}

	r := httptest.NewRequest(http.MethodGet, "/v2/auth", nil)
	r.Header.Set("Authorization", "Bearer something")
	w := httptest.NewRecorder()
	e.srv.TokenHandler().ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("non-Basic credentials: %d", w.Code)
	}

	w = httptest.NewRecorder()
	e.srv.TokenHandler().ServeHTTP(w, httptest.NewRequest(http.MethodPut, "/v2/auth", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("PUT: %d", w.Code)
	}

	e.store.down.Store(true)
	if w := e.token(t, "bob", "pw-bob", ""); w.Code != http.StatusInternalServerError {
		t.Fatalf("store down: %d", w.Code)
	}
}

func TestTokenPOST(t *testing.T) {
	e := newEnv(t)
	post := func(form url.Values) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/v2/auth", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		e.srv.TokenHandler().ServeHTTP(w, r)
		return w
	}
	w := post(url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"pw-alice"},
		"service": {"reg.example"}, "scope": {"repository:alice/private:pull"}, "client_id": {"test"}})
	var resp tokenResponse
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &resp) != nil || resp.AccessToken == "" {
		t.Fatalf("password grant: %d %s", w.Code, w.Body)
	}
	c, err := e.srv.Tokens.Verify(context.Background(), resp.AccessToken)
	if err != nil || !c.Allows(iauth.TypeRepository, "alice/private", iauth.Pull) {
		t.Fatalf("password grant token: %+v %v", c, err)
	}
	if w := post(url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"bad"}}); w.Code != 401 {
		t.Fatalf("bad password grant: %d", w.Code)
	}
	if w := post(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}); w.Code != 400 {
		t.Fatalf("refresh grant: %d", w.Code)
	}
}

// bearer fetches a token for user's scopes and returns it.
func (e *testEnv) bearer(t testing.TB, user, pw string, scopes ...string) string {
	t.Helper()
	w := e.token(t, user, pw, url.Values{"scope": scopes}.Encode())
	var resp tokenResponse
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &resp) != nil {
		t.Fatalf("token: %d %s", w.Code, w.Body)
	}
	return resp.Token
}

func TestAuthorize(t *testing.T) {
	e := newEnv(t)
	alicePush := e.bearer(t, "alice", "pw-alice", "repository:alice/private:pull,push")
	anonPublic := e.bearer(t, "", "", "repository:alice/public:pull repository:alice/private:pull")
	expired := func() string {
		saved := e.now
		e.now = e.now.Add(-time.Hour)
		defer func() { e.now = saved }()
		return e.bearer(t, "alice", "pw-alice", "repository:alice/private:pull")
	}()
	realm := `Bearer realm="https://reg.example/v2/auth",service="reg.example"`

	for _, tc := range []struct {
		name, auth, repo string
		actions          []iauth.Action
		status           int // 0: allowed
		user             string
		header           string
	}{
		{"no credentials", "", "alice/public", ActionsFor("GET"), 401, "",
			realm + `,scope="repository:alice/public:pull"`},
		{"no credentials push", "", "alice/private", ActionsFor("PATCH"), 401, "",
			realm + `,scope="repository:alice/private:pull,push"`},
		{"token covers", "Bearer " + alicePush, "alice/private", ActionsFor("PUT"), 0, "alice", ""},
		{"token scheme case", "bearer " + alicePush, "alice/private", ActionsFor("GET"), 0, "alice", ""},
		{"token lacks delete", "Bearer " + alicePush, "alice/private", ActionsFor("DELETE"), 403, "",
			realm + `,scope="repository:alice/private:delete",error="insufficient_scope"`},
		{"token wrong repo", "Bearer " + alicePush, "alice/public", ActionsFor("GET"), 403, "",
			realm + `,scope="repository:alice/public:pull",error="insufficient_scope"`},
		{"anonymous token public", "Bearer " + anonPublic, "alice/public", ActionsFor("HEAD"), 0, "", ""},
		{"anonymous token private", "Bearer " + anonPublic, "alice/private", ActionsFor("GET"), 401, "",
			realm + `,scope="repository:alice/private:pull",error="insufficient_scope"`},
		{"expired token", "Bearer " + expired, "alice/private", ActionsFor("GET"), 401, "",
			realm + `,scope="repository:alice/private:pull",error="invalid_token"`},
		{"garbage token", "Bearer abc.def.ghi", "alice/private", ActionsFor("GET"), 401, "",
			realm + `,scope="repository:alice/private:pull",error="invalid_token"`},
		{"basic owner push", basicHeader("alice", "pw-alice"), "alice/newrepo", ActionsFor("POST"), 0, "alice", ""},
		{"basic other private", basicHeader("bob", "pw-bob"), "alice/private", ActionsFor("GET"), 403, "",
			realm + `,scope="repository:alice/private:pull"`},
		{"basic wrong password", basicHeader("alice", "wrong"), "alice/private", ActionsFor("GET"), 401, "",
			realm + `,scope="repository:alice/private:pull"`},
		{"basic no namespace", basicHeader("alice", "pw-alice"), "alice", ActionsFor("GET"), 403, "", ""},
		{"unknown scheme", "Digest x", "alice/public", ActionsFor("GET"), 401, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v2/"+tc.repo+"/tags/list", nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			p, err := e.srv.Authorize(r, tc.repo, tc.actions...)
			if tc.status == 0 {
				if err != nil || p.Name() != tc.user {
					t.Fatalf("got %v, %v; want %q allowed", p, err, tc.user)
				}
				return
			}
			var ce *ChallengeError
			if !errors.As(err, &ce) || ce.Status != tc.status {
				t.Fatalf("got %v, %v; want status %d", p, err, tc.status)
			}
			if tc.header != "" && ce.Header != tc.header {
				t.Fatalf("WWW-Authenticate\n got %s\nwant %s", ce.Header, tc.header)
			}
			wantCode := CodeUnauthorized
			if tc.status == 403 {
				wantCode = CodeDenied
			}
			if ce.Code != wantCode {
				t.Fatalf("code %s, want %s", ce.Code, wantCode)
			}
		})
	}

	// A store failure on the Basic path is internal, not a refusal.
	e.store.down.Store(true)
	r := httptest.NewRequest(http.MethodGet, "/v2/alice/private/tags/list", nil)
	r.Header.Set("Authorization", basicHeader("alice", "pw-alice"))
	var ce *ChallengeError
	if _, err := e.srv.Authorize(r, "alice/private", iauth.Pull); err == nil || errors.As(err, &ce) {
		t.Fatalf("store down: %v, want an internal error", err)
	}
}

func basicHeader(user, pw string) string {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(user, pw)
	return r.Header.Get("Authorization")
}

func TestAuthorizeRevoked(t *testing.T) {
	e := newEnv(t)
	tok := e.bearer(t, "alice", "pw-alice", "repository:alice/private:pull")
	r := httptest.NewRequest(http.MethodGet, "/v2/alice/private/manifests/latest", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	if _, err := e.srv.Authorize(r, "alice/private", iauth.Pull); err != nil {
		t.Fatal(err)
	}
	_ = e.srv.Tokens.Revoker.Revoke(context.Background(), "alice")
	var ce *ChallengeError
	if _, err := e.srv.Authorize(r, "alice/private", iauth.Pull); !errors.As(err, &ce) ||
		ce.Status != 401 || !strings.Contains(ce.Header, `error="invalid_token"`) {
		t.Fatalf("revoked token: %v", err)
	}
}

func TestAuthorizeBearerNoStore(t *testing.T) {
	e := newEnv(t)
	tok := e.bearer(t, "alice", "pw-alice", "repository:alice/private:pull")
	calls := e.store.repoCalls.Load()
	e.store.down.Store(true) // the bearer path must not need the store
	r := httptest.NewRequest(http.MethodGet, "/v2/alice/private/manifests/latest", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	for range 100 {
		if p, err := e.srv.Authorize(r, "alice/private", iauth.Pull); err != nil || p.Name() != "alice" {
			t.Fatalf("%v %v", p, err)
		}
	}
	if got := e.store.repoCalls.Load(); got != calls {
		t.Fatalf("bearer checks made %d store calls", got-calls)
	}
}

func TestAuthorizeBase(t *testing.T) {
	e := newEnv(t)
	anon := e.bearer(t, "", "")
	for _, tc := range []struct {
		name, auth string
		status     int
	}{
		{"none", "", 401},
		{"anonymous token", "Bearer " + anon, 0},
		{"bad token", "Bearer x", 401},
		{"basic", basicHeader("bob", "pw-bob"), 0},
		{"bad basic", basicHeader("bob", "x"), 401},
	} {
		r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		_, err := e.srv.AuthorizeBase(r)
		var ce *ChallengeError
		switch {
		case tc.status == 0 && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.status != 0 && (!errors.As(err, &ce) || ce.Status != tc.status):
			t.Errorf("%s: %v, want %d", tc.name, err, tc.status)
		case ce != nil && strings.Contains(ce.Header, "scope="):
			t.Errorf("%s: base challenge has a scope: %s", tc.name, ce.Header)
		}
	}
}

func TestThrottledBasic(t *testing.T) {
	e := newEnv(t)
	e.srv.Authenticator = &iauth.Authenticator{Store: e.store, BaseDelay: time.Second, MaxDelay: time.Second}
	r := httptest.NewRequest(http.MethodGet, "/v2/alice/private/tags/list", nil)
	r.Header.Set("Authorization", basicHeader("alice", "wrong"))
	var ce *ChallengeError
	if _, err := e.srv.Authorize(r, "alice/private", iauth.Pull); !errors.As(err, &ce) || ce.Status != 401 {
		t.Fatalf("first failure: %v", err)
	}
	// The next attempt is queued a second out; the one after is refused.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { e.srv.Authorize(r.Clone(context.Background()), "alice/private", iauth.Pull) })
	time.Sleep(50 * time.Millisecond)
	_, err := e.srv.Authorize(r, "alice/private", iauth.Pull)
	if !errors.As(err, &ce) || ce.Status != http.StatusTooManyRequests || ce.RetryAfter <= 0 {
		t.Fatalf("throttled: %v", err)
	}
	w := httptest.NewRecorder()
	WriteChallenge(w, ce)
	if w.Code != 429 || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), CodeTooManyRequests) {
		t.Fatalf("429 response: %d %v %s", w.Code, w.Header(), w.Body)
	}
}

func TestWriteChallenge(t *testing.T) {
	w := httptest.NewRecorder()
	WriteChallenge(w, &ChallengeError{Status: 401, Header: `Bearer realm="x"`, Code: CodeUnauthorized, Message: "authentication required"})
	if w.Code != 401 || w.Header().Get("WWW-Authenticate") != `Bearer realm="x"` ||
		w.Header().Get("Docker-Distribution-API-Version") != "registry/2.0" ||
		w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("headers %d %v", w.Code, w.Header())
	}
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 ||
		body.Errors[0].Code != CodeUnauthorized || body.Errors[0].Message == "" {
		t.Fatalf("body %s (%v)", w.Body, err)
	}
}

func TestActionsFor(t *testing.T) {
	for m, want := range map[string][]iauth.Action{
		"GET": {iauth.Pull}, "HEAD": {iauth.Pull}, "POST": {iauth.Pull, iauth.Push},
		"PATCH": {iauth.Pull, iauth.Push}, "PUT": {iauth.Pull, iauth.Push}, "DELETE": {iauth.Delete},
	} {
		if got := ActionsFor(m); !reflect.DeepEqual(got, want) {
			t.Errorf("ActionsFor(%s) = %v, want %v", m, got, want)
		}
	}
}

func TestQuote(t *testing.T) {
	if got := quote(`a"b\c`); got != `"a\"b\\c"` {
		t.Fatalf("quote = %s", got)
	}
}

func BenchmarkAuthorizeBearer(b *testing.B) {
	e := newEnv(b)
	tok := e.bearer(b, "alice", "pw-alice", "repository:alice/private:pull,push")
	r := httptest.NewRequest(http.MethodGet, "/v2/alice/private/blobs/sha256:abc", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	actions := ActionsFor(http.MethodGet)
	if _, err := e.srv.Authorize(r, "alice/private", actions...); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.srv.Authorize(r, "alice/private", actions...); err != nil {
			b.Fatal(err)
		}
	}
}

func TestNewServer(t *testing.T) {
	e := newEnv(t)
	s := NewServer(ServerOptions{Policy: e.srv.Policy, Authenticator: e.srv.Authenticator, Tokens: e.srv.Tokens})
	r := httptest.NewRequest(http.MethodGet, "http://reg.local:5000/v2/", nil)
	_, err := s.AuthorizeBase(r)
	var ce *ChallengeError
	// Without ExternalURL and Service the request's own host is used.
	if !errors.As(err, &ce) || ce.Header != `Bearer realm="http://reg.local:5000/v2/auth",service="reg.local:5000"` {
		t.Fatalf("default challenge: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("NewServer without Tokens did not panic")
		}
	}()
	NewServer(ServerOptions{Policy: e.srv.Policy, Authenticator: e.srv.Authenticator})
}
