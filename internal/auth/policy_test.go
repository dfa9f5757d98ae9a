package auth

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/berth-dev/berth/internal/store"
)

// world is a small tenancy: users, an organization with teams, robots and
// repositories, with the roles the fake store reports.
type world struct {
	fs                                          *fakeStore
	alice, bob, carol, dave, root, cfgroot, dis *store.Account
	acme, orgbot, alicebot                      *store.Account
	alicePriv, alicePub, acmeApp, acmeWeb       *store.Repository
}

func newWorld(t *testing.T) *world {
	fs := newFakeStore()
	w := &world{fs: fs}
	w.alice = fs.addUser(t, "alice", "", nil)
	w.bob = fs.addUser(t, "bob", "", nil)
	w.carol = fs.addUser(t, "carol", "", nil)
	w.dave = fs.addUser(t, "dave", "", nil)
	w.root = fs.addUser(t, "root", "", func(a *store.Account) { a.Superuser = true })
	w.cfgroot = fs.addUser(t, "cfgroot", "", nil)
	w.dis = fs.addUser(t, "dis", "", func(a *store.Account) { a.Enabled = false; a.Superuser = true })
	w.acme = fs.addUser(t, "acme", "", func(a *store.Account) { a.Kind = store.KindOrganization })
	w.orgbot = fs.addUser(t, "acme+ci", "", func(a *store.Account) { a.Kind = store.KindRobot; a.OwnerID = w.acme.ID })
	w.alicebot = fs.addUser(t, "alice+bot", "", func(a *store.Account) { a.Kind = store.KindRobot; a.OwnerID = w.alice.ID })
	w.alicePriv = fs.addRepo("alice", "priv", store.Private)
	w.alicePub = fs.addRepo("alice", "pub", store.Public)
	w.acmeApp = fs.addRepo("acme", "app", store.Private)
	w.acmeWeb = fs.addRepo("acme", "web", store.Public)

	team := func(acct *store.Account, r store.TeamRole) {
		fs.teamRoles[[2]int64{w.acme.ID, acct.ID}] = append(fs.teamRoles[[2]int64{w.acme.ID, acct.ID}], r)
	}
	team(w.bob, store.TeamMember)
	team(w.carol, store.TeamCreator)
	team(w.dave, store.TeamAdmin)
	team(w.orgbot, store.TeamMember)
	perm := func(repo *store.Repository, acct *store.Account, roles ...store.Role) {
		fs.repoRoles[[2]int64{repo.ID, acct.ID}] = roles
	}
	perm(w.acmeApp, w.bob, store.RoleRead, store.RoleWrite) // direct and through a team
	perm(w.acmeApp, w.orgbot, store.RoleRead)
	perm(w.alicePriv, w.orgbot, store.RoleAdmin) // ignored: another namespace
	perm(w.alicePriv, w.bob, store.RoleRead)
	perm(w.alicePriv, w.alicebot, store.RoleWrite)
	return w
}

func principal(a *store.Account, scopes ...OAuthScope) *Principal {
	p := &Principal{Account: a}
	if scopes != nil {
		p.Scopes = scopes
	}
	return p
}

