package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
)

func newTestTokens(t testing.TB) *TokenService {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return NewTokenService(key, 0)
}

func decodeSegment(t *testing.T, seg string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestIssueContents(t *testing.T) {
	s := newTestTokens(t)
	now := time.Unix(1_700_000_000, 0)
	s.Now = func() time.Time { return now }
	alice := &Principal{Account: &store.Account{Name: "alice"}}
	access := []ResourceActions{{Type: TypeRepository, Name: "alice/app", Actions: []Action{Pull, Push}}}

	tok, err := s.Issue(alice, "registry.example", access)
	if err != nil {
		t.Fatal(err)
	}
	if tok.ExpiresIn != 300 || !tok.IssuedAt.Equal(now) {
		t.Fatalf("token %+v: want 300 s from %v", tok, now)
	}
	parts := strings.Split(tok.Token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", tok.Token)
	}
	hdr := decodeSegment(t, parts[0])
	if hdr["alg"] != "EdDSA" || hdr["typ"] != "JWT" || hdr["kid"] != s.KeyID() || s.KeyID() == "" {
		t.Fatalf("header %v", hdr)
	}
	c := decodeSegment(t, parts[1])
	if c["iss"] != "berth" || c["sub"] != "alice" || c["exp"] != float64(now.Unix()+300) ||
		c["nbf"] != float64(now.Unix()) || c["iat"] != float64(now.Unix()) || c["jti"] == "" {
		t.Fatalf("claims %v", c)
	}
	if aud, _ := json.Marshal(c["aud"]); string(aud) != `["registry.example"]` && string(aud) != `"registry.example"` {
		t.Fatalf("aud %s", aud)
	}
	if got, _ := json.Marshal(c["access"]); string(got) != `[{"actions":["pull","push"],"name":"alice/app","type":"repository"}]` {
		t.Fatalf("access %s", got)
	}

	anon, err := s.Issue(nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c = decodeSegment(t, strings.Split(anon.Token, ".")[1])
	if sub, ok := c["sub"]; ok && sub != "" {
		t.Fatalf("anonymous sub %v", sub)
	}
	if acc, ok := c["access"].([]any); !ok || len(acc) != 0 {
		t.Fatalf("anonymous access %v, want []", c["access"])
	}
	if tok2, _ := s.Issue(alice, "registry.example", access); tok2.Token == tok.Token {
		t.Fatal("two tokens share a jti")
	}
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	s := newTestTokens(t)
	now := time.Unix(1_700_000_000, 0)
	s.Now = func() time.Time { return now }
	alice := &Principal{Account: &store.Account{Name: "alice"}}
	access := []ResourceActions{{Type: TypeRepository, Name: "alice/app", Actions: []Action{Pull, Push}}}
	tok, err := s.Issue(alice, "svc", access)
	if err != nil {
		t.Fatal(err)
	}

	c, err := s.Verify(ctx, tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "alice" || c.Principal().Name() != "alice" {
		t.Fatalf("claims subject %q principal %q", c.Subject, c.Principal().Name())
	}
	for _, tc := range []struct {
		typ, name string
		acts      []Action
		want      bool
	}{
		{TypeRepository, "alice/app", []Action{Pull}, true},
		{TypeRepository, "alice/app", []Action{Pull, Push}, true},
		{TypeRepository, "alice/app", []Action{Delete}, false},
		{TypeRepository, "alice/other", []Action{Pull}, false},
		{TypeRegistry, "alice/app", []Action{Pull}, false},
	} {
		if got := c.Allows(tc.typ, tc.name, tc.acts...); got != tc.want {
			t.Errorf("Allows(%s, %s, %v) = %v", tc.typ, tc.name, tc.acts, got)
		}
	}

	// A second verification is served from the cache: the very same claims.
	c2, err := s.Verify(ctx, tok.Token)
	if err != nil || c2 != c {
		t.Fatalf("second Verify: %p %v, want the cached %p", c2, err, c)
	}

	other := newTestTokens(t)
	other.Now = s.Now
	foreign, _ := other.Issue(alice, "svc", access)
	parts := strings.Split(tok.Token, ".")
	claims := decodeSegment(t, parts[1])
	claims["access"] = []ResourceActions{{Type: TypeRepository, Name: "bob/app", Actions: []Action{All}}}
	forgedPayload, _ := json.Marshal(claims)
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forgedPayload) + "." + parts[2]

	for name, bad := range map[string]string{
		"empty":        "",
		"garbage":      "not.a.jwt",
		"other key":    foreign.Token,
		"forged claim": forged,
		"alg none":     base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".",
		"huge":         strings.Repeat("a", maxTokenLen+1),
	} {
		if _, err := s.Verify(ctx, bad); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", name, err)
		}
	}

	// Expiry applies to cached tokens too (after the tolerated skew).
	now = now.Add(s.Lifetime + clockSkew)
	if _, err := s.Verify(ctx, tok.Token); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired cached token: %v", err)
	}
	fresh := NewTokenService(s.key, 0)
	fresh.Now = s.Now
	if _, err := fresh.Verify(ctx, tok.Token); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired uncached token: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	s := newTestTokens(t)
	alice := &Principal{Account: &store.Account{Name: "alice"}}
	bob := &Principal{Account: &store.Account{Name: "bob"}}
	ta, _ := s.Issue(alice, "svc", nil)
	tb, _ := s.Issue(bob, "svc", nil)
	for _, tok := range []Token{ta, tb} {
		if _, err := s.Verify(ctx, tok.Token); err != nil {
			t.Fatal(err)
		}
	}

	_ = s.Revoker.Revoke(context.Background(), "alice")
	if _, err := s.Verify(ctx, ta.Token); !errors.Is(err, ErrTokenRevoked) || !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("revoked cached token: %v", err)
	}
	if _, err := s.Verify(ctx, tb.Token); err != nil {
		t.Fatalf("bob's token after revoking alice: %v", err)
	}
	ta2, _ := s.Issue(alice, "svc", nil)
	if _, err := s.Verify(ctx, ta2.Token); err != nil {
		t.Fatalf("token issued after revocation: %v", err)
	}
}

