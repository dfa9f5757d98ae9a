package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

func mustUser(t *testing.T, s *Store, name string) *store.Account {
	t.Helper()
	a := &store.Account{Kind: store.KindUser, Name: name, Email: name + "@example.com", Enabled: true}
	if err := s.CreateAccount(context.Background(), a); err != nil {
		t.Fatalf("CreateAccount(%s): %v", name, err)
	}
	return a
}

func mustOrg(t *testing.T, s *Store, name string, creatorID int64) *store.Account {
	t.Helper()
	o := &store.Account{Name: name, Enabled: true}
	if err := s.CreateOrganization(context.Background(), o, creatorID); err != nil {
		t.Fatalf("CreateOrganization(%s): %v", name, err)
	}
	return o
}

func mustTeam(t *testing.T, s *Store, orgID int64, name string, role store.TeamRole) *store.Team {
	t.Helper()
	tm := &store.Team{OrgID: orgID, Name: name, Role: role}
	if _, err := s.PutTeam(context.Background(), tm); err != nil {
		t.Fatalf("PutTeam(%s): %v", name, err)
	}
	return tm
}

func mustRobot(t *testing.T, s *Store, owner *store.Account, short string) *store.Account {
	t.Helper()
	r := &store.Account{Name: owner.Name + "+" + short, OwnerID: owner.ID, Enabled: true}
	if err := s.CreateRobot(context.Background(), r, &store.RobotInfo{Description: short}); err != nil {
		t.Fatalf("CreateRobot(%s): %v", r.Name, err)
	}
	return r
}

func mustRepo(t *testing.T, s *Store, nsID int64, name string) *store.Repository {
	t.Helper()
	r := &store.Repository{NamespaceID: nsID, Name: name}
	if err := s.CreateRepository(context.Background(), r); err != nil {
		t.Fatalf("CreateRepository(%s): %v", name, err)
	}
	return r
}

func mustGrant(t *testing.T, s *Store, p store.RepoPermission) {
	t.Helper()
	if err := s.SetRepoPermission(context.Background(), &p); err != nil {
		t.Fatalf("SetRepoPermission(%+v): %v", p, err)
	}
}

func accountNames(as []store.Account) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Name)
	}
	return out
}

func sortedRoles[R ~string](rs []R) []R {
	out := slices.Clone(rs)
	slices.Sort(out)
	return out
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s = %v, want %v", what, err, target)
	}
}

func TestOrganizationsAndAccounts(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice := mustUser(t, s, "alice")
		bob := mustUser(t, s, "bob")
		org := mustOrg(t, s, "acme", alice.ID)
		if org.ID == 0 || org.Kind != store.KindOrganization || org.CreatedAt.IsZero() {
			t.Fatalf("organization not filled: %+v", org)
		}
		owners, err := s.GetTeam(ctx, org.ID, store.OwnersTeam)
		if err != nil {
			t.Fatal(err)
		}
		if owners.Role != store.TeamAdmin || owners.OrgID != org.ID {
			t.Errorf("owners team = %+v", owners)
		}
		members, err := s.ListTeamMembers(ctx, owners.ID)
		if err != nil || len(members) != 1 || members[0].Account.ID != alice.ID || members[0].Invited {
			t.Errorf("owners members = %+v, %v; want alice", members, err)
		}
		if roles, err := s.OrgTeamRoles(ctx, org.ID, alice.ID); err != nil || !slices.Equal(roles, []store.TeamRole{store.TeamAdmin}) {
			t.Errorf("OrgTeamRoles(alice) = %v, %v", roles, err)
		}
		if roles, err := s.OrgTeamRoles(ctx, org.ID, bob.ID); err != nil || len(roles) != 0 {
			t.Errorf("OrgTeamRoles(bob) = %v, %v", roles, err)
		}
		if m, err := s.OrgMembers(ctx, org.ID, []int64{alice.ID, bob.ID}); err != nil || !m[alice.ID] || m[bob.ID] || len(m) != 1 {
			t.Errorf("OrgMembers(alice, bob) = %v, %v; want alice alone", m, err)
		}

		// Conflicts, and the transaction leaves nothing behind on failure.
		wantErr(t, "CreateOrganization(taken name)", s.CreateOrganization(ctx, &store.Account{Name: "alice"}, bob.ID), store.ErrConflict)
		wantErr(t, "CreateOrganization(missing creator)", s.CreateOrganization(ctx, &store.Account{Name: "ghostorg"}, 9999), store.ErrNotFound)
		if _, err := s.GetAccountByName(ctx, "ghostorg"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a failed CreateOrganization left its account: %v", err)
		}
		if n := count(t, s, "teams", "name = ?", store.OwnersTeam); n != 1 {
			t.Errorf("%d owners teams, want 1", n)
		}
		if err := s.CreateOrganization(ctx, &store.Account{Kind: store.KindUser, Name: "x"}, alice.ID); err == nil {
			t.Error("CreateOrganization accepted a user kind")
		}

		// Settings: defaults, round trip, organizations only.
		set, err := s.GetOrgSettings(ctx, org.ID)
		if err != nil || *set != (store.OrgSettings{TagExpirationS: 1209600}) {
			t.Errorf("default settings = %+v, %v", set, err)
		}
		want := store.OrgSettings{InvoiceEmail: true, InvoiceEmailAddress: "billing@acme.test", TagExpirationS: 3600}
		if err := s.PutOrgSettings(ctx, org.ID, &want); err != nil {
			t.Fatal(err)
		}
		want.TagExpirationS = 7200
		if err := s.PutOrgSettings(ctx, org.ID, &want); err != nil {
			t.Fatal(err)
		}
		if set, err = s.GetOrgSettings(ctx, org.ID); err != nil || *set != want {
			t.Errorf("settings = %+v, %v; want %+v", set, err, want)
		}
		_, err = s.GetOrgSettings(ctx, alice.ID)
		wantErr(t, "GetOrgSettings(user)", err, store.ErrNotFound)
		wantErr(t, "PutOrgSettings(user)", s.PutOrgSettings(ctx, alice.ID, &want), store.ErrNotFound)
		wantErr(t, "PutOrgSettings(missing)", s.PutOrgSettings(ctx, 9999, &want), store.ErrNotFound)

		// Listing and updating accounts.
		mustRobot(t, s, org, "ci")
		all, err := s.ListAccounts(ctx, "")
		if err != nil || !slices.Equal(accountNames(all), []string{"acme", "acme+ci", "alice", "bob"}) {
			t.Errorf("ListAccounts(all) = %v, %v", accountNames(all), err)
		}
		users, err := s.ListAccounts(ctx, store.KindUser)
		if err != nil || !slices.Equal(accountNames(users), []string{"alice", "bob"}) {
			t.Errorf("ListAccounts(user) = %v, %v", accountNames(users), err)
		}
		if users[0] != *alice {
			t.Errorf("listed %+v, want %+v", users[0], *alice)
		}
		bob.Email, bob.PasswordHash, bob.Superuser, bob.Enabled = "bob@new.test", "$2a$new", true, false
		if err := s.UpdateAccount(ctx, bob); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetAccountByID(ctx, bob.ID); err != nil || *got != *bob {
			t.Errorf("after UpdateAccount: %+v, %v; want %+v", got, err, bob)
		}
		bob.Email = alice.Email
		wantErr(t, "UpdateAccount(taken email)", s.UpdateAccount(ctx, bob), store.ErrConflict)
		wantErr(t, "UpdateAccount(missing)", s.UpdateAccount(ctx, &store.Account{ID: 9999}), store.ErrNotFound)
		wantErr(t, "DeleteAccount(missing)", s.DeleteAccount(ctx, 9999), store.ErrNotFound)
	})
}

