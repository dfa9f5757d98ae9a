package api

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

// SessionLifetime is how long a web login lasts.
const SessionLifetime = 24 * time.Hour

func (a *API) sessionRoutes() {
	a.Route(http.MethodPost, "/signin", Doc{Tag: "user", Summary: "Sign in with a username and password; sets the session cookie and returns the CSRF token.",
		Body: []string{"username", "password"}}, a.signin)
	a.Route(http.MethodPost, "/signout", Doc{Tag: "user", Summary: "End the web session."}, a.signout)
}

// sessionPrincipal resolves a session cookie. An unknown or expired
// session, one whose account is gone or disabled, or one begun before the
// account's credentials were revoked (a password change on any server of
// the database), is (nil, nil, nil): the caller is anonymous.
func (a *API) sessionPrincipal(c echo.Context, cookie string) (*store.Session, *auth.Principal, error) {
	ctx := c.Request().Context()
	if len(cookie) > 128 {
		return nil, nil, nil
	}
	s, err := a.o.Store.GetSession(ctx, auth.HashToken(cookie))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, Internal(err)
	}
	if !a.now().Before(s.ExpiresAt) {
		_ = a.o.Store.DeleteSession(ctx, s.IDHash)
		return nil, nil, nil
	}
	acct, err := a.o.Store.GetAccountByID(ctx, s.AccountID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, Internal(err)
	}
	if !acct.Enabled {
		return nil, nil, nil
	}
	if a.o.Revoker.Epoch(acct.Name) > s.CredentialEpoch {
		_ = a.o.Store.DeleteSession(ctx, s.IDHash)
		return nil, nil, nil
	}
	return s, &auth.Principal{Account: acct, CredentialEpoch: s.CredentialEpoch}, nil
}

type signinBody struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// signin checks a user's password (throttled like every login) and starts
// a session: the cookie holds a random id (only its hash is stored), and the
// CSRF token comes back in the body and the X-CSRF-Token header.
func (a *API) signin(c echo.Context) error {
	var b signinBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	if b.Username == "" || b.Password == "" {
		return BadRequest("username and password are required")
	}
	ctx := c.Request().Context()
	if b.Username == auth.OAuthTokenUser || b.Username == auth.TokenUser || strings.Contains(b.Username, "+") {
		// Sessions are for people: tokens and robots call the API directly.
		return a.loginError(c, auth.ErrInvalidCredentials)
	}
	p, err := a.o.Authenticator.Basic(ctx, b.Username, b.Password)
	if err != nil {
		return a.loginError(c, err)
	}
	id := auth.RandomString(43, auth.MixedAlnum)
	now := a.now()
	s := &store.Session{
		IDHash: auth.HashToken(id), AccountID: p.Account.ID,
		CSRFToken: auth.RandomString(32, auth.MixedAlnum),
		CreatedAt: now, ExpiresAt: now.Add(SessionLifetime),
		CredentialEpoch: p.CredentialEpoch,
	}
	if err := a.o.Store.CreateSession(ctx, s); err != nil {
		return Internal(err)
	}
	c.SetCookie(&http.Cookie{
		Name: SessionCookie, Value: id, Path: "/", Expires: s.ExpiresAt,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: a.secureCookies(c.Request()),
	})
	c.Response().Header().Set(CSRFHeader, s.CSRFToken)
	return c.JSON(http.StatusOK, map[string]any{"success": true, "csrf_token": s.CSRFToken})
}

func (a *API) signout(c echo.Context) error {
	if s, _ := c.Get(keySession).(*store.Session); s != nil {
		if err := a.o.Store.DeleteSession(c.Request().Context(), s.IDHash); err != nil && !errors.Is(err, store.ErrNotFound) {
			return Internal(err)
		}
	}
	c.SetCookie(&http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: a.secureCookies(c.Request())})
	return c.JSON(http.StatusOK, map[string]any{"success": true})
}

// secureCookies reports whether the session cookie must be Secure: clients
// reach the server over https, by its external URL or by
// PREFERRED_URL_SCHEME, which says so when a TLS-terminating proxy hands
// berth plain http and SERVER_HOSTNAME is unset.
func (a *API) secureCookies(r *http.Request) bool {
	return strings.EqualFold(a.o.Config.PreferredURLScheme, "https") || strings.HasPrefix(a.externalURL(r), "https://")
}
