package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/store"
)

// signin opens a web session for user and returns a credential sending its
// cookie (and the XHR and CSRF headers a browser would).
func (e *env) signin(user string) cred {
	e.t.Helper()
	r := e.must(200, http.MethodPost, "/api/v1/signin", anon, map[string]any{"username": user, "password": "pw-" + user})
	csrf, _ := r.obj()["csrf_token"].(string)
	cookies := (&http.Response{Header: r.hdr}).Cookies()
	if len(cookies) != 1 || csrf == "" {
		e.t.Fatalf("signin: %s %v", r.body, r.hdr)
	}
	return func(r *http.Request) {
		r.AddCookie(cookies[0])
		r.Header.Set("X-Requested-With", "XMLHttpRequest")
		r.Header.Set(CSRFHeader, csrf)
	}
}

// F11: resetting carol's password after a compromise left the intruder's
// session and OAuth token working; so did disabling her.
func TestPasswordResetAndDisableEndSessionsAndTokens(t *testing.T) {
	eachDatabase(t, func(t *testing.T, dsn string) {
		e := newEnvOn(t, dsn, nil)
		e.user("admin", true)
		e.user("carol", false)
		e.user("daniel", false)
		for _, change := range []map[string]any{{"password": "a-new-password"}, {"enabled": false}} {
			for _, u := range []string{"carol", "daniel"} {
				e.must(200, http.MethodPut, "/api/v1/superuser/users/"+u, basic("admin"), map[string]any{"enabled": true, "password": "pw-" + u})
			}
			session, token := e.signin("carol"), e.appToken("carol", "carolorg", "user:read")
			danielSession := e.signin("daniel")
			for _, c := range []cred{session, bearer(token), basicPw("$oauthtoken", token)} {
				e.must(200, http.MethodGet, "/api/v1/user/", c, nil)
			}
			e.must(200, http.MethodPut, "/api/v1/superuser/users/carol", basic("admin"), change)
			for what, c := range map[string]cred{"session": session, "token": bearer(token), "$oauthtoken": basicPw("$oauthtoken", token)} {
				if r := e.call(http.MethodGet, "/api/v1/user/", c, nil); r.code != http.StatusUnauthorized {
					t.Errorf("after %v: carol's %s still answers %s", change, what, r)
				}
			}
			e.must(200, http.MethodGet, "/api/v1/user/", danielSession, nil)
		}
	})
}