// TestRevocationSurvivesRestart: with the epochs in the metadata store, a
// server that starts again (or another server on the same database) loads
// them, so a token issued before a revocation stays dead and one issued
// after it stays good.
func TestRevocationSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := newTestTokens(t)
	s.Revoker.Store = st
	alice := &Principal{Account: &store.Account{Name: "alice"}}
	before, _ := s.Issue(alice, "svc", nil)
	if err := s.Revoker.Revoke(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	after, _ := s.Issue(alice, "svc", nil)

	restarted := NewTokenService(s.key, 0)
	restarted.Revoker.Store = st
	if err := restarted.Revoker.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := restarted.Verify(ctx, before.Token); !errors.Is(err, ErrTokenRevoked) {
		t.Fatalf("token issued before the revocation, after a restart: %v", err)
	}
	if _, err := restarted.Verify(ctx, after.Token); err != nil {
		t.Fatalf("token issued after the revocation, after a restart: %v", err)
	}

	// A revocation on the first server reaches the second with its next
	// Sync; until then the second still accepts the newer token it has
	// never seen revoked, and tokens newer than its own epoch.
	if err := s.Revoker.Revoke(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	newest, _ := s.Issue(alice, "svc", nil)
	if _, err := restarted.Verify(ctx, newest.Token); err != nil {
		t.Fatalf("a token from a newer epoch than this server knows: %v", err)
	}
	if err := restarted.Revoker.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := restarted.Verify(ctx, after.Token); !errors.Is(err, ErrTokenRevoked) {
		t.Fatalf("token revoked on another server, after sync: %v", err)
	}
	if got := restarted.Revoker.Epoch("alice"); got != 2 {
		t.Fatalf("epoch after sync = %d, want 2", got)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "registry.pem")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v; want mode 0600", fi, err)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("reload gave another key (%v)", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if KeyID(k1.Public().(ed25519.PublicKey)) != NewTokenService(k2, 0).KeyID() {
		t.Fatal("kid differs for the same key")
	}

	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(bad); err == nil {
		t.Fatal("junk key file accepted")
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	s := newTestTokens(b)
	tok, err := s.Issue(&Principal{Account: &store.Account{Name: "alice"}}, "svc",
		[]ResourceActions{{Type: TypeRepository, Name: "alice/app", Actions: []Action{Pull}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Verify(ctx, tok.Token); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Verify(ctx, tok.Token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyUncached(b *testing.B) {
	s := newTestTokens(b)
	tok, err := s.Issue(&Principal{Account: &store.Account{Name: "alice"}}, "svc", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.parse(tok.Token, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
