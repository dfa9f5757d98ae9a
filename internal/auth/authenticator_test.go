package auth

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestBasic(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	fs.addUser(t, "alice", "pw-alice", nil)
	fs.addUser(t, "dis", "pw-dis", func(a *store.Account) { a.Enabled = false })
	fs.addUser(t, "org", "", func(a *store.Account) { a.Kind = store.KindOrganization })
	a := &Authenticator{Store: fs}

	for _, tc := range []struct{ user, pw string }{
		{"alice", "wrong"}, {"alice", ""}, {"nobody", "pw-alice"}, {"dis", "pw-dis"}, {"org", ""}, {"", ""},
	} {
		if p, err := a.Basic(ctx, tc.user, tc.pw); !errors.Is(err, ErrInvalidCredentials) || p != nil {
			t.Errorf("Basic(%q, %q) = %v, %v; want ErrInvalidCredentials", tc.user, tc.pw, p, err)
		}
	}
	// The failures above throttle alice; a fresh authenticator checks success.
	a = &Authenticator{Store: fs}
	p, err := a.Basic(ctx, "alice", "pw-alice")
	if err != nil || p.Name() != "alice" || p.Account.ID == 0 {
		t.Fatalf("Basic(alice) = %v, %v", p, err)
	}

	fs.fail = errDBDown
	if _, err := a.Basic(ctx, "bob", "x"); !errors.Is(err, errDBDown) || errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("store failure: err = %v, want the store's error", err)
	}
}

func TestBasicCache(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	fs.addUser(t, "alice", "pw-alice", nil)
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	a := &Authenticator{Store: fs, now: clock.now}

	if _, err := a.Basic(ctx, "alice", "pw-alice"); err != nil {
		t.Fatal(err)
	}
	calls := fs.accountCalls.Load()
	start := time.Now()
	for range 1000 {
		if _, err := a.Basic(ctx, "alice", "pw-alice"); err != nil {
			t.Fatal(err)
		}
	}
	if got := fs.accountCalls.Load(); got != calls {
		t.Fatalf("cached logins made %d store calls", got-calls)
	}
	// 1000 bcrypt checks would take a minute; cached ones take microseconds.
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("1000 cached logins took %v", d)
	}
	// A wrong password is never answered from the cache.
	if _, err := a.Basic(ctx, "alice", "pw-alicf"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("wrong password after success: %v", err)
	}

	clock.advance(DefaultCacheTTL + time.Second)
	calls = fs.accountCalls.Load()
	if _, err := a.Basic(ctx, "alice", "pw-alice"); err != nil {
		t.Fatal(err)
	}
	if fs.accountCalls.Load() != calls+1 {
		t.Fatal("expired cache entry was still used")
	}

	a.Forget("alice")
	calls = fs.accountCalls.Load()
	if _, err := a.Basic(ctx, "alice", "pw-alice"); err != nil {
		t.Fatal(err)
	}
	if fs.accountCalls.Load() != calls+1 {
		t.Fatal("Forget did not drop the cached login")
	}
}

func TestBasicThrottle(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	fs.addUser(t, "alice", "pw-alice", nil)
	fs.addUser(t, "bob", "pw-bob", nil)
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	a := &Authenticator{Store: fs, now: clock.now, BaseDelay: 100 * time.Millisecond, MaxDelay: 400 * time.Millisecond}
	a.init()

	// Remember alice's real password before the attack starts.
	if _, err := a.Basic(ctx, "alice", "pw-alice"); err != nil {
		t.Fatal(err)
	}

	// Consecutive failures space further attempts 100, 200, 400, 400 ms.
	for i, want := range []time.Duration{100, 200, 400, 400} {
		if _, err := a.Basic(ctx, "alice", "guess"); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
		a.mu.Lock()
		wait := a.fails[throttleKey{user: "alice"}].next.Sub(clock.now())
		a.mu.Unlock()
		if wait != want*time.Millisecond {
			t.Fatalf("after failure %d: next attempt in %v, want %v", i+1, wait, want*time.Millisecond)
		}
		clock.advance(wait)
	}

	// Parallel guesses queue one delay apart, and are refused once the
	// queue is longer than MaxDelay: they gain no rate over sequential ones.
	a.mu.Lock()
	w1, err1 := a.reserve("alice", "", clock.now())
	w2, err2 := a.reserve("alice", "", clock.now())
	_, err3 := a.reserve("alice", "", clock.now())
	a.mu.Unlock()
	var te *ThrottledError
	if err1 != nil || err2 != nil || w1 != 0 || w2 != 400*time.Millisecond {
		t.Fatalf("queued attempts: %v %v, %v %v; want 0s and 400ms", w1, err1, w2, err2)
	}
	if !errors.As(err3, &te) || !errors.Is(err3, ErrThrottled) || te.RetryAfter != 800*time.Millisecond {
		t.Fatalf("third queued attempt: %v; want throttled for 800ms", err3)
	}
	if _, err := a.Basic(ctx, "alice", "guess"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("guess while throttled: %v", err)
	}

	// The remembered password still works, at full speed, mid-attack.
	start := time.Now()
	for range 200 {
		if _, err := a.Basic(ctx, "alice", "pw-alice"); err != nil {
			t.Fatalf("cached login during throttling: %v", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("200 logins took %v, want well over 50/s", d)
	}
	// Other users are not affected.
	if _, err := a.Basic(ctx, "bob", "pw-bob"); err != nil {
		t.Fatalf("bob: %v", err)
	}

	// Once the queue drains, a correct uncached login succeeds and resets.
	a.Forget("alice")
	clock.advance(time.Second)
	if _, err := a.Basic(ctx, "alice", "pw-alice"); err != nil {
		t.Fatalf("login after backoff: %v", err)
	}
	a.mu.Lock()
	_, still := a.fails[throttleKey{user: "alice"}]
	a.mu.Unlock()
	if still {
		t.Fatal("success did not reset the failure count")
	}
}

func TestBasicThrottleWaits(t *testing.T) {
	fs := newFakeStore()
	fs.addUser(t, "alice", "pw-alice", nil)
	a := &Authenticator{Store: fs, BaseDelay: 150 * time.Millisecond, MaxDelay: time.Second}
	ctx := context.Background()
	if _, err := a.Basic(ctx, "alice", "guess"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatal(err)
	}
	// The next check waits for its slot with the real clock...
	start := time.Now()
	if _, err := a.Basic(ctx, "alice", "pw-alice"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("attempt after a failure was not delayed (%v)", d)
	}
	// ...and gives up when the request is cancelled.
	if _, err := a.Basic(ctx, "bob", "guess"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.Basic(cctx, "bob", "guess"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
}
