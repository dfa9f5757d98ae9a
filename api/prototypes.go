package api

import (
	"errors"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

func (a *API) prototypeRoutes() {
	const base = "/organization/:orgname/prototypes"
	a.Route(http.MethodGet, base, Doc{Tag: "prototype", Summary: "List the organization's default permissions."}, a.listPrototypes)
	a.Route(http.MethodPost, base, Doc{Tag: "prototype", Summary: "Create a default permission, applied when a repository is created.",
		Body: []string{"role", "delegate", "activating_user"}}, a.createPrototype)
	a.Route(http.MethodPut, base+"/:prototypeid", Doc{Tag: "prototype", Summary: "Change a default permission's role.", Body: []string{"role"}}, a.updatePrototype)
	a.Route(http.MethodDelete, base+"/:prototypeid", Doc{Tag: "prototype", Summary: "Delete a default permission."}, a.deletePrototype)
}

type delegateView struct {
	Name        string `json:"name"`
	IsRobot     bool   `json:"is_robot"`
	Kind        string `json:"kind"`
	IsOrgMember bool   `json:"is_org_member"`
	Avatar      Avatar `json:"avatar"`
}

// accountDelegate describes an account in a prototype.
func (a *API) accountDelegate(c echo.Context, org *store.Account, id int64) (*delegateView, error) {
	ctx := c.Request().Context()
	acct, err := a.o.Store.GetAccountByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, Internal(err)
	}
	v := &delegateView{Name: acct.Name, IsRobot: acct.Kind == store.KindRobot, Kind: "user", Avatar: accountAvatar(acct)}
	if v.IsRobot {
		v.IsOrgMember = acct.OwnerID == org.ID
	} else {
		roles, err := a.o.Store.OrgTeamRoles(ctx, org.ID, acct.ID)
		if err != nil {
			return nil, Internal(err)
		}
		v.IsOrgMember = len(roles) > 0
	}
	return v, nil
}

func (a *API) prototypeView(c echo.Context, org *store.Account, p *store.Prototype) (map[string]any, error) {
	v := map[string]any{"id": p.ID, "role": string(p.Role)}
	if p.ActivatingUserID != 0 {
		d, err := a.accountDelegate(c, org, p.ActivatingUserID)
		if err != nil {
			return nil, err
		}
		if d != nil {
			v["activating_user"] = d
		}
	}
	switch {
	case p.DelegateAccountID != 0:
		d, err := a.accountDelegate(c, org, p.DelegateAccountID)
		if err != nil {
			return nil, err
		}
		v["delegate"] = d
	case p.DelegateTeamID != 0:
		teams, err := a.o.Store.ListTeams(c.Request().Context(), org.ID)
		if err != nil {
			return nil, Internal(err)
		}
		for _, t := range teams {
			if t.ID == p.DelegateTeamID {
				v["delegate"] = map[string]any{"name": t.Name, "kind": "team", "avatar": avatar(t.Name, "", "team")}
			}
		}
	}
	return v, nil
}

func (a *API) listPrototypes(c echo.Context) error {
	org, err := a.OrgFor(c, Param(c, "orgname"), true)
	if err != nil {
		return err
	}
	ps, err := a.o.Store.ListPrototypes(c.Request().Context(), org.ID)
	if err != nil {
		return Internal(err)
	}
	out := []map[string]any{}
	for i := range ps {
		v, err := a.prototypeView(c, org, &ps[i])
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	return c.JSON(http.StatusOK, map[string]any{"prototypes": out})
}

type nameKind struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
}

type prototypeBody struct {
	Role           string    `json:"role"`
	Delegate       *nameKind `json:"delegate"`
	ActivatingUser *nameKind `json:"activating_user"`
}

func (a *API) createPrototype(c echo.Context) error {
	org, err := a.OrgFor(c, Param(c, "orgname"), true)
	if err != nil {
		return err
	}
	var b prototypeBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	p := &store.Prototype{ID: uuid.NewString(), OrgID: org.ID, Role: store.Role(b.Role)}
	if !auth.ValidRole(p.Role) {
		return BadRequest("Invalid role: use read, write or admin")
	}
	if b.Delegate == nil || b.Delegate.Name == "" {
		return BadRequest("delegate is required")
	}
	ctx := c.Request().Context()
	switch b.Delegate.Kind {
	case "user", "":
		acct, err := a.memberAccount(c, b.Delegate.Name, org.ID)
		if err != nil {
			return err
		}
		p.DelegateAccountID = acct.ID
	case "team":
		t, err := a.o.Store.GetTeam(ctx, org.ID, b.Delegate.Name)
		if errors.Is(err, store.ErrNotFound) {
			return BadRequest("Unknown team: " + truncate(b.Delegate.Name))
		} else if err != nil {
			return Internal(err)
		}
		p.DelegateTeamID = t.ID
	default:
		return BadRequest("delegate kind must be user or team")
	}
	if b.ActivatingUser != nil && b.ActivatingUser.Name != "" {
		acct, err := a.memberAccount(c, b.ActivatingUser.Name, org.ID)
		if err != nil {
			return err
		}
		p.ActivatingUserID = acct.ID
	}
	if err := a.o.Store.CreatePrototype(ctx, p); err != nil {
		return Internal(err)
	}
	v, err := a.prototypeView(c, org, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (a *API) prototypeFor(c echo.Context) (*store.Account, *store.Prototype, error) {
	org, err := a.OrgFor(c, Param(c, "orgname"), true)
	if err != nil {
		return nil, nil, err
	}
	p, err := a.o.Store.GetPrototype(c.Request().Context(), org.ID, Param(c, "prototypeid"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, NotFound()
	}
	if err != nil {
		return nil, nil, Internal(err)
	}
	return org, p, nil
}

func (a *API) updatePrototype(c echo.Context) error {
	org, p, err := a.prototypeFor(c)
	if err != nil {
		return err
	}
	role, err := decodeRole(c)
	if err != nil {
		return err
	}
	p.Role = role
	if err := a.o.Store.UpdatePrototype(c.Request().Context(), p); err != nil {
		return Internal(err)
	}
	v, err := a.prototypeView(c, org, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (a *API) deletePrototype(c echo.Context) error {
	org, p, err := a.prototypeFor(c)
	if err != nil {
		return err
	}
	if err := a.o.Store.DeletePrototype(c.Request().Context(), org.ID, p.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}
