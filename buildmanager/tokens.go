package buildmanager

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token types. A registration token is handed to an executor and lives
// only as long as a worker may take to start; the job token it is
// exchanged for lives as long as the build may run. The typ claim keeps
// one from standing in for the other, and neither is a registry token
// (those have no typ and another audience).
const (
	typRegistration = "berth-build-registration"
	typJob          = "berth-build-job"
	tokenAudience   = "berth-buildmanager"
	tokenIssuer     = "berth"
)

var errBadToken = errors.New("invalid build token")

// jobClaims name one attempt of one build.
type jobClaims struct {
	jwt.RegisteredClaims
	Typ     string `json:"typ"`
	BuildID string `json:"build_id"`
	Attempt int    `json:"attempt"`
}

// tokens signs and checks build tokens with the server's Ed25519 key.
type tokens struct {
	key ed25519.PrivateKey
	pub ed25519.PublicKey
	now func() time.Time
}

func newTokens(key ed25519.PrivateKey) *tokens {
	return &tokens{key: key, pub: key.Public().(ed25519.PublicKey), now: time.Now}
}

func (t *tokens) issue(typ, buildID string, attempt int, lifetime time.Duration) (string, error) {
	now := t.now()
	c := jobClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   buildID,
			Audience:  jwt.ClaimStrings{tokenAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Second)),
			ExpiresAt: jwt.NewNumericDate(now.Add(lifetime)),
		},
		Typ:     typ,
		BuildID: buildID,
		Attempt: attempt,
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(t.key)
	if err != nil {
		return "", fmt.Errorf("sign build token: %w", err)
	}
	return s, nil
}

// verify checks a token of type typ and returns the build and attempt.
func (t *tokens) verify(typ, token string) (string, int, error) {
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithAudience(tokenAudience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(5*time.Second),
		jwt.WithTimeFunc(t.now),
	)
	var c jobClaims
	if _, err := p.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.pub, nil }); err != nil {
		return "", 0, fmt.Errorf("%w: %w", errBadToken, err)
	}
	if c.Typ != typ {
		return "", 0, fmt.Errorf("%w: token type %q, want %q", errBadToken, c.Typ, typ)
	}
	if c.BuildID == "" || c.Attempt <= 0 {
		return "", 0, fmt.Errorf("%w: no build", errBadToken)
	}
	return c.BuildID, c.Attempt, nil
}
