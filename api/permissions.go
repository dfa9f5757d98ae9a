package api

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

func (a *API) permissionRoutes() {
	const base = "/repository/:namespace/:repo/permissions"
	a.Route(http.MethodGet, base+"/user/", Doc{Tag: "permission", Summary: "List the users' and robots' permissions on a repository."}, a.listUserPermissions)
	a.Route(http.MethodGet, base+"/user/:username/", Doc{Tag: "permission", Summary: "Get a user's or robot's permission on a repository."}, a.getUserPermission)
	a.Route(http.MethodPut, base+"/user/:username", Doc{Tag: "permission", Summary: "Grant a user or robot a role on a repository.",
		Body: []string{"role"}}, a.putUserPermission)
	a.Route(http.MethodDelete, base+"/user/:username", Doc{Tag: "permission", Summary: "Remove a user's or robot's permission."}, a.deleteUserPermission)
	a.Route(http.MethodGet, base+"/team/", Doc{Tag: "permission", Summary: "List the teams' permissions on a repository."}, a.listTeamPermissions)
	a.Route(http.MethodGet, base+"/team/:teamname", Doc{Tag: "permission", Summary: "Get a team's permission on a repository."}, a.getTeamPermission)
	a.Route(http.MethodPut, base+"/team/:teamname", Doc{Tag: "permission", Summary: "Grant a team a role on a repository.",
		Body: []string{"role"}}, a.putTeamPermission)
	a.Route(http.MethodDelete, base+"/team/:teamname", Doc{Tag: "permission", Summary: "Remove a team's permission."}, a.deleteTeamPermission)
}

// adminRepo is the path's repository for a repository admin (401, 404, 403).
func (a *API) adminRepo(c echo.Context) (*store.Repository, error) {
	if _, err := RequireAccount(c); err != nil {
		return nil, err
	}
	repo, _, err := a.repoFromPath(c, store.RoleAdmin)
	return repo, err
}

type userPermissionView struct {
	Role        string `json:"role"`
	Name        string `json:"name"`
	IsRobot     bool   `json:"is_robot"`
	Avatar      Avatar `json:"avatar"`
	IsOrgMember bool   `json:"is_org_member"`
}

type teamPermissionView struct {
	Role   string `json:"role"`
	Name   string `json:"name"`
	Avatar Avatar `json:"avatar"`
}

func (a *API) userPermissionView(c echo.Context, repo *store.Repository, acct *store.Account, role store.Role) (userPermissionView, error) {
	members, err := a.o.Store.OrgMembers(c.Request().Context(), repo.NamespaceID, []int64{acct.ID})
	if err != nil {
		return userPermissionView{}, Internal(err)
	}
	return permissionView(repo, acct, role, members), nil
}

// permissionView is a user's or robot's permission on repo; members are
// the users among those shown who are in a team of the repository's
// namespace.
func permissionView(repo *store.Repository, acct *store.Account, role store.Role, members map[int64]bool) userPermissionView {
	v := userPermissionView{Role: string(role), Name: acct.Name, IsRobot: acct.Kind == store.KindRobot, Avatar: accountAvatar(acct)}
	if acct.Kind == store.KindRobot {
		v.IsOrgMember = acct.OwnerID == repo.NamespaceID
	} else {
		v.IsOrgMember = members[acct.ID]
	}
	return v
}

