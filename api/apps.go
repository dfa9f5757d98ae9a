package api

import (
	"errors"
	"net/http"

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
		Description: `Body {"scopes": ["repo:read", ...]}; returns {"access_token", "token_type": "Bearer", "scope"}. The token is shown only once. Needs a password, robot-free login or session (not another OAuth token).`,
		Body:        []string{"scopes"}}, a.generateToken)
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
	tok, err := a.createAccessToken(c, acct, app.ID, scopes)
	if err != nil {
		return err
	}
	scope := ""
	for i, s := range scopes {
		if i > 0 {
			scope += " "
		}
		scope += string(s)
	}
	return c.JSON(http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "scope": scope})
}
