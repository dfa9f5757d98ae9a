package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// ErrInvalidCredentials is returned for an unknown user, a wrong password or
// a disabled account alike, so that callers cannot tell which.
var ErrInvalidCredentials = errors.New("invalid username or password")

// ErrRobotsDisallowed refuses a robot login when robots are disabled
// (config ROBOTS_DISALLOW). It wraps ErrInvalidCredentials, so clients see
// the usual "invalid username or password".
//
//lint:ignore ST1005 the text after the colon is Quay's message, kept word for word.
var ErrRobotsDisallowed = fmt.Errorf("%w: Robot accounts have been disabled. Please contact your administrator.", ErrInvalidCredentials)

// Usernames that carry an OAuth access token as the password, as in Quay.
const (
	OAuthTokenUser = "$oauthtoken"
	TokenUser      = "$token"
)

// maxTokenCredential bounds an access token or robot token presented as a
// password; real ones are 40 and 64 characters.
const maxTokenCredential = 255

// ErrThrottled is matched (errors.Is) by a *ThrottledError.
var ErrThrottled = errors.New("too many failed logins")

// ThrottledError refuses a login attempt without checking it, because the
// username has failed too often recently from the attempt's source, or the
// source has failed too often.
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
	// failureMemory is how long a throttle's failures are remembered after
	// the last one.
	failureMemory = 10 * time.Minute
	// sourceFreeFailures is how many failures a source may have, across
	// every username, before its own throttle starts spacing attempts: a
	// few mistyped passwords behind one NAT cost nothing, spraying guesses
	// over many usernames from one address is slowed like guessing one.
	sourceFreeFailures = 10
	// knownGoodMemory is how long the last secret that logged a username
	// in lets it skip the throttle queue.
	knownGoodMemory = 30 * 24 * time.Hour
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

// Authenticator checks credentials against the store: a user's password, a
// robot's token (username "<namespace>+<name>"), or an OAuth access token
// (username "$oauthtoken" or "$token", or AccessToken for a Bearer header).
//
// Robot tokens are stored encrypted (an administrator may read them back),
// so a robot login decrypts the stored token with Secrets and compares in
// constant time; decryption costs microseconds, so no hash is kept beside
// it. Access tokens are stored as their SHA-256 and looked up by it.
//
// A bcrypt check costs tens of milliseconds, and registry clients send the
// same credentials with every request, so a success is remembered for
// CacheTTL, keyed by an HMAC of (username, password) under a per-process
// random key (a memory dump does not yield a fast offline guessing oracle).
// Remembered credentials are accepted without bcrypt, store or throttling.
// Changing a password or disabling an account takes effect within CacheTTL,
// or at once after Forget.
//
// Password and robot-token failures are throttled per (username, source
// address), the source being what WithSource put in the context (IPv6
// addresses count by /64, which one client usually holds whole): after n
// consecutive failures further unremembered attempts for that name from
// that source are spaced BaseDelay*2^(n-1) apart (at most MaxDelay); an
// attempt that would have to wait longer than MaxDelay is refused with a
// *ThrottledError instead of being queued. Successes reset the count. Each
// source is throttled the same way across every username once it failed
// more than sourceFreeFailures times, so that spraying guesses over many
// names gains nothing. A stranger's guesses therefore never slow down the
// real user at another address; and the last secret that logged a username
// in (kept as a keyed hash for knownGoodMemory, longer than the login
// cache) skips both queues wherever it comes from, so a CI robot behind the
// same NAT as a guesser keeps working. It is still checked in full.
//
// Access tokens are not throttled: they carry 238 bits of randomness, a
// lookup costs one indexed query, and a shared "$oauthtoken" counter would
// let one guesser lock every token user out. Failures are never cached, so
// a token created a moment ago works at once. A token works until its
// expiry, its deletion, or a rise of its account's credential epoch past
// the one it was made under.
//
// The zero value is not usable; set Store. Fields must not change after the
// first call.
type Authenticator struct {
	Store     LoginStore
	CacheTTL  time.Duration // default DefaultCacheTTL
	BaseDelay time.Duration // default DefaultBaseDelay
	MaxDelay  time.Duration // default DefaultMaxDelay
	// Secrets decrypts robot tokens; nil means robots cannot log in.
	Secrets *Secrets
	// RobotsDisallowed refuses every robot login (config ROBOTS_DISALLOW).
	RobotsDisallowed bool
	// Revoker, when set, ends remembered logins of a subject whose
	// credential epoch rose after they were cached: a revocation made by
	// another server reaches this cache with the revoker's sync, not only
	// through Forget on the server that made it.
	Revoker *TokenRevoker

	// now is time.Now outside tests.
	now func() time.Time

	once   sync.Once
	macKey []byte

	mu      sync.Mutex
	ok      map[[sha256.Size]byte]cachedLogin
	okSweep int
	// gen counts Forget calls: a login that read the store before a Forget
	// must not cache what it read.
	gen       uint64
	fails     map[throttleKey]*failures
	failSweep int
	// knownGood maps a username to the cache key of the secret that last
	// logged it in.
	knownGood      map[string]knownSecret
	knownGoodSweep int
}

