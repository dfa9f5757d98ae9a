package api

import (
	"encoding/base64"
	"errors"
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

func (a *API) userRoutes() {
	a.Route(http.MethodGet, "/user/", Doc{Tag: "user", Summary: "The calling user, with its organizations."}, a.getUser)
	a.Route(http.MethodPost, "/user/initialize", Doc{Tag: "user",
		Summary:     "Create the first superuser of an empty installation (FEATURE_USER_INITIALIZE).",
		Description: "With access_token true the response carries an OAuth access token holding every scope.",
		Body:        []string{"username", "password", "email", "access_token"}}, a.initializeUser)
	a.Route(http.MethodGet, "/user/starred", Doc{Tag: "user", Summary: "Repositories the caller starred."}, a.listStarred)
	a.Route(http.MethodPost, "/user/starred", Doc{Tag: "user", Summary: "Star a repository.",
		Body: []string{"namespace", "repository"}}, a.star)
	a.Route(http.MethodDelete, "/user/starred/:namespace/:repo", Doc{Tag: "user", Summary: "Unstar a repository."}, a.unstar)
}

type orgSummary struct {
	Name               string `json:"name"`
	Avatar             Avatar `json:"avatar"`
	CanCreateRepo      bool   `json:"can_create_repo"`
	Public             bool   `json:"public"`
	IsOrgAdmin         bool   `json:"is_org_admin"`
	PreferredNamespace bool   `json:"preferred_namespace"`
}

func (a *API) getUser(c echo.Context) error {
	acct, err := RequireUser(c)
	if err != nil {
		return err
	}
	if err := RequireScope(c, auth.ScopeUserRead); err != nil {
		return err
	}
	ctx := c.Request().Context()
	who := Caller(c)
	super, err := a.o.Policy.IsSuperuser(ctx, who)
	if err != nil {
		return Internal(err)
	}
	orgs, err := a.o.Store.ListAccounts(ctx, store.KindOrganization)
	if err != nil {
		return Internal(err)
	}
	mine := []orgSummary{}
	for i := range orgs {
		org := &orgs[i]
		roles, err := a.o.Store.OrgTeamRoles(ctx, org.ID, acct.ID)
		if err != nil {
			return Internal(err)
		}
		if len(roles) == 0 {
			continue
		}
		mine = append(mine, orgSummary{
			Name: org.Name, Avatar: avatar(org.Name, org.Email, "org"),
			CanCreateRepo: slices.Contains(roles, store.TeamAdmin) || slices.Contains(roles, store.TeamCreator),
			IsOrgAdmin:    slices.Contains(roles, store.TeamAdmin),
		})
	}
	return c.JSON(http.StatusOK, map[string]any{
		"anonymous": false, "username": acct.Name, "avatar": accountAvatar(acct),
		"can_create_repo": true, "is_me": true, "verified": true, "email": acct.Email,
		"logins": []any{}, "invoice_email": false, "invoice_email_address": nil,
		"preferred_namespace": false, "tag_expiration_s": DefaultTagExpirationS, "prompts": []any{},
		"super_user": super, "enabled": acct.Enabled, "organizations": mine,
	})
}

type initializeBody struct {
	Username    string `json:"username"`
	Password    string `json:"password"`
	Email       string `json:"email"`
	AccessToken bool   `json:"access_token"`
}

// initializeUser creates the first user, a superuser, while the user table
// is empty, and optionally an all-scopes access token for scripts.
func (a *API) initializeUser(c echo.Context) error {
	if !a.o.Config.Feature("USER_INITIALIZE", false) {
		return NotFound()
	}
	var b initializeBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	if !ValidNamespaceName(b.Username) {
		return BadRequest("Invalid username: use 2-255 lowercase letters, digits and single separators (. _ -)")
	}
	if len(b.Password) < 8 {
		return BadRequest("The password must be at least 8 characters long")
	}
	ctx := c.Request().Context()
	n, err := a.o.Store.CountAccounts(ctx, store.KindUser)
	if err != nil {
		return Internal(err)
	}
	if n > 0 {
		return BadRequest("Cannot initialize user in a non-empty database")
	}
	hash, err := auth.HashPassword(b.Password)
	if errors.Is(err, auth.ErrPasswordTooLong) {
		return BadRequest("The password is too long")
	} else if err != nil {
		return Internal(err)
	}
	acct := &store.Account{Kind: store.KindUser, Name: b.Username, Email: b.Email, PasswordHash: hash, Superuser: true, Enabled: true}
	if err := a.o.Store.CreateAccount(ctx, acct); errors.Is(err, store.ErrConflict) {
		return BadRequest("Cannot initialize user in a non-empty database")
	} else if err != nil {
		return Internal(err)
	}
	// Two concurrent initializations can both see an empty table; the later
	// one must not leave a second superuser behind.
	if n, err := a.o.Store.CountAccounts(ctx, store.KindUser); err != nil {
		return Internal(err)
	} else if n > 1 {
		users, err := a.o.Store.ListAccounts(ctx, store.KindUser)
		if err != nil {
			return Internal(err)
		}
		if oldest(users).ID != acct.ID {
			if err := a.o.Store.DeleteAccount(ctx, acct.ID); err != nil {
				return Internal(err)
			}
			return BadRequest("Cannot initialize user in a non-empty database")
		}
	}
	out := map[string]any{
		"username": acct.Name, "email": acct.Email,
		"encrypted_password": base64.StdEncoding.EncodeToString(a.o.Secrets.Seal([]byte(b.Password), "encrypted-password:"+acct.Name)),
	}
	if b.AccessToken {
		tok, _, err := a.createAccessToken(c, acct, 0, auth.AllScopes, a.o.Revoker.Epoch(acct.Name))
		if err != nil {
			return err
		}
		out["access_token"] = tok
	}
	a.log.InfoContext(ctx, "first superuser initialized", "user", acct.Name)
	return c.JSON(http.StatusOK, out)
}

// oldest returns the account with the smallest ID.
func oldest(accts []store.Account) *store.Account {
	o := &accts[0]
	for i := range accts {
		if accts[i].ID < o.ID {
			o = &accts[i]
		}
	}
	return o
}

// createAccessToken makes an OAuth access token for acct and returns it
// with its stored record; only its hash is stored. It expires after
// ACCESS_TOKEN_LIFETIME_S, and ends early once acct's credential epoch
// rises past epoch, the one the caller's credentials were checked under.
func (a *API) createAccessToken(c echo.Context, acct *store.Account, appID int64, scopes []auth.OAuthScope, epoch uint64) (string, *store.AccessToken, error) {
	lifetime, err := AccessTokenLifetime(a.o.Config)
	if err != nil {
		return "", nil, Internal(err)
	}
	tok := auth.RandomString(auth.AccessTokenLen, auth.MixedAlnum)
	now := a.now()
	t := &store.AccessToken{
		ApplicationID: appID, AccountID: acct.ID, TokenHash: auth.HashToken(tok),
		Scopes: auth.ScopeStrings(scopes), CreatedAt: now, CredentialEpoch: epoch,
	}
	if lifetime > 0 {
		expires := now.Add(lifetime)
		t.ExpiresAt = &expires
	}
	if err := a.o.Store.CreateAccessToken(c.Request().Context(), t); err != nil {
		return "", nil, Internal(err)
	}
	return tok, t, nil
}

type starBody struct {
	Namespace  string `json:"namespace"`
	Repository string `json:"repository"`
}

func (a *API) listStarred(c echo.Context) error {
	acct, err := RequireUser(c)
	if err != nil {
		return err
	}
	if err := RequireScope(c, auth.ScopeRepoRead); err != nil {
		return err
	}
	ctx := c.Request().Context()
	repos, err := a.o.Store.ListStarred(ctx, acct.ID)
	if err != nil {
		return Internal(err)
	}
	out := []map[string]any{}
	for i := range repos {
		r := &repos[i]
		role, err := a.o.Policy.RepositoryRole(ctx, Caller(c), r)
		if err != nil {
			return Internal(err)
		}
		if role != "" {
			out = append(out, map[string]any{"namespace": r.Namespace, "name": r.Name, "description": r.Description,
				"is_public": r.Visibility == store.Public, "kind": "image"})
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"repositories": out})
}

// star and unstar change the user's own data: OAuth callers need
// user:admin, as in Quay (robots are refused: they star nothing).
func (a *API) star(c echo.Context) error {
	acct, err := RequireUser(c)
	if err != nil {
		return err
	}
	if err := RequireScope(c, auth.ScopeUserAdmin); err != nil {
		return err
	}
	var b starBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	if b.Namespace == "" || b.Repository == "" {
		return BadRequest("namespace and repository are required")
	}
	repo, _, err := a.RequireRepo(c, b.Namespace, b.Repository, store.RoleRead)
	if err != nil {
		return err
	}
	if err := a.o.Store.SetStar(c.Request().Context(), acct.ID, repo.ID, true); err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusCreated, map[string]any{"namespace": repo.Namespace, "repository": repo.Name})
}

func (a *API) unstar(c echo.Context) error {
	acct, err := RequireUser(c)
	if err != nil {
		return err
	}
	if err := RequireScope(c, auth.ScopeUserAdmin); err != nil {
		return err
	}
	repo, _, err := a.repoFromPath(c, store.RoleRead)
	if err != nil {
		return err
	}
	if err := a.o.Store.SetStar(c.Request().Context(), acct.ID, repo.ID, false); err != nil {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}
