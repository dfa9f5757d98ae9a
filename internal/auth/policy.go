package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/berth-dev/berth/internal/store"
)

// Policy is the one place that decides what a principal may do. Every entry
// point (bearer tokens and Basic on /v2, the REST API) asks it, so
// permission rules change here and nowhere else.
//
// The rules are Quay's:
//   - Disabled accounts may do nothing, not even pull public repositories.
//   - Superusers (flagged in the store or named in SuperUsers) may do
//     everything.
//   - A user administers its own namespace and every repository in it.
//   - In an organization, members of a team with role admin administer the
//     organization and every repository in it; role creator also lets them
//     create repositories; every team grants the repository roles set for it.
//   - Users, robots and teams hold repository roles: read (pull), write
//     (pull, push), admin (pull, push, delete, manage the repository).
//   - A robot acts only inside the namespace that owns it: roles on other
//     namespaces' repositories are ignored, and it never administers an
//     organization (it cannot read other robots' tokens or change teams).
//   - Public repositories are pullable by anyone.
//   - A principal carrying OAuth scopes gets the intersection of its
//     account's rights and the scopes (repo:read/write/admin cap repository
//     roles, repo:create gates creation, org:admin organization
//     administration, user:admin a user's own namespace administration,
//     super:user the superuser override).
type Policy struct {
	Store PolicyStore
	// SuperUsers are account names treated as superusers besides those
	// flagged in the store (config SUPER_USERS).
	SuperUsers []string
}

// PolicyStore is what the policy reads: accounts, repositories, and the
// roles granted on them directly and through teams.
type PolicyStore interface {
	GetAccountByName(ctx context.Context, name string) (*store.Account, error)
	GetRepository(ctx context.Context, namespace, name string) (*store.Repository, error)
	EffectiveRepoRoles(ctx context.Context, repoID, accountID int64) ([]store.Role, error)
	OrgTeamRoles(ctx context.Context, orgID, accountID int64) ([]store.TeamRole, error)
}

// MaxRole returns the stronger of two roles.
func MaxRole(a, b store.Role) store.Role {
	if b.Rank() > a.Rank() {
		return b
	}
	return a
}

// RoleAtLeast reports whether have grants everything need does.
func RoleAtLeast(have, need store.Role) bool { return have.Rank() >= need.Rank() }

// ValidRole reports whether r is read, write or admin.
func ValidRole(r store.Role) bool { return r.Rank() > 0 }

// minRole returns the weaker of two roles.
func minRole(a, b store.Role) store.Role {
	if b.Rank() < a.Rank() {
		return b
	}
	return a
}

// roleActions maps a repository role to /v2 actions. The slices are shared.
func roleActions(r store.Role) []Action {
	switch r {
	case store.RoleRead:
		return grantPull
	case store.RoleWrite:
		return grantPullPush
	case store.RoleAdmin:
		return grantAll
	}
	return nil
}

// scopeCap is the strongest repository role who's scopes allow.
func scopeCap(who *Principal) store.Role {
	switch {
	case who.HasScope(ScopeRepoAdmin):
		return store.RoleAdmin
	case who.HasScope(ScopeRepoWrite):
		return store.RoleWrite
	case who.HasScope(ScopeRepoRead):
		return store.RoleRead
	}
	return ""
}

// resolve returns who's current account: nil for anonymous callers. A
// registry token's principal carries only a name, so it is looked up; an
// account deleted since comes back disabled.
func (p *Policy) resolve(ctx context.Context, who *Principal) (*store.Account, error) {
	acct := who.account()
	if acct == nil || acct.ID != 0 {
		return acct, nil
	}
	full, err := p.Store.GetAccountByName(ctx, acct.Name)
	if errors.Is(err, store.ErrNotFound) {
		return &store.Account{Name: acct.Name}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up account %s: %w", acct.Name, err)
	}
	return full, nil
}

// isSuper reports whether acct (enabled, a user) is a superuser and who's
// scopes allow using that.
func (p *Policy) isSuper(who *Principal, acct *store.Account) bool {
	return acct != nil && acct.Enabled && acct.Kind == store.KindUser &&
		(acct.Superuser || slices.Contains(p.SuperUsers, acct.Name)) &&
		who.HasScope(ScopeSuperUser)
}