// LoginStore is what the authenticator reads to check a credential:
// accounts, robots' tokens (and when they were last used) and access
// tokens.
type LoginStore interface {
	GetAccountByName(ctx context.Context, name string) (*store.Account, error)
	GetAccountByID(ctx context.Context, id int64) (*store.Account, error)
	GetRobotInfo(ctx context.Context, id int64) (*store.RobotInfo, error)
	TouchRobot(ctx context.Context, id int64, at time.Time) error
	GetAccessTokenByHash(ctx context.Context, hash string) (*store.AccessToken, error)
}

// throttleKey names a throttle: one username from one source, or (user
// "") one source across every username.
type throttleKey struct{ user, source string }

type knownSecret struct {
	key  [sha256.Size]byte
	seen time.Time
}

// NewAuthenticator returns an Authenticator over s with the default cache
// lifetime and backoff.
func NewAuthenticator(s LoginStore) *Authenticator {
	return &Authenticator{Store: s}
}

type cachedLogin struct {
	principal *Principal
	expires   time.Time
	epoch     uint64 // the account's credential epoch when cached
	// grants are the revocation subjects of a token login besides the
	// account (its OAuth application and the token itself), with their
	// epochs when cached; none for passwords and robot tokens.
	grants []grantEpoch
}

type grantEpoch struct {
	subject string
	epoch   uint64
}

// OAuthAppSubject is the revocation subject of every token an OAuth
// application issued: deleting the application revokes it, which ends
// cached logins with those tokens on every server. (Account names cannot
// contain ':', so it never collides with one.)
func OAuthAppSubject(appID int64) string { return "oauth-app:" + strconv.FormatInt(appID, 10) }

// OAuthTokenSubject is the revocation subject of one access token: its
// owner revoking it ends cached logins with it on every server.
func OAuthTokenSubject(tokenID int64) string { return "oauth-token:" + strconv.FormatInt(tokenID, 10) }

// fresh reports whether a cached login may still be used at now.
func (a *Authenticator) fresh(c cachedLogin, now time.Time) bool {
	if !now.Before(c.expires) || a.Revoker.Epoch(c.principal.Account.Name) > c.epoch {
		return false
	}
	for _, g := range c.grants {
		if a.Revoker.Epoch(g.subject) > g.epoch {
			return false
		}
	}
	return true
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
		a.fails = map[throttleKey]*failures{}
		a.knownGood = map[string]knownSecret{}
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

// Basic authenticates a username and password: a user's password, a
// robot's name and token, or "$oauthtoken" / "$token" with an OAuth access
// token. It returns ErrInvalidCredentials for an unknown account, a wrong
// secret or a disabled account, ErrRobotsDisallowed (which wraps it) for a
// robot while robots are disabled, a *ThrottledError when the username (from
// ctx's source) or the source is backing off, and another error only when
// the store fails. The returned
// Principal is shared between callers presenting the same credentials: do
// not modify it.
func (a *Authenticator) Basic(ctx context.Context, username, password string) (*Principal, error) {
	a.init()
	if username == OAuthTokenUser || username == TokenUser {
		return a.AccessToken(ctx, password)
	}
	robot := strings.Contains(username, "+")
	if robot && a.RobotsDisallowed {
		return nil, ErrRobotsDisallowed
	}
	limit := maxPasswordLen
	if robot {
		limit = maxTokenCredential
	}
	if username == "" || len(username) > 255 || len(password) > limit {
		return nil, ErrInvalidCredentials
	}
	key := a.cacheKey(username, password)
	source := sourceOf(ctx)

	now := a.now()
	a.mu.Lock()
	if c, ok := a.ok[key]; ok && a.fresh(c, now) {
		a.mu.Unlock()
		return c.principal, nil
	}
	gen, ver := a.gen, a.Revoker.Version()
	// Read before the account, so that a revocation racing this login
	// leaves what it creates (a session) with an epoch already too old.
	epoch := a.Revoker.Epoch(username)
	var wait time.Duration
	var err error
	if k, ok := a.knownGood[username]; !ok || k.key != key || now.Sub(k.seen) > knownGoodMemory {
		wait, err = a.reserve(username, source, now)
	}
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
		a.fail(username, source, key)
		return nil, ErrInvalidCredentials
	case err != nil:
		return nil, fmt.Errorf("look up account %s: %w", username, err)
	}
	var good bool
	switch acct.Kind {
	case store.KindUser:
		good = CheckPassword(acct.PasswordHash, password)
	case store.KindRobot:
		good, err = a.checkRobot(ctx, acct, password)
		if err != nil {
			return nil, err
		}
	}
	if !good || !acct.Enabled {
		a.fail(username, source, key)
		return nil, ErrInvalidCredentials
	}

	p := &Principal{Account: acct, CredentialEpoch: epoch}
	a.succeed(username, source, key)
	a.remember(key, p, nil, gen, ver, a.now().Add(a.CacheTTL))
	return p, nil
}

