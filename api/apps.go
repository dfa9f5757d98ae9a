package api

import (
	"errors"
	"math"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

func (a *API) appRoutes() {
	const base = "/organization/:orgname/applications"
	a.Route(http.MethodGet, base, Doc{Tag: "organization", Summary: "List the organization's OAuth applications."}, a.listApps)
	a.Route(http.MethodPost, base, Doc{Tag: "organization", Summary: "Register an OAuth application.",
		Body: []string{"name", "redirect_uri", "application_uri", "description", "avatar_email"}}, a.createApp)
	a.Route(http.MethodGet, base+"/:client_id", Doc{Tag: "organization", Summary: "Get an OAuth application."}, a.getApp)
	a.Route(http.MethodPut, base+"/:client_id", Doc{Tag: "organization", Summary: "Update an OAuth application.",
		Body: []string{"name", "redirect_uri", "application_uri", "description", "avatar_email"}}, a.updateApp)
	a.Route(http.MethodDelete, base+"/:client_id", Doc{Tag: "organization", Summary: "Delete an OAuth application and its tokens."}, a.deleteApp)
	a.Route(http.MethodPost, base+"/:client_id/resetclientsecret", Doc{Tag: "organization", Summary: "Replace an application's client secret."}, a.resetClientSecret)
	a.Route(http.MethodPost, base+"/:client_id/token", Doc{Tag: "organization",
		Summary:     "Generate an access token for the calling user through this application (berth's scriptable form of Quay's Generate Token).",
		Description: `Body {"scopes": ["repo:read", ...]}; returns {"access_token", "token_type": "Bearer", "scope", "expires_in"} (expires_in: seconds, absent when ACCESS_TOKEN_LIFETIME_S is 0). The token is shown only once. Needs a password, robot-free login or session (not another OAuth token).`,
		Body:        []string{"scopes"}}, a.generateToken)
	a.Route(http.MethodGet, "/user/authorizations", Doc{Tag: "user",
		Summary:     "List the caller's OAuth access tokens (not their values).",
		Description: "Needs user:admin from an OAuth caller."}, a.listAuthorizations)
	a.Route(http.MethodGet, "/user/authorizations/:uuid", Doc{Tag: "user", Summary: "Get one of the caller's OAuth access tokens."}, a.getAuthorization)
	a.Route(http.MethodDelete, "/user/authorizations/:uuid", Doc{Tag: "user",
		Summary: "Revoke one of the caller's OAuth access tokens; it stops working at once on every server."}, a.revokeAuthorization)
}

type appView struct {
	Name           string `json:"name"`
	Description    string `json:"description"`
	ApplicationURI string `json:"application_uri"`
	ClientID       string `json:"client_id"`
	ClientSecret   string `json:"client_secret"`
	RedirectURI    string `json:"redirect_uri"`
	AvatarEmail    string `json:"avatar_email"`
}

func (a *API) appView(app *store.OAuthApplication) (appView, error) {
	secret, err := a.o.Secrets.Open(app.ClientSecretEnc, auth.ClientSecretPurpose(app.ClientID))
	if err != nil {
		return appView{}, Internal(err)
	}
	return appView{Name: app.Name, Description: app.Description, ApplicationURI: app.ApplicationURI,
		ClientID: app.ClientID, ClientSecret: string(secret), RedirectURI: app.RedirectURI, AvatarEmail: app.AvatarEmail}, nil
}

type appBody struct {
	Name           *string `json:"name"`
	Description    *string `json:"description"`
	ApplicationURI *string `json:"application_uri"`
	RedirectURI    *string `json:"redirect_uri"`
	AvatarEmail    *string `json:"avatar_email"`
}

func (b *appBody) apply(app *store.OAuthApplication) error {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&app.Name, b.Name)
	set(&app.Description, b.Description)
	set(&app.ApplicationURI, b.ApplicationURI)
	set(&app.RedirectURI, b.RedirectURI)
	set(&app.AvatarEmail, b.AvatarEmail)
	if app.Name == "" || len(app.Name) > 255 {
		return BadRequest("name is required (at most 255 characters)")
	}
	return nil
}