func (a *API) listUserPermissions(c echo.Context) error {
	repo, err := a.adminRepo(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	ps, err := a.o.Store.ListRepoPermissions(ctx, repo.ID)
	if err != nil {
		return Internal(err)
	}
	var ids []int64
	for _, p := range ps {
		if p.Account != nil && p.Account.Kind != store.KindRobot {
			ids = append(ids, p.Account.ID)
		}
	}
	// One membership query for the whole list, not one per user.
	members, err := a.o.Store.OrgMembers(ctx, repo.NamespaceID, ids)
	if err != nil {
		return Internal(err)
	}
	out := map[string]userPermissionView{}
	for _, p := range ps {
		if p.Account != nil {
			out[p.Account.Name] = permissionView(repo, p.Account, p.Role, members)
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"permissions": out})
}

func (a *API) listTeamPermissions(c echo.Context) error {
	repo, err := a.adminRepo(c)
	if err != nil {
		return err
	}
	ps, err := a.o.Store.ListRepoPermissions(c.Request().Context(), repo.ID)
	if err != nil {
		return Internal(err)
	}
	out := map[string]teamPermissionView{}
	for _, p := range ps {
		if p.Team != nil {
			out[p.Team.Name] = teamPermissionView{Role: string(p.Role), Name: p.Team.Name, Avatar: avatar(p.Team.Name, "", "team")}
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"permissions": out})
}

// findPermission returns the permission an account or team holds directly
// on repo, or nil.
func (a *API) findPermission(c echo.Context, repo *store.Repository, accountID, teamID int64) (*store.RepoPermission, error) {
	ps, err := a.o.Store.ListRepoPermissions(c.Request().Context(), repo.ID)
	if err != nil {
		return nil, Internal(err)
	}
	for i := range ps {
		if accountID != 0 && ps[i].AccountID == accountID || teamID != 0 && ps[i].TeamID == teamID {
			return &ps[i], nil
		}
	}
	return nil, nil
}

const noPermissionMessage = "User does not have permission for repo."

func (a *API) getUserPermission(c echo.Context) error {
	repo, err := a.adminRepo(c)
	if err != nil {
		return err
	}
	acct, err := a.o.Store.GetAccountByName(c.Request().Context(), Param(c, "username"))
	if errors.Is(err, store.ErrNotFound) {
		return notFoundMessage(noPermissionMessage)
	} else if err != nil {
		return Internal(err)
	}
	p, err := a.findPermission(c, repo, acct.ID, 0)
	if err != nil {
		return err
	}
	if p == nil {
		return notFoundMessage(noPermissionMessage)
	}
	v, err := a.userPermissionView(c, repo, acct, p.Role)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

type roleBody struct {
	Role string `json:"role"`
}

func decodeRole(c echo.Context) (store.Role, error) {
	var b roleBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return "", err
	}
	r := store.Role(b.Role)
	if !auth.ValidRole(r) {
		return "", BadRequest("Invalid role: use read, write or admin")
	}
	return r, nil
}

func (a *API) putUserPermission(c echo.Context) error {
	repo, err := a.adminRepo(c)
	if err != nil {
		return err
	}
	role, err := decodeRole(c)
	if err != nil {
		return err
	}
	acct, err := a.memberAccount(c, Param(c, "username"), repo.NamespaceID)
	if err != nil {
		return err
	}
	if err := a.o.Store.SetRepoPermission(c.Request().Context(), &store.RepoPermission{RepoID: repo.ID, AccountID: acct.ID, Role: role}); err != nil {
		return Internal(err)
	}
	v, err := a.userPermissionView(c, repo, acct, role)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (a *API) deleteUserPermission(c echo.Context) error {
	repo, err := a.adminRepo(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	acct, err := a.o.Store.GetAccountByName(ctx, Param(c, "username"))
	if errors.Is(err, store.ErrNotFound) {
		return notFoundMessage(noPermissionMessage)
	} else if err != nil {
		return Internal(err)
	}
	if err := a.o.Store.DeleteRepoPermission(ctx, repo.ID, acct.ID, 0); errors.Is(err, store.ErrNotFound) {
		return notFoundMessage(noPermissionMessage)
	} else if err != nil {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}

// repoTeam finds a team of the organization owning repo (404 otherwise:
// user namespaces have no teams).
func (a *API) repoTeam(c echo.Context, repo *store.Repository) (*store.Team, error) {
	t, err := a.o.Store.GetTeam(c.Request().Context(), repo.NamespaceID, Param(c, "teamname"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, NotFound()
	}
	if err != nil {
		return nil, Internal(err)
	}
	return t, nil
}

func (a *API) getTeamPermission(c echo.Context) error {
	repo, err := a.adminRepo(c)
	if err != nil {
		return err
	}
	t, err := a.repoTeam(c, repo)
	if err != nil {
		return err
	}
	p, err := a.findPermission(c, repo, 0, t.ID)
	if err != nil {
		return err
	}
	if p == nil {
		return notFoundMessage("Team does not have permission for repo.")
	}
	return c.JSON(http.StatusOK, teamPermissionView{Role: string(p.Role), Name: t.Name, Avatar: avatar(t.Name, "", "team")})
}

func (a *API) putTeamPermission(c echo.Context) error {
	repo, err := a.adminRepo(c)
	if err != nil {
		return err
	}
	role, err := decodeRole(c)
	if err != nil {
		return err
	}
	t, err := a.repoTeam(c, repo)
	if err != nil {
		return err
	}
	if err := a.o.Store.SetRepoPermission(c.Request().Context(), &store.RepoPermission{RepoID: repo.ID, TeamID: t.ID, Role: role}); err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusOK, teamPermissionView{Role: string(role), Name: t.Name, Avatar: avatar(t.Name, "", "team")})
}

func (a *API) deleteTeamPermission(c echo.Context) error {
	repo, err := a.adminRepo(c)
	if err != nil {
		return err
	}
	t, err := a.repoTeam(c, repo)
	if err != nil {
		return err
	}
	if err := a.o.Store.DeleteRepoPermission(c.Request().Context(), repo.ID, 0, t.ID); errors.Is(err, store.ErrNotFound) {
		return notFoundMessage("Team does not have permission for repo.")
	} else if err != nil {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}
