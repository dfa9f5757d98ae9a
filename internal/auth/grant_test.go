package auth

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
)

var pullBase = []ResourceActions{{Type: TypeRepository, Name: "acme/base", Actions: []Action{Pull}}}

// TestGrantTokens: a token issued under a grant is scoped to its claim,
// lives as long as asked, and dies with the grant (not with another
// grant), while the subject's own revocation still applies.
func TestGrantTokens(t *testing.T) {
	ctx := context.Background()
	s := newTestTokens(t)
	now := time.Now().Truncate(time.Second)
	s.Now = func() time.Time { return now }
	alice := &Principal{Account: &store.Account{Name: "alice"}}
	tok, err := s.IssueGrant(alice, "svc", pullBase, BuildGrant("b1", 1), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if tok.ExpiresIn != 600 {
		t.Errorf("expires_in %d, want 600", tok.ExpiresIn)
	}
	other, _ := s.IssueGrant(alice, "svc", pullBase, BuildGrant("b1", 2), 10*time.Minute)
	c, err := s.Verify(ctx, tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Scoped || c.Grant != "build:b1:1" || !c.Principal().ClaimOnly() || c.Principal().Token() != c {
		t.Errorf("claims scoped %v grant %q claim-only %v", c.Scoped, c.Grant, c.Principal().ClaimOnly())
	}
	if _, err := s.IssueGrant(alice, "svc", pullBase, "", time.Minute); err == nil {
		t.Error("a grant token without a grant was issued")
	}

	if err := s.Revoker.Revoke(ctx, BuildGrant("b1", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, tok.Token); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("after revoking its grant: %v", err)
	}
	if _, err := s.Verify(ctx, other.Token); err != nil {
		t.Errorf("a token of another grant: %v", err)
	}
	if err := s.Revoker.Revoke(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, other.Token); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("after revoking the subject: %v", err)
	}

	// A requester-less build's token is anonymous, and still revocable.
	anon, _ := s.IssueGrant(nil, "svc", pullBase, BuildGrant("b2", 1), time.Minute)
	if c, err := s.Verify(ctx, anon.Token); err != nil || !c.Principal().IsAnonymous() || !c.Principal().ClaimOnly() {
		t.Fatalf("anonymous grant token: %v", err)
	}
	_ = s.Revoker.Revoke(ctx, BuildGrant("b2", 1))
	if _, err := s.Verify(ctx, anon.Token); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("anonymous grant token after revoking its grant: %v", err)
	}
}

// TestTokenFromToken: a token issued to a principal that presented a
// registry token (the token endpoint does so for $berthbuild logins) keeps
// its grant and never outlives it, so trading tokens renews nothing and a
// revoked build's derived tokens die with it.
func TestTokenFromToken(t *testing.T) {
	ctx := context.Background()
	s := newTestTokens(t)
	now := time.Now().Truncate(time.Second)
	s.Now = func() time.Time { return now }
	alice := &Principal{Account: &store.Account{Name: "alice"}}
	parent, _ := s.IssueGrant(alice, "svc", pullBase, BuildGrant("b1", 1), 2*time.Minute)
	pc, err := s.Verify(ctx, parent.Token)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = func() time.Time { return now.Add(90 * time.Second) }
	child, err := s.Issue(pc.Principal(), "svc", pullBase)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := s.Verify(ctx, child.Token)
	if err != nil {
		t.Fatal(err)
	}
	if cc.Grant != pc.Grant || !cc.ExpiresAt.Equal(pc.ExpiresAt.Time) || child.ExpiresIn != 30 || !cc.Scoped {
		t.Errorf("derived token: grant %q expires %v (parent %v) in %d s, scoped %v", cc.Grant, cc.ExpiresAt, pc.ExpiresAt, child.ExpiresIn, cc.Scoped)
	}
	_ = s.Revoker.Revoke(ctx, BuildGrant("b1", 1))
	if _, err := s.Verify(ctx, child.Token); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("derived token after revoking the grant: %v", err)
	}

	// Without a grant the cap holds too.
	s.Now = func() time.Time { return now }
	plain, _ := s.Issue(alice, "svc", pullBase) // the default 300 s
	plainClaims, _ := s.Verify(ctx, plain.Token)
	s.Now = func() time.Time { return now.Add(200 * time.Second) }
	renewed, _ := s.Issue(plainClaims.Principal(), "svc", pullBase)
	if renewed.ExpiresIn != 100 {
		t.Errorf("a token traded for another lives %d s more, want the 100 s its parent had left", renewed.ExpiresIn)
	}
	// A password login is no token: full lifetime.
	if fresh, _ := s.Issue(alice, "svc", pullBase); fresh.ExpiresIn != 300 {
		t.Errorf("a login's token lives %d s", fresh.ExpiresIn)
	}
}

func TestIssueTooLarge(t *testing.T) {
	s := newTestTokens(t)
	var access []ResourceActions
	for range 200 {
		access = append(access, ResourceActions{Type: TypeRepository, Name: "ns/" + strings.Repeat("r", 100), Actions: []Action{Pull}})
	}
	if _, err := s.IssueGrant(nil, "svc", access, "build:x:1", time.Minute); !errors.Is(err, ErrTokenTooLarge) {
		t.Errorf("a token of 200 long names: %v, want ErrTokenTooLarge", err)
	}
}

// TestRevokeUntilForgets: a grant's epoch is kept, in memory and in the
// store, only until every token it could refuse has expired; a revocation
// whose tokens have not expired stays, here and after a restart.
func TestRevokeUntilForgets(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := newTestTokens(t)
	s.Revoker.Store = st
	live, _ := s.IssueGrant(nil, "svc", pullBase, BuildGrant("live", 1), time.Hour)
	if err := s.Revoker.RevokeUntil(ctx, BuildGrant("live", 1), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Tokens that all expired two minutes ago.
	if err := s.Revoker.RevokeUntil(ctx, BuildGrant("old", 1), time.Now().Add(-2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if s.Revoker.Epoch(BuildGrant("old", 1)) != 1 {
		t.Fatal("the revocation did not take effect at once")
	}
	if err := s.Revoker.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.Revoker.Epoch(BuildGrant("old", 1)); got != 0 {
		t.Errorf("an expired grant's epoch is still held: %d", got)
	}
	if _, err := s.Verify(ctx, live.Token); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("a live revoked grant's token after a sync: %v", err)
	}

	restarted := NewTokenService(s.key, 0)
	restarted.Revoker.Store = st
	if err := restarted.Revoker.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if restarted.Revoker.Epoch(BuildGrant("old", 1)) != 0 || restarted.Revoker.Epoch(BuildGrant("live", 1)) != 1 {
		t.Errorf("after a restart: old %d, live %d", restarted.Revoker.Epoch(BuildGrant("old", 1)), restarted.Revoker.Epoch(BuildGrant("live", 1)))
	}
	if n, err := st.DeleteExpiredCredentialEpochs(ctx, time.Now()); err != nil || n != 1 {
		t.Errorf("expired records deleted: %d, %v; want the old grant's", n, err)
	}
}
