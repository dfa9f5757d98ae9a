package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/berth-dev/berth/internal/store"
)

// Token service defaults.
const (
	DefaultIssuer        = "berth"
	DefaultTokenLifetime = 300 * time.Second
	// minTokenLifetime is the spec's floor for expires_in.
	minTokenLifetime = 60 * time.Second
	// clockSkew is tolerated on nbf/exp/iat between the node that issued a
	// token and the one verifying it.
	clockSkew = 30 * time.Second
	// maxTokenLen refuses absurd Authorization headers before parsing.
	maxTokenLen = 16 << 10
	// maxCachedTokens bounds the verified-token cache; past it tokens are
	// still verified, just not remembered.
	maxCachedTokens = 1 << 16
)

var (
	// ErrInvalidToken is wrapped by every Verify failure: bad signature,
	// wrong key or issuer, expired, not yet valid, malformed or revoked.
	ErrInvalidToken = errors.New("invalid token")
	// ErrTokenRevoked is wrapped (along with ErrInvalidToken) when the
	// subject's credentials were revoked after the token was issued.
	ErrTokenRevoked = errors.New("token revoked")
)

// Claims is a registry bearer token's claim set, as the distribution token
// spec defines it, plus the subject's credential epoch.
type Claims struct {
	jwt.RegisteredClaims
	Access []ResourceActions `json:"access"`
	// Epoch is the subject's credential epoch at issue time (see
	// TokenRevoker); omitted while it is zero.
	Epoch uint64 `json:"epoch,omitempty"`
	// Scoped records that the subject was limited by OAuth scopes when the
	// token was issued: the access claim is then all the token may ever be
	// used for, never the subject's full rights.
	Scoped bool `json:"scoped,omitempty"`
	// Grant names the revocable grant the token was issued under besides
	// its subject (a build attempt's registry access, see BuildGrant), and
	// GrantEpoch is the grant's epoch at issue time: revoking the grant
	// ends the token and every token issued on its strength.
	Grant      string `json:"grant,omitempty"`
	GrantEpoch uint64 `json:"grant_epoch,omitempty"`

	principal *Principal
	expires   time.Time // ExpiresAt plus the tolerated skew
}

// Principal is the identity the token was issued to. Its Account, when not
// anonymous, carries only the Name (and Enabled): building it costs no store
// round trip. Look the account up by name when more is needed.
func (c *Claims) Principal() *Principal { return c.principal }

// Allows reports whether the access claim grants every one of actions on
// the resource typ/name.
func (c *Claims) Allows(typ, name string, actions ...Action) bool {
	for i := range c.Access {
		ra := &c.Access[i]
		if ra.Type == typ && ra.Name == name && coversEach(ra.Actions, actions) {
			return true
		}
	}
	return false
}

// Token is an issued bearer token.
type Token struct {
	Token     string
	ExpiresIn int // seconds
	IssuedAt  time.Time
}

// TokenRevoker keeps a credential epoch per subject. Tokens record their
// subject's epoch when issued; Revoke raises it, so every token issued
// earlier fails verification, cached or not. Verification reads only the
// in-memory copy, never the database.
//
// With Store set, epochs persist: Revoke writes the new epoch before it
// takes effect, Sync loads what the database holds (at start, so a restart
// does not bring revoked tokens back to life, and then periodically, so a
// revocation made by another server on the same database reaches this one
// within the sync interval). Without Store (unit tests) epochs live in
// memory only. The zero value is ready.
type TokenRevoker struct {
	// Store persists the epochs; nil keeps them in memory.
	Store EpochStore

	mu     sync.RWMutex
	epochs map[string]uint64
	// forgetAt holds, for subjects revoked with RevokeUntil, when their
	// epoch is no longer needed.
	forgetAt map[string]time.Time
	version  uint64    // counts raises, for Version
	synced   time.Time // newest UpdatedAt Sync has seen
}

// EpochStore is where credential epochs persist: the metadata store.
type EpochStore interface {
	BumpCredentialEpoch(ctx context.Context, subject string) (uint64, error)
	BumpExpiringCredentialEpoch(ctx context.Context, subject string, keepUntil time.Time) (uint64, error)
	CredentialEpochsSince(ctx context.Context, since time.Time) ([]store.CredentialEpoch, error)
	DeleteExpiredCredentialEpochs(ctx context.Context, now time.Time) (int64, error)
}

