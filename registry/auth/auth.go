// Package auth is the HTTP edge of authentication for /v2: the token
// endpoint clients call after a challenge (GET /v2/auth), the check every
// registry handler makes before acting, and the spec's challenge responses.
// The decisions themselves (who may do what) live in internal/auth.
package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	iauth "github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
)

// Limits on one token request.
const (
	// MaxScopes is the most resources one token request may name.
	MaxScopes = 32
	// maxScopeBytes bounds the scope parameters together.
	maxScopeBytes = 16 << 10
	// maxFormBytes bounds a POST token request's body.
	maxFormBytes = 64 << 10
)

// Error codes of the distribution spec used in auth failures.
const (
	CodeUnauthorized    = "UNAUTHORIZED"
	CodeDenied          = "DENIED"
	CodeTooManyRequests = "TOOMANYREQUESTS"
)

// Server authenticates /v2 requests and issues their bearer tokens.
type Server struct {
	Policy        *iauth.Policy
	Authenticator *iauth.Authenticator
	Tokens        *iauth.TokenService
	// ExternalURL is the registry's base URL as clients see it, without a
	// trailing slash; the challenge's realm is ExternalURL + "/v2/auth".
	// nil: the request's scheme and Host.
	ExternalURL func(r *http.Request) string
	// Service names this registry in challenges and as the tokens'
	// audience when the client sends none. nil: the request's Host.
	Service func(r *http.Request) string
	// Logger receives refusals and failures; nil means slog.Default().
	Logger *slog.Logger
}

// ServerOptions configures NewServer. It has exactly Server's fields, so
// that the two cannot drift apart (NewServer converts one to the other).
type ServerOptions struct {
	Policy        *iauth.Policy
	Authenticator *iauth.Authenticator
	Tokens        *iauth.TokenService
	ExternalURL   func(r *http.Request) string
	Service       func(r *http.Request) string
	Logger        *slog.Logger
}

// NewServer returns a Server for o. Policy, Authenticator and Tokens are
// required; a missing one is a wiring bug and panics here rather than on the
// first request.
func NewServer(o ServerOptions) *Server {
	if o.Policy == nil || o.Authenticator == nil || o.Tokens == nil {
		panic("regauth.NewServer: Policy, Authenticator and Tokens are required")
	}
	s := Server(o)
	return &s
}

// ChallengeError is an authentication or authorization refusal, to be sent
// to the client with WriteChallenge. Any other error from Authorize is an
// internal failure (the store is down) and deserves a 500.
type ChallengeError struct {
	// Status is 401 (no, bad or expired credentials), 403 (valid
	// credentials without the grant) or 429 (login throttled).
	Status int
	// Header is the WWW-Authenticate value; empty for 429.
	Header string
	// Code is the spec's error code: UNAUTHORIZED, DENIED or TOOMANYREQUESTS.
	Code    string
	Message string
	// RetryAfter is set for 429.
	RetryAfter time.Duration
	// Err is the cause, for logs; never shown to the client.
	Err error
}

