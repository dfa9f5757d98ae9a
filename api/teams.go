package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

func (a *API) teamRoutes() {
	const base = "/organization/:orgname/team/:teamname"
	a.Route(http.MethodPut, base, Doc{Tag: "team", Summary: "Create or update a team.", Body: []string{"role", "description"}}, a.putTeam)
	a.Route(http.MethodDelete, base, Doc{Tag: "team", Summary: "Delete a team."}, a.deleteTeam)
	a.Route(http.MethodGet, base+"/members", Doc{Tag: "team", Summary: "List a team's members and pending invitations."}, a.listMembers)
	a.Route(http.MethodPut, base+"/members/:membername", Doc{Tag: "team",
		Summary: "Add a user or one of the organization's robots to a team (an email address is invited)."}, a.addMember)
	a.Route(http.MethodDelete, base+"/members/:membername", Doc{Tag: "team", Summary: "Remove a member or cancel an invitation."}, a.removeMember)
	a.Route(http.MethodPut, base+"/invite/:email", Doc{Tag: "team", Summary: "Invite someone to a team by email."}, a.inviteMember)
	a.Route(http.MethodDelete, base+"/invite/:email", Doc{Tag: "team", Summary: "Cancel an invitation."}, a.uninviteMember)
	a.Route(http.MethodGet, base+"/permissions", Doc{Tag: "team", Summary: "List a team's repository permissions."}, a.teamPermissions)
}

// teamFor finds the path's organization and team for the caller (admin:
// only an organization admin). A missing team is a 404.
func (a *API) teamFor(c echo.Context, admin bool) (*store.Account, *store.Team, error) {
	org, err := a.OrgFor(c, Param(c, "orgname"), admin)
	if err != nil {
		return nil, nil, err
	}
	t, err := a.o.Store.GetTeam(c.Request().Context(), org.ID, Param(c, "teamname"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, NotFound()
	}
	if err != nil {
		return nil, nil, Internal(err)
	}
	return org, t, nil
}

type putTeamBody struct {
	Role        *string `json:"role"`
	Description *string `json:"description"`
}

func validTeamRole(r string) bool {
	switch store.TeamRole(r) {
	case store.TeamMember, store.TeamCreator, store.TeamAdmin:
		return true
	}
	return false
}

func (a *API) putTeam(c echo.Context) error {
	org, err := a.OrgFor(c, Param(c, "orgname"), true)
	if err != nil {
		return err
	}
	name := Param(c, "teamname")
	if !ValidTeamName(name) {
		return BadRequest("Invalid team name: it must start with a lowercase letter and contain only lowercase letters and digits")
	}
	var b putTeamBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	if b.Role != nil && !validTeamRole(*b.Role) {
		return BadRequest("Invalid role: use member, creator or admin")
	}
	ctx := c.Request().Context()
	t, err := a.o.Store.GetTeam(ctx, org.ID, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if b.Role == nil {
			return BadRequest("role is required to create a team")
		}
		t = &store.Team{OrgID: org.ID, Name: name}
	case err != nil:
		return Internal(err)
	}
	if b.Role != nil {
		if t.Name == store.OwnersTeam && store.TeamRole(*b.Role) != store.TeamAdmin {
			return BadRequest("The owners team must keep the admin role")
		}
		t.Role = store.TeamRole(*b.Role)
	}
	if b.Description != nil {
		t.Description = *b.Description
	}
	created, err := a.o.Store.PutTeam(ctx, t)
	if err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusOK, map[string]any{
		"name": t.Name, "description": t.Description, "can_view": true, "role": string(t.Role),
		"avatar": avatar(t.Name, "", "team"), "new_team": created,
	})
}

func (a *API) deleteTeam(c echo.Context) error {
	_, t, err := a.teamFor(c, true)
	if err != nil {
		return err
	}
	if t.Name == store.OwnersTeam {
		return BadRequest("The owners team cannot be deleted")
	}
	if err := a.o.Store.DeleteTeam(c.Request().Context(), t.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}

type memberView struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	IsRobot bool   `json:"is_robot"`
	Avatar  Avatar `json:"avatar"`
	Invited bool   `json:"invited"`
	Email   string `json:"email,omitempty"`
}

func accountMember(acct *store.Account) memberView {
	return memberView{Name: acct.Name, Kind: "user", IsRobot: acct.Kind == store.KindRobot, Avatar: accountAvatar(acct)}
}

func inviteMember(email string) memberView {
	return memberView{Name: email, Kind: "invite", Avatar: avatar(email, email, "user"), Invited: true, Email: email}
}