func TestTeams(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice, bob, carol := mustUser(t, s, "alice"), mustUser(t, s, "bob"), mustUser(t, s, "carol")
		org := mustOrg(t, s, "acme", alice.ID)
		other := mustOrg(t, s, "other", alice.ID)

		devs := &store.Team{OrgID: org.ID, Name: "devs", Description: "developers"}
		created, err := s.PutTeam(ctx, devs)
		if err != nil || !created || devs.ID == 0 || devs.Role != store.TeamMember || devs.CreatedAt.IsZero() {
			t.Fatalf("PutTeam(new) = %v, %v; team %+v", created, err, devs)
		}
		upd := &store.Team{OrgID: org.ID, Name: "devs", Description: "builders", Role: store.TeamCreator}
		created, err = s.PutTeam(ctx, upd)
		if err != nil || created || upd.ID != devs.ID || !upd.CreatedAt.Equal(devs.CreatedAt) {
			t.Fatalf("PutTeam(existing) = %v, %v; team %+v (first %+v)", created, err, upd, devs)
		}
		got, err := s.GetTeam(ctx, org.ID, "devs")
		if err != nil || *got != *upd {
			t.Errorf("GetTeam = %+v, %v; want %+v", got, err, upd)
		}
		// The same name in another organization is another team.
		if created, err := s.PutTeam(ctx, &store.Team{OrgID: other.ID, Name: "devs"}); err != nil || !created {
			t.Errorf("PutTeam(devs in other) = %v, %v", created, err)
		}
		_, err = s.PutTeam(ctx, &store.Team{OrgID: alice.ID, Name: "devs"})
		wantErr(t, "PutTeam(in a user)", err, store.ErrNotFound)
		if _, err := s.PutTeam(ctx, &store.Team{OrgID: org.ID, Name: "bad", Role: "owner"}); err == nil {
			t.Error("PutTeam accepted an invalid role")
		}
		_, err = s.GetTeam(ctx, org.ID, "nope")
		wantErr(t, "GetTeam(missing)", err, store.ErrNotFound)
		readers := mustTeam(t, s, org.ID, "readers", store.TeamMember)
		teams, err := s.ListTeams(ctx, org.ID)
		if err != nil || len(teams) != 3 || teams[0].Name != "devs" || teams[1].Name != "owners" || teams[2].Name != "readers" {
			t.Errorf("ListTeams = %+v, %v", teams, err)
		}

		// Members and invitations.
		robot := mustRobot(t, s, org, "ci")
		for _, id := range []int64{carol.ID, bob.ID, robot.ID, bob.ID} {
			if err := s.AddTeamMember(ctx, devs.ID, id); err != nil {
				t.Fatalf("AddTeamMember(%d): %v", id, err)
			}
		}
		wantErr(t, "AddTeamMember(missing account)", s.AddTeamMember(ctx, devs.ID, 9999), store.ErrNotFound)
		wantErr(t, "AddTeamMember(missing team)", s.AddTeamMember(ctx, 9999, bob.ID), store.ErrNotFound)
		if err := s.InviteTeamMember(ctx, devs.ID, "zed@example.com", "tok1"); err != nil {
			t.Fatal(err)
		}
		if err := s.InviteTeamMember(ctx, devs.ID, "dan@example.com", "tok2"); err != nil {
			t.Fatal(err)
		}
		// Re-inviting replaces the token.
		if err := s.InviteTeamMember(ctx, devs.ID, "zed@example.com", "tok3"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "InviteTeamMember(token reused)", s.InviteTeamMember(ctx, readers.ID, "x@example.com", "tok2"), store.ErrConflict)
		members, err := s.ListTeamMembers(ctx, devs.ID)
		if err != nil {
			t.Fatal(err)
		}
		var summary []string
		for _, m := range members {
			if m.TeamID != devs.ID {
				t.Errorf("member %+v has TeamID %d", m, m.TeamID)
			}
			if m.Invited {
				summary = append(summary, "invite:"+m.Email+":"+m.InviteToken)
			} else {
				summary = append(summary, "member:"+m.Account.Name)
			}
		}
		wantSummary := []string{"member:acme+ci", "member:bob", "member:carol", "invite:dan@example.com:tok2", "invite:zed@example.com:tok3"}
		if !slices.Equal(summary, wantSummary) {
			t.Errorf("ListTeamMembers = %v, want %v", summary, wantSummary)
		}
		if n, err := s.CountTeamMembers(ctx, devs.ID); err != nil || n != 3 {
			t.Errorf("CountTeamMembers = %d, %v; want 3", n, err)
		}
		if err := s.DeleteTeamInvite(ctx, devs.ID, "dan@example.com"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "DeleteTeamInvite(again)", s.DeleteTeamInvite(ctx, devs.ID, "dan@example.com"), store.ErrNotFound)
		if err := s.RemoveTeamMember(ctx, devs.ID, carol.ID); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "RemoveTeamMember(again)", s.RemoveTeamMember(ctx, devs.ID, carol.ID), store.ErrNotFound)
		if members, _ := s.ListTeamMembers(ctx, devs.ID); len(members) != 3 {
			t.Errorf("after removals: %d memberships, want 3", len(members))
		}

		if err := s.AddTeamMember(ctx, readers.ID, bob.ID); err != nil {
			t.Fatal(err)
		}
		ts, err := s.TeamsOfAccount(ctx, org.ID, bob.ID)
		if err != nil || len(ts) != 2 || ts[0].Name != "devs" || ts[1].Name != "readers" {
			t.Errorf("TeamsOfAccount(bob) = %+v, %v", ts, err)
		}
		if ts, err := s.TeamsOfAccount(ctx, other.ID, bob.ID); err != nil || len(ts) != 0 {
			t.Errorf("TeamsOfAccount(bob, other) = %+v, %v", ts, err)
		}
		roles, err := s.OrgTeamRoles(ctx, org.ID, bob.ID)
		if err != nil || !slices.Equal(sortedRoles(roles), []store.TeamRole{store.TeamCreator, store.TeamMember}) {
			t.Errorf("OrgTeamRoles(bob) = %v, %v", roles, err)
		}

		// Repository counts, and deleting a team takes its grants along.
		r1, r2 := mustRepo(t, s, org.ID, "one"), mustRepo(t, s, org.ID, "two")
		mustGrant(t, s, store.RepoPermission{RepoID: r1.ID, TeamID: devs.ID, Role: store.RoleWrite})
		mustGrant(t, s, store.RepoPermission{RepoID: r2.ID, TeamID: devs.ID, Role: store.RoleRead})
		if n, err := s.CountTeamRepos(ctx, devs.ID); err != nil || n != 2 {
			t.Errorf("CountTeamRepos = %d, %v; want 2", n, err)
		}
		if err := s.DeleteTeam(ctx, devs.ID); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "DeleteTeam(again)", s.DeleteTeam(ctx, devs.ID), store.ErrNotFound)
		for table, where := range map[string]string{"team_members": "team_id = ?", "team_invites": "team_id = ?", "repo_permissions": "team_id = ?"} {
			if n := count(t, s, table, where, devs.ID); n != 0 {
				t.Errorf("%d %s rows left after DeleteTeam", n, table)
			}
		}
		if roles, _ := s.EffectiveRepoRoles(ctx, r1.ID, bob.ID); len(roles) != 0 {
			t.Errorf("roles through a deleted team: %v", roles)
		}
	})
}

