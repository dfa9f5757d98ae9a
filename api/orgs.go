package api

import (
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

func (a *API) orgRoutes() {
	a.Route(http.MethodPost, "/organization/", Doc{Tag: "organization", Summary: "Create an organization; the caller joins its owners team.",
		Body: []string{"name", "email"}}, a.createOrg)
	a.Route(http.MethodGet, "/organization/:orgname", Doc{Tag: "organization", Summary: "Get an organization."}, a.getOrg)
	a.Route(http.MethodPut, "/organization/:orgname", Doc{Tag: "organization", Summary: "Change an organization's settings.",
		Body: []string{"email", "invoice_email", "invoice_email_address", "tag_expiration_s"}}, a.updateOrg)
	a.Route(http.MethodDelete, "/organization/:orgname", Doc{Tag: "organization", Summary: "Delete an organization and everything in it."}, a.deleteOrg)
}

// orgAccess is what the caller may do in an organization.
type orgAccess struct {
	org   *store.Account
	admin bool
}

// OrgFor finds the organization called name for the caller: anonymous
// callers get 401; an organization that does not exist or of which the
// caller is not a member (nor a superuser) is a 404; with admin set, a
// member who does not administer it gets 403.
func (a *API) OrgFor(c echo.Context, name string, admin bool) (*store.Account, error) {
	acc, err := a.orgAccess(c, name)
	if err != nil {
		return nil, err
	}
	if admin && !acc.admin {
		return nil, Forbidden()
	}
	return acc.org, nil
}

func (a *API) orgAccess(c echo.Context, name string) (*orgAccess, error) {
	if _, err := RequireAccount(c); err != nil {
		return nil, err
	}
	ctx := c.Request().Context()
	org, err := a.o.Store.GetAccountByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) || err == nil && org.Kind != store.KindOrganization {
		return nil, NotFound()
	}
	if err != nil {
		return nil, Internal(err)
	}
	who := Caller(c)
	member, err := a.o.Policy.IsOrgMember(ctx, who, org)
	if err != nil {
		return nil, Internal(err)
	}
	if !member {
		return nil, NotFound()
	}
	admin, err := a.o.Policy.IsOrgAdmin(ctx, who, org)
	if err != nil {
		return nil, Internal(err)
	}
	return &orgAccess{org: org, admin: admin}, nil
}

// namespaceFor finds a namespace (user or organization) the caller
// administers, for robots, prototypes and the like: 401 anonymous, 404
// missing or invisible, 403 visible without admin.
func (a *API) namespaceFor(c echo.Context, name string) (*store.Account, error) {
	if _, err := RequireAccount(c); err != nil {
		return nil, err
	}
	ctx := c.Request().Context()
	ns, err := a.o.Store.GetAccountByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, NotFound()
	}
	if err != nil {
		return nil, Internal(err)
	}
	switch ns.Kind {
	case store.KindOrganization:
		return a.OrgFor(c, name, true)
	case store.KindUser:
		ok, err := a.o.Policy.CanAdminNamespace(ctx, Caller(c), ns)
		if err != nil {
			return nil, Internal(err)
		}
		if !ok {
			if Caller(c).Name() == ns.Name {
				return nil, Forbidden() // its own namespace, without user:admin
			}
			return nil, NotFound()
		}
		return ns, nil
	}
	return nil, NotFound()
}

type createOrgBody struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

func (a *API) createOrg(c echo.Context) error {
	creator, err := RequireUser(c)
	if err != nil {
		return err
	}
	if err := RequireScope(c, auth.ScopeUserAdmin); err != nil {
		return err
	}
	var b createOrgBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	if !ValidNamespaceName(b.Name) {
		return BadRequest("Invalid organization name: use 2-255 lowercase letters, digits and single separators (. _ -)")
	}
	if b.Email != "" && strings.EqualFold(b.Email, creator.Email) {
		return BadRequest("The organization's email address must be different from your account's email address")
	}
	if err := a.nameFree(c, b.Name); err != nil {
		return err
	}
	org := &store.Account{Kind: store.KindOrganization, Name: b.Name, Email: b.Email, Enabled: true}
	if err := a.o.Store.CreateOrganization(c.Request().Context(), org, creator.ID); errors.Is(err, store.ErrConflict) {
		return BadRequest("A user or organization with this name already exists")
	} else if err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusCreated, "Created")
}

type teamSummary struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Role        string `json:"role"`
	Avatar      Avatar `json:"avatar"`
	CanView     bool   `json:"can_view"`
	RepoCount   int    `json:"repo_count"`
	MemberCount int    `json:"member_count"`
	IsSynced    bool   `json:"is_synced"`
}

