package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

// RobotsDisabledMessage is Quay's refusal while ROBOTS_DISALLOW is set.
const RobotsDisabledMessage = "Cannot create robot account. Robot accounts have been disabled. Please contact your administrator."

func (a *API) robotRoutes() {
	for _, base := range []string{"/organization/:orgname/robots", "/user/robots"} {
		a.Route(http.MethodGet, base, Doc{Tag: "robot", Summary: "List the namespace's robot accounts, with their tokens."}, a.listRobots)
		one := base + "/:robot_shortname"
		a.Route(http.MethodPut, one, Doc{Tag: "robot", Summary: "Create a robot account; the response carries its token.",
			Body: []string{"description", "unstructured_metadata"}}, a.createRobot)
		a.Route(http.MethodGet, one, Doc{Tag: "robot", Summary: "Get a robot account with its token."}, a.getRobot)
		a.Route(http.MethodDelete, one, Doc{Tag: "robot", Summary: "Delete a robot account."}, a.deleteRobot)
		a.Route(http.MethodPost, one+"/regenerate", Doc{Tag: "robot",
			Summary: "Replace a robot's token; the old token and registry tokens issued from it stop working at once."}, a.regenerateRobot)
		a.Route(http.MethodGet, one+"/permissions", Doc{Tag: "robot", Summary: "List a robot's repository permissions."}, a.robotPermissions)
		a.Route(http.MethodPost, one+"/permissions", Doc{Tag: "robot",
			Summary:     "Set one role for a robot on several repositories of its namespace at once.",
			Description: `Body {"repositories": ["repo", ...], "role": "read"|"write"|"admin"|"none"}; "none" removes the permission. All-or-nothing: every repository must exist. Returns the robot's permissions.`,
			Body:        []string{"repositories", "role"}}, a.bulkRobotPermissions)
	}
}

// robotNamespace is the namespace of a robot route: the path's organization
// (admins only) or the calling user's own namespace.
func (a *API) robotNamespace(c echo.Context) (*store.Account, error) {
	if org := Param(c, "orgname"); org != "" {
		return a.namespaceFor(c, org)
	}
	acct, err := RequireUser(c)
	if err != nil {
		return nil, err
	}
	return a.namespaceFor(c, acct.Name)
}

// robotFor finds the path's robot in its namespace: 404 with Quay's
// message when there is none.
func (a *API) robotFor(c echo.Context) (*store.Account, *store.Account, *store.RobotInfo, error) {
	ns, err := a.robotNamespace(c)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx := c.Request().Context()
	robot, err := a.o.Store.GetAccountByName(ctx, ns.Name+"+"+Param(c, "robot_shortname"))
	if errors.Is(err, store.ErrNotFound) || err == nil && (robot.Kind != store.KindRobot || robot.OwnerID != ns.ID) {
		return nil, nil, nil, notFoundMessage("Could not find robot with specified username")
	}
	if err != nil {
		return nil, nil, nil, Internal(err)
	}
	info, err := a.o.Store.GetRobotInfo(ctx, robot.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, notFoundMessage("Could not find robot with specified username")
	}
	if err != nil {
		return nil, nil, nil, Internal(err)
	}
	return ns, robot, info, nil
}

type robotView struct {
	Name                 string          `json:"name"`
	Created              string          `json:"created"`
	LastAccessed         any             `json:"last_accessed"`
	Description          string          `json:"description"`
	Token                string          `json:"token"`
	UnstructuredMetadata json.RawMessage `json:"unstructured_metadata"`
}

func (a *API) robotView(robot *store.Account, info *store.RobotInfo) (robotView, error) {
	tok, err := a.o.Secrets.Open(info.TokenEnc, auth.RobotTokenPurpose(robot.Name))
	if err != nil {
		return robotView{}, Internal(err)
	}
	meta := json.RawMessage("null")
	if info.UnstructuredMetadata != "" {
		meta = json.RawMessage(info.UnstructuredMetadata)
	}
	return robotView{Name: robot.Name, Created: FormatDate(robot.CreatedAt), LastAccessed: optDate(info.LastAccessed),
		Description: info.Description, Token: string(tok), UnstructuredMetadata: meta}, nil
}

type createRobotBody struct {
	Description          string          `json:"description"`
	UnstructuredMetadata json.RawMessage `json:"unstructured_metadata"`
}