func TestRobots(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice := mustUser(t, s, "alice")
		org := mustOrg(t, s, "acme", alice.ID)
		last := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
		robot := &store.Account{Name: "acme+deploy", OwnerID: org.ID, Enabled: true}
		info := &store.RobotInfo{Description: "deploys", UnstructuredMetadata: `{"env":"prod"}`, TokenEnc: []byte{1, 2, 3}, LastAccessed: &last}
		if err := s.CreateRobot(ctx, robot, info); err != nil {
			t.Fatal(err)
		}
		if robot.ID == 0 || robot.Kind != store.KindRobot {
			t.Fatalf("robot not filled: %+v", robot)
		}
		got, err := s.GetRobotInfo(ctx, robot.ID)
		if err != nil || got.Description != "deploys" || got.UnstructuredMetadata != `{"env":"prod"}` ||
			string(got.TokenEnc) != "\x01\x02\x03" || got.LastAccessed == nil || !got.LastAccessed.Equal(last) {
			t.Errorf("GetRobotInfo = %+v, %v", got, err)
		}
		wantErr(t, "CreateRobot(taken)", s.CreateRobot(ctx, &store.Account{Name: "acme+deploy", OwnerID: org.ID}, nil), store.ErrConflict)
		wantErr(t, "CreateRobot(taken by a user)", s.CreateRobot(ctx, &store.Account{Name: "alice", OwnerID: org.ID}, nil), store.ErrConflict)
		if err := s.CreateRobot(ctx, &store.Account{Name: "acme+x"}, nil); err == nil {
			t.Error("CreateRobot accepted a robot without owner")
		}
		if _, err := s.GetAccountByName(ctx, "acme+x"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("rejected robot exists: %v", err)
		}

		// A robot created without info reads back empty.
		bare := mustRobot(t, s, alice, "bare")
		if err := s.CreateRobot(ctx, &store.Account{Name: "alice+nil", OwnerID: alice.ID}, nil); err != nil {
			t.Fatal(err)
		}
		nilInfo, _ := s.GetAccountByName(ctx, "alice+nil")
		if got, err := s.GetRobotInfo(ctx, nilInfo.ID); err != nil || got.LastAccessed != nil || len(got.TokenEnc) != 0 {
			t.Errorf("GetRobotInfo(no info) = %+v, %v", got, err)
		}

		if err := s.SetRobotToken(ctx, robot.ID, []byte("new")); err != nil {
			t.Fatal(err)
		}
		touched := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
		if err := s.TouchRobot(ctx, robot.ID, touched); err != nil {
			t.Fatal(err)
		}
		got, err = s.GetRobotInfo(ctx, robot.ID)
		if err != nil || string(got.TokenEnc) != "new" || !got.LastAccessed.Equal(touched) || got.Description != "deploys" {
			t.Errorf("after SetRobotToken/TouchRobot: %+v, %v", got, err)
		}
		_, err = s.GetRobotInfo(ctx, alice.ID)
		wantErr(t, "GetRobotInfo(user)", err, store.ErrNotFound)
		wantErr(t, "SetRobotToken(missing)", s.SetRobotToken(ctx, 9999, nil), store.ErrNotFound)
		wantErr(t, "TouchRobot(missing)", s.TouchRobot(ctx, 9999, touched), store.ErrNotFound)

		mustRobot(t, s, org, "build")
		robots, err := s.ListRobots(ctx, org.ID)
		if err != nil || !slices.Equal(accountNames(robots), []string{"acme+build", "acme+deploy"}) {
			t.Errorf("ListRobots(acme) = %v, %v", accountNames(robots), err)
		}
		robots, err = s.ListRobots(ctx, alice.ID)
		if err != nil || !slices.Equal(accountNames(robots), []string{bare.Name, "alice+nil"}) {
			t.Errorf("ListRobots(alice) = %v, %v", accountNames(robots), err)
		}
	})
}