func (a *API) listMembers(c echo.Context) error {
	acc, err := a.orgAccess(c, Param(c, "orgname"))
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	t, err := a.o.Store.GetTeam(ctx, acc.org.ID, Param(c, "teamname"))
	if errors.Is(err, store.ErrNotFound) {
		return NotFound()
	} else if err != nil {
		return Internal(err)
	}
	ms, err := a.o.Store.ListTeamMembers(ctx, t.ID)
	if err != nil {
		return Internal(err)
	}
	out := []memberView{}
	for _, m := range ms {
		switch {
		case m.Account != nil:
			out = append(out, accountMember(m.Account))
		case acc.admin:
			// Only admins see pending invitations (they hold email addresses).
			out = append(out, inviteMember(m.Email))
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"name": t.Name, "members": out, "can_edit": acc.admin})
}

// memberAccount finds a user, or a robot of org, to add to a team or grant
// a permission to: 400 for an unknown name or another namespace's robot.
func (a *API) memberAccount(c echo.Context, name string, nsID int64) (*store.Account, error) {
	acct, err := a.o.Store.GetAccountByName(c.Request().Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, BadRequest("Unknown user or robot: " + truncate(name))
	}
	if err != nil {
		return nil, Internal(err)
	}
	switch acct.Kind {
	case store.KindUser:
		return acct, nil
	case store.KindRobot:
		if acct.OwnerID != nsID {
			return nil, BadRequest("A robot can only be given access inside its own namespace")
		}
		return acct, nil
	}
	return nil, BadRequest("An organization cannot be given access")
}

// addMember adds users and robots at once: berth sends no email, so there
// is no invitation for a user to accept (Quay behaves the same without
// mailing configured). An email address is recorded as an invitation.
func (a *API) addMember(c echo.Context) error {
	org, t, err := a.teamFor(c, true)
	if err != nil {
		return err
	}
	name := Param(c, "membername")
	if strings.Contains(name, "@") {
		return a.invite(c, t, name)
	}
	acct, err := a.memberAccount(c, name, org.ID)
	if err != nil {
		return err
	}
	if err := a.o.Store.AddTeamMember(c.Request().Context(), t.ID, acct.ID); err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusOK, accountMember(acct))
}

func (a *API) removeMember(c echo.Context) error {
	_, t, err := a.teamFor(c, true)
	if err != nil {
		return err
	}
	name := Param(c, "membername")
	ctx := c.Request().Context()
	if strings.Contains(name, "@") {
		if err := a.o.Store.DeleteTeamInvite(ctx, t.ID, name); errors.Is(err, store.ErrNotFound) {
			return NotFound()
		} else if err != nil {
			return Internal(err)
		}
		return c.NoContent(http.StatusNoContent)
	}
	acct, err := a.o.Store.GetAccountByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound()
	} else if err != nil {
		return Internal(err)
	}
	if t.Role == store.TeamAdmin && acct.Kind == store.KindUser && acct.ID == Caller(c).Account.ID {
		// Quay refuses to let an admin drop their own admin membership.
		return BadRequest("You cannot remove yourself from an admin team")
	}
	if err := a.o.Store.RemoveTeamMember(ctx, t.ID, acct.ID); errors.Is(err, store.ErrNotFound) {
		return NotFound()
	} else if err != nil {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (a *API) inviteMember(c echo.Context) error {
	_, t, err := a.teamFor(c, true)
	if err != nil {
		return err
	}
	return a.invite(c, t, Param(c, "email"))
}

func (a *API) invite(c echo.Context, t *store.Team, email string) error {
	if len(email) > 255 || strings.Count(email, "@") != 1 || strings.HasPrefix(email, "@") || strings.HasSuffix(email, "@") {
		return BadRequest("Invalid email address")
	}
	if err := a.o.Store.InviteTeamMember(c.Request().Context(), t.ID, email, auth.RandomString(32, auth.MixedAlnum)); err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusOK, inviteMember(email))
}

func (a *API) uninviteMember(c echo.Context) error {
	_, t, err := a.teamFor(c, true)
	if err != nil {
		return err
	}
	if err := a.o.Store.DeleteTeamInvite(c.Request().Context(), t.ID, Param(c, "email")); errors.Is(err, store.ErrNotFound) {
		return NotFound()
	} else if err != nil {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}

type repoRef struct {
	Name     string `json:"name"`
	IsPublic bool   `json:"is_public"`
}

type repoPermission struct {
	Repository repoRef `json:"repository"`
	Role       string  `json:"role"`
}

func permissionList(ps []store.RepoPermission) []repoPermission {
	out := []repoPermission{}
	for _, p := range ps {
		if p.Repo == nil {
			continue
		}
		out = append(out, repoPermission{Repository: repoRef{Name: p.Repo.Name, IsPublic: p.Repo.Visibility == store.Public}, Role: string(p.Role)})
	}
	return out
}

func (a *API) teamPermissions(c echo.Context) error {
	_, t, err := a.teamFor(c, false)
	if err != nil {
		return err
	}
	ps, err := a.o.Store.ListTeamPermissions(c.Request().Context(), t.ID)
	if err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"permissions": permissionList(ps)})
}

// truncate shortens user input echoed in messages.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