func (a *API) listApps(c echo.Context) error {
	org, err := a.OrgFor(c, Param(c, "orgname"), true)
	if err != nil {
		return err
	}
	apps, err := a.o.Store.ListOAuthApplications(c.Request().Context(), org.ID)
	if err != nil {
		return Internal(err)
	}
	out := []appView{}
	for i := range apps {
		v, err := a.appView(&apps[i])
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	return c.JSON(http.StatusOK, map[string]any{"applications": out})
}

func (a *API) createApp(c echo.Context) error {
	org, err := a.OrgFor(c, Param(c, "orgname"), true)
	if err != nil {
		return err
	}
	var b appBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	app := &store.OAuthApplication{OrgID: org.ID, ClientID: auth.RandomString(auth.ClientIDLen, auth.UpperAlnum), CreatedAt: a.now()}
	if err := b.apply(app); err != nil {
		return err
	}
	a.sealNewClientSecret(app)
	if err := a.o.Store.CreateOAuthApplication(c.Request().Context(), app); err != nil {
		return Internal(err)
	}
	return a.sendAppView(c, app)
}

// sealNewClientSecret gives app a fresh client secret, stored sealed.
func (a *API) sealNewClientSecret(app *store.OAuthApplication) {
	secret := auth.RandomString(auth.ClientSecretLen, auth.UpperAlnum)
	app.ClientSecretEnc = a.o.Secrets.Seal([]byte(secret), auth.ClientSecretPurpose(app.ClientID))
}

// sendAppView answers 200 with Quay's view of app, its secret included.
func (a *API) sendAppView(c echo.Context, app *store.OAuthApplication) error {
	v, err := a.appView(app)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (a *API) appFor(c echo.Context, admin bool) (*store.OAuthApplication, error) {
	org, err := a.OrgFor(c, Param(c, "orgname"), admin)
	if err != nil {
		return nil, err
	}
	app, err := a.o.Store.GetOAuthApplication(c.Request().Context(), org.ID, Param(c, "client_id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, NotFound()
	}
	if err != nil {
		return nil, Internal(err)
	}
	return app, nil
}

func (a *API) getApp(c echo.Context) error {
	app, err := a.appFor(c, true)
	if err != nil {
		return err
	}
	return a.sendAppView(c, app)
}

func (a *API) updateApp(c echo.Context) error {
	app, err := a.appFor(c, true)
	if err != nil {
		return err
	}
	var b appBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	if err := b.apply(app); err != nil {
		return err
	}
	if err := a.o.Store.UpdateOAuthApplication(c.Request().Context(), app); err != nil {
		return Internal(err)
	}
	return a.sendAppView(c, app)
}

func (a *API) deleteApp(c echo.Context) error {
	app, err := a.appFor(c, true)
	if err != nil {
		return err
	}
	if err := a.o.Store.DeleteOAuthApplication(c.Request().Context(), app.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return Internal(err)
	}
	// Its tokens are gone from the store; drop any cached logins with them,
	// here at once and on the other servers of the database at their next
	// revocation sync.
	a.o.Authenticator.ForgetAll()
	if err := a.o.Revoker.Revoke(c.Request().Context(), auth.OAuthAppSubject(app.ID)); err != nil {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (a *API) resetClientSecret(c echo.Context) error {
	app, err := a.appFor(c, true)
	if err != nil {
		return err
	}
	a.sealNewClientSecret(app)
	if err := a.o.Store.UpdateOAuthApplication(c.Request().Context(), app); err != nil {
		return Internal(err)
	}
	return a.sendAppView(c, app)
}

type tokenBody struct {
	Scopes []string `json:"scopes"`
}

// generateToken is Quay's "Generate Token" without the browser: the caller
// authorizes the application for itself and gets the token once. The org
// must be visible to the caller (a member), so that tokens are only minted
// through applications of organizations the user belongs to.
func (a *API) generateToken(c echo.Context) error {
	acct, err := RequireUser(c)
	if err != nil {
		return err
	}
	if Caller(c).Scopes != nil {
		// An OAuth token must not mint another, possibly broader, one.
		return Forbidden()
	}
	app, err := a.appFor(c, false)
	if err != nil {
		return err
	}
	var b tokenBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	scopes, err := auth.ParseOAuthScopes(b.Scopes)
	if err != nil {
		return BadRequest("scopes: use one or more of repo:read, repo:write, repo:admin, repo:create, user:read, user:admin, org:admin, super:user")
	}
	tok, t, err := a.createAccessToken(c, acct, app.ID, scopes, Caller(c).CredentialEpoch)
	if err != nil {
		return err
	}
	out := map[string]any{"access_token": tok, "token_type": "Bearer", "scope": strings.Join(t.Scopes, " ")}
	if t.ExpiresAt != nil {
		out["expires_in"] = int64(math.Round(t.ExpiresAt.Sub(t.CreatedAt).Seconds()))
	}
	return c.JSON(http.StatusOK, out)
}

// authorizationView is one of the caller's access tokens, without its
// value: uuid names it (from the first 128 bits of its stored hash, so
// that the listing leaks nothing that helps guess it), application is nil
// for a token made by `berth admin token create` or /user/initialize.
type authorizationView struct {
	UUID        string                `json:"uuid"`
	Application *authorizationAppView `json:"application"`
	Scopes      []string              `json:"scopes"`
	Created     string                `json:"created"`
	Expires     *string               `json:"expires"`
}

type authorizationAppView struct {
	ClientID     string `json:"clientId"`
	Name         string `json:"name"`
	Organization string `json:"organization"`
}

// tokenUUID formats the first 128 bits of a token's hex SHA-256 as a UUID.
func tokenUUID(hash string) string {
	if len(hash) < 32 {
		return hash
	}
	return hash[0:8] + "-" + hash[8:12] + "-" + hash[12:16] + "-" + hash[16:20] + "-" + hash[20:32]
}

func authorizationOf(t *store.AccessToken) authorizationView {
	v := authorizationView{UUID: tokenUUID(t.TokenHash), Scopes: t.Scopes, Created: FormatDate(t.CreatedAt)}
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if t.ApplicationID != 0 {
		v.Application = &authorizationAppView{ClientID: t.ClientID, Name: t.ApplicationName, Organization: t.ApplicationOrg}
	}
	if t.ExpiresAt != nil {
		e := FormatDate(*t.ExpiresAt)
		v.Expires = &e
	}
	return v
}

// myTokens returns the calling user's access tokens. Tokens are
// credentials: listing and revoking them needs user:admin, as in Quay.
func (a *API) myTokens(c echo.Context) (*store.Account, []store.AccessToken, error) {
	acct, err := RequireUser(c)
	if err != nil {
		return nil, nil, err
	}
	if err := RequireScope(c, auth.ScopeUserAdmin); err != nil {
		return nil, nil, err
	}
	toks, err := a.o.Store.ListAccessTokens(c.Request().Context(), acct.ID)
	if err != nil {
		return nil, nil, Internal(err)
	}
	return acct, toks, nil
}

func (a *API) listAuthorizations(c echo.Context) error {
	_, toks, err := a.myTokens(c)
	if err != nil {
		return err
	}
	out := []authorizationView{}
	for i := range toks {
		out = append(out, authorizationOf(&toks[i]))
	}
	return c.JSON(http.StatusOK, map[string]any{"authorizations": out})
}

// myToken is the caller's token named by the path's uuid (404 otherwise).
func (a *API) myToken(c echo.Context) (*store.Account, *store.AccessToken, error) {
	acct, toks, err := a.myTokens(c)
	if err != nil {
		return nil, nil, err
	}
	want := strings.ToLower(Param(c, "uuid"))
	for i := range toks {
		if tokenUUID(toks[i].TokenHash) == want {
			return acct, &toks[i], nil
		}
	}
	return nil, nil, NotFound()
}

func (a *API) getAuthorization(c echo.Context) error {
	_, t, err := a.myToken(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, authorizationOf(t))
}

// revokeAuthorization deletes one of the caller's tokens. The row goes,
// which every server sees on its next lookup; the token's revocation
// subject ends the logins other servers cached with it.
func (a *API) revokeAuthorization(c echo.Context) error {
	acct, t, err := a.myToken(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := a.o.Store.DeleteAccessToken(ctx, t.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return Internal(err)
	}
	a.o.Authenticator.Forget(acct.Name)
	if err := a.o.Revoker.Revoke(ctx, auth.OAuthTokenSubject(t.ID)); err != nil {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}