func TestRepoPermissions(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice, bob, carol := mustUser(t, s, "alice"), mustUser(t, s, "bob"), mustUser(t, s, "carol")
		org := mustOrg(t, s, "acme", alice.ID)
		devs := mustTeam(t, s, org.ID, "devs", store.TeamMember)
		ops := mustTeam(t, s, org.ID, "ops", store.TeamMember)
		for _, m := range [][2]int64{{devs.ID, bob.ID}, {ops.ID, bob.ID}, {ops.ID, carol.ID}} {
			if err := s.AddTeamMember(ctx, m[0], m[1]); err != nil {
				t.Fatal(err)
			}
		}
		app, lib := mustRepo(t, s, org.ID, "app"), mustRepo(t, s, org.ID, "lib")

		mustGrant(t, s, store.RepoPermission{RepoID: app.ID, AccountID: bob.ID, Role: store.RoleRead})
		mustGrant(t, s, store.RepoPermission{RepoID: app.ID, AccountID: bob.ID, Role: store.RoleWrite}) // upsert
		mustGrant(t, s, store.RepoPermission{RepoID: app.ID, TeamID: devs.ID, Role: store.RoleAdmin})
		mustGrant(t, s, store.RepoPermission{RepoID: app.ID, TeamID: ops.ID, Role: store.RoleRead})
		mustGrant(t, s, store.RepoPermission{RepoID: lib.ID, AccountID: bob.ID, Role: store.RoleRead})
		mustGrant(t, s, store.RepoPermission{RepoID: lib.ID, TeamID: ops.ID, Role: store.RoleWrite})
		if n := count(t, s, "repo_permissions", "repo_id = ? AND account_id = ?", app.ID, bob.ID); n != 1 {
			t.Errorf("%d rows for bob on app after upsert, want 1", n)
		}

		for _, bad := range []store.RepoPermission{
			{RepoID: app.ID, Role: store.RoleRead},
			{RepoID: app.ID, AccountID: bob.ID, TeamID: devs.ID, Role: store.RoleRead},
			{RepoID: app.ID, AccountID: bob.ID, Role: "owner"},
		} {
			if err := s.SetRepoPermission(ctx, &bad); err == nil || errors.Is(err, store.ErrNotFound) {
				t.Errorf("SetRepoPermission(%+v) = %v, want a validation error", bad, err)
			}
		}
		wantErr(t, "SetRepoPermission(missing repo)", s.SetRepoPermission(ctx, &store.RepoPermission{RepoID: 9999, AccountID: bob.ID, Role: store.RoleRead}), store.ErrNotFound)
		wantErr(t, "SetRepoPermission(missing team)", s.SetRepoPermission(ctx, &store.RepoPermission{RepoID: app.ID, TeamID: 9999, Role: store.RoleRead}), store.ErrNotFound)

		// Effective roles: direct plus every team.
		roles, err := s.EffectiveRepoRoles(ctx, app.ID, bob.ID)
		if err != nil || !slices.Equal(sortedRoles(roles), []store.Role{store.RoleAdmin, store.RoleRead, store.RoleWrite}) {
			t.Errorf("EffectiveRepoRoles(app, bob) = %v, %v", roles, err)
		}
		roles, err = s.EffectiveRepoRoles(ctx, lib.ID, carol.ID)
		if err != nil || !slices.Equal(roles, []store.Role{store.RoleWrite}) {
			t.Errorf("EffectiveRepoRoles(lib, carol) = %v, %v", roles, err)
		}
		if roles, err := s.EffectiveRepoRoles(ctx, app.ID, alice.ID); err != nil || len(roles) != 0 {
			t.Errorf("EffectiveRepoRoles(app, alice) = %v, %v; want none", roles, err)
		}

		perms, err := s.ListRepoPermissions(ctx, app.ID)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range perms {
			switch {
			case p.Account != nil && p.AccountID == p.Account.ID && p.TeamID == 0:
				got = append(got, "account:"+p.Account.Name+":"+string(p.Role))
			case p.Team != nil && p.TeamID == p.Team.ID && p.AccountID == 0:
				got = append(got, "team:"+p.Team.Name+":"+string(p.Role))
			default:
				t.Errorf("malformed permission %+v", p)
			}
			if p.RepoID != app.ID {
				t.Errorf("permission %+v has RepoID %d", p, p.RepoID)
			}
		}
		if want := []string{"account:bob:write", "team:devs:admin", "team:ops:read"}; !slices.Equal(got, want) {
			t.Errorf("ListRepoPermissions = %v, want %v", got, want)
		}

		perms, err = s.ListAccountPermissions(ctx, bob.ID)
		if err != nil || len(perms) != 2 || perms[0].Repo.FullName() != "acme/app" || perms[0].Role != store.RoleWrite ||
			perms[1].Repo.FullName() != "acme/lib" || perms[1].AccountID != bob.ID || perms[1].RepoID != lib.ID {
			t.Errorf("ListAccountPermissions(bob) = %+v, %v", perms, err)
		}
		perms, err = s.ListTeamPermissions(ctx, ops.ID)
		if err != nil || len(perms) != 2 || perms[0].Repo.Name != "app" || perms[0].Role != store.RoleRead ||
			perms[1].Repo.Name != "lib" || perms[1].Role != store.RoleWrite || perms[1].TeamID != ops.ID {
			t.Errorf("ListTeamPermissions(ops) = %+v, %v", perms, err)
		}

		if err := s.DeleteRepoPermission(ctx, app.ID, bob.ID, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteRepoPermission(ctx, app.ID, 0, devs.ID); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "DeleteRepoPermission(again)", s.DeleteRepoPermission(ctx, app.ID, bob.ID, 0), store.ErrNotFound)
		if err := s.DeleteRepoPermission(ctx, app.ID, 0, 0); err == nil {
			t.Error("DeleteRepoPermission accepted neither account nor team")
		}
		roles, err = s.EffectiveRepoRoles(ctx, app.ID, bob.ID)
		if err != nil || !slices.Equal(roles, []store.Role{store.RoleRead}) {
			t.Errorf("after deletes, EffectiveRepoRoles(app, bob) = %v, %v", roles, err)
		}

		// Repository updates and per-namespace listing.
		app.Visibility, app.Description = store.Public, "the app"
		if err := s.UpdateRepository(ctx, app); err != nil {
			t.Fatal(err)
		}
		if r, err := s.GetRepository(ctx, "acme", "app"); err != nil || *r != *app {
			t.Errorf("after UpdateRepository: %+v, %v; want %+v", r, err, app)
		}
		if err := s.UpdateRepository(ctx, &store.Repository{ID: app.ID, Visibility: "secret"}); err == nil {
			t.Error("UpdateRepository accepted an invalid visibility")
		}
		wantErr(t, "UpdateRepository(missing)", s.UpdateRepository(ctx, &store.Repository{ID: 9999, Visibility: store.Private}), store.ErrNotFound)
		mustRepo(t, s, alice.ID, "mine")
		repos, err := s.ListRepositoriesByNamespace(ctx, org.ID)
		if err != nil || len(repos) != 2 || repos[0].FullName() != "acme/app" || repos[1].FullName() != "acme/lib" {
			t.Errorf("ListRepositoriesByNamespace(acme) = %+v, %v", repos, err)
		}
	})
}