// syncOverlap is how far before the newest change it has seen Sync asks
// again: another server's clock may lag this one's, and reading a few
// changes twice is harmless (raise is idempotent).
const syncOverlap = time.Minute

// Revoke invalidates every token issued to subject so far. With a Store
// the new epoch is written first; on a write error nothing changes and
// the error is returned, so the caller does not report a revocation that
// a restart would undo.
func (r *TokenRevoker) Revoke(ctx context.Context, subject string) error {
	if r.Store == nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.raiseLocked(subject, r.epochs[subject]+1)
		return nil
	}
	epoch, err := r.Store.BumpCredentialEpoch(ctx, subject)
	if err != nil {
		return fmt.Errorf("auth: revoke %s: %w", subject, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.raiseLocked(subject, epoch)
	return nil
}

// RevokeUntil is Revoke for a subject whose tokens all expire by
// tokensExpireBy, such as a build attempt's grant (no token is issued
// under it once it is revoked). Its epoch is forgotten, here and in the
// Store, once that time and the tolerated clock skew have passed: no token
// it could refuse is valid any more, and the epochs of finished builds do
// not pile up.
func (r *TokenRevoker) RevokeUntil(ctx context.Context, subject string, tokensExpireBy time.Time) error {
	forget := tokensExpireBy.Add(2 * clockSkew)
	if r.Store == nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.raiseLocked(subject, r.epochs[subject]+1)
		r.forgetLocked(subject, forget)
		return nil
	}
	epoch, err := r.Store.BumpExpiringCredentialEpoch(ctx, subject, forget)
	if err != nil {
		return fmt.Errorf("auth: revoke %s: %w", subject, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.raiseLocked(subject, epoch)
	r.forgetLocked(subject, forget)
	return nil
}

// forgetLocked records that subject's epoch may be dropped at `at`; a
// later time wins.
func (r *TokenRevoker) forgetLocked(subject string, at time.Time) {
	if r.forgetAt == nil {
		r.forgetAt = map[string]time.Time{}
	}
	if at.After(r.forgetAt[subject]) {
		r.forgetAt[subject] = at
	}
}

// Sync loads the epochs changed since the last Sync (all of them the
// first time). It needs a Store.
func (r *TokenRevoker) Sync(ctx context.Context) error {
	if r.Store == nil {
		return errors.New("auth: TokenRevoker.Sync without a Store")
	}
	r.mu.RLock()
	since := r.synced
	r.mu.RUnlock()
	if !since.IsZero() {
		since = since.Add(-syncOverlap)
	}
	changed, err := r.Store.CredentialEpochsSince(ctx, since)
	if err != nil {
		return fmt.Errorf("auth: load credential epochs: %w", err)
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range changed {
		if e.UpdatedAt.After(r.synced) {
			r.synced = e.UpdatedAt
		}
		if !e.KeepUntil.IsZero() && !now.Before(e.KeepUntil) {
			continue // what it revoked has expired
		}
		r.raiseLocked(e.Subject, e.Epoch)
		if !e.KeepUntil.IsZero() {
			r.forgetLocked(e.Subject, e.KeepUntil)
		}
	}
	for subject, at := range r.forgetAt {
		if !now.Before(at) {
			delete(r.epochs, subject)
			delete(r.forgetAt, subject)
		}
	}
	return nil
}

// epochPurgeInterval is how often RunSync deletes the expired epochs from
// the Store.
const epochPurgeInterval = 10 * time.Minute

// RunSync calls Sync every interval until ctx ends, and deletes the
// Store's expired epochs every few minutes, logging failures.
func (r *TokenRevoker) RunSync(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	purge := time.NewTicker(epochPurgeInterval)
	defer purge.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.Sync(ctx); err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, "credential epoch sync failed", "err", err)
			}
		case <-purge.C:
			n, err := r.Store.DeleteExpiredCredentialEpochs(ctx, time.Now())
			if err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, "deleting expired credential epochs failed", "err", err)
			} else if n > 0 {
				log.DebugContext(ctx, "deleted expired credential epochs", "count", n)
			}
		}
	}
}

