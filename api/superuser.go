package api

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

func (a *API) superuserRoutes() {
	hidden := func(summary string, body ...string) Doc {
		return Doc{Tag: "superuser", Summary: summary, Body: body, Internal: true}
	}
	a.Route(http.MethodGet, "/superuser/users/", hidden("List users."), a.suListUsers)
	a.Route(http.MethodPost, "/superuser/users/", hidden("Create a user with a generated password.", "username", "email"), a.suCreateUser)
	a.Route(http.MethodDelete, "/superuser/users/:username", hidden("Delete a user."), a.suDeleteUser)
	a.Route(http.MethodPut, "/superuser/users/:username", hidden("Enable or disable a user, or set its password or email.",
		"enabled", "password", "email"), a.suUpdateUser)
}

// requireSuperuser is 401 for anonymous callers and 403 for everyone but
// superusers (with super:user when scoped).
func (a *API) requireSuperuser(c echo.Context) error {
	if _, err := RequireUser(c); err != nil {
		return err
	}
	ok, err := a.o.Policy.IsSuperuser(c.Request().Context(), Caller(c))
	if err != nil {
		return Internal(err)
	}
	if !ok {
		return Forbidden()
	}
	return nil
}

type userView struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Username  string `json:"username"`
	Email     string `json:"email"`
	Verified  bool   `json:"verified"`
	Avatar    Avatar `json:"avatar"`
	SuperUser bool   `json:"super_user"`
	Enabled   bool   `json:"enabled"`
}

func (a *API) userView(u *store.Account) userView {
	return userView{Kind: "user", Name: u.Name, Username: u.Name, Email: u.Email, Verified: true,
		Avatar: accountAvatar(u), SuperUser: u.Superuser || slices.Contains(a.o.Policy.SuperUsers, u.Name), Enabled: u.Enabled}
}

func (a *API) suListUsers(c echo.Context) error {
	if err := a.requireSuperuser(c); err != nil {
		return err
	}
	users, err := a.o.Store.ListAccounts(c.Request().Context(), store.KindUser)
	if err != nil {
		return Internal(err)
	}
	out := make([]userView, len(users))
	for i := range users {
		out[i] = a.userView(&users[i])
	}
	return c.JSON(http.StatusOK, map[string]any{"users": out})
}

type createUserBody struct {
	Username string `json:"username"`
	Email    string `json:"email"`
}

func (a *API) suCreateUser(c echo.Context) error {
	if err := a.requireSuperuser(c); err != nil {
		return err
	}
	var b createUserBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	if !ValidNamespaceName(b.Username) {
		return BadRequest("Invalid username: use 2-255 lowercase letters, digits and single separators (. _ -)")
	}
	ctx := c.Request().Context()
	if err := a.nameFree(c, b.Username); err != nil {
		return err
	}
	password := auth.RandomString(auth.PasswordLen, auth.UpperAlnum)
	hash, err := auth.HashPassword(password)
	if err != nil {
		return Internal(err)
	}
	u := &store.Account{Kind: store.KindUser, Name: b.Username, Email: b.Email, PasswordHash: hash, Enabled: true}
	if err := a.o.Store.CreateAccount(ctx, u); errors.Is(err, store.ErrConflict) {
		return BadRequest("The username or email address is already in use")
	} else if err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusOK, map[string]any{
		"username": u.Name, "email": u.Email, "password": password,
		// Quay's encrypted_password is the password encrypted under the
		// server's key; berth does not accept it as a credential.
		"encrypted_password": base64.StdEncoding.EncodeToString(a.o.Secrets.Seal([]byte(password), "encrypted-password:"+u.Name)),
	})
}

// nameFree is a 400 when an account (of any kind) has the name.
func (a *API) nameFree(c echo.Context, name string) error {
	_, err := a.o.Store.GetAccountByName(c.Request().Context(), name)
	switch {
	case err == nil:
		return BadRequest("A user or organization with this name already exists")
	case errors.Is(err, store.ErrNotFound):
		return nil
	}
	return Internal(err)
}