func TestPrototypesAndRepositoryDefaults(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice, bob, carol, dave := mustUser(t, s, "alice"), mustUser(t, s, "bob"), mustUser(t, s, "carol"), mustUser(t, s, "dave")
		org := mustOrg(t, s, "acme", alice.ID)
		readers := mustTeam(t, s, org.ID, "readers", store.TeamMember)
		robot := mustRobot(t, s, org, "ci")

		anyoneTeam := &store.Prototype{OrgID: org.ID, DelegateTeamID: readers.ID, Role: store.RoleRead}
		anyoneCarol := &store.Prototype{OrgID: org.ID, DelegateAccountID: carol.ID, Role: store.RoleRead}
		bobRobot := &store.Prototype{OrgID: org.ID, ActivatingUserID: bob.ID, DelegateAccountID: robot.ID, Role: store.RoleWrite}
		bobCarol := &store.Prototype{OrgID: org.ID, ActivatingUserID: bob.ID, DelegateAccountID: carol.ID, Role: store.RoleAdmin}
		daveTeam := &store.Prototype{OrgID: org.ID, ActivatingUserID: dave.ID, DelegateTeamID: readers.ID, Role: store.RoleWrite}
		for _, p := range []*store.Prototype{anyoneTeam, anyoneCarol, bobRobot, bobCarol, daveTeam} {
			if err := s.CreatePrototype(ctx, p); err != nil {
				t.Fatal(err)
			}
			if len(p.ID) != 36 || strings.Count(p.ID, "-") != 4 || p.ID[14] != '4' {
				t.Errorf("prototype ID %q is not a UUIDv4", p.ID)
			}
		}
		dup := *anyoneTeam
		wantErr(t, "CreatePrototype(same ID)", s.CreatePrototype(ctx, &dup), store.ErrConflict)
		wantErr(t, "CreatePrototype(missing delegate)", s.CreatePrototype(ctx, &store.Prototype{OrgID: org.ID, DelegateAccountID: 9999, Role: store.RoleRead}), store.ErrNotFound)
		if err := s.CreatePrototype(ctx, &store.Prototype{OrgID: org.ID, Role: store.RoleRead}); err == nil {
			t.Error("CreatePrototype accepted a prototype without delegate")
		}
		got, err := s.GetPrototype(ctx, org.ID, bobRobot.ID)
		if err != nil || *got != *bobRobot {
			t.Errorf("GetPrototype = %+v, %v; want %+v", got, err, bobRobot)
		}
		_, err = s.GetPrototype(ctx, alice.ID, bobRobot.ID)
		wantErr(t, "GetPrototype(other org)", err, store.ErrNotFound)
		list, err := s.ListPrototypes(ctx, org.ID)
		if err != nil || len(list) != 5 {
			t.Fatalf("ListPrototypes = %+v, %v", list, err)
		}
		var ids []string
		for _, p := range list {
			ids = append(ids, p.ID)
		}
		if !slices.Equal(ids, []string{anyoneTeam.ID, anyoneCarol.ID, bobRobot.ID, bobCarol.ID, daveTeam.ID}) {
			t.Errorf("ListPrototypes order = %v", ids)
		}

		type grant struct {
			who  string
			role store.Role
		}
		grantsOn := func(repoID int64) []grant {
			t.Helper()
			perms, err := s.ListRepoPermissions(ctx, repoID)
			if err != nil {
				t.Fatal(err)
			}
			var out []grant
			for _, p := range perms {
				if p.Account != nil {
					out = append(out, grant{p.Account.Name, p.Role})
				} else {
					out = append(out, grant{"team:" + p.Team.Name, p.Role})
				}
			}
			return out
		}

		// Anyone's prototypes only, plus the creator.
		r1 := &store.Repository{NamespaceID: org.ID, Name: "by-alice"}
		if err := s.CreateRepositoryWithDefaults(ctx, r1, alice.ID, store.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		if r1.ID == 0 || r1.Namespace != "acme" || r1.Visibility != store.Private || r1.CreatedAt.IsZero() {
			t.Errorf("repository not filled: %+v", r1)
		}
		if g, want := grantsOn(r1.ID), []grant{{"alice", store.RoleAdmin}, {"carol", store.RoleRead}, {"team:readers", store.RoleRead}}; !slices.Equal(g, want) {
			t.Errorf("grants by alice = %v, want %v", g, want)
		}
		// Bob's prototypes too; carol is named twice and gets the stronger role.
		r2 := &store.Repository{NamespaceID: org.ID, Name: "by-bob", Visibility: store.Public}
		if err := s.CreateRepositoryWithDefaults(ctx, r2, bob.ID, store.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		want := []grant{{"acme+ci", store.RoleWrite}, {"bob", store.RoleAdmin}, {"carol", store.RoleAdmin}, {"team:readers", store.RoleRead}}
		if g := grantsOn(r2.ID); !slices.Equal(g, want) {
			t.Errorf("grants by bob = %v, want %v", g, want)
		}
		// A team delegate named twice; no creator grant when the role is empty.
		r3 := &store.Repository{NamespaceID: org.ID, Name: "by-dave"}
		if err := s.CreateRepositoryWithDefaults(ctx, r3, dave.ID, ""); err != nil {
			t.Fatal(err)
		}
		if g, want := grantsOn(r3.ID), []grant{{"carol", store.RoleRead}, {"team:readers", store.RoleWrite}}; !slices.Equal(g, want) {
			t.Errorf("grants by dave = %v, want %v", g, want)
		}
		// The creator's own grant is kept when a prototype names it with less.
		carolSelf := &store.Repository{NamespaceID: org.ID, Name: "by-carol"}
		if err := s.CreateRepositoryWithDefaults(ctx, carolSelf, carol.ID, store.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		if g, want := grantsOn(carolSelf.ID), []grant{{"carol", store.RoleAdmin}, {"team:readers", store.RoleRead}}; !slices.Equal(g, want) {
			t.Errorf("grants by carol = %v, want %v", g, want)
		}
		// No creator: only anyone's prototypes.
		r4 := &store.Repository{NamespaceID: org.ID, Name: "by-nobody"}
		if err := s.CreateRepositoryWithDefaults(ctx, r4, 0, store.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		if g, want := grantsOn(r4.ID), []grant{{"carol", store.RoleRead}, {"team:readers", store.RoleRead}}; !slices.Equal(g, want) {
			t.Errorf("grants with no creator = %v, want %v", g, want)
		}
		// A user namespace has no prototypes.
		r5 := &store.Repository{NamespaceID: bob.ID, Name: "own"}
		if err := s.CreateRepositoryWithDefaults(ctx, r5, bob.ID, store.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		if g, want := grantsOn(r5.ID), []grant{{"bob", store.RoleAdmin}}; !slices.Equal(g, want) {
			t.Errorf("grants in a user namespace = %v, want %v", g, want)
		}

		// Failures leave neither the repository nor grants.
		before := count(t, s, "repo_permissions", "1 = 1")
		dupRepo := &store.Repository{NamespaceID: org.ID, Name: "by-bob"}
		wantErr(t, "CreateRepositoryWithDefaults(existing)", s.CreateRepositoryWithDefaults(ctx, dupRepo, bob.ID, store.RoleAdmin), store.ErrConflict)
		if dupRepo.ID != 0 {
			t.Errorf("failed create filled ID %d", dupRepo.ID)
		}
		wantErr(t, "CreateRepositoryWithDefaults(missing creator)",
			s.CreateRepositoryWithDefaults(ctx, &store.Repository{NamespaceID: org.ID, Name: "ghost"}, 9999, store.RoleAdmin), store.ErrNotFound)
		if _, err := s.GetRepository(ctx, "acme", "ghost"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("repository of a failed create exists: %v", err)
		}
		wantErr(t, "CreateRepositoryWithDefaults(missing namespace)",
			s.CreateRepositoryWithDefaults(ctx, &store.Repository{NamespaceID: 9999, Name: "x"}, bob.ID, store.RoleAdmin), store.ErrNotFound)
		if err := s.CreateRepositoryWithDefaults(ctx, &store.Repository{NamespaceID: org.ID, Name: "y"}, bob.ID, "owner"); err == nil {
			t.Error("CreateRepositoryWithDefaults accepted an invalid role")
		}
		if after := count(t, s, "repo_permissions", "1 = 1"); after != before {
			t.Errorf("failed creates changed the permission count from %d to %d", before, after)
		}

		// Update and delete.
		upd := *bobRobot
		upd.ActivatingUserID, upd.DelegateAccountID, upd.DelegateTeamID, upd.Role = 0, 0, readers.ID, store.RoleAdmin
		if err := s.UpdatePrototype(ctx, &upd); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetPrototype(ctx, org.ID, upd.ID); err != nil || *got != upd {
			t.Errorf("after UpdatePrototype: %+v, %v; want %+v", got, err, upd)
		}
		wrongOrg := upd
		wrongOrg.OrgID = bob.ID
		wantErr(t, "UpdatePrototype(other org)", s.UpdatePrototype(ctx, &wrongOrg), store.ErrNotFound)
		wantErr(t, "DeletePrototype(other org)", s.DeletePrototype(ctx, bob.ID, upd.ID), store.ErrNotFound)
		if err := s.DeletePrototype(ctx, org.ID, upd.ID); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "DeletePrototype(again)", s.DeletePrototype(ctx, org.ID, upd.ID), store.ErrNotFound)
		// Deleting a delegate team removes its prototypes.
		if err := s.DeleteTeam(ctx, readers.ID); err != nil {
			t.Fatal(err)
		}
		if list, err := s.ListPrototypes(ctx, org.ID); err != nil || len(list) != 2 {
			t.Errorf("after deleting the team: %+v, %v; want carol's two", list, err)
		}
	})
}

func TestStars(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice, bob := mustUser(t, s, "alice"), mustUser(t, s, "bob")
		zz, aa := mustRepo(t, s, bob.ID, "zz"), mustRepo(t, s, alice.ID, "aa")
		for range 2 {
			for _, r := range []*store.Repository{zz, aa} {
				if err := s.SetStar(ctx, alice.ID, r.ID, true); err != nil {
					t.Fatal(err)
				}
			}
		}
		repos, err := s.ListStarred(ctx, alice.ID)
		if err != nil || len(repos) != 2 || repos[0] != *aa || repos[1] != *zz {
			t.Errorf("ListStarred = %+v, %v", repos, err)
		}
		if ok, err := s.IsStarred(ctx, alice.ID, zz.ID); err != nil || !ok {
			t.Errorf("IsStarred(zz) = %v, %v", ok, err)
		}
		if ok, err := s.IsStarred(ctx, bob.ID, zz.ID); err != nil || ok {
			t.Errorf("IsStarred(bob, zz) = %v, %v", ok, err)
		}
		for range 2 {
			if err := s.SetStar(ctx, alice.ID, zz.ID, false); err != nil {
				t.Fatal(err)
			}
		}
		if ok, _ := s.IsStarred(ctx, alice.ID, zz.ID); ok {
			t.Error("still starred after unstarring")
		}
		wantErr(t, "SetStar(missing repo)", s.SetStar(ctx, alice.ID, 9999, true), store.ErrNotFound)
		if err := s.DeleteRepository(ctx, aa.ID); err != nil {
			t.Fatal(err)
		}
		if repos, err := s.ListStarred(ctx, alice.ID); err != nil || len(repos) != 0 {
			t.Errorf("stars of a deleted repository: %+v, %v", repos, err)
		}
	})
}

