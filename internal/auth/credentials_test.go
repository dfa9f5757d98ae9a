package auth

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

func testSecrets(t *testing.T) *Secrets {
	t.Helper()
	s, err := NewSecrets([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSecrets(t *testing.T) {
	s := testSecrets(t)
	ct := s.Seal([]byte("token-1"), "robot-token:a+b")
	if bytes.Contains(ct, []byte("token-1")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	if ct2 := s.Seal([]byte("token-1"), "robot-token:a+b"); bytes.Equal(ct, ct2) {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	pt, err := s.Open(ct, "robot-token:a+b")
	if err != nil || string(pt) != "token-1" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	if _, err := s.Open(ct, "robot-token:a+c"); !errors.Is(err, ErrSecretCorrupt) {
		t.Fatalf("Open with another purpose: %v", err)
	}
	other, _ := NewSecrets([]byte("another key, also long enough"))
	if _, err := other.Open(ct, "robot-token:a+b"); !errors.Is(err, ErrSecretCorrupt) {
		t.Fatalf("Open with another key: %v", err)
	}
	for _, bad := range [][]byte{nil, ct[:5], append(bytes.Clone(ct[:len(ct)-1]), ct[len(ct)-1]^1)} {
		if _, err := s.Open(bad, "robot-token:a+b"); !errors.Is(err, ErrSecretCorrupt) {
			t.Fatalf("Open(%x): %v", bad, err)
		}
	}
	if _, err := NewSecrets([]byte("short")); err == nil {
		t.Fatal("a short key was accepted")
	}
}

func TestLoadSecretsKeyFile(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	got := make([]*Secrets, 4)
	for i := range got {
		wg.Go(func() {
			s, err := LoadSecrets("", dir)
			if err != nil {
				t.Error(err)
			}
			got[i] = s
		})
	}
	wg.Wait()
	fi, err := os.Stat(filepath.Join(dir, SecretKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	ct := got[0].Seal([]byte("x"), "p")
	for _, s := range got[1:] {
		if _, err := s.Open(ct, "p"); err != nil {
			t.Fatal("concurrent starts made different keys")
		}
	}
	// A configured key wins over the file.
	cfg, err := LoadSecrets("a DATABASE_SECRET_KEY from config.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Open(ct, "p"); err == nil {
		t.Fatal("the configured key decrypted the file key's ciphertext")
	}
}

func TestRandomString(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s := RandomString(RobotTokenLen, UpperAlnum)
		if len(s) != RobotTokenLen || strings.Trim(s, UpperAlnum) != "" || seen[s] {
			t.Fatalf("RandomString = %q", s)
		}
		seen[s] = true
	}
	if s := RandomString(AccessTokenLen, MixedAlnum); len(s) != 40 || strings.Trim(s, MixedAlnum) != "" {
		t.Fatalf("access token %q", s)
	}
}

func addRobot(t *testing.T, fs *fakeStore, sec *Secrets, owner *store.Account, short, token string) *store.Account {
	name := owner.Name + "+" + short
	r := fs.addUser(t, name, "", func(a *store.Account) { a.Kind = store.KindRobot; a.OwnerID = owner.ID })
	fs.mu.Lock()
	fs.robots[r.ID] = &store.RobotInfo{TokenEnc: sec.Seal([]byte(token), RobotTokenPurpose(name))}
	fs.mu.Unlock()
	return r
}

func TestBasicRobot(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	sec := testSecrets(t)
	org := fs.addUser(t, "acme", "", func(a *store.Account) { a.Kind = store.KindOrganization })
	addRobot(t, fs, sec, org, "ci", "TOKEN-ONE")
	a := &Authenticator{Store: fs, Secrets: sec}

	p, err := a.Basic(ctx, "acme+ci", "TOKEN-ONE")
	if err != nil || p.Name() != "acme+ci" || p.Account.Kind != store.KindRobot || p.Scopes != nil {
		t.Fatalf("robot login: %v, %v", p, err)
	}
	if fs.touched.Load() != 1 {
		t.Fatal("a robot login did not record last_accessed")
	}
	for _, bad := range []string{"TOKEN-TWO", "", "token-one"} {
		if _, err := (&Authenticator{Store: fs, Secrets: sec}).Basic(ctx, "acme+ci", bad); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("robot with token %q: %v", bad, err)
		}
	}
	// Regenerating: the store holds a new token; Forget drops the cached old one at once.
	fs.mu.Lock()
	id := fs.accounts["acme+ci"].ID
	fs.robots[id].TokenEnc = sec.Seal([]byte("TOKEN-TWO"), RobotTokenPurpose("acme+ci"))
	fs.mu.Unlock()
	a.Forget("acme+ci")
	if _, err := a.Basic(ctx, "acme+ci", "TOKEN-ONE"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("old token after regenerate: %v", err)
	}
	a = &Authenticator{Store: fs, Secrets: sec}
	if _, err := a.Basic(ctx, "acme+ci", "TOKEN-TWO"); err != nil {
		t.Fatalf("new token: %v", err)
	}
	// A token sealed for another robot does not open for this one.
	fs.mu.Lock()
	fs.robots[id].TokenEnc = sec.Seal([]byte("TOKEN-TWO"), RobotTokenPurpose("acme+other"))
	fs.mu.Unlock()
	if _, err := (&Authenticator{Store: fs, Secrets: sec}).Basic(ctx, "acme+ci", "TOKEN-TWO"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("transplanted ciphertext: %v", err)
	}

	// ROBOTS_DISALLOW refuses before any lookup, even a cached login.
	a.RobotsDisallowed = true
	calls := fs.accountCalls.Load()
	_, err = a.Basic(ctx, "acme+ci", "TOKEN-TWO")
	if !errors.Is(err, ErrRobotsDisallowed) || !errors.Is(err, ErrInvalidCredentials) || fs.accountCalls.Load() != calls {
		t.Fatalf("robots disallowed: %v", err)
	}
	if !strings.Contains(err.Error(), "Robot accounts have been disabled") {
		t.Fatalf("message %q", err)
	}
	// Users still log in.
	fs.addUser(t, "alice", "pw-alice", nil)
	if _, err := a.Basic(ctx, "alice", "pw-alice"); err != nil {
		t.Fatal(err)
	}
}

func TestAccessToken(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	alice := fs.addUser(t, "alice", "pw", nil)
	dis := fs.addUser(t, "dis", "pw", func(a *store.Account) { a.Enabled = false })
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	past := clock.t.Add(-time.Second)
	soon := clock.t.Add(10 * time.Second)
	add := func(tok string, acct *store.Account, exp *time.Time, scopes ...string) {
		fs.tokens[HashToken(tok)] = &store.AccessToken{AccountID: acct.ID, Scopes: scopes, ExpiresAt: exp}
	}
	add("tok-read", alice, nil, "repo:read", "user:read")
	add("tok-expired", alice, &past, "repo:read")
	add("tok-soon", alice, &soon, "repo:admin")
	add("tok-disabled", dis, nil, "repo:read")
	add("tok-unknown-scope", alice, nil, "repo:everything")
	a := &Authenticator{Store: fs, now: clock.now}

	p, err := a.AccessToken(ctx, "tok-read")
	if err != nil || p.Name() != "alice" || !p.HasScope(ScopeRepoRead) || p.HasScope(ScopeRepoWrite) {
		t.Fatalf("token: %+v, %v", p, err)
	}
	// Basic with $oauthtoken / $token is the same thing.
	for _, u := range []string{OAuthTokenUser, TokenUser} {
		if p, err := a.Basic(ctx, u, "tok-read"); err != nil || p.Name() != "alice" || p.Scopes == nil {
			t.Fatalf("Basic(%s): %v, %v", u, p, err)
		}
	}
	for _, bad := range []string{"", "nope", "tok-expired", "tok-disabled", "tok-unknown-scope", strings.Repeat("x", 300)} {
		if _, err := a.AccessToken(ctx, bad); !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("token %q: %v", bad, err)
		}
	}
	// Failures are neither throttled nor cached: a token created now works now.
	add("nope", alice, nil, "repo:write")
	if _, err := a.AccessToken(ctx, "nope"); err != nil {
		t.Fatalf("token created after a failed lookup: %v", err)
	}
	// A success is cached, but not past the token's expiry.
	if _, err := a.AccessToken(ctx, "tok-soon"); err != nil {
		t.Fatal(err)
	}
	clock.advance(11 * time.Second)
	if _, err := a.AccessToken(ctx, "tok-soon"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("expired token served from the cache: %v", err)
	}
	// Deleting a token and forgetting its owner takes effect at once.
	delete(fs.tokens, HashToken("tok-read"))
	a.Forget("alice")
	if _, err := a.AccessToken(ctx, "tok-read"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("deleted token: %v", err)
	}
	fs.fail = errDBDown
	if _, err := a.AccessToken(ctx, "other"); !errors.Is(err, errDBDown) {
		t.Fatalf("store failure: %v", err)
	}
}

// TestForgetDuringLogin: a login that read the store before Forget must not
// put the stale result in the cache.
func TestForgetDuringLogin(t *testing.T) {
	fs := newFakeStore()
	fs.addUser(t, "alice", "pw", nil)
	a := &Authenticator{Store: fs}
	a.init()
	key := a.cacheKey("alice", "pw")
	a.mu.Lock()
	gen := a.gen
	a.mu.Unlock()
	a.Forget("alice")
	a.remember(key, &Principal{Account: &store.Account{Name: "alice"}}, nil, gen, 0, time.Now().Add(time.Minute))
	a.mu.Lock()
	_, cached := a.ok[key]
	a.mu.Unlock()
	if cached {
		t.Fatal("a login older than Forget was cached")
	}
}

// A robot regenerated on another server: this server's cache learns of it
// through its revoker's epoch (Sync), with no Forget here.
func TestCachedLoginEndsWhenEpochRises(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	sec := testSecrets(t)
	org := fs.addUser(t, "acme", "", func(a *store.Account) { a.Kind = store.KindOrganization })
	addRobot(t, fs, sec, org, "ci", "TOKEN-ONE")
	rev := &TokenRevoker{}
	a := &Authenticator{Store: fs, Secrets: sec, Revoker: rev}
	if _, err := a.Basic(ctx, "acme+ci", "TOKEN-ONE"); err != nil {
		t.Fatal(err)
	}
	calls := fs.accountCalls.Load()
	if _, err := a.Basic(ctx, "acme+ci", "TOKEN-ONE"); err != nil || fs.accountCalls.Load() != calls {
		t.Fatalf("second login was not served from the cache: %v", err)
	}
	fs.mu.Lock()
	fs.robots[fs.accounts["acme+ci"].ID].TokenEnc = sec.Seal([]byte("TOKEN-TWO"), RobotTokenPurpose("acme+ci"))
	fs.mu.Unlock()
	rev.mu.Lock()
	rev.raiseLocked("acme+ci", 1) // what Sync does on news from another server
	rev.mu.Unlock()
	if _, err := a.Basic(ctx, "acme+ci", "TOKEN-ONE"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("cached old token after the epoch rose: %v", err)
	}
	if _, err := a.Basic(ctx, "acme+ci", "TOKEN-TWO"); err != nil {
		t.Fatalf("new token: %v", err)
	}
}

// An OAuth application deleted on another server: the cached logins with
// its tokens end here once the revoker learns its epoch, with no Forget.
func TestCachedTokenLoginEndsWithItsApplication(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	alice := fs.addUser(t, "alice", "pw", nil)
	fs.tokens[HashToken("tok-app7")] = &store.AccessToken{ApplicationID: 7, AccountID: alice.ID, Scopes: []string{"repo:read"}}
	fs.tokens[HashToken("tok-app8")] = &store.AccessToken{ApplicationID: 8, AccountID: alice.ID, Scopes: []string{"repo:read"}}
	rev := &TokenRevoker{}
	a := &Authenticator{Store: fs, Revoker: rev}
	for _, tok := range []string{"tok-app7", "tok-app8"} {
		if _, err := a.AccessToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	// Both are gone from the store; only the cache still knows them.
	delete(fs.tokens, HashToken("tok-app7"))
	delete(fs.tokens, HashToken("tok-app8"))
	if _, err := a.AccessToken(ctx, "tok-app7"); err != nil {
		t.Fatalf("a cached token login before any revocation: %v", err)
	}
	_ = rev.Revoke(ctx, OAuthAppSubject(7))
	if _, err := a.AccessToken(ctx, "tok-app7"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("token of a deleted application served from the cache: %v", err)
	}
	if _, err := a.AccessToken(ctx, "tok-app8"); err != nil {
		t.Fatalf("revoking application 7 dropped application 8's cached login: %v", err)
	}
}