// A session or token made by a request that raced the revocation (it read
// the old password before the change and wrote its row after the rows were
// deleted) carries the old epoch and does not work either.
func TestLoginRacingARevocationEnds(t *testing.T) {
	e := newEnv(t, nil)
	e.user("admin", true)
	carol := e.user("carol", false)
	e.must(200, http.MethodPut, "/api/v1/superuser/users/carol", basic("admin"), map[string]any{"password": "a-new-password"})
	ctx := context.Background()
	const sessionID = "raced-session-0123456789"
	if err := e.store.CreateSession(ctx, &store.Session{IDHash: auth.HashToken(sessionID), AccountID: carol.ID,
		CSRFToken: "x", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.CreateAccessToken(ctx, &store.AccessToken{AccountID: carol.ID, TokenHash: auth.HashToken("raced-token"),
		Scopes: []string{"user:read"}}); err != nil {
		t.Fatal(err)
	}
	withCookie := func(r *http.Request) {
		r.AddCookie(&http.Cookie{Name: SessionCookie, Value: sessionID})
		r.Header.Set("X-Requested-With", "XMLHttpRequest")
	}
	if r := e.call(http.MethodGet, "/api/v1/user/", withCookie, nil); r.code != http.StatusUnauthorized {
		t.Errorf("raced session: %s", r)
	}
	if r := e.call(http.MethodGet, "/api/v1/user/", bearer("raced-token"), nil); r.code != http.StatusUnauthorized {
		t.Errorf("raced token: %s", r)
	}
	// Logins after the change work.
	e.must(200, http.MethodGet, "/api/v1/user/", basicPw("carol", "a-new-password"), nil)
}

func TestAccessTokenLifetime(t *testing.T) {
	for _, tc := range []struct {
		raw  map[string]any
		want time.Duration
	}{
		{nil, DefaultAccessTokenLifetime},
		{map[string]any{"ACCESS_TOKEN_LIFETIME_S": 3600}, time.Hour},
		{map[string]any{"ACCESS_TOKEN_LIFETIME_S": 0}, 0},
	} {
		e := newEnv(t, tc.raw)
		e.user("alice", false)
		tok := e.appToken("alice", "acme", "repo:read")
		got, err := e.store.GetAccessTokenByHash(context.Background(), auth.HashToken(tok))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case tc.want == 0 && got.ExpiresAt != nil:
			t.Errorf("%v: token expires at %v, want never", tc.raw, got.ExpiresAt)
		case tc.want != 0 && (got.ExpiresAt == nil || (got.ExpiresAt.Sub(got.CreatedAt)-tc.want).Abs() > time.Second):
			t.Errorf("%v: token expires at %v, want %v after %v", tc.raw, got.ExpiresAt, tc.want, got.CreatedAt)
		}
	}
	for _, bad := range []any{-1, "90d", 1.5} {
		cfg := config.Defaults(t.TempDir())
		cfg.Raw["ACCESS_TOKEN_LIFETIME_S"] = bad
		if _, err := AccessTokenLifetime(cfg); err == nil {
			t.Errorf("lifetime %v was accepted", bad)
		}
	}
}

// A token expires: the response says when, and the authenticator refuses
// it afterwards.
func TestExpiredAccessTokenIsRefused(t *testing.T) {
	e := newEnv(t, map[string]any{"ACCESS_TOKEN_LIFETIME_S": 1})
	e.user("alice", false)
	e.must(201, http.MethodPost, "/api/v1/organization/", basic("alice"), map[string]any{"name": "acme"})
	r := e.must(200, http.MethodPost, "/api/v1/organization/acme/applications", basic("alice"), map[string]any{"name": "scripts"})
	clientID := r.obj()["client_id"].(string)
	r = e.must(200, http.MethodPost, "/api/v1/organization/acme/applications/"+clientID+"/token", basic("alice"),
		map[string]any{"scopes": []string{"user:read"}})
	if r.obj()["expires_in"] != float64(1) {
		t.Fatalf("token response: %s", r.body)
	}
	tok := r.obj()["access_token"].(string)
	e.must(200, http.MethodGet, "/api/v1/user/", bearer(tok), nil)
	time.Sleep(1100 * time.Millisecond)
	assertError(t, e.call(http.MethodGet, "/api/v1/user/", bearer(tok), nil), 401, "invalid_token")
}

// A user lists their tokens and revokes one; the others keep working.
func TestUserRevokesAToken(t *testing.T) {
	eachDatabase(t, func(t *testing.T, dsn string) {
		e := newEnvOn(t, dsn, nil)
		e.user("alice", false)
		e.user("bob", false)
		doomed, kept := e.appToken("alice", "acme", "repo:read"), e.appToken("alice", "acme", "user:admin")
		bobs := e.appToken("bob", "boborg", "user:admin")
		e.must(200, http.MethodGet, "/api/v1/user/starred", bearer(doomed), nil) // cached from now on

		// Listing tokens is for user:admin callers.
		assertError(t, e.call(http.MethodGet, "/api/v1/user/authorizations", bearer(doomed), nil), 403, "insufficient_scope")
		r := e.must(200, http.MethodGet, "/api/v1/user/authorizations", bearer(kept), nil)
		list, _ := r.obj()["authorizations"].([]any)
		if len(list) != 2 || strings.Contains(string(r.body), doomed) || strings.Contains(string(r.body), kept) {
			t.Fatalf("authorizations: %s", r.body)
		}
		var uuid string
		for _, a := range list {
			v := keys(t, "authorization", a, "uuid", "application", "scopes", "created", "expires")
			if app, _ := v["application"].(map[string]any); app["organization"] != "acme" || app["name"] != "scripts" {
				t.Errorf("application: %v", v["application"])
			}
			if scopes, _ := json.Marshal(v["scopes"]); string(scopes) == `["repo:read"]` {
				uuid = v["uuid"].(string)
			}
		}
		if uuid == "" {
			t.Fatalf("the repo:read token is not listed: %s", r.body)
		}
		e.must(200, http.MethodGet, "/api/v1/user/authorizations/"+uuid, basic("alice"), nil)
		// Nobody else sees or revokes it.
		assertError(t, e.call(http.MethodDelete, "/api/v1/user/authorizations/"+uuid, bearer(bobs), nil), 404, "not_found")
		e.must(200, http.MethodGet, "/api/v1/user/starred", bearer(doomed), nil)

		e.must(204, http.MethodDelete, "/api/v1/user/authorizations/"+uuid, bearer(kept), nil)
		assertError(t, e.call(http.MethodGet, "/api/v1/user/starred", bearer(doomed), nil), 401, "invalid_token")
		e.must(200, http.MethodGet, "/api/v1/user/", bearer(kept), nil)
		assertError(t, e.call(http.MethodGet, "/api/v1/user/authorizations/"+uuid, bearer(kept), nil), 404, "not_found")
	})
}

// F10 through the API: a stranger's wrong guesses from one address used to
// make the user's correct password fail with 429 from anywhere.
func TestGuessesDoNotLockOutTheUser(t *testing.T) {
	e := newEnv(t, nil)
	e.user("erin", false)
	e.user("frank", false)
	h := auth.SourceHandler(e.api.Handler())
	getAs := func(user, addr, password string) int {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/user/", nil)
		r.RemoteAddr = addr
		r.SetBasicAuth(user, password)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	get := func(addr, password string) int { return getAs("erin", addr, password) }
	const attacker, victim = "203.0.113.7:4000", "198.51.100.2:5000"
	// The throttle's delay is far longer than a password check takes on
	// this machine as it is now (another user's, so that erin's is not
	// cached), so waiting behind it cannot pass for checking, even under
	// -race on a loaded machine.
	checkStart := time.Now()
	if code := getAs("frank", victim, "pw-frank"); code != http.StatusOK {
		t.Fatalf("frank's login: %d", code)
	}
	delay := max(2*time.Second, 10*time.Since(checkStart))
	e.authn.BaseDelay, e.authn.MaxDelay = delay, delay
	// Guesses in parallel fill the attacker's queue until it refuses them.
	get(attacker, "bad")
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 4 {
		wg.Go(func() {
			code := get(attacker, "bad")
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[http.StatusTooManyRequests] == 0 {
		t.Fatalf("the guesser was never throttled: %v", codes)
	}
	// From erin's own address her password is checked at once.
	start := time.Now()
	if code := get(victim, "pw-erin"); code != http.StatusOK {
		t.Fatalf("erin's correct password from her address during the attack: %d", code)
	}
	if d := time.Since(start); d > delay*3/4 {
		t.Fatalf("erin's login waited %v behind the attacker's queue", d)
	}
}

// F17(a): robots and OAuth tokens without user:admin could star.
func TestStarringNeedsTheUser(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	e.must(201, http.MethodPost, "/api/v1/repository", basic("alice"), map[string]any{"repository": "app", "visibility": "public", "description": ""})
	robot := e.must(201, http.MethodPut, "/api/v1/user/robots/ci", basic("alice"), map[string]any{}).obj()["token"].(string)
	body := map[string]any{"namespace": "alice", "repository": "app"}
	assertError(t, e.call(http.MethodPost, "/api/v1/user/starred", basicPw("alice+ci", robot), body), 403, "insufficient_scope")
	read := e.appToken("alice", "acme", "repo:read")
	assertError(t, e.call(http.MethodPost, "/api/v1/user/starred", bearer(read), body), 403, "insufficient_scope")
	admin := e.appToken("alice", "acme", "user:admin", "repo:read")
	e.must(201, http.MethodPost, "/api/v1/user/starred", bearer(admin), body)
	assertError(t, e.call(http.MethodDelete, "/api/v1/user/starred/alice/app", bearer(read), nil), 403, "insufficient_scope")
	e.must(204, http.MethodDelete, "/api/v1/user/starred/alice/app", bearer(admin), nil)
}

// F17(d): behind a TLS-terminating proxy without SERVER_HOSTNAME, requests
// arrive over http, and the session cookie was not Secure.
func TestSessionCookieSecureBehindTLSProxy(t *testing.T) {
	for scheme, want := range map[string]bool{"": false, "http": false, "https": true} {
		e := newEnv(t, nil)
		e.cfg.PreferredURLScheme = scheme
		e.api.o.ExternalURL = nil // the request's own scheme: plain http from the proxy
		e.user("alice", false)
		for _, path := range []string{"/api/v1/signin", "/api/v1/signout"} {
			r := e.must(200, http.MethodPost, path, anon, map[string]any{"username": "alice", "password": "pw-alice"})
			cookies := (&http.Response{Header: r.hdr}).Cookies()
			if len(cookies) != 1 || cookies[0].Secure != want {
				t.Errorf("PREFERRED_URL_SCHEME %q, %s: cookie %v, want Secure %v", scheme, path, cookies, want)
			}
		}
	}
}