func TestOAuthApplicationsAndTokens(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice := mustUser(t, s, "alice")
		org := mustOrg(t, s, "acme", alice.ID)
		other := mustOrg(t, s, "other", alice.ID)
		app := &store.OAuthApplication{OrgID: org.ID, ClientID: "CID1", ClientSecretEnc: []byte("sec"), Name: "zeta",
			ApplicationURI: "https://app", RedirectURI: "https://app/cb", Description: "d", AvatarEmail: "a@app"}
		if err := s.CreateOAuthApplication(ctx, app); err != nil {
			t.Fatal(err)
		}
		if app.ID == 0 || app.CreatedAt.IsZero() {
			t.Fatalf("application not filled: %+v", app)
		}
		alpha := &store.OAuthApplication{OrgID: org.ID, ClientID: "CID2", Name: "alpha"}
		if err := s.CreateOAuthApplication(ctx, alpha); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "CreateOAuthApplication(taken client ID)", s.CreateOAuthApplication(ctx, &store.OAuthApplication{OrgID: other.ID, ClientID: "CID1", Name: "x"}), store.ErrConflict)
		wantErr(t, "CreateOAuthApplication(missing org)", s.CreateOAuthApplication(ctx, &store.OAuthApplication{OrgID: 9999, ClientID: "CID9", Name: "x"}), store.ErrNotFound)

		got, err := s.GetOAuthApplication(ctx, org.ID, "CID1")
		if err != nil || got.Name != "zeta" || string(got.ClientSecretEnc) != "sec" || got.RedirectURI != "https://app/cb" ||
			got.AvatarEmail != "a@app" || !got.CreatedAt.Equal(app.CreatedAt) {
			t.Errorf("GetOAuthApplication = %+v, %v", got, err)
		}
		if got, err := s.GetOAuthApplication(ctx, 0, "CID1"); err != nil || got.ID != app.ID {
			t.Errorf("GetOAuthApplication(any org) = %+v, %v", got, err)
		}
		_, err = s.GetOAuthApplication(ctx, other.ID, "CID1")
		wantErr(t, "GetOAuthApplication(other org)", err, store.ErrNotFound)
		apps, err := s.ListOAuthApplications(ctx, org.ID)
		if err != nil || len(apps) != 2 || apps[0].Name != "alpha" || apps[1].Name != "zeta" {
			t.Errorf("ListOAuthApplications = %+v, %v", apps, err)
		}

		app.Name, app.ClientSecretEnc, app.RedirectURI = "zeta2", []byte("sec2"), "https://app/cb2"
		if err := s.UpdateOAuthApplication(ctx, app); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetOAuthApplication(ctx, org.ID, "CID1"); got.Name != "zeta2" || string(got.ClientSecretEnc) != "sec2" || got.RedirectURI != "https://app/cb2" {
			t.Errorf("after UpdateOAuthApplication: %+v", got)
		}
		wantErr(t, "UpdateOAuthApplication(missing)", s.UpdateOAuthApplication(ctx, &store.OAuthApplication{ID: 9999}), store.ErrNotFound)

		expires := time.Date(2030, 1, 1, 0, 0, 0, 999, time.UTC)
		tok := &store.AccessToken{ApplicationID: app.ID, AccountID: alice.ID, TokenHash: strings.Repeat("a", 64),
			Scopes: []string{"repo:read", "org:admin"}, ExpiresAt: &expires}
		if err := s.CreateAccessToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		adminTok := &store.AccessToken{AccountID: alice.ID, TokenHash: strings.Repeat("b", 64)}
		if err := s.CreateAccessToken(ctx, adminTok); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "CreateAccessToken(taken hash)", s.CreateAccessToken(ctx, &store.AccessToken{AccountID: alice.ID, TokenHash: tok.TokenHash}), store.ErrConflict)
		if err := s.CreateAccessToken(ctx, &store.AccessToken{AccountID: alice.ID, TokenHash: "c", Scopes: []string{"a b"}}); err == nil {
			t.Error("CreateAccessToken accepted a scope with a space")
		}
		gotTok, err := s.GetAccessTokenByHash(ctx, tok.TokenHash)
		if err != nil || gotTok.ID != tok.ID || gotTok.ApplicationID != app.ID || gotTok.AccountID != alice.ID ||
			!slices.Equal(gotTok.Scopes, tok.Scopes) || !gotTok.CreatedAt.Equal(tok.CreatedAt) || gotTok.ExpiresAt == nil || !gotTok.ExpiresAt.Equal(expires) {
			t.Errorf("GetAccessTokenByHash = %+v, %v; want %+v", gotTok, err, tok)
		}
		gotTok, err = s.GetAccessTokenByHash(ctx, adminTok.TokenHash)
		if err != nil || gotTok.ApplicationID != 0 || gotTok.ExpiresAt != nil || len(gotTok.Scopes) != 0 {
			t.Errorf("GetAccessTokenByHash(admin token) = %+v, %v", gotTok, err)
		}
		_, err = s.GetAccessTokenByHash(ctx, "nope")
		wantErr(t, "GetAccessTokenByHash(missing)", err, store.ErrNotFound)
		if err := s.DeleteAccessToken(ctx, adminTok.ID); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "DeleteAccessToken(again)", s.DeleteAccessToken(ctx, adminTok.ID), store.ErrNotFound)

		// Deleting the application revokes its tokens.
		if err := s.DeleteOAuthApplication(ctx, app.ID); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "DeleteOAuthApplication(again)", s.DeleteOAuthApplication(ctx, app.ID), store.ErrNotFound)
		_, err = s.GetAccessTokenByHash(ctx, tok.TokenHash)
		wantErr(t, "token of a deleted application", err, store.ErrNotFound)
	})
}