// raiseLocked sets subject's epoch to epoch unless it is already higher:
// epochs only grow, whichever order the news arrives in.
func (r *TokenRevoker) raiseLocked(subject string, epoch uint64) {
	if r.epochs == nil {
		r.epochs = map[string]uint64{}
	}
	if epoch > r.epochs[subject] {
		r.epochs[subject] = epoch
		r.version++
	}
}

// Version changes whenever any subject's epoch rises: a reader that saw
// the same Version before and after a store read knows no revocation
// landed in between.
func (r *TokenRevoker) Version() uint64 {
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.version
}

// Epoch is subject's current credential epoch.
func (r *TokenRevoker) Epoch(subject string) uint64 {
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.epochs[subject]
}

// TokenService issues and verifies the registry's bearer tokens: JWTs signed
// with Ed25519 (alg EdDSA) whose "kid" header is KeyID of the public key.
//
// Verified tokens are remembered until they expire, so a client repeating a
// token costs a map lookup instead of a signature check; revocation is still
// checked on every call.
type TokenService struct {
	// Issuer is the iss claim (default DefaultIssuer).
	Issuer string
	// Lifetime of issued tokens (default DefaultTokenLifetime, at least 60 s).
	Lifetime time.Duration
	// Revoker holds the credential epochs (never nil after NewTokenService).
	Revoker *TokenRevoker
	// Now is the clock, time.Now unless a test replaces it before use.
	Now func() time.Time

	key ed25519.PrivateKey
	pub ed25519.PublicKey
	kid string

	mu sync.RWMutex
	// cache holds verified claims keyed by the token string itself: the map
	// hashes it with a per-process seed and compares keys exactly, so no
	// collision can substitute claims, and a hit costs tens of nanoseconds
	// where a SHA-256 of the token would alone cost over a microsecond.
	cache   map[string]*Claims
	sweepAt int
}

// NewTokenService returns a service signing with key. lifetime <= 0 means
// DefaultTokenLifetime; lifetimes under 60 s are raised to 60 s, the spec's
// minimum.
func NewTokenService(key ed25519.PrivateKey, lifetime time.Duration) *TokenService {
	if lifetime <= 0 {
		lifetime = DefaultTokenLifetime
	}
	pub := key.Public().(ed25519.PublicKey)
	return &TokenService{
		Issuer:   DefaultIssuer,
		Lifetime: max(lifetime, minTokenLifetime),
		Revoker:  &TokenRevoker{},
		Now:      time.Now,
		key:      key,
		pub:      pub,
		kid:      KeyID(pub),
		cache:    map[string]*Claims{},
	}
}

// KeyID is the "kid" header of the tokens this service signs.
func (s *TokenService) KeyID() string { return s.kid }

// PublicKey verifies this service's tokens.
func (s *TokenService) PublicKey() ed25519.PublicKey { return s.pub }

// Issue signs a token for who (nil or anonymous: empty subject) with the
// audience service and the given access, which the caller has already
// narrowed to what who may do. When who presented a registry token, the new
// one keeps that token's grant and expires no later than it: a token
// cannot be renewed by trading it for another.
func (s *TokenService) Issue(who *Principal, service string, access []ResourceActions) (Token, error) {
	now := s.Now().Truncate(time.Second)
	claims := s.claims(who, service, access, now, now.Add(s.Lifetime))
	claims.Scoped = who != nil && who.Scopes != nil
	if parent := who.Token(); parent != nil {
		claims.Grant, claims.GrantEpoch = parent.Grant, parent.GrantEpoch
		if parent.ExpiresAt != nil && parent.ExpiresAt.Before(claims.ExpiresAt.Time) {
			claims.ExpiresAt = parent.ExpiresAt
		}
	}
	return s.sign(claims, now)
}

// IssueGrant signs a token for who under the revocable grant `grant` (see
// Claims.Grant) that lives `lifetime` (at least 60 s) instead of the
// service's Lifetime. The token is scoped whatever who may do: access is
// all it is good for.
func (s *TokenService) IssueGrant(who *Principal, service string, access []ResourceActions, grant string, lifetime time.Duration) (Token, error) {
	if grant == "" {
		return Token{}, errors.New("sign token: no grant")
	}
	now := s.Now().Truncate(time.Second)
	claims := s.claims(who, service, access, now, now.Add(max(lifetime, minTokenLifetime)))
	claims.Scoped = true
	claims.Grant, claims.GrantEpoch = grant, s.Revoker.Epoch(grant)
	return s.sign(claims, now)
}