// IsSuperuser reports whether who may use superuser powers: an enabled
// superuser whose scopes, if any, include super:user.
func (p *Policy) IsSuperuser(ctx context.Context, who *Principal) (bool, error) {
	acct, err := p.resolve(ctx, who)
	if err != nil {
		return false, err
	}
	return p.isSuper(who, acct), nil
}

// RepositoryRole returns who's role on repo: "" for none. Public
// repositories give at least read to anyone enabled or anonymous. An error
// is returned only when the store fails.
func (p *Policy) RepositoryRole(ctx context.Context, who *Principal, repo *store.Repository) (store.Role, error) {
	acct, err := p.resolve(ctx, who)
	if err != nil {
		return "", err
	}
	if acct != nil && !acct.Enabled {
		return "", nil
	}
	role, err := p.accountRole(ctx, who, acct, repo)
	if err != nil {
		return "", err
	}
	if repo.Visibility == store.Public {
		role = MaxRole(role, store.RoleRead)
	}
	return role, nil
}

// accountRole is the role acct's identity gives on repo, capped by who's
// scopes, ignoring public visibility.
func (p *Policy) accountRole(ctx context.Context, who *Principal, acct *store.Account, repo *store.Repository) (store.Role, error) {
	if acct == nil || !acct.Enabled {
		return "", nil
	}
	limit := scopeCap(who)
	if limit == "" {
		return "", nil
	}
	switch {
	case p.isSuper(who, acct):
		return limit, nil
	case acct.Kind == store.KindUser && acct.Name == repo.Namespace:
		return limit, nil
	case acct.Kind == store.KindRobot && acct.OwnerID != repo.NamespaceID:
		return "", nil
	case acct.Kind == store.KindOrganization:
		return "", nil
	}
	roles, err := p.Store.EffectiveRepoRoles(ctx, repo.ID, acct.ID)
	if err != nil {
		return "", fmt.Errorf("repository roles of %s on %s: %w", acct.Name, repo.FullName(), err)
	}
	var role store.Role
	for _, r := range roles {
		role = MaxRole(role, r)
	}
	if role != store.RoleAdmin {
		teamRoles, err := p.Store.OrgTeamRoles(ctx, repo.NamespaceID, acct.ID)
		if err != nil {
			return "", fmt.Errorf("team roles of %s in %s: %w", acct.Name, repo.Namespace, err)
		}
		if slices.Contains(teamRoles, store.TeamAdmin) {
			role = store.RoleAdmin
		}
	}
	return minRole(role, limit), nil
}

// RepositoryActions returns the /v2 actions who may perform on
// namespace/name and the repository itself (nil when it does not exist
// yet). The returned slice is shared: do not modify its elements. An error
// is returned only when the store fails; "no access" is an empty grant.
//
// A grant of push on a repository that does not exist means the principal
// may create it by pushing (CanCreateIn); a superuser's grant does not
// check that the namespace exists, so the caller creating the repository
// must.
func (p *Policy) RepositoryActions(ctx context.Context, who *Principal, namespace, name string) ([]Action, *store.Repository, error) {
	acct, err := p.resolve(ctx, who)
	if err != nil {
		return nil, nil, err
	}
	if acct != nil && !acct.Enabled {
		// Nothing about the repository is revealed to a disabled account.
		return nil, nil, nil
	}
	repo, err := p.Store.GetRepository(ctx, namespace, name)
	if errors.Is(err, store.ErrNotFound) {
		ok, err := p.canCreate(ctx, who, acct, namespace, nil)
		if err != nil || !ok {
			return nil, nil, err
		}
		// Whoever may create the repository may push to it, so that the
		// first push creates it. Delete waits until there is something.
		return grantPullPush, nil, nil
	} else if err != nil {
		return nil, nil, fmt.Errorf("look up repository %s/%s: %w", namespace, name, err)
	}
	role, err := p.RepositoryRole(ctx, who, repo)
	if err != nil {
		return nil, nil, err
	}
	return roleActions(role), repo, nil
}

// CanCreateIn reports whether who may create repositories in the namespace
// account ns (a user or an organization): superusers anywhere, a user in its
// own namespace, members of an organization team with role creator or admin
// (robots included, inside their own organization). OAuth principals need
// repo:create as well.
func (p *Policy) CanCreateIn(ctx context.Context, who *Principal, ns *store.Account) (bool, error) {
	acct, err := p.resolve(ctx, who)
	if err != nil {
		return false, err
	}
	return p.canCreate(ctx, who, acct, ns.Name, ns)
}