func (a *API) createRobot(c echo.Context) error {
	ns, err := a.robotNamespace(c)
	if err != nil {
		return err
	}
	if a.robotsDisallowed {
		return BadRequest(RobotsDisabledMessage)
	}
	short := Param(c, "robot_shortname")
	if !ValidRobotShortName(short) {
		return BadRequest("Invalid robot name: it must start with a lowercase letter and contain 2-255 lowercase letters, digits and underscores")
	}
	var b createRobotBody
	if err := DecodeJSON(c, &b, true); err != nil {
		return err
	}
	if len(b.Description) > 255 {
		return BadRequest("The description is too long")
	}
	meta := ""
	if len(b.UnstructuredMetadata) > 0 && string(b.UnstructuredMetadata) != "null" {
		var obj map[string]any
		if json.Unmarshal(b.UnstructuredMetadata, &obj) != nil {
			return BadRequest("unstructured_metadata must be a JSON object")
		}
		meta = string(b.UnstructuredMetadata)
	}
	name := ns.Name + "+" + short
	token := auth.RandomString(auth.RobotTokenLen, auth.UpperAlnum)
	robot := &store.Account{Kind: store.KindRobot, Name: name, OwnerID: ns.ID, Enabled: true}
	info := &store.RobotInfo{Description: b.Description, UnstructuredMetadata: meta,
		TokenEnc: a.o.Secrets.Seal([]byte(token), auth.RobotTokenPurpose(name))}
	if err := a.o.Store.CreateRobot(c.Request().Context(), robot, info); errors.Is(err, store.ErrConflict) {
		return BadRequest("Existing robot with name: " + name)
	} else if err != nil {
		return Internal(err)
	}
	v, err := a.robotView(robot, info)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, v)
}

func (a *API) listRobots(c echo.Context) error {
	ns, err := a.robotNamespace(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	robots, err := a.o.Store.ListRobots(ctx, ns.ID)
	if err != nil {
		return Internal(err)
	}
	out := []robotView{}
	for i := range robots {
		info, err := a.o.Store.GetRobotInfo(ctx, robots[i].ID)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted meanwhile
		} else if err != nil {
			return Internal(err)
		}
		v, err := a.robotView(&robots[i], info)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	return c.JSON(http.StatusOK, map[string]any{"robots": out})
}

func (a *API) getRobot(c echo.Context) error {
	_, robot, info, err := a.robotFor(c)
	if err != nil {
		return err
	}
	v, err := a.robotView(robot, info)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (a *API) deleteRobot(c echo.Context) error {
	_, robot, _, err := a.robotFor(c)
	if err != nil {
		return err
	}
	if err := a.o.Store.DeleteAccount(c.Request().Context(), robot.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return Internal(err)
	}
	if err := a.revokeAccount(c.Request().Context(), robot.Name); err != nil {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}

// regenerateRobot stores a new token, then drops the robot's cached logins
// and revokes every registry token issued to it, so that the old token is
// dead on this node at once.
func (a *API) regenerateRobot(c echo.Context) error {
	_, robot, info, err := a.robotFor(c)
	if err != nil {
		return err
	}
	token := auth.RandomString(auth.RobotTokenLen, auth.UpperAlnum)
	info.TokenEnc = a.o.Secrets.Seal([]byte(token), auth.RobotTokenPurpose(robot.Name))
	if err := a.o.Store.SetRobotToken(c.Request().Context(), robot.ID, info.TokenEnc); err != nil {
		return Internal(err)
	}
	if err := a.revokeAccount(c.Request().Context(), robot.Name); err != nil {
		return Internal(err)
	}
	v, err := a.robotView(robot, info)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (a *API) robotPermissions(c echo.Context) error {
	_, robot, _, err := a.robotFor(c)
	if err != nil {
		return err
	}
	ps, err := a.o.Store.ListAccountPermissions(c.Request().Context(), robot.ID)
	if err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"permissions": permissionList(ps)})
}

type bulkPermissionBody struct {
	Repositories []string `json:"repositories"`
	Role         string   `json:"role"`
}

// maxBulkRepositories bounds one bulk permission request.
const maxBulkRepositories = 500

func (a *API) bulkRobotPermissions(c echo.Context) error {
	ns, robot, _, err := a.robotFor(c)
	if err != nil {
		return err
	}
	var b bulkPermissionBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	role := store.Role(b.Role)
	if b.Role != "none" && !auth.ValidRole(role) {
		return BadRequest("Invalid role: use read, write, admin or none")
	}
	if len(b.Repositories) == 0 || len(b.Repositories) > maxBulkRepositories {
		return BadRequest("repositories must list 1 to 500 repository names")
	}
	ctx := c.Request().Context()
	repos := make([]*store.Repository, 0, len(b.Repositories))
	for _, name := range b.Repositories {
		r, err := a.o.Store.GetRepository(ctx, ns.Name, name)
		if errors.Is(err, store.ErrNotFound) {
			return BadRequest("No repository " + truncate(ns.Name+"/"+name))
		} else if err != nil {
			return Internal(err)
		}
		repos = append(repos, r)
	}
	for _, r := range repos {
		if b.Role == "none" {
			err = a.o.Store.DeleteRepoPermission(ctx, r.ID, robot.ID, 0)
			if errors.Is(err, store.ErrNotFound) {
				err = nil
			}
		} else {
			err = a.o.Store.SetRepoPermission(ctx, &store.RepoPermission{RepoID: r.ID, AccountID: robot.ID, Role: role})
		}
		if err != nil {
			return Internal(err)
		}
	}
	ps, err := a.o.Store.ListAccountPermissions(ctx, robot.ID)
	if err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"permissions": permissionList(ps)})
}
