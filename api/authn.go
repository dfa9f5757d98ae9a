package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/jsonerr"
	"github.com/berth-dev/berth/internal/store"
)

// Session cookie and CSRF header names.
const (
	SessionCookie = "berth_session"
	CSRFHeader    = "X-CSRF-Token"
)

// Context keys set by authenticate.
const (
	keyPrincipal = "berth.principal"
	keySession   = "berth.session"
)

// maxBody bounds a JSON request body.
const maxBody = 1 << 20

// authenticate identifies the caller: a Bearer OAuth access token, Basic
// credentials (a password, a robot token, or "$oauthtoken" and a token), or
// the session cookie. Presented credentials that fail are a 401 (429 while
// throttled); no credentials at all is an anonymous caller. Cookie callers
// must send X-Requested-With (Quay's browser guard, unless
// BROWSER_API_CALLS_XHR_ONLY is false) and, on writes, the session's CSRF
// token in X-CSRF-Token.
func (a *API) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		ctx := r.Context()
		h := r.Header.Get("Authorization")
		var who *auth.Principal
		var err error
		switch {
		case hasScheme(h, "Bearer"):
			who, err = a.o.Authenticator.AccessToken(ctx, strings.TrimSpace(h[len("Bearer "):]))
		case hasScheme(h, "Basic"):
			user, pw, ok := r.BasicAuth()
			if !ok {
				return Unauthorized()
			}
			who, err = a.o.Authenticator.Basic(ctx, user, pw)
		case h != "":
			return Unauthorized()
		default:
			ck, cerr := r.Cookie(SessionCookie)
			if cerr != nil || ck.Value == "" {
				break
			}
			sess, p, serr := a.sessionPrincipal(c, ck.Value)
			if serr != nil {
				return serr
			}
			if p == nil {
				break // expired or unknown session: anonymous
			}
			if a.xhrOnly && r.Header.Get("X-Requested-With") == "" {
				return BadRequest("API calls must be invoked with an X-Requested-With header if called from a browser")
			}
			if !safeMethod(r.Method) && !auth.SecretEqual(r.Header.Get(CSRFHeader), sess.CSRFToken) {
				return &Error{Status: http.StatusForbidden, Type: "invalid_request", Detail: "CSRF token was invalid or missing."}
			}
			c.Set(keySession, sess)
			c.Response().Header().Set(CSRFHeader, sess.CSRFToken)
			who = p
		}
		if err != nil {
			return a.loginError(c, err)
		}
		c.Set(keyPrincipal, who)
		return next(c)
	}
}

// loginError maps an authentication failure to a response.
func (a *API) loginError(c echo.Context, err error) error {
	var te *auth.ThrottledError
	switch {
	case errors.As(err, &te):
		return &Error{Status: http.StatusTooManyRequests, Type: "too_many_requests",
			Detail: "Too many failed login attempts", RetryAfter: te.RetryAfter}
	case errors.Is(err, auth.ErrRobotsDisallowed):
		e := Unauthorized()
		e.Detail = "Robot accounts have been disabled. Please contact your administrator."
		return e
	case errors.Is(err, auth.ErrInvalidCredentials):
		e := Unauthorized()
		e.Detail = "Invalid username or password"
		return e
	}
	return Internal(err)
}

func hasScheme(h, scheme string) bool {
	return len(h) > len(scheme) && h[len(scheme)] == ' ' && strings.EqualFold(h[:len(scheme)], scheme)
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// Caller returns the principal the request acts for (anonymous: a nil
// Account; never nil itself).
func Caller(c echo.Context) *auth.Principal {
	if p, _ := c.Get(keyPrincipal).(*auth.Principal); p != nil {
		return p
	}
	return &auth.Principal{}
}

// RequireAccount returns the caller's account, or a 401 for anonymous
// callers.
func RequireAccount(c echo.Context) (*store.Account, error) {
	p := Caller(c)
	if p.IsAnonymous() {
		return nil, Unauthorized()
	}
	return p.Account, nil
}

// RequireUser returns the caller's account when it is a user (not a robot):
// 401 for anonymous callers, 403 for robots.
func RequireUser(c echo.Context) (*store.Account, error) {
	acct, err := RequireAccount(c)
	if err != nil {
		return nil, err
	}
	if acct.Kind != store.KindUser {
		return nil, Forbidden()
	}
	return acct, nil
}

// RequireScope refuses (403) an OAuth caller lacking scope s.
func RequireScope(c echo.Context, s auth.OAuthScope) error {
	if !Caller(c).HasScope(s) {
		return Forbidden()
	}
	return nil
}

// RequireRepo finds the repository namespace/name and checks that the
// caller holds at least role need on it. A repository that does not exist,
// or that the caller cannot see at all, is a 404; a visible one without the
// role is a 401 for anonymous callers and a 403 otherwise. It returns the
// repository and the caller's role on it.
func (a *API) RequireRepo(c echo.Context, namespace, name string, need store.Role) (*store.Repository, store.Role, error) {
	ctx := c.Request().Context()
	who := Caller(c)
	// Anonymous callers are asked to log in whether the repository is
	// missing or hidden, so that the answer tells them nothing either way.
	hidden := NotFound()
	if who.IsAnonymous() {
		hidden = Unauthorized()
	}
	repo, err := a.o.Store.GetRepository(ctx, namespace, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", hidden
	}
	if err != nil {
		return nil, "", Internal(err)
	}
	role, err := a.o.Policy.RepositoryRole(ctx, who, repo)
	if err != nil {
		return nil, "", Internal(err)
	}
	switch {
	case role == "":
		return nil, "", hidden
	case !auth.RoleAtLeast(role, need) && who.IsAnonymous():
		return nil, "", Unauthorized()
	case !auth.RoleAtLeast(role, need):
		return nil, "", Forbidden()
	}
	return repo, role, nil
}

// repoFromPath is RequireRepo for the :namespace and :repo path parameters.
func (a *API) repoFromPath(c echo.Context, need store.Role) (*store.Repository, store.Role, error) {
	return a.RequireRepo(c, Param(c, "namespace"), Param(c, "repo"), need)
}

// Param returns a path parameter, percent-decoded.
func Param(c echo.Context, name string) string {
	v := c.Param(name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

// DecodeJSON reads the request body as JSON into v. An empty body leaves v
// as it is when optional is true and is a 400 otherwise; malformed JSON,
// a body over 1 MiB or a value of the wrong type is a 400.
func DecodeJSON(c echo.Context, v any, optional bool) error {
	r := c.Request()
	b, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request", Detail: "Request body too large"}
		}
		return BadRequest("Could not read the request body")
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if optional {
			return nil
		}
		return BadRequest("Missing JSON body")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return BadRequest("Malformed JSON body: " + jsonerr.Problem(err))
	}
	// Only white space may follow the value (More misses a stray '}').
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return BadRequest("Malformed JSON body: trailing data")
	}
	return nil
}
