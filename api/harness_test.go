package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
)

// env is an API over a real SQLite store.
type env struct {
	t      *testing.T
	api    *API
	store  store.Store
	authn  *auth.Authenticator
	tokens *auth.TokenService
	cfg    *config.Config

	mu          sync.Mutex
	invalidated []string
}

// newEnv builds the API; raw config keys may be given (ROBOTS_DISALLOW, ...).
func newEnv(t *testing.T, raw map[string]any) *env {
	t.Helper()
	return newEnvOn(t, "sqlite://"+t.TempDir()+"/db", raw)
}

// newEnvOn is newEnv over the database at dsn.
func newEnvOn(t *testing.T, dsn string, raw map[string]any) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := config.Defaults(t.TempDir())
	for k, v := range raw {
		cfg.Raw[k] = v
		if b, ok := v.(bool); ok && strings.HasPrefix(k, "FEATURE_") {
			cfg.Features[k] = b
		}
	}
	sec, err := auth.NewSecrets([]byte("test key material, long enough"))
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: st, cfg: cfg, tokens: auth.NewTokenService(key, 0)}
	e.authn = &auth.Authenticator{Store: st, Secrets: sec, RobotsDisallowed: configBool(cfg, "ROBOTS_DISALLOW", false),
		BaseDelay: time.Millisecond, MaxDelay: 50 * time.Millisecond, Revoker: e.tokens.Revoker}
	e.api = New(Options{
		Store: st, Policy: &auth.Policy{Store: st}, Authenticator: e.authn, Revoker: e.tokens.Revoker,
		Secrets: sec, Config: cfg,
		ExternalURL:    func(*http.Request) string { return "http://quay-server.example.com" },
		Logger:         slog.New(slog.NewTextHandler(testLog{t}, nil)),
		InvalidateRepo: func(n string) { e.mu.Lock(); e.invalidated = append(e.invalidated, n); e.mu.Unlock() },
	})
	return e
}

// testLog sends the API's log lines to the test's log.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Helper()
	l.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// hashes memoises bcrypt hashes of test passwords.
var (
	hashMu sync.Mutex
	hashes = map[string]string{}
)

// user creates a user whose password is "pw-<name>".
func (e *env) user(name string, super bool) *store.Account {
	e.t.Helper()
	pw := "pw-" + name
	hashMu.Lock()
	h, ok := hashes[pw]
	if !ok {
		var err error
		if h, err = auth.HashPassword(pw); err != nil {
			e.t.Fatal(err)
		}
		hashes[pw] = h
	}
	hashMu.Unlock()
	a := &store.Account{Kind: store.KindUser, Name: name, Email: name + "@example.com", PasswordHash: h, Superuser: super, Enabled: true}
	if err := e.store.CreateAccount(context.Background(), a); err != nil {
		e.t.Fatal(err)
	}
	return a
}

// cred is how a request authenticates.
type cred func(r *http.Request)

func basic(user string) cred {
	return func(r *http.Request) { r.SetBasicAuth(user, "pw-"+user) }
}

func basicPw(user, pw string) cred {
	return func(r *http.Request) { r.SetBasicAuth(user, pw) }
}

func bearer(tok string) cred {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

var anon cred = func(*http.Request) {}

// resp is a decoded response.
type resp struct {
	code int
	body []byte
	hdr  http.Header
	v    any
}

func (r resp) obj() map[string]any {
	m, _ := r.v.(map[string]any)
	return m
}

func (r resp) String() string { return http.StatusText(r.code) + " " + string(r.body) }

// call sends a request; body is marshalled unless it is a string (sent raw).
func (e *env) call(method, path string, c cred, body any, extra ...func(*http.Request)) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	r := httptest.NewRequest(method, path, rd)
	if rd != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	c(r)
	for _, f := range extra {
		f(r)
	}
	w := httptest.NewRecorder()
	e.api.Handler().ServeHTTP(w, r)
	out := resp{code: w.Code, body: w.Body.Bytes(), hdr: w.Header()}
	if len(out.body) > 0 {
		if err := json.Unmarshal(out.body, &out.v); err != nil {
			e.t.Fatalf("%s %s: response is not JSON: %q", method, path, out.body)
		}
	}
	return out
}

// must asserts the status and returns the response.
func (e *env) must(want int, method, path string, c cred, body any) resp {
	e.t.Helper()
	r := e.call(method, path, c, body)
	if r.code != want {
		e.t.Fatalf("%s %s: %d %s; want %d", method, path, r.code, r.body, want)
	}
	return r
}

// keys asserts that m has exactly the given keys.
func keys(t *testing.T, what string, v any, want ...string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: %T is not an object", what, v)
	}
	got := map[string]bool{}
	for k := range m {
		got[k] = true
	}
	for _, k := range want {
		if !got[k] {
			t.Errorf("%s: missing key %q in %v", what, k, m)
		}
		delete(got, k)
	}
	for k := range got {
		t.Errorf("%s: unexpected key %q", what, k)
	}
	return m
}

// assertError checks Quay's error shape and status.
func assertError(t *testing.T, r resp, status int, errType string) {
	t.Helper()
	if r.code != status {
		t.Fatalf("status %d (%s), want %d", r.code, r.body, status)
	}
	m := r.obj()
	if m == nil {
		t.Fatalf("error body %q is not an object", r.body)
	}
	for _, k := range []string{"detail", "error_message", "error_type", "title", "type", "status"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("error body lacks %q: %s", k, r.body)
		}
	}
	if m["error_type"] != errType || m["title"] != errType || m["status"] != float64(status) ||
		m["type"] != "http://quay-server.example.com/api/v1/error/"+errType || m["detail"] != m["error_message"] {
		t.Fatalf("error body %s, want type %s status %d", r.body, errType, status)
	}
}
