package sqlstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTriggerPayloadClaims(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		repo := fixture(t, s, "alice", "app")
		newTrigger(t, s, repo, "t-1")
		newTrigger(t, s, repo, "t-2")
		window := time.Hour
		t0 := time.Unix(1_800_000_000, 0).UTC()
		claim := func(trigger, sum string, at time.Time) bool {
			t.Helper()
			ok, err := s.ClaimTriggerPayload(ctx, trigger, sum, at, at.Add(-window))
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		if !claim("t-1", "aa", t0) {
			t.Fatal("first payload refused")
		}
		if claim("t-1", "aa", t0.Add(time.Minute)) {
			t.Fatal("the same payload within the window was claimed again")
		}
		if !claim("t-2", "aa", t0.Add(time.Minute)) || !claim("t-1", "bb", t0.Add(time.Minute)) {
			t.Fatal("another trigger's or another payload's claim refused")
		}
		// After the window the payload is new again, and then remembered
		// from its new time.
		if !claim("t-1", "aa", t0.Add(window+time.Second)) {
			t.Fatal("a payload older than the window was not claimed")
		}
		if claim("t-1", "aa", t0.Add(window+2*time.Second)) {
			t.Fatal("the re-claimed payload was not remembered")
		}

		// Concurrent claims of one payload: exactly one wins.
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				at := t0.Add(10 * window)
				if ok, err := s.ClaimTriggerPayload(ctx, "t-1", "cc", at, at.Add(-window)); err != nil {
					t.Error(err)
				} else if ok {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d concurrent claims won, want 1", wins.Load())
		}

		n, err := s.PruneTriggerPayloads(ctx, "t-1", t0.Add(window+time.Second))
		if err != nil || n != 1 { // "bb"
			t.Fatalf("pruned %d, %v; want 1", n, err)
		}
		if err := s.DeleteTrigger(ctx, "t-2"); err != nil {
			t.Fatal(err)
		}
		var left int
		if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM trigger_payloads WHERE trigger_uuid = 't-2'`).Scan(&left); err != nil || left != 0 {
			t.Fatalf("payloads of a deleted trigger: %d, %v", left, err)
		}
	})
}