// claims are a new token's claims, issued at now.
func (s *TokenService) claims(who *Principal, service string, access []ResourceActions, now, expires time.Time) *Claims {
	var jti [16]byte
	_, _ = rand.Read(jti[:]) // crypto/rand.Read never fails
	sub := who.Name()
	c := &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.Issuer,
			Subject:   sub,
			ExpiresAt: jwt.NewNumericDate(expires),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
		},
		Access: access,
		Epoch:  s.Revoker.Epoch(sub),
	}
	if service != "" {
		c.Audience = jwt.ClaimStrings{service}
	}
	if c.Access == nil {
		c.Access = []ResourceActions{} // the spec wants an array, not null
	}
	return c
}

// ErrTokenTooLarge is returned by Issue and IssueGrant for a token longer
// than Verify accepts (an access claim naming too many resources).
var ErrTokenTooLarge = errors.New("token too large")

func (s *TokenService) sign(c *Claims, now time.Time) (Token, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = s.kid
	signed, err := t.SignedString(s.key)
	if err != nil {
		return Token{}, fmt.Errorf("sign token: %w", err)
	}
	if len(signed) > maxTokenLen {
		return Token{}, fmt.Errorf("sign token: %w: %d bytes, at most %d", ErrTokenTooLarge, len(signed), maxTokenLen)
	}
	return Token{Token: signed, ExpiresIn: max(int(c.ExpiresAt.Sub(now)/time.Second), 0), IssuedAt: now}, nil
}

// Verify checks a bearer token and returns its claims, which are shared
// with other callers presenting the same token: do not modify them. Errors
// wrap ErrInvalidToken. The audience is not checked: only this service holds
// the key, and clients reach one registry under several host names.
func (s *TokenService) Verify(ctx context.Context, token string) (*Claims, error) {
	now := s.Now()
	s.mu.RLock()
	c := s.cache[token]
	s.mu.RUnlock()
	if c == nil {
		var err error
		if c, err = s.parse(token, now); err != nil {
			return nil, err
		}
		s.remember(token, c, now)
	}
	if !now.Before(c.expires) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, jwt.ErrTokenExpired)
	}
	// Older than the subject's epoch: revoked. Newer: issued by another
	// server after a revocation this one has not synced yet, and valid.
	if c.Epoch < s.Revoker.Epoch(c.Subject) || c.Grant != "" && c.GrantEpoch < s.Revoker.Epoch(c.Grant) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, ErrTokenRevoked)
	}
	return c, nil
}

func (s *TokenService) parse(token string, now time.Time) (*Claims, error) {
	if len(token) > maxTokenLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrInvalidToken, len(token))
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(s.Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(clockSkew),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	c := &Claims{}
	_, err := p.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != s.kid {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		return s.pub, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	c.expires = c.ExpiresAt.Add(clockSkew)
	switch {
	case c.Subject != "":
		c.principal = &Principal{Account: &store.Account{Name: c.Subject, Enabled: true}, token: c}
		if c.Scoped {
			// Non-nil and empty: no rights beyond the access claim.
			c.principal.Scopes = []OAuthScope{}
		}
	case c.Grant != "":
		// Anonymous, but tokens issued on its strength keep the grant.
		c.principal = &Principal{token: c}
	default:
		c.principal = anonymous
	}
	return c, nil
}

// Token is the registry token p presented, nil when p authenticated
// otherwise.
func (p *Principal) Token() *Claims {
	if p == nil {
		return nil
	}
	return p.token
}

// ClaimOnly reports whether p presented a scoped registry token, whose
// access claim is all p may do.
func (p *Principal) ClaimOnly() bool {
	c := p.Token()
	return c != nil && c.Scoped
}

// remember caches verified claims, sweeping expired entries when the cache
// has doubled since the last sweep.
func (s *TokenService) remember(token string, c *Claims, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) >= max(s.sweepAt, minSweep) {
		for k, v := range s.cache {
			if !now.Before(v.expires) {
				delete(s.cache, k)
			}
		}
		s.sweepAt = 2 * len(s.cache)
	}
	if len(s.cache) < maxCachedTokens {
		s.cache[token] = c
	}
}
