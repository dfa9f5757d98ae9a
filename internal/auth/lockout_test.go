package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// newLockoutAuthenticator has a fake clock and small delays, so that a
// throttle refuses (rather than waits) after a few failures.
func newLockoutAuthenticator(fs *fakeStore) (*Authenticator, *fakeClock) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	a := &Authenticator{Store: fs, now: clock.now, BaseDelay: 5 * time.Millisecond, MaxDelay: 20 * time.Millisecond}
	a.init()
	return a, clock
}

// guess fails n logins of user from source, as fast as the throttle lets
// them through, and returns how many were refused unchecked.
func guess(t *testing.T, a *Authenticator, clock *fakeClock, ctx context.Context, user string, n int) (throttled int) {
	t.Helper()
	for i := range n {
		_, err := a.Basic(ctx, user, fmt.Sprintf("wrong-%d", i))
		switch {
		case errors.Is(err, ErrThrottled):
			throttled++
		case !errors.Is(err, ErrInvalidCredentials):
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	return throttled
}

// F10: twelve wrong guesses from a stranger's address used to make the
// real user's correct password fail with 429 from anywhere.
func TestGuessesFromOneSourceDoNotLockOutAnother(t *testing.T) {
	fs := newFakeStore()
	fs.addUser(t, "erin", "pw-erin", nil)
	sec := testSecrets(t)
	org := fs.addUser(t, "acme", "", func(a *store.Account) { a.Kind = store.KindOrganization })
	addRobot(t, fs, sec, org, "ci", "ROBOT-TOKEN")
	a, clock := newLockoutAuthenticator(fs)
	a.Secrets = sec
	attacker := WithSource(context.Background(), "203.0.113.7:40000")
	victim := WithSource(context.Background(), "198.51.100.2:51000")

	for _, user := range []string{"erin", "acme+ci"} {
		if throttled := guess(t, a, clock, attacker, user, 12); throttled == 0 {
			t.Fatalf("%s: twelve guesses from one address were never throttled", user)
		}
		if _, err := a.Basic(attacker, user, "yet another guess"); !errors.Is(err, ErrThrottled) {
			t.Fatalf("%s: the guesser's next attempt = %v, want throttled", user, err)
		}
	}
	// The real credentials, never used before, from the real user's
	// address: checked at once.
	for user, secret := range map[string]string{"erin": "pw-erin", "acme+ci": "ROBOT-TOKEN"} {
		if _, err := a.Basic(victim, user, secret); err != nil {
			t.Fatalf("%s from another address during the attack: %v", user, err)
		}
	}
}

// A user who logged in before is not locked out by guesses from the same
// address either (a NAT, a CI runner pool): the known good secret skips
// the queues, long after the login cache forgot it.
func TestKnownGoodSecretSkipsTheQueue(t *testing.T) {
	fs := newFakeStore()
	fs.addUser(t, "erin", "pw-erin", nil)
	a, clock := newLockoutAuthenticator(fs)
	nat := WithSource(context.Background(), "192.0.2.1:1000")
	if _, err := a.Basic(nat, "erin", "pw-erin"); err != nil {
		t.Fatal(err)
	}
	clock.advance(2 * DefaultCacheTTL) // out of the login cache
	if guess(t, a, clock, nat, "erin", 12) == 0 {
		t.Fatal("guesses were never throttled")
	}
	calls := fs.accountCalls.Load()
	if _, err := a.Basic(nat, "erin", "pw-erin"); err != nil {
		t.Fatalf("the known good password during the attack: %v", err)
	}
	if fs.accountCalls.Load() != calls+1 {
		t.Fatal("the known good password was not checked against the store")
	}
	// Once the password changes, the old one is checked, fails, and stops
	// skipping the queue.
	fs.mu.Lock()
	fs.accounts["erin"].PasswordHash = testHash(t, "new-password")
	fs.mu.Unlock()
	a.mu.Lock()
	delete(a.ok, a.cacheKey("erin", "pw-erin"))
	a.mu.Unlock()
	if _, err := a.Basic(nat, "erin", "pw-erin"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("the old password: %v", err)
	}
	a.mu.Lock()
	_, known := a.knownGood["erin"]
	wait, err := a.reserve("erin", sourceOf(nat), clock.now())
	a.mu.Unlock()
	if known || (err == nil && wait == 0) {
		t.Fatalf("the old password still skips the queue (known %v, wait %v, %v)", known, wait, err)
	}
}

// Spraying guesses over many usernames from one address is throttled too,
// after a few free failures; other addresses are not.
func TestSourceThrottledAcrossUsernames(t *testing.T) {
	fs := newFakeStore()
	fs.addUser(t, "erin", "pw-erin", nil)
	a, clock := newLockoutAuthenticator(fs)
	sprayer := WithSource(context.Background(), "[2001:db8:1:2::10]:443")
	throttled := 0
	for i := range 40 {
		throttled += guess(t, a, clock, sprayer, fmt.Sprintf("user%d", i), 1)
	}
	if throttled == 0 {
		t.Fatal("40 usernames guessed from one address were never throttled")
	}
	// Another address of the same /64 is the same source.
	sameNet := WithSource(context.Background(), "[2001:db8:1:2::99]:443")
	if _, err := a.Basic(sameNet, "erin", "pw-erin"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("login from the sprayer's /64: %v, want throttled", err)
	}
	other := WithSource(context.Background(), "[2001:db8:1:3::10]:443")
	if _, err := a.Basic(other, "erin", "pw-erin"); err != nil {
		t.Fatalf("login from another /64: %v", err)
	}
}

func TestSourceOfAddr(t *testing.T) {
	for addr, want := range map[string]string{
		"203.0.113.7:1234":           "203.0.113.7",
		"203.0.113.7":                "203.0.113.7",
		"[::ffff:203.0.113.7]:80":    "203.0.113.7",
		"[2001:db8:a:b:c:d:e:f]:443": "2001:db8:a:b::/64",
		"[fe80::1%eth0]:22":          "fe80::/64",
		"not an address":             "not an address",
	} {
		if got := sourceOfAddr(addr); got != want {
			t.Errorf("sourceOfAddr(%q) = %q, want %q", addr, got, want)
		}
	}
}

// F11: a token made before its account's credentials were revoked (the
// password changed on another server) stops working, cached or not; one
// made after works.
func TestAccessTokenEndsWithItsAccountsEpoch(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	alice := fs.addUser(t, "alice", "pw", nil)
	fs.tokens[HashToken("old")] = &store.AccessToken{ID: 1, AccountID: alice.ID, Scopes: []string{"repo:read"}}
	rev := &TokenRevoker{}
	cached := &Authenticator{Store: fs, Revoker: rev}
	p, err := cached.AccessToken(ctx, "old")
	if err != nil || p.CredentialEpoch != 0 {
		t.Fatalf("token before the revocation: %+v, %v", p, err)
	}
	_ = rev.Revoke(ctx, "alice")
	fs.tokens[HashToken("new")] = &store.AccessToken{ID: 2, AccountID: alice.ID, Scopes: []string{"repo:read"}, CredentialEpoch: rev.Epoch("alice")}
	fresh := &Authenticator{Store: fs, Revoker: rev}
	for _, a := range []*Authenticator{cached, fresh} {
		if _, err := a.AccessToken(ctx, "old"); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("token made before the revocation: %v", err)
		}
		p, err := a.AccessToken(ctx, "new")
		if err != nil || p.CredentialEpoch != 1 {
			t.Fatalf("token made after the revocation: %+v, %v", p, err)
		}
	}
}

// A token its owner revoked on another server ends in this server's cache
// through its own revocation subject; the owner's other tokens stay.
func TestCachedTokenLoginEndsWithItsRevocation(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	alice := fs.addUser(t, "alice", "pw", nil)
	fs.tokens[HashToken("one")] = &store.AccessToken{ID: 1, AccountID: alice.ID, Scopes: []string{"repo:read"}}
	fs.tokens[HashToken("two")] = &store.AccessToken{ID: 2, AccountID: alice.ID, Scopes: []string{"repo:read"}}
	rev := &TokenRevoker{}
	a := &Authenticator{Store: fs, Revoker: rev}
	for _, tok := range []string{"one", "two"} {
		if _, err := a.AccessToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	delete(fs.tokens, HashToken("one"))
	_ = rev.Revoke(ctx, OAuthTokenSubject(1))
	if _, err := a.AccessToken(ctx, "one"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("revoked token served from the cache: %v", err)
	}
	if _, err := a.AccessToken(ctx, "two"); err != nil {
		t.Fatalf("the other token: %v", err)
	}
}

// A password login reports the epoch it was checked under.
func TestBasicReportsCredentialEpoch(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	fs.addUser(t, "alice", "pw", nil)
	rev := &TokenRevoker{}
	_ = rev.Revoke(ctx, "alice")
	_ = rev.Revoke(ctx, "alice")
	a := &Authenticator{Store: fs, Revoker: rev}
	p, err := a.Basic(ctx, "alice", "pw")
	if err != nil || p.CredentialEpoch != 2 {
		t.Fatalf("Basic = %+v, %v; want epoch 2", p, err)
	}
}

// FuzzSourceOfAddr: any remote address names a source without panicking,
// and an IP address's source is the address (IPv4) or its /64 (IPv6).
func FuzzSourceOfAddr(f *testing.F) {
	for _, s := range []string{"203.0.113.7:1234", "[2001:db8::1]:443", "[::ffff:1.2.3.4]:1", "[fe80::1%eth0]:22", "", ":", "[::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		src := sourceOfAddr(addr)
		host := addr
		if h, _, err := net.SplitHostPort(addr); err == nil {
			host = h
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return
		}
		ip = ip.Unmap()
		if ip.Is4() {
			if src != ip.String() {
				t.Fatalf("sourceOfAddr(%q) = %q, want %s", addr, src, ip)
			}
			return
		}
		p, err := netip.ParsePrefix(src)
		if err != nil || p.Bits() != 64 || !p.Contains(ip.WithZone("")) {
			t.Fatalf("sourceOfAddr(%q) = %q, want the /64 holding %s", addr, src, ip)
		}
	})
}