// canCreate decides creation in the namespace called nsName; ns is its
// account when the caller has it (nil: looked up only if needed).
func (p *Policy) canCreate(ctx context.Context, who *Principal, acct *store.Account, nsName string, ns *store.Account) (bool, error) {
	if acct == nil || !acct.Enabled || !who.HasScope(ScopeRepoCreate) {
		return false, nil
	}
	if p.isSuper(who, acct) {
		return true, nil
	}
	if acct.Kind == store.KindUser && acct.Name == nsName {
		return true, nil
	}
	if acct.Kind != store.KindUser && acct.Kind != store.KindRobot {
		return false, nil
	}
	if ns == nil {
		var err error
		ns, err = p.Store.GetAccountByName(ctx, nsName)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("look up namespace %s: %w", nsName, err)
		}
	}
	if ns.Kind != store.KindOrganization || acct.Kind == store.KindRobot && acct.OwnerID != ns.ID {
		return false, nil
	}
	roles, err := p.Store.OrgTeamRoles(ctx, ns.ID, acct.ID)
	if err != nil {
		return false, fmt.Errorf("team roles of %s in %s: %w", acct.Name, ns.Name, err)
	}
	return slices.Contains(roles, store.TeamAdmin) || slices.Contains(roles, store.TeamCreator), nil
}

// IsOrgAdmin reports whether who administers the organization org: a
// superuser, or a user in one of its teams with role admin. Robots never
// administer organizations. OAuth principals need org:admin as well.
func (p *Policy) IsOrgAdmin(ctx context.Context, who *Principal, org *store.Account) (bool, error) {
	acct, err := p.resolve(ctx, who)
	if err != nil {
		return false, err
	}
	if acct == nil || !acct.Enabled || org.Kind != store.KindOrganization || !who.HasScope(ScopeOrgAdmin) {
		return false, nil
	}
	if p.isSuper(who, acct) {
		return true, nil
	}
	if acct.Kind != store.KindUser {
		return false, nil
	}
	roles, err := p.Store.OrgTeamRoles(ctx, org.ID, acct.ID)
	if err != nil {
		return false, fmt.Errorf("team roles of %s in %s: %w", acct.Name, org.Name, err)
	}
	return slices.Contains(roles, store.TeamAdmin), nil
}

// IsOrgMember reports whether who may see the organization org: a
// superuser, a member of any of its teams, or one of its robots.
func (p *Policy) IsOrgMember(ctx context.Context, who *Principal, org *store.Account) (bool, error) {
	acct, err := p.resolve(ctx, who)
	if err != nil {
		return false, err
	}
	if acct == nil || !acct.Enabled || org.Kind != store.KindOrganization {
		return false, nil
	}
	if p.isSuper(who, acct) || acct.Kind == store.KindRobot && acct.OwnerID == org.ID {
		return true, nil
	}
	roles, err := p.Store.OrgTeamRoles(ctx, org.ID, acct.ID)
	if err != nil {
		return false, fmt.Errorf("team roles of %s in %s: %w", acct.Name, org.Name, err)
	}
	return len(roles) > 0, nil
}

// CanAdminNamespace reports whether who administers the namespace ns: for
// an organization IsOrgAdmin; for a user namespace the user itself (with
// user:admin when scoped) or a superuser. This guards robots, prototypes
// and applications of the namespace.
func (p *Policy) CanAdminNamespace(ctx context.Context, who *Principal, ns *store.Account) (bool, error) {
	switch ns.Kind {
	case store.KindOrganization:
		return p.IsOrgAdmin(ctx, who, ns)
	case store.KindUser:
		acct, err := p.resolve(ctx, who)
		if err != nil {
			return false, err
		}
		if acct == nil || !acct.Enabled {
			return false, nil
		}
		if p.isSuper(who, acct) {
			return true, nil
		}
		return acct.Kind == store.KindUser && acct.ID == ns.ID && who.HasScope(ScopeUserAdmin), nil
	}
	return false, nil
}

// CatalogAllowed reports whether who may list every repository
// (GET /v2/_catalog, scope registry:catalog:*): enabled superusers only.
func (p *Policy) CatalogAllowed(who *Principal) bool {
	acct := who.account()
	return acct != nil && acct.Enabled && (acct.Superuser || slices.Contains(p.SuperUsers, acct.Name)) &&
		acct.Kind != store.KindRobot && acct.Kind != store.KindOrganization && who.HasScope(ScopeSuperUser)
}