func (e *ChallengeError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

func (e *ChallengeError) Unwrap() error { return e.Err }

// errorBody is the distribution spec's error envelope.
type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// WriteChallenge sends err as the spec's JSON error with its
// WWW-Authenticate (or Retry-After) header.
func WriteChallenge(w http.ResponseWriter, err *ChallengeError) {
	h := w.Header()
	if err.Header != "" {
		h.Set("WWW-Authenticate", err.Header)
	}
	if err.RetryAfter > 0 {
		h.Set("Retry-After", RetryAfter(err.RetryAfter))
	}
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	h.Set("Content-Type", "application/json")
	w.WriteHeader(err.Status)
	_ = json.NewEncoder(w).Encode(errorBody{Errors: []errorEntry{{Code: err.Code, Message: err.Message}}})
}

// RetryAfter is the Retry-After value for a wait of d: whole seconds,
// rounded up so that a client never comes back too early.
func RetryAfter(d time.Duration) string {
	return strconv.Itoa(int((d + time.Second - 1) / time.Second))
}

// Action lists for ActionsFor; shared, do not modify.
var (
	actionsPull     = []iauth.Action{iauth.Pull}
	actionsPullPush = []iauth.Action{iauth.Pull, iauth.Push}
	actionsDelete   = []iauth.Action{iauth.Delete}
)

// ActionsFor maps a /v2 request method to the actions it needs: reads need
// pull, writes pull and push (a push reads back what it wrote), deletes
// delete. Unknown methods need push, the stronger guess.
func ActionsFor(method string) []iauth.Action {
	switch method {
	case http.MethodGet, http.MethodHead:
		return actionsPull
	case http.MethodDelete:
		return actionsDelete
	}
	return actionsPullPush
}

// Authorize checks that r may perform actions on the repository repo
// ("namespace/name") and returns the principal it acts for. It accepts a
// bearer token from TokenHandler, whose access claim must cover repo and
// actions, or Basic credentials, checked against the policy directly.
// Refusals are *ChallengeError; other errors are internal.
func (s *Server) Authorize(r *http.Request, repo string, actions ...iauth.Action) (*iauth.Principal, error) {
	h := r.Header.Get("Authorization")
	if tok, ok := cutScheme(h, "Bearer"); ok {
		return s.authorizeToken(r, tok, repo, actions)
	}
	if _, ok := cutScheme(h, "Basic"); ok {
		if user, pw, ok := r.BasicAuth(); ok && user == iauth.RegistryTokenUser {
			return s.authorizeToken(r, pw, repo, actions)
		}
		p, err := s.basic(r)
		if err != nil {
			return nil, s.refuseBasic(r, repo, actions, err)
		}
		if ns, name, ok := iauth.SplitRepository(repo); ok {
			granted, _, err := s.Policy.RepositoryActions(r.Context(), p, ns, name)
			if err != nil {
				return nil, err
			}
			if coversAll(granted, actions) {
				return p, nil
			}
		}
		return nil, s.challenge(r, http.StatusForbidden, repo, actions, "", nil)
	}
	return nil, s.challenge(r, http.StatusUnauthorized, repo, actions, "", nil)
}

// authorizeToken checks a token this server issued against repo and actions.
func (s *Server) authorizeToken(r *http.Request, tok, repo string, actions []iauth.Action) (*iauth.Principal, error) {
	c, err := s.Tokens.Verify(r.Context(), tok)
	if err != nil {
		return nil, s.challenge(r, http.StatusUnauthorized, repo, actions, "invalid_token", err)
	}
	if c.Allows(iauth.TypeRepository, repo, actions...) {
		return c.Principal(), nil
	}
	if c.Principal().IsAnonymous() {
		// Ask for credentials rather than deny: logging in may help.
		return nil, s.challenge(r, http.StatusUnauthorized, repo, actions, "insufficient_scope", nil)
	}
	return nil, s.challenge(r, http.StatusForbidden, repo, actions, "insufficient_scope", nil)
}

// AuthorizeBase checks a request that names no repository (GET /v2/): any
// valid credential passes, including an anonymous token; no credential gets
// a challenge without scope.
func (s *Server) AuthorizeBase(r *http.Request) (*iauth.Principal, error) {
	h := r.Header.Get("Authorization")
	if tok, ok := cutScheme(h, "Bearer"); ok {
		c, err := s.Tokens.Verify(r.Context(), tok)
		if err != nil {
			return nil, s.challenge(r, http.StatusUnauthorized, "", nil, "invalid_token", err)
		}
		return c.Principal(), nil
	}
	if _, ok := cutScheme(h, "Basic"); ok {
		if user, pw, ok := r.BasicAuth(); ok && user == iauth.RegistryTokenUser {
			c, err := s.Tokens.Verify(r.Context(), pw)
			if err != nil {
				return nil, s.challenge(r, http.StatusUnauthorized, "", nil, "invalid_token", err)
			}
			return c.Principal(), nil
		}
		p, err := s.basic(r)
		if err != nil {
			return nil, s.refuseBasic(r, "", nil, err)
		}
		return p, nil
	}
	return nil, s.challenge(r, http.StatusUnauthorized, "", nil, "", nil)
}

// basic authenticates the request's Basic credentials.
func (s *Server) basic(r *http.Request) (*iauth.Principal, error) {
	user, pw, ok := r.BasicAuth()
	if !ok {
		return nil, iauth.ErrInvalidCredentials
	}
	return s.Authenticator.Basic(r.Context(), user, pw)
}

// refuseBasic turns a failed Basic login into a challenge, or passes an
// internal error through.
func (s *Server) refuseBasic(r *http.Request, repo string, actions []iauth.Action, err error) error {
	var te *iauth.ThrottledError
	switch {
	case errors.As(err, &te):
		return &ChallengeError{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests,
			Message: "too many failed logins", RetryAfter: te.RetryAfter, Err: err}
	case errors.Is(err, iauth.ErrInvalidCredentials):
		return s.challenge(r, http.StatusUnauthorized, repo, actions, "", err)
	}
	return err
}

// challenge builds a refusal whose WWW-Authenticate sends the client to the
// token endpoint for the scope it needs.
func (s *Server) challenge(r *http.Request, status int, repo string, actions []iauth.Action, bearerErr string, cause error) *ChallengeError {
	var b strings.Builder
	b.WriteString(`Bearer realm=`)
	b.WriteString(quote(s.externalURL(r) + "/v2/auth"))
	b.WriteString(`,service=`)
	b.WriteString(quote(s.service(r)))
	if repo != "" {
		b.WriteString(`,scope=`)
		b.WriteString(quote(iauth.ResourceActions{Type: iauth.TypeRepository, Name: repo, Actions: actions}.String()))
	}
	if bearerErr != "" {
		b.WriteString(`,error=`)
		b.WriteString(quote(bearerErr))
	}
	e := &ChallengeError{Status: status, Header: b.String(), Code: CodeUnauthorized,
		Message: "authentication required", Err: cause}
	if status == http.StatusForbidden {
		e.Code, e.Message = CodeDenied, "requested access to the resource is denied"
	}
	return e
}

func (s *Server) externalURL(r *http.Request) string {
	if s.ExternalURL != nil {
		return strings.TrimSuffix(s.ExternalURL(r), "/")
	}
	return config.RequestURL(r)
}

func (s *Server) service(r *http.Request) string {
	if s.Service != nil {
		return s.Service(r)
	}
	return r.Host
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// cutScheme returns the credentials after an Authorization scheme, which is
// matched case-insensitively (RFC 9110).
func cutScheme(h, scheme string) (string, bool) {
	if len(h) > len(scheme) && h[len(scheme)] == ' ' && strings.EqualFold(h[:len(scheme)], scheme) {
		return strings.TrimLeft(h[len(scheme)+1:], " "), true
	}
	return "", false
}

// quote makes an RFC 9110 quoted-string.
func quote(s string) string {
	if !strings.ContainsAny(s, `"\`) {
		return `"` + s + `"`
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func coversAll(granted, need []iauth.Action) bool {
	for _, n := range need {
		if !iauth.Covers(granted, n) {
			return false
		}
	}
	return true
}