// userByName finds a user account (not an organization or robot); 404 otherwise.
func (a *API) userByName(c echo.Context, name string) (*store.Account, error) {
	u, err := a.o.Store.GetAccountByName(c.Request().Context(), name)
	if errors.Is(err, store.ErrNotFound) || err == nil && u.Kind != store.KindUser {
		return nil, NotFound()
	}
	if err != nil {
		return nil, Internal(err)
	}
	return u, nil
}

// revokeAccount ends every credential of name at once: cached logins and
// registry tokens already issued. The revocation is recorded in the store,
// so it outlives a restart and reaches the other servers of the database.
func (a *API) revokeAccount(ctx context.Context, name string) error {
	a.o.Authenticator.Forget(name)
	return a.o.Revoker.Revoke(ctx, name)
}

// endUserLogins is revokeAccount for a user whose password changed or who
// was disabled: its web sessions and OAuth access tokens end too. Their
// rows go, so that every server of the database refuses them at once, and
// the epoch they recorded is now too old, which also ends one made by a
// request racing this one.
func (a *API) endUserLogins(ctx context.Context, u *store.Account) error {
	if err := a.o.Store.DeleteLogins(ctx, u.ID); err != nil {
		return err
	}
	return a.revokeAccount(ctx, u.Name)
}

func (a *API) suDeleteUser(c echo.Context) error {
	if err := a.requireSuperuser(c); err != nil {
		return err
	}
	u, err := a.userByName(c, Param(c, "username"))
	if err != nil {
		return err
	}
	if u.Superuser || slices.Contains(a.o.Policy.SuperUsers, u.Name) {
		return BadRequest("Cannot delete a superuser")
	}
	ctx := c.Request().Context()
	robots, err := a.o.Store.ListRobots(ctx, u.ID)
	if err != nil {
		return Internal(err)
	}
	if err := a.o.Store.DeleteAccount(ctx, u.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return Internal(err)
	}
	if err := a.revokeAccount(ctx, u.Name); err != nil {
		return Internal(err)
	}
	for _, r := range robots {
		if err := a.revokeAccount(ctx, r.Name); err != nil {
			return Internal(err)
		}
	}
	return c.NoContent(http.StatusNoContent)
}

type updateUserBody struct {
	Enabled  *bool   `json:"enabled"`
	Password *string `json:"password"`
	Email    *string `json:"email"`
}

func (a *API) suUpdateUser(c echo.Context) error {
	if err := a.requireSuperuser(c); err != nil {
		return err
	}
	u, err := a.userByName(c, Param(c, "username"))
	if err != nil {
		return err
	}
	var b updateUserBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	revoke := false
	if b.Enabled != nil {
		if !*b.Enabled && u.Name == Caller(c).Name() {
			return BadRequest("You cannot disable your own account")
		}
		revoke = revoke || u.Enabled && !*b.Enabled
		u.Enabled = *b.Enabled
	}
	if b.Password != nil {
		if len(*b.Password) < 8 {
			return BadRequest("The password must be at least 8 characters long")
		}
		hash, err := auth.HashPassword(*b.Password)
		if errors.Is(err, auth.ErrPasswordTooLong) {
			return BadRequest("The password is too long")
		} else if err != nil {
			return Internal(err)
		}
		u.PasswordHash = hash
		revoke = true
	}
	if b.Email != nil {
		u.Email = *b.Email
	}
	ctx := c.Request().Context()
	if err := a.o.Store.UpdateAccount(ctx, u); errors.Is(err, store.ErrConflict) {
		return BadRequest("The email address is already in use")
	} else if err != nil {
		return Internal(err)
	}
	if revoke {
		if err := a.endUserLogins(ctx, u); err != nil {
			return Internal(err)
		}
	}
	return c.JSON(http.StatusOK, a.userView(u))
}