// checkRobot compares a presented robot token with the stored one.
func (a *Authenticator) checkRobot(ctx context.Context, robot *store.Account, token string) (bool, error) {
	if a.Secrets == nil {
		return false, nil
	}
	info, err := a.Store.GetRobotInfo(ctx, robot.ID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up robot %s: %w", robot.Name, err)
	}
	want, err := a.Secrets.Open(info.TokenEnc, RobotTokenPurpose(robot.Name))
	if err != nil {
		// Another key or a damaged row: no token can match it.
		return false, nil
	}
	if !SecretEqual(string(want), token) {
		return false, nil
	}
	// last_accessed is informational; a failed write must not refuse the login.
	_ = a.Store.TouchRobot(ctx, robot.ID, a.now())
	return true, nil
}

// AccessToken authenticates an OAuth access token (a Bearer header on the
// API, or the password of "$oauthtoken"). The Principal carries the token's
// scopes. It returns ErrInvalidCredentials for an unknown or expired token,
// one made before its account's credentials were revoked, or a disabled
// account, and another error only when the store fails.
func (a *Authenticator) AccessToken(ctx context.Context, token string) (*Principal, error) {
	a.init()
	if token == "" || len(token) > maxTokenCredential {
		return nil, ErrInvalidCredentials
	}
	key := a.cacheKey(OAuthTokenUser, token)
	now := a.now()
	a.mu.Lock()
	if c, ok := a.ok[key]; ok && a.fresh(c, now) {
		a.mu.Unlock()
		return c.principal, nil
	}
	gen, ver := a.gen, a.Revoker.Version()
	a.mu.Unlock()

	t, err := a.Store.GetAccessTokenByHash(ctx, HashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrInvalidCredentials
	}
	if err != nil {
		return nil, fmt.Errorf("look up access token: %w", err)
	}
	expires := now.Add(a.CacheTTL)
	if t.ExpiresAt != nil {
		if !now.Before(*t.ExpiresAt) {
			return nil, ErrInvalidCredentials
		}
		expires = minTime(expires, *t.ExpiresAt)
	}
	acct, err := a.Store.GetAccountByID(ctx, t.AccountID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrInvalidCredentials
	}
	if err != nil {
		return nil, fmt.Errorf("look up token owner: %w", err)
	}
	if !acct.Enabled || acct.Kind != store.KindUser {
		return nil, ErrInvalidCredentials
	}
	// The epoch is read after the token: a token made under an older epoch
	// than the one known here predates a revocation of its account.
	epoch := a.Revoker.Epoch(acct.Name)
	if epoch > t.CredentialEpoch {
		return nil, ErrInvalidCredentials
	}
	scopes, err := ParseOAuthScopes(t.Scopes)
	if err != nil {
		// A token whose scopes this version does not know grants nothing.
		return nil, ErrInvalidCredentials
	}
	p := &Principal{Account: acct, Scopes: scopes, CredentialEpoch: epoch}
	a.remember(key, p, []string{OAuthAppSubject(t.ApplicationID), OAuthTokenSubject(t.ID)}, gen, ver, expires)
	return p, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// remember caches a successful login (with grants, a token login's
// revocation subjects besides its account) until expires, unless Forget
// ran (gen) or a credential epoch rose (ver) since the login read the
// store.
func (a *Authenticator) remember(key [sha256.Size]byte, p *Principal, grants []string, gen, ver uint64, expires time.Time) {
	now := a.now()
	epoch := a.Revoker.Epoch(p.Account.Name)
	ge := make([]grantEpoch, len(grants))
	for i, g := range grants {
		ge[i] = grantEpoch{subject: g, epoch: a.Revoker.Epoch(g)}
	}
	if a.Revoker.Version() != ver {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen != a.gen {
		return
	}
	if len(a.ok) >= max(a.okSweep, minSweep) {
		for k, c := range a.ok {
			if !now.Before(c.expires) {
				delete(a.ok, k)
			}
		}
		a.okSweep = 2 * len(a.ok)
	}
	a.ok[key] = cachedLogin{principal: p, expires: expires, epoch: epoch, grants: ge}
}

// Forget drops every remembered success of username (its password, robot
// token or access tokens), so that a password change, a regenerated robot
// token, a deleted token or a disabled account takes effect on the next
// request.
func (a *Authenticator) Forget(username string) {
	a.init()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	delete(a.knownGood, username)
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

// throttles returns the throttles an attempt for username from source
// goes through: the pair's, and the source's own when the source is
// known.
func throttles(username, source string) []throttleKey {
	if source == "" {
		return []throttleKey{{user: username}}
	}
	return []throttleKey{{user: username, source: source}, {source: source}}
}

// reserve books the next check slot for username from source in each of
// its throttles and returns how long to wait for the later one. Called with
// a.mu held.
func (a *Authenticator) reserve(username, source string, now time.Time) (time.Duration, error) {
	keys := throttles(username, source)
	slots := make([]time.Time, len(keys))
	var wait time.Duration
	for i, k := range keys {
		f := a.fails[k]
		if f == nil {
			continue
		}
		if now.Sub(f.last) > failureMemory {
			delete(a.fails, k)
			continue
		}
		slots[i] = f.next
		if slots[i].Before(now) {
			slots[i] = now
		}
		wait = max(wait, slots[i].Sub(now))
	}
	if wait > a.MaxDelay {
		return 0, &ThrottledError{RetryAfter: wait}
	}
	// Concurrent attempts queue one delay apart, so parallel guessing gains
	// nothing over sequential guessing.
	for i, k := range keys {
		if f := a.fails[k]; f != nil && !slots[i].IsZero() {
			f.next = slots[i].Add(a.delay(k, f.count))
		}
	}
	return wait, nil
}

// fail records a failed check of username from source with the secret
// whose cache key is key. A known good secret that failed (the password
// changed) stops skipping the queue.
func (a *Authenticator) fail(username, source string, key [sha256.Size]byte) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.knownGood[username].key == key {
		delete(a.knownGood, username)
	}
	for _, k := range throttles(username, source) {
		f := a.fails[k]
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
			a.fails[k] = f
		}
		f.count++
		f.last = now
		if next := now.Add(a.delay(k, f.count)); next.After(f.next) {
			f.next = next
		}
	}
}

// succeed records a good check of username from source with the secret
// whose cache key is key: the pair's failures are forgotten (the source's
// are not, or one valid account would let a sprayer start afresh) and the
// secret becomes the username's known good one.
func (a *Authenticator) succeed(username, source string, key [sha256.Size]byte) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.fails, throttleKey{user: username, source: source})
	if _, ok := a.knownGood[username]; !ok && len(a.knownGood) >= max(a.knownGoodSweep, minSweep) {
		for u, k := range a.knownGood {
			if now.Sub(k.seen) > knownGoodMemory {
				delete(a.knownGood, u)
			}
		}
		a.knownGoodSweep = 2 * len(a.knownGood)
	}
	a.knownGood[username] = knownSecret{key: key, seen: now}
}

// delay is throttle k's spacing after n consecutive failures: a source's
// own throttle lets sourceFreeFailures pass first.
func (a *Authenticator) delay(k throttleKey, n int) time.Duration {
	if k.user == "" {
		if n <= sourceFreeFailures {
			return 0
		}
		n -= sourceFreeFailures
	}
	d := a.BaseDelay
	for i := 1; i < n && d < a.MaxDelay; i++ {
		d *= 2
	}
	return min(d, a.MaxDelay)
}

// ForgetAll drops every remembered success (after deleting many tokens at
// once, such as an OAuth application's).
func (a *Authenticator) ForgetAll() {
	a.init()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	clear(a.ok)
}