func TestSessions(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice := mustUser(t, s, "alice")
		created := time.Date(2025, 6, 1, 10, 0, 0, 1, time.UTC)
		sess := &store.Session{IDHash: "h1", AccountID: alice.ID, CSRFToken: "csrf", CreatedAt: created, ExpiresAt: created.Add(time.Hour)}
		if err := s.CreateSession(ctx, sess); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetSession(ctx, "h1")
		if err != nil || got.AccountID != alice.ID || got.CSRFToken != "csrf" || !got.CreatedAt.Equal(created) || !got.ExpiresAt.Equal(sess.ExpiresAt) {
			t.Errorf("GetSession = %+v, %v; want %+v", got, err, sess)
		}
		fresh := &store.Session{IDHash: "h2", AccountID: alice.ID, ExpiresAt: time.Now().Add(time.Hour)}
		if err := s.CreateSession(ctx, fresh); err != nil || fresh.CreatedAt.IsZero() {
			t.Errorf("CreateSession without CreatedAt: %+v, %v", fresh, err)
		}
		wantErr(t, "CreateSession(taken hash)", s.CreateSession(ctx, &store.Session{IDHash: "h1", AccountID: alice.ID, ExpiresAt: created}), store.ErrConflict)
		wantErr(t, "CreateSession(missing account)", s.CreateSession(ctx, &store.Session{IDHash: "h3", AccountID: 9999, ExpiresAt: created}), store.ErrNotFound)
		if err := s.CreateSession(ctx, &store.Session{IDHash: "h4", AccountID: alice.ID}); err == nil {
			t.Error("CreateSession accepted a session without expiry")
		}
		if err := s.DeleteSession(ctx, "h1"); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetSession(ctx, "h1")
		wantErr(t, "GetSession(deleted)", err, store.ErrNotFound)
		wantErr(t, "DeleteSession(again)", s.DeleteSession(ctx, "h1"), store.ErrNotFound)
	})
}

