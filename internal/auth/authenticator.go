package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// ErrInvalidCredentials is returned for an unknown user, a wrong password or
// a disabled account alike, so that callers cannot tell which.
var ErrInvalidCredentials = errors.New("invalid username or password")

// ErrThrottled is matched (errors.Is) by a *ThrottledError.
var ErrThrottled = errors.New("too many failed logins")

// ThrottledError refuses a login attempt without checking it, because the
// username has failed too often recently.
type ThrottledError struct {
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("%v: retry after %v", ErrThrottled, e.RetryAfter)
}

// Is makes errors.Is(err, ErrThrottled) true.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// Defaults for Authenticator's zero fields.
const (
	DefaultCacheTTL  = 60 * time.Second
	DefaultBaseDelay = 100 * time.Millisecond
	DefaultMaxDelay  = 5 * time.Second
	// failureMemory is how long a username's failures are remembered after
	// the last one.
	failureMemory = 10 * time.Minute
	// minSweep is the map size below which expired entries are not swept.
	minSweep = 1024
)

// dummyHash is compared against when the user does not exist, so that an
// unknown name costs the same bcrypt time as a wrong password. It is made on
// first use: hashing at package init would slow every binary's start.
var dummyHash = sync.OnceValue(func() string {
	h, err := HashPassword("berth-timing-equaliser")
	if err != nil {
		panic(err) // only ErrPasswordTooLong, impossible for this constant
	}
	return h
})

// Authenticator checks Basic credentials (username and password) against the
// store.
//
// A bcrypt check costs tens of milliseconds, and registry clients send the
// same credentials with every request, so a success is remembered for
// CacheTTL, keyed by an HMAC of (username, password) under a per-process
// random key (a memory dump does not yield a fast offline guessing oracle).
// Remembered credentials are accepted without bcrypt, store or throttling.
// Changing a password or disabling an account takes effect within CacheTTL,
// or at once after Forget.
//
// Failures are throttled per username: after n consecutive failures further
// unremembered attempts for that name are spaced BaseDelay*2^(n-1) apart
// (at most MaxDelay); an attempt that would have to wait longer than MaxDelay
// is refused with a *ThrottledError instead of being queued. Successes reset
// the count.
//
// The zero value is not usable; set Store. Fields must not change after the
// first call.
type Authenticator struct {
	Store     store.Store
	CacheTTL  time.Duration // default DefaultCacheTTL
	BaseDelay time.Duration // default DefaultBaseDelay
	MaxDelay  time.Duration // default DefaultMaxDelay

	// now is time.Now outside tests.
	now func() time.Time

	once   sync.Once
	macKey []byte

	mu        sync.Mutex
	ok        map[[sha256.Size]byte]cachedLogin
	okSweep   int
	fails     map[string]*failures
	failSweep int
}

// NewAuthenticator returns an Authenticator over s with the default cache
// lifetime and backoff.
func NewAuthenticator(s store.Store) *Authenticator {
	return &Authenticator{Store: s}
}

type cachedLogin struct {
	principal *Principal
	expires   time.Time
}

type failures struct {
	count int
	last  time.Time // last failure
	next  time.Time // earliest time the next attempt may be checked
}

func (a *Authenticator) init() {
	a.once.Do(func() {
		a.macKey = make([]byte, 32)
		_, _ = rand.Read(a.macKey) // crypto/rand.Read never fails
		a.ok = map[[sha256.Size]byte]cachedLogin{}
		a.fails = map[string]*failures{}
		if a.now == nil {
			a.now = time.Now
		}
		if a.CacheTTL <= 0 {
			a.CacheTTL = DefaultCacheTTL
		}
		if a.BaseDelay <= 0 {
			a.BaseDelay = DefaultBaseDelay
		}
		if a.MaxDelay <= 0 {
			a.MaxDelay = DefaultMaxDelay
		}
	})
}

// Basic authenticates a username and password. It returns
// ErrInvalidCredentials for an unknown user, a wrong password or a disabled
// account, a *ThrottledError when the username is backing off, and another
// error only when the store fails. The returned Principal is shared between
// callers presenting the same credentials: do not modify it.
func (a *Authenticator) Basic(ctx context.Context, username, password string) (*Principal, error) {
	a.init()
	if username == "" || len(username) > 255 || len(password) > maxPasswordLen {
		return nil, ErrInvalidCredentials
	}
	key := a.cacheKey(username, password)

	now := a.now()
	a.mu.Lock()
	if c, ok := a.ok[key]; ok && now.Before(c.expires) {
		a.mu.Unlock()
		return c.principal, nil
	}
	wait, err := a.reserve(username, now)
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}

	acct, err := a.Store.GetAccountByName(ctx, username)
	switch {
	case errors.Is(err, store.ErrNotFound):
		CheckPassword(dummyHash(), password)
		a.fail(username)
		return nil, ErrInvalidCredentials
	case err != nil:
		return nil, fmt.Errorf("look up account %s: %w", username, err)
	}
	if !CheckPassword(acct.PasswordHash, password) || !acct.Enabled {
		a.fail(username)
		return nil, ErrInvalidCredentials
	}

	p := &Principal{Account: acct}
	now = a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.fails, username)
	if len(a.ok) >= max(a.okSweep, minSweep) {
		for k, c := range a.ok {
			if !now.Before(c.expires) {
				delete(a.ok, k)
			}
		}
		a.okSweep = 2 * len(a.ok)
	}
	a.ok[key] = cachedLogin{principal: p, expires: now.Add(a.CacheTTL)}
	return p, nil
}

// Forget drops every remembered success of username, so that a password
// change or a disabled account takes effect on the next request.
func (a *Authenticator) Forget(username string) {
	a.init()
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, c := range a.ok {
		if c.principal.Name() == username {
			delete(a.ok, k)
		}
	}
}

func (a *Authenticator) cacheKey(username, password string) [sha256.Size]byte {
	m := hmac.New(sha256.New, a.macKey)
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

// reserve books the next check slot for username and returns how long to
// wait for it. Called with a.mu held.
func (a *Authenticator) reserve(username string, now time.Time) (time.Duration, error) {
	f := a.fails[username]
	if f == nil {
		return 0, nil
	}
	if now.Sub(f.last) > failureMemory {
		delete(a.fails, username)
		return 0, nil
	}
	slot := f.next
	if slot.Before(now) {
		slot = now
	}
	wait := slot.Sub(now)
	if wait > a.MaxDelay {
		return 0, &ThrottledError{RetryAfter: wait}
	}
	// Concurrent attempts queue one delay apart, so parallel guessing gains
	// nothing over sequential guessing.
	f.next = slot.Add(a.delay(f.count))
	return wait, nil
}

// fail records a failed check of username.
func (a *Authenticator) fail(username string) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.fails[username]
	if f == nil {
		if len(a.fails) >= max(a.failSweep, minSweep) {
			for k, v := range a.fails {
				if now.Sub(v.last) > failureMemory {
					delete(a.fails, k)
				}
			}
			a.failSweep = 2 * len(a.fails)
		}
		f = &failures{}
		a.fails[username] = f
	}
	f.count++
	f.last = now
	if next := now.Add(a.delay(f.count)); next.After(f.next) {
		f.next = next
	}
}

// delay is the spacing after n consecutive failures.
func (a *Authenticator) delay(n int) time.Duration {
	d := a.BaseDelay
	for i := 1; i < n && d < a.MaxDelay; i++ {
		d *= 2
	}
	return min(d, a.MaxDelay)
}