// orgView is Quay's organization object.
func (a *API) orgView(c echo.Context, acc *orgAccess) (map[string]any, error) {
	ctx := c.Request().Context()
	org := acc.org
	settings, err := a.o.Store.GetOrgSettings(ctx, org.ID)
	if errors.Is(err, store.ErrNotFound) {
		settings = &store.OrgSettings{TagExpirationS: DefaultTagExpirationS}
	} else if err != nil {
		return nil, Internal(err)
	}
	teams, err := a.o.Store.ListTeams(ctx, org.ID)
	if err != nil {
		return nil, Internal(err)
	}
	mine := map[int64]bool{}
	if !acc.admin {
		ts, err := a.o.Store.TeamsOfAccount(ctx, org.ID, Caller(c).Account.ID)
		if err != nil {
			return nil, Internal(err)
		}
		for _, t := range ts {
			mine[t.ID] = true
		}
	}
	views := map[string]teamSummary{}
	names := []string{}
	for i := range teams {
		t := &teams[i]
		members, err := a.o.Store.CountTeamMembers(ctx, t.ID)
		if err != nil {
			return nil, Internal(err)
		}
		repos, err := a.o.Store.CountTeamRepos(ctx, t.ID)
		if err != nil {
			return nil, Internal(err)
		}
		views[t.Name] = teamSummary{Name: t.Name, Description: t.Description, Role: string(t.Role),
			Avatar: avatar(t.Name, "", "team"), CanView: acc.admin || mine[t.ID],
			RepoCount: repos, MemberCount: members}
		names = append(names, t.Name)
	}
	sort.Strings(names)
	var invoiceAddr any
	if settings.InvoiceEmailAddress != "" {
		invoiceAddr = settings.InvoiceEmailAddress
	}
	return map[string]any{
		"name": org.Name, "email": org.Email, "avatar": avatar(org.Name, org.Email, "user"),
		"is_admin": acc.admin, "is_member": true, "teams": views, "ordered_teams": names,
		"invoice_email": settings.InvoiceEmail, "invoice_email_address": invoiceAddr,
		"tag_expiration_s": settings.TagExpirationS, "is_free_account": true,
	}, nil
}

func (a *API) getOrg(c echo.Context) error {
	acc, err := a.orgAccess(c, Param(c, "orgname"))
	if err != nil {
		return err
	}
	v, err := a.orgView(c, acc)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

type updateOrgBody struct {
	Email               *string `json:"email"`
	InvoiceEmail        *bool   `json:"invoice_email"`
	InvoiceEmailAddress *string `json:"invoice_email_address"`
	TagExpirationS      *int64  `json:"tag_expiration_s"`
}

// maxTagExpirationS bounds the time-machine window (a year).
const maxTagExpirationS = 365 * 24 * 3600

func (a *API) updateOrg(c echo.Context) error {
	org, err := a.OrgFor(c, Param(c, "orgname"), true)
	if err != nil {
		return err
	}
	var b updateOrgBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	ctx := c.Request().Context()
	settings, err := a.o.Store.GetOrgSettings(ctx, org.ID)
	if errors.Is(err, store.ErrNotFound) {
		settings = &store.OrgSettings{TagExpirationS: DefaultTagExpirationS}
	} else if err != nil {
		return Internal(err)
	}
	if b.TagExpirationS != nil {
		if *b.TagExpirationS < 0 || *b.TagExpirationS > maxTagExpirationS {
			return BadRequest("tag_expiration_s must be between 0 and 31536000")
		}
		settings.TagExpirationS = *b.TagExpirationS
	}
	if b.InvoiceEmail != nil {
		settings.InvoiceEmail = *b.InvoiceEmail
	}
	if b.InvoiceEmailAddress != nil {
		settings.InvoiceEmailAddress = *b.InvoiceEmailAddress
	}
	if b.Email != nil && *b.Email != org.Email {
		org.Email = *b.Email
		if err := a.o.Store.UpdateAccount(ctx, org); errors.Is(err, store.ErrConflict) {
			return BadRequest("The email address is already in use")
		} else if err != nil {
			return Internal(err)
		}
	}
	if err := a.o.Store.PutOrgSettings(ctx, org.ID, settings); err != nil {
		return Internal(err)
	}
	v, err := a.orgView(c, &orgAccess{org: org, admin: true})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (a *API) deleteOrg(c echo.Context) error {
	org, err := a.OrgFor(c, Param(c, "orgname"), true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	robots, err := a.o.Store.ListRobots(ctx, org.ID)
	if err != nil {
		return Internal(err)
	}
	repos, err := a.o.Store.ListRepositoriesByNamespace(ctx, org.ID)
	if err != nil {
		return Internal(err)
	}
	if err := a.o.Store.DeleteAccount(ctx, org.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return Internal(err)
	}
	for _, r := range robots {
		if err := a.revokeAccount(ctx, r.Name); err != nil {
			return Internal(err)
		}
	}
	for i := range repos {
		a.o.InvalidateRepo(repos[i].FullName())
	}
	return c.NoContent(http.StatusNoContent)
}