func TestDeleteAccountCascades(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice, bob := mustUser(t, s, "alice"), mustUser(t, s, "bob")
		org := mustOrg(t, s, "acme", alice.ID)
		team := mustTeam(t, s, org.ID, "devs", store.TeamMember)
		robot := mustRobot(t, s, org, "ci")
		for _, id := range []int64{bob.ID, robot.ID} {
			if err := s.AddTeamMember(ctx, team.ID, id); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.InviteTeamMember(ctx, team.ID, "x@example.com", "tok"); err != nil {
			t.Fatal(err)
		}
		repo := &store.Repository{NamespaceID: org.ID, Name: "app"}
		if err := s.CreateRepositoryWithDefaults(ctx, repo, bob.ID, store.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		putImage(t, s, repo.ID, "layer", "latest")
		mustGrant(t, s, store.RepoPermission{RepoID: repo.ID, TeamID: team.ID, Role: store.RoleWrite})
		mustGrant(t, s, store.RepoPermission{RepoID: repo.ID, AccountID: robot.ID, Role: store.RoleRead})
		if err := s.CreatePrototype(ctx, &store.Prototype{OrgID: org.ID, DelegateTeamID: team.ID, Role: store.RoleRead}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutOrgSettings(ctx, org.ID, &store.OrgSettings{TagExpirationS: 1}); err != nil {
			t.Fatal(err)
		}
		app := &store.OAuthApplication{OrgID: org.ID, ClientID: "cid", Name: "app"}
		if err := s.CreateOAuthApplication(ctx, app); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAccessToken(ctx, &store.AccessToken{ApplicationID: app.ID, AccountID: bob.ID, TokenHash: "t-app"}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAccessToken(ctx, &store.AccessToken{AccountID: bob.ID, TokenHash: "t-bob"}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetStar(ctx, bob.ID, repo.ID, true); err != nil {
			t.Fatal(err)
		}
		bobRepo := mustRepo(t, s, bob.ID, "own")
		if err := s.SetStar(ctx, alice.ID, bobRepo.ID, true); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSession(ctx, &store.Session{IDHash: "s-bob", AccountID: bob.ID, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSession(ctx, &store.Session{IDHash: "s-alice", AccountID: alice.ID, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}

		// Deleting bob removes his memberships, grants, tokens, sessions,
		// stars, repositories and the stars on them.
		if err := s.DeleteAccount(ctx, bob.ID); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			table, where string
			arg          any
		}{
			{"team_members", "account_id = ?", bob.ID},
			{"repo_permissions", "account_id = ?", bob.ID},
			{"access_tokens", "account_id = ?", bob.ID},
			{"sessions", "account_id = ?", bob.ID},
			{"stars", "account_id = ?", bob.ID},
			{"repositories", "namespace_id = ?", bob.ID},
			{"stars", "repo_id = ?", bobRepo.ID},
		} {
			if n := count(t, s, c.table, c.where, c.arg); n != 0 {
				t.Errorf("after deleting bob: %d %s rows where %s", n, c.table, c.where)
			}
		}
		if _, err := s.GetSession(ctx, "s-alice"); err != nil {
			t.Errorf("alice's session went with bob: %v", err)
		}
		if perms, err := s.ListRepoPermissions(ctx, repo.ID); err != nil || len(perms) != 2 {
			t.Errorf("org repository permissions after deleting bob = %+v, %v; want robot and team", perms, err)
		}

		// Deleting the organization removes everything under it.
		if err := s.DeleteAccount(ctx, org.ID); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			table, where string
			arg          any
		}{
			{"accounts", "id = ? OR owner_id = ?", org.ID},
			{"teams", "org_id = ?", org.ID},
			{"team_members", "team_id = ?", team.ID},
			{"team_invites", "team_id = ?", team.ID},
			{"repositories", "namespace_id = ?", org.ID},
			{"repo_permissions", "repo_id = ?", repo.ID},
			{"manifests", "repo_id = ?", repo.ID},
			{"tags", "repo_id = ?", repo.ID},
			{"prototypes", "org_id = ?", org.ID},
			{"org_settings", "org_id = ?", org.ID},
			{"oauth_applications", "org_id = ?", org.ID},
			{"access_tokens", "application_id = ?", app.ID},
			{"robot_info", "robot_id = ?", robot.ID},
		} {
			args := []any{c.arg}
			if strings.Count(c.where, "?") == 2 {
				args = append(args, c.arg)
			}
			if n := count(t, s, c.table, c.where, args...); n != 0 {
				t.Errorf("after deleting the organization: %d %s rows where %s", n, c.table, c.where)
			}
		}
		if _, err := s.GetAccountByID(ctx, alice.ID); err != nil {
			t.Errorf("alice went with the organization: %v", err)
		}
	})
}

// The authorization queries run on every cache miss: they must be index
// probes on both databases, whatever the size of the tables.
func TestAuthorizationQueriesUseIndexes(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		const orgs, teamsPerOrg, users, reposPerOrg = 50, 10, 500, 20
		var orgID, userID, repoID int64
		err := s.writeTx(ctx, func(tx *sql.Tx) error {
			var userIDs, teamIDs, repoIDs []int64
			for i := range users {
				u := &store.Account{Kind: store.KindUser, Name: fmt.Sprintf("u%04d", i)}
				if err := s.insertAccount(ctx, tx, u); err != nil {
					return err
				}
				userIDs = append(userIDs, u.ID)
			}
			for i := range orgs {
				org := &store.Account{Kind: store.KindOrganization, Name: fmt.Sprintf("org%02d", i)}
				if err := s.insertAccount(ctx, tx, org); err != nil {
					return err
				}
				for j := range teamsPerOrg {
					var id int64
					if err := tx.QueryRowContext(ctx, s.q(`INSERT INTO teams (org_id, name, role, created_at) VALUES (?, ?, 'member', 0) RETURNING id`),
						org.ID, fmt.Sprintf("t%02d", j)).Scan(&id); err != nil {
						return err
					}
					teamIDs = append(teamIDs, id)
				}
				for j := range reposPerOrg {
					r := &store.Repository{NamespaceID: org.ID, Name: fmt.Sprintf("r%02d", j), Visibility: store.Private}
					if _, err := s.insertRepository(ctx, tx, r); err != nil {
						return err
					}
					repoIDs = append(repoIDs, r.ID)
				}
				orgID = org.ID
			}
			for i, u := range userIDs {
				for j := range 3 {
					if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO team_members (team_id, account_id, created_at) VALUES (?, ?, 0)`),
						teamIDs[(i*3+j*7)%len(teamIDs)], u); err != nil {
						return err
					}
					if err := s.upsertPermission(ctx, tx, repoIDs[(i*3+j)%len(repoIDs)], grantee{account: u}, store.RoleRead); err != nil {
						return err
					}
				}
			}
			for i, tm := range teamIDs {
				for j := range 4 {
					if err := s.upsertPermission(ctx, tx, repoIDs[(i*2+j)%len(repoIDs)], grantee{team: tm}, store.RoleWrite); err != nil {
						return err
					}
				}
			}
			userID, repoID = userIDs[5], repoIDs[15]
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if s.Dialect() == "postgres" {
			if _, err := s.w.Exec(`ANALYZE`); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []struct {
			name, query string
			args        []any
		}{
			{"effective repository roles", effectiveRolesSQL, []any{repoID, userID, userID, repoID}},
			{"organization team roles", orgTeamRolesSQL, []any{userID, orgID}},
		} {
			plan := queryPlan(t, s, c.query, c.args...)
			t.Logf("%s:\n%s", c.name, plan)
			// A sort of the few rows an index returned is harmless; a
			// scan of a whole table is not.
			bad := "SCAN "
			if s.Dialect() == "postgres" {
				bad = "Seq Scan"
			}
			if strings.Contains(plan, bad) {
				t.Errorf("%s: plan has %q:\n%s", c.name, bad, plan)
			}
		}
	})
}

func TestCredentialEpochs(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		if all, err := s.CredentialEpochsSince(ctx, time.Time{}); err != nil || len(all) != 0 {
			t.Fatalf("new store epochs = %+v, %v", all, err)
		}
		for want := uint64(1); want <= 3; want++ {
			got, err := s.BumpCredentialEpoch(ctx, "acme+ci")
			if err != nil || got != want {
				t.Fatalf("bump %d = %d, %v", want, got, err)
			}
		}
		mark := time.Now()
		time.Sleep(2 * time.Millisecond)
		if got, err := s.BumpCredentialEpoch(ctx, "alice"); err != nil || got != 1 {
			t.Fatalf("bump alice = %d, %v", got, err)
		}
		all, err := s.CredentialEpochsSince(ctx, time.Time{})
		if err != nil || len(all) != 2 || all[0].Subject != "acme+ci" || all[0].Epoch != 3 || all[1].Subject != "alice" || all[1].Epoch != 1 {
			t.Fatalf("all epochs = %+v, %v", all, err)
		}
		recent, err := s.CredentialEpochsSince(ctx, mark)
		if err != nil || len(recent) != 1 || recent[0].Subject != "alice" || recent[0].UpdatedAt.Before(mark) {
			t.Fatalf("epochs since the mark = %+v, %v", recent, err)
		}
		if _, err := s.BumpCredentialEpoch(ctx, ""); err == nil {
			t.Error("empty subject bumped")
		}
	})
}
