package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// TestExpiringCredentialEpochs: an expiring epoch counts like any other,
// keeps the later of its keep-until times, is deleted once that passed, and
// never makes an account's permanent epoch expire.
func TestExpiringCredentialEpochs(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		base := time.Now().UTC().Truncate(time.Millisecond)
		grant := "build:b1:1"
		if got, err := s.BumpExpiringCredentialEpoch(ctx, grant, base.Add(20*time.Minute)); err != nil || got != 1 {
			t.Fatalf("first bump = %d, %v", got, err)
		}
		// An earlier keep-until does not shorten the record's life.
		if got, err := s.BumpExpiringCredentialEpoch(ctx, grant, base.Add(10*time.Minute)); err != nil || got != 2 {
			t.Fatalf("second bump = %d, %v", got, err)
		}
		if _, err := s.BumpExpiringCredentialEpoch(ctx, "build:b2:1", base.Add(5*time.Minute)); err != nil {
			t.Fatal(err)
		}
		// A permanent subject stays permanent.
		if _, err := s.BumpCredentialEpoch(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.BumpExpiringCredentialEpoch(ctx, "alice", base.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		epochs := func() map[string]store.CredentialEpoch {
			t.Helper()
			all, err := s.CredentialEpochsSince(ctx, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]store.CredentialEpoch{}
			for _, e := range all {
				out[e.Subject] = e
			}
			return out
		}
		got := epochs()
		if e := got[grant]; e.Epoch != 2 || !e.KeepUntil.Equal(base.Add(20*time.Minute)) {
			t.Errorf("%s = %+v, want epoch 2 kept until %v", grant, e, base.Add(20*time.Minute))
		}
		if e := got["alice"]; e.Epoch != 2 || !e.KeepUntil.IsZero() {
			t.Errorf("alice = %+v, want epoch 2 kept for ever", e)
		}

		if n, err := s.DeleteExpiredCredentialEpochs(ctx, base.Add(6*time.Minute)); err != nil || n != 1 {
			t.Fatalf("delete at +6 min = %d, %v; want b2's record", n, err)
		}
		got = epochs()
		if _, ok := got["build:b2:1"]; ok || len(got) != 2 {
			t.Errorf("after deleting at +6 min: %+v", got)
		}
		if n, err := s.DeleteExpiredCredentialEpochs(ctx, base.Add(time.Hour)); err != nil || n != 1 {
			t.Fatalf("delete at +1 h = %d, %v; want b1's record", n, err)
		}
		if got = epochs(); len(got) != 1 || got["alice"].Epoch != 2 {
			t.Errorf("after deleting at +1 h: %+v, want alice alone", got)
		}
		if _, err := s.BumpExpiringCredentialEpoch(ctx, "", base); err == nil {
			t.Error("empty subject bumped")
		}
	})
}