func TestRepositoryRole(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	p := &Policy{Store: w.fs, SuperUsers: []string{"cfgroot"}}
	nameOnly := &Principal{Account: &store.Account{Name: "bob", Enabled: true}} // a registry token's principal
	ghost := &Principal{Account: &store.Account{Name: "ghost", Enabled: true}}  // deleted since its token was issued

	for _, tc := range []struct {
		name string
		who  *Principal
		repo *store.Repository
		want store.Role
	}{
		{"owner private", principal(w.alice), w.alicePriv, store.RoleAdmin},
		{"owner public", principal(w.alice), w.alicePub, store.RoleAdmin},
		{"collaborator read", principal(w.bob), w.alicePriv, store.RoleRead},
		{"stranger private", principal(w.carol), w.alicePriv, ""},
		{"stranger public", principal(w.carol), w.alicePub, store.RoleRead},
		{"anonymous public", nil, w.alicePub, store.RoleRead},
		{"anonymous private", nil, w.alicePriv, ""},
		{"superuser", principal(w.root), w.acmeApp, store.RoleAdmin},
		{"superuser from config", principal(w.cfgroot), w.alicePriv, store.RoleAdmin},
		{"disabled superuser private", principal(w.dis), w.alicePriv, ""},
		{"disabled superuser public", principal(w.dis), w.alicePub, ""},
		{"org member with direct write", principal(w.bob), w.acmeApp, store.RoleWrite},
		{"org creator without repo role", principal(w.carol), w.acmeApp, ""},
		{"org creator public", principal(w.carol), w.acmeWeb, store.RoleRead},
		{"org admin team", principal(w.dave), w.acmeApp, store.RoleAdmin},
		{"org robot read", principal(w.orgbot), w.acmeApp, store.RoleRead},
		{"org robot outside its namespace", principal(w.orgbot), w.alicePriv, ""},
		{"org robot outside, public", principal(w.orgbot), w.alicePub, store.RoleRead},
		{"user robot write", principal(w.alicebot), w.alicePriv, store.RoleWrite},
		{"user robot is not its owner", principal(w.alicebot), w.alicePub, store.RoleRead},
		{"organization itself", principal(w.acme), w.acmeApp, ""},
		{"registry-token principal", nameOnly, w.acmeApp, store.RoleWrite},
		{"deleted account", ghost, w.acmeWeb, ""},
		{"oauth repo:read caps owner", principal(w.alice, ScopeRepoRead), w.alicePriv, store.RoleRead},
		{"oauth repo:write caps owner", principal(w.alice, ScopeRepoWrite), w.alicePriv, store.RoleWrite},
		{"oauth repo:admin", principal(w.alice, ScopeRepoAdmin), w.alicePriv, store.RoleAdmin},
		{"oauth repo:admin is still the account's role", principal(w.bob, ScopeRepoAdmin), w.acmeApp, store.RoleWrite},
		{"oauth without repo scopes", principal(w.alice, ScopeUserRead), w.alicePriv, ""},
		{"oauth without repo scopes, public", principal(w.alice, ScopeUserRead), w.alicePub, store.RoleRead},
		{"oauth superuser needs repo scopes", principal(w.root, ScopeSuperUser), w.acmeApp, ""},
		{"oauth superuser without super:user", principal(w.root, ScopeRepoAdmin), w.acmeApp, ""},
		{"oauth superuser with both", principal(w.root, ScopeRepoAdmin, ScopeSuperUser), w.acmeApp, store.RoleAdmin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.RepositoryRole(ctx, tc.who, tc.repo)
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestRepositoryActions(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	p := &Policy{Store: w.fs}
	for _, tc := range []struct {
		name     string
		who      *Principal
		ns, repo string
		want     []Action
		exists   bool
	}{
		{"owner", principal(w.alice), "alice", "priv", []Action{Pull, Push, Delete}, true},
		{"read", principal(w.bob), "alice", "priv", []Action{Pull}, true},
		{"write", principal(w.bob), "acme", "app", []Action{Pull, Push}, true},
		{"anonymous public", nil, "acme", "web", []Action{Pull}, true},
		{"anonymous private", nil, "acme", "app", nil, true},
		{"owner creates", principal(w.alice), "alice", "new", []Action{Pull, Push}, false},
		{"superuser creates", principal(w.root), "alice", "new", []Action{Pull, Push}, false},
		{"org creator creates", principal(w.carol), "acme", "new", []Action{Pull, Push}, false},
		{"org admin creates", principal(w.dave), "acme", "new", []Action{Pull, Push}, false},
		{"org member cannot create", principal(w.bob), "acme", "new", nil, false},
		{"robot member cannot create", principal(w.orgbot), "acme", "new", nil, false},
		{"stranger cannot create", principal(w.bob), "alice", "new", nil, false},
		{"anonymous cannot create", nil, "alice", "new", nil, false},
		{"no such namespace", principal(w.bob), "nobody", "new", nil, false},
		{"oauth create needs repo:create", principal(w.alice, ScopeRepoAdmin), "alice", "new", nil, false},
		{"oauth with repo:create", principal(w.alice, ScopeRepoCreate), "alice", "new", []Action{Pull, Push}, false},
		{"disabled", principal(w.dis), "alice", "pub", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, repo, err := p.RepositoryActions(ctx, tc.who, tc.ns, tc.repo)
			if err != nil || !slices.Equal(got, tc.want) || (repo != nil) != tc.exists {
				t.Fatalf("got %v, %v, %v; want %v (exists %v)", got, repo, err, tc.want, tc.exists)
			}
		})
	}
	w.fs.fail = errDBDown
	if _, _, err := p.RepositoryActions(ctx, principal(w.alice), "alice", "priv"); !errors.Is(err, errDBDown) {
		t.Fatalf("store failure: err = %v, want it wrapped", err)
	}
}

func TestOrgDecisions(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	// A robot in the admin team gets repository admin, never org admin.
	w.fs.teamRoles[[2]int64{w.acme.ID, w.orgbot.ID}] = []store.TeamRole{store.TeamAdmin}
	p := &Policy{Store: w.fs}
	type want struct{ admin, member, create, nsAdmin bool }
	for _, tc := range []struct {
		name string
		who  *Principal
		ns   *store.Account
		want want
	}{
		{"team admin", principal(w.dave), w.acme, want{true, true, true, true}},
		{"team creator", principal(w.carol), w.acme, want{false, true, true, false}},
		{"team member", principal(w.bob), w.acme, want{false, true, false, false}},
		{"stranger", principal(w.alice), w.acme, want{false, false, false, false}},
		{"robot in admin team", principal(w.orgbot), w.acme, want{false, true, true, false}},
		{"superuser", principal(w.root), w.acme, want{true, true, true, true}},
		{"disabled superuser", principal(w.dis), w.acme, want{}},
		{"anonymous", nil, w.acme, want{}},
		{"oauth admin without org:admin", principal(w.dave, ScopeRepoAdmin, ScopeRepoCreate), w.acme, want{false, true, true, false}},
		{"oauth admin with org:admin", principal(w.dave, ScopeOrgAdmin), w.acme, want{true, true, false, true}},
		{"user namespace, self", principal(w.alice), w.alice, want{false, false, true, true}},
		{"user namespace, self, oauth user:read", principal(w.alice, ScopeUserRead), w.alice, want{}},
		{"user namespace, self, oauth user:admin", principal(w.alice, ScopeUserAdmin), w.alice, want{false, false, false, true}},
		{"user namespace, other", principal(w.bob), w.alice, want{}},
		{"user namespace, own robot", principal(w.alicebot), w.alice, want{}},
		{"user namespace, superuser", principal(w.root), w.alice, want{false, false, true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got want
			var err error
			check := func(b bool, e error) bool {
				if e != nil {
					err = e
				}
				return b
			}
			got.admin = check(p.IsOrgAdmin(ctx, tc.who, tc.ns))
			got.member = check(p.IsOrgMember(ctx, tc.who, tc.ns))
			got.create = check(p.CanCreateIn(ctx, tc.who, tc.ns))
			got.nsAdmin = check(p.CanAdminNamespace(ctx, tc.who, tc.ns))
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestOAuthScopes(t *testing.T) {
	got, err := ParseOAuthScopes([]string{"repo:write,user:read", "repo:read repo:write"})
	if err != nil || !slices.Equal(got, []OAuthScope{ScopeRepoRead, ScopeRepoWrite, ScopeUserRead}) {
		t.Fatalf("ParseOAuthScopes = %v, %v", got, err)
	}
	for _, bad := range [][]string{nil, {""}, {"repo:root"}, {"repo:read", "admin"}} {
		if _, err := ParseOAuthScopes(bad); !errors.Is(err, ErrUnknownScope) {
			t.Errorf("ParseOAuthScopes(%q) = %v, want ErrUnknownScope", bad, err)
		}
	}
	acct := &store.Account{Name: "u", Enabled: true}
	for _, tc := range []struct {
		have []OAuthScope
		ask  OAuthScope
		want bool
	}{
		{[]OAuthScope{ScopeRepoAdmin}, ScopeRepoWrite, true},
		{[]OAuthScope{ScopeRepoAdmin}, ScopeRepoRead, true},
		{[]OAuthScope{ScopeRepoWrite}, ScopeRepoRead, true},
		{[]OAuthScope{ScopeRepoWrite}, ScopeRepoAdmin, false},
		{[]OAuthScope{ScopeRepoRead}, ScopeRepoWrite, false},
		{[]OAuthScope{ScopeRepoAdmin}, ScopeRepoCreate, false},
		{[]OAuthScope{ScopeUserAdmin}, ScopeUserRead, true},
		{[]OAuthScope{ScopeUserRead}, ScopeUserAdmin, false},
		{[]OAuthScope{ScopeSuperUser}, ScopeOrgAdmin, false},
		{[]OAuthScope{}, ScopeRepoRead, false},
		{nil, ScopeSuperUser, true},
	} {
		if got := (&Principal{Account: acct, Scopes: tc.have}).HasScope(tc.ask); got != tc.want {
			t.Errorf("%v has %s = %v", tc.have, tc.ask, got)
		}
	}
	if (*Principal)(nil).HasScope(ScopeRepoRead) || (&Principal{}).HasScope(ScopeRepoRead) {
		t.Error("anonymous principals hold no scope")
	}
}

func TestIntersect(t *testing.T) {
	all := []Action{Pull, Push, Delete}
	for _, tc := range []struct {
		req, granted, want []Action
	}{
		{[]Action{Pull, Push}, all, []Action{Pull, Push}},
		{[]Action{Pull, Push}, []Action{Pull}, []Action{Pull}},
		{[]Action{Push}, []Action{Pull}, nil},
		{[]Action{All}, all, []Action{All}},
		{[]Action{All}, []Action{Pull, Push}, []Action{Pull, Push}},
		{[]Action{Delete}, []Action{All}, []Action{Delete}},
		{[]Action{Pull, Pull, Push, Pull}, all, []Action{Pull, Push}},
		{[]Action{Pull, All}, []Action{Pull}, []Action{Pull}},
		{nil, all, nil},
		{[]Action{Pull}, nil, nil},
	} {
		if got := Intersect(tc.req, tc.granted); !slices.Equal(got, tc.want) {
			t.Errorf("Intersect(%v, %v) = %v, want %v", tc.req, tc.granted, got, tc.want)
		}
	}
	if !Covers([]Action{Pull, Push, Delete}, All) || Covers([]Action{Pull, Push}, All) {
		t.Error("Covers(..., All) must need every action")
	}
}

func TestCatalogAllowed(t *testing.T) {
	p := &Policy{}
	for _, tc := range []struct {
		who  *Principal
		want bool
	}{
		{nil, false},
		{&Principal{}, false},
		{&Principal{Account: &store.Account{Name: "alice", Enabled: true}}, false},
		{&Principal{Account: &store.Account{Name: "root", Enabled: true, Superuser: true}}, true},
		{&Principal{Account: &store.Account{Name: "root", Superuser: true}}, false},
	} {
		if got := p.CatalogAllowed(tc.who); got != tc.want {
			t.Errorf("CatalogAllowed(%q) = %v", tc.who.Name(), got)
		}
	}
}

func TestCatalogScoped(t *testing.T) {
	p := &Policy{SuperUsers: []string{"cfg"}}
	root := &store.Account{Kind: store.KindUser, Name: "root", Enabled: true, Superuser: true}
	if p.CatalogAllowed(&Principal{Account: root, Scopes: []OAuthScope{ScopeRepoAdmin}}) {
		t.Error("a token without super:user listed the catalog")
	}
	if !p.CatalogAllowed(&Principal{Account: &store.Account{Kind: store.KindUser, Name: "cfg", Enabled: true}}) {
		t.Error("a SUPER_USERS user may list the catalog")
	}
}
