package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

func TestErrorShapes(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)

	// The 404 body is exactly Quay's.
	r := e.call(http.MethodGet, "/api/v1/organization/nope", basic("alice"), nil)
	var got map[string]any
	_ = json.Unmarshal(r.body, &got)
	want := map[string]any{"detail": "Not Found", "error_message": "Not Found", "error_type": "not_found",
		"title": "not_found", "type": "http://quay-server.example.com/api/v1/error/not_found", "status": float64(404)}
	if r.code != 404 || len(got) != len(want) {
		t.Fatalf("404 body %s", r.body)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("404 body %s: %s = %v, want %v", r.body, k, got[k], v)
		}
	}
	assertError(t, e.call(http.MethodGet, "/api/v1/no/such/route", anon, nil), 404, "not_found")
	assertError(t, e.call(http.MethodPost, "/api/v1/organization/", anon, map[string]any{"name": "x"}), 401, "invalid_token")
	assertError(t, e.call(http.MethodPost, "/api/v1/organization/", basicPw("alice", "wrong"), map[string]any{"name": "xx"}), 401, "invalid_token")
	assertError(t, e.call(http.MethodGet, "/api/v1/user/", bearer("not-a-token"), nil), 401, "invalid_token")
	assertError(t, e.call(http.MethodGet, "/api/v1/user/", func(r *http.Request) { r.Header.Set("Authorization", "Digest x") }, nil), 401, "invalid_token")
	for _, body := range []string{"{", "[1,2]", `{"name": 5}`, `{"name":"ab"} trailing`, ""} {
		assertError(t, e.call(http.MethodPost, "/api/v1/organization/", basic("alice"), body), 400, "invalid_request")
	}
	assertError(t, e.call(http.MethodGet, "/api/v1/superuser/users/", basic("alice"), nil), 403, "insufficient_scope")
	assertError(t, e.call(http.MethodPatch, "/api/v1/user/", basic("alice"), nil), 405, "invalid_request")
	big := `{"name":"` + strings.Repeat("a", maxBody) + `"}`
	if r := e.call(http.MethodPost, "/api/v1/organization/", basic("alice"), big); r.code != 413 {
		t.Fatalf("oversized body: %d", r.code)
	}
}

func TestSuperuserUsers(t *testing.T) {
	e := newEnv(t, nil)
	e.user("root", true)
	e.user("alice", false)

	r := e.must(200, http.MethodPost, "/api/v1/superuser/users/", basic("root"), map[string]any{"username": "newuser", "email": "newuser@example.com"})
	m := keys(t, "create user", r.v, "username", "email", "password", "encrypted_password")
	pw, _ := m["password"].(string)
	if m["username"] != "newuser" || !regexp.MustCompile(`^[A-Z0-9]{32}$`).MatchString(pw) {
		t.Fatalf("create user: %s", r.body)
	}
	// The generated password logs in.
	e.must(200, http.MethodGet, "/api/v1/user/", basicPw("newuser", pw), nil)
	assertError(t, e.call(http.MethodPost, "/api/v1/superuser/users/", basic("root"), map[string]any{"username": "newuser", "email": "x@example.com"}), 400, "invalid_request")
	assertError(t, e.call(http.MethodPost, "/api/v1/superuser/users/", basic("root"), map[string]any{"username": "Bad Name"}), 400, "invalid_request")
	assertError(t, e.call(http.MethodPost, "/api/v1/superuser/users/", basic("alice"), map[string]any{"username": "other"}), 403, "insufficient_scope")
	assertError(t, e.call(http.MethodPost, "/api/v1/superuser/users/", anon, map[string]any{"username": "other"}), 401, "invalid_token")

	r = e.must(200, http.MethodGet, "/api/v1/superuser/users/", basic("root"), nil)
	users, _ := r.obj()["users"].([]any)
	if len(users) != 3 {
		t.Fatalf("users: %s", r.body)
	}
	for _, u := range users {
		um := keys(t, "user", u, "kind", "name", "username", "email", "verified", "avatar", "super_user", "enabled")
		keys(t, "avatar", um["avatar"], "name", "hash", "color", "kind")
		if um["name"] == "root" && um["super_user"] != true || um["name"] == "alice" && um["super_user"] != false {
			t.Fatalf("super_user wrong: %v", um)
		}
	}

	// Disabling takes effect at once, even though the login was cached.
	e.must(200, http.MethodGet, "/api/v1/user/", basic("alice"), nil)
	r = e.must(200, http.MethodPut, "/api/v1/superuser/users/alice", basic("root"), map[string]any{"enabled": false})
	if r.obj()["enabled"] != false {
		t.Fatalf("disable: %s", r.body)
	}
	assertError(t, e.call(http.MethodGet, "/api/v1/user/", basic("alice"), nil), 401, "invalid_token")
	e.must(200, http.MethodPut, "/api/v1/superuser/users/alice", basic("root"), map[string]any{"enabled": true, "password": "a-new-password"})
	e.must(200, http.MethodGet, "/api/v1/user/", basicPw("alice", "a-new-password"), nil)
	assertError(t, e.call(http.MethodPut, "/api/v1/superuser/users/alice", basic("root"), map[string]any{"password": "short"}), 400, "invalid_request")

	if r := e.call(http.MethodDelete, "/api/v1/superuser/users/newuser", basic("root"), nil); r.code != 204 || len(r.body) != 0 {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	assertError(t, e.call(http.MethodDelete, "/api/v1/superuser/users/newuser", basic("root"), nil), 404, "not_found")
	assertError(t, e.call(http.MethodDelete, "/api/v1/superuser/users/root", basic("root"), nil), 400, "invalid_request")
}

func TestGetUser(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	e.must(201, http.MethodPost, "/api/v1/organization/", basic("alice"), map[string]any{"name": "acme"})
	r := e.must(200, http.MethodGet, "/api/v1/user/", basic("alice"), nil)
	m := r.obj()
	orgs, _ := m["organizations"].([]any)
	if m["username"] != "alice" || m["anonymous"] != false || m["super_user"] != false || len(orgs) != 1 {
		t.Fatalf("user: %s", r.body)
	}
	o := keys(t, "org", orgs[0], "name", "avatar", "can_create_repo", "public", "is_org_admin", "preferred_namespace")
	if o["name"] != "acme" || o["is_org_admin"] != true {
		t.Fatalf("org summary: %v", o)
	}
	assertError(t, e.call(http.MethodGet, "/api/v1/user/", anon, nil), 401, "invalid_token")
}

func TestOrganizationsAndTeams(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	e.user("bob", false)
	e.user("carol", false)

	r := e.must(201, http.MethodPost, "/api/v1/organization/", basic("alice"), map[string]any{"name": "acme", "email": "org@example.com"})
	if string(r.body) != "\"Created\"\n" && string(r.body) != "\"Created\"" {
		t.Fatalf("create org body %q", r.body)
	}
	for _, tc := range []struct {
		body map[string]any
	}{
		{map[string]any{"name": "acme"}},                                  // taken
		{map[string]any{"name": "alice"}},                                 // a user's name
		{map[string]any{"name": "A"}},                                     // rules
		{map[string]any{"name": "x"}},                                     // too short
		{map[string]any{"name": "new-org", "email": "alice@example.com"}}, // creator's email
	} {
		assertError(t, e.call(http.MethodPost, "/api/v1/organization/", basic("alice"), tc.body), 400, "invalid_request")
	}

	r = e.must(200, http.MethodGet, "/api/v1/organization/acme", basic("alice"), nil)
	m := keys(t, "org", r.v, "name", "email", "avatar", "is_admin", "is_member", "teams", "ordered_teams",
		"invoice_email", "invoice_email_address", "tag_expiration_s", "is_free_account")
	if m["is_admin"] != true || m["tag_expiration_s"] != float64(DefaultTagExpirationS) {
		t.Fatalf("org: %s", r.body)
	}
	owners := keys(t, "owners", m["teams"].(map[string]any)["owners"], "name", "description", "role", "avatar", "can_view", "repo_count", "member_count", "is_synced")
	if owners["role"] != "admin" || owners["member_count"] != float64(1) || owners["avatar"].(map[string]any)["kind"] != "team" {
		t.Fatalf("owners: %v", owners)
	}
	// Non-members do not learn the organization exists.
	assertError(t, e.call(http.MethodGet, "/api/v1/organization/acme", basic("bob"), nil), 404, "not_found")
	assertError(t, e.call(http.MethodDelete, "/api/v1/organization/acme", basic("bob"), nil), 404, "not_found")

	r = e.must(200, http.MethodPut, "/api/v1/organization/acme", basic("alice"),
		map[string]any{"email": "new@example.com", "invoice_email": true, "invoice_email_address": "bill@example.com", "tag_expiration_s": 86400})
	if m := r.obj(); m["email"] != "new@example.com" || m["invoice_email"] != true || m["invoice_email_address"] != "bill@example.com" || m["tag_expiration_s"] != float64(86400) {
		t.Fatalf("update org: %s", r.body)
	}
	assertError(t, e.call(http.MethodPut, "/api/v1/organization/acme", basic("alice"), map[string]any{"tag_expiration_s": -1}), 400, "invalid_request")

	// Teams.
	r = e.must(200, http.MethodPut, "/api/v1/organization/acme/team/devs", basic("alice"), map[string]any{"role": "creator"})
	tm := keys(t, "team", r.v, "name", "description", "can_view", "role", "avatar", "new_team")
	if tm["new_team"] != true || tm["role"] != "creator" {
		t.Fatalf("team: %s", r.body)
	}
	r = e.must(200, http.MethodPut, "/api/v1/organization/acme/team/devs", basic("alice"), map[string]any{"role": "member", "description": "d"})
	if r.obj()["new_team"] != false || r.obj()["role"] != "member" || r.obj()["description"] != "d" {
		t.Fatalf("team update: %s", r.body)
	}
	for _, tc := range []struct{ team, role string }{{"devs", "owner"}, {"Devs", "member"}, {"1devs", "member"}, {"owners", "member"}} {
		assertError(t, e.call(http.MethodPut, "/api/v1/organization/acme/team/"+tc.team, basic("alice"), map[string]any{"role": tc.role}), 400, "invalid_request")
	}
	e.must(201, http.MethodPut, "/api/v1/organization/acme/robots/ci", basic("alice"), nil)
	r = e.must(200, http.MethodPut, "/api/v1/organization/acme/team/devs/members/bob", basic("alice"), nil)
	if mv := keys(t, "member", r.v, "name", "kind", "is_robot", "avatar", "invited"); mv["is_robot"] != false || mv["invited"] != false {
		t.Fatalf("member: %s", r.body)
	}
	r = e.must(200, http.MethodPut, "/api/v1/organization/acme/team/devs/members/acme+ci", basic("alice"), nil)
	if mv := r.obj(); mv["is_robot"] != true || mv["kind"] != "user" || mv["avatar"].(map[string]any)["kind"] != "robot" {
		t.Fatalf("robot member: %s", r.body)
	}
	e.must(200, http.MethodPut, "/api/v1/organization/acme/team/devs/invite/dan@example.com", basic("alice"), nil)
	assertError(t, e.call(http.MethodPut, "/api/v1/organization/acme/team/devs/members/nobody", basic("alice"), nil), 400, "invalid_request")
	// Bob is a member now: he sees the org but cannot administer it.
	e.must(200, http.MethodGet, "/api/v1/organization/acme", basic("bob"), nil)
	assertError(t, e.call(http.MethodPut, "/api/v1/organization/acme/team/devs", basic("bob"), map[string]any{"role": "admin"}), 403, "insufficient_scope")

	r = e.must(200, http.MethodGet, "/api/v1/organization/acme/team/devs/members", basic("alice"), nil)
	ml := keys(t, "members", r.v, "name", "members", "can_edit")
	members := ml["members"].([]any)
	var names []string
	for _, mb := range members {
		mm := mb.(map[string]any)
		names = append(names, mm["name"].(string))
		if mm["name"] == "dan@example.com" && mm["invited"] != true {
			t.Fatalf("invitation not shown as invited: %v", mm)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"acme+ci", "bob", "dan@example.com"}) || ml["can_edit"] != true {
		t.Fatalf("members: %s", r.body)
	}
	if r := e.must(200, http.MethodGet, "/api/v1/organization/acme/team/devs/members", basic("bob"), nil); r.obj()["can_edit"] != false {
		t.Fatalf("member's view: %s", r.body)
	}
	e.must(204, http.MethodDelete, "/api/v1/organization/acme/team/devs/invite/dan@example.com", basic("alice"), nil)
	e.must(204, http.MethodDelete, "/api/v1/organization/acme/team/devs/members/acme+ci", basic("alice"), nil)

	// Team permissions.
	e.must(201, http.MethodPost, "/api/v1/repository", basic("alice"), map[string]any{"namespace": "acme", "repository": "api-repo", "visibility": "public", "description": ""})
	e.must(200, http.MethodPut, "/api/v1/repository/acme/api-repo/permissions/team/devs", basic("alice"), map[string]any{"role": "admin"})
	r = e.must(200, http.MethodGet, "/api/v1/organization/acme/team/devs/permissions", basic("alice"), nil)
	perms := r.obj()["permissions"].([]any)
	if len(perms) != 1 {
		t.Fatalf("team permissions: %s", r.body)
	}
	p := keys(t, "permission", perms[0], "repository", "role")
	if rp := keys(t, "repository", p["repository"], "name", "is_public"); rp["name"] != "api-repo" || rp["is_public"] != true || p["role"] != "admin" {
		t.Fatalf("team permission: %v", p)
	}

	assertError(t, e.call(http.MethodDelete, "/api/v1/organization/acme/team/owners", basic("alice"), nil), 400, "invalid_request")
	e.must(204, http.MethodDelete, "/api/v1/organization/acme/team/devs", basic("alice"), nil)
	assertError(t, e.call(http.MethodGet, "/api/v1/organization/acme/team/devs/members", basic("alice"), nil), 404, "not_found")
	if r := e.call(http.MethodDelete, "/api/v1/organization/acme", basic("alice"), nil); r.code != 204 || len(r.body) != 0 {
		t.Fatalf("delete org: %d %s", r.code, r.body)
	}
	assertError(t, e.call(http.MethodGet, "/api/v1/organization/acme", basic("alice"), nil), 404, "not_found")
}

var quayDate = regexp.MustCompile(`^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d -0000$`)

func TestRobots(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	e.user("bob", false)
	e.must(201, http.MethodPost, "/api/v1/organization/", basic("alice"), map[string]any{"name": "acme"})

	r := e.must(201, http.MethodPut, "/api/v1/organization/acme/robots/ci", basic("alice"), nil)
	m := keys(t, "robot", r.v, "name", "created", "last_accessed", "description", "token", "unstructured_metadata")
	tok1, _ := m["token"].(string)
	if m["name"] != "acme+ci" || !quayDate.MatchString(m["created"].(string)) || m["last_accessed"] != nil ||
		m["unstructured_metadata"] != nil || !regexp.MustCompile(`^[A-Z0-9]{64}$`).MatchString(tok1) {
		t.Fatalf("robot: %s", r.body)
	}
	assertError(t, e.call(http.MethodPut, "/api/v1/organization/acme/robots/ci", basic("alice"), nil), 400, "invalid_request")
	assertError(t, e.call(http.MethodPut, "/api/v1/organization/acme/robots/Bad-Name", basic("alice"), nil), 400, "invalid_request")
	assertError(t, e.call(http.MethodPut, "/api/v1/organization/acme/robots/other", basic("bob"), nil), 404, "not_found")
	r = e.must(201, http.MethodPut, "/api/v1/user/robots/mine", basic("bob"),
		map[string]any{"description": "bob's", "unstructured_metadata": map[string]any{"k": "v"}})
	if r.obj()["name"] != "bob+mine" || r.obj()["description"] != "bob's" || r.obj()["unstructured_metadata"].(map[string]any)["k"] != "v" {
		t.Fatalf("user robot: %s", r.body)
	}

	// The robot logs in with its token, as "acme+ci".
	r = e.must(200, http.MethodGet, "/api/v1/organization/acme/robots/ci", basic("alice"), nil)
	if r.obj()["token"] != tok1 {
		t.Fatal("an admin could not read the token back")
	}
	ctx := context.Background()
	p, err := e.authn.Basic(ctx, "acme+ci", tok1)
	if err != nil || p.Name() != "acme+ci" {
		t.Fatalf("robot login: %v", err)
	}
	jwt, err := e.tokens.Issue(p, "reg", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.tokens.Verify(ctx, jwt.Token); err != nil {
		t.Fatal(err)
	}
	r = e.must(200, http.MethodGet, "/api/v1/organization/acme/robots", basic("alice"), nil)
	if rs := r.obj()["robots"].([]any); len(rs) != 1 || rs[0].(map[string]any)["last_accessed"] == nil {
		t.Fatalf("robots: %s", r.body)
	}

	// Regenerate: the old token and the registry token issued from it die at once.
	r = e.must(200, http.MethodPost, "/api/v1/organization/acme/robots/ci/regenerate", basic("alice"), nil)
	tok2, _ := r.obj()["token"].(string)
	if tok2 == "" || tok2 == tok1 {
		t.Fatalf("regenerate: %s", r.body)
	}
	if _, err := e.authn.Basic(ctx, "acme+ci", tok1); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("old token after regenerate: %v", err)
	}
	if _, err := e.tokens.Verify(ctx, jwt.Token); !errors.Is(err, auth.ErrTokenRevoked) {
		t.Fatalf("registry token after regenerate: %v", err)
	}
	e.must(200, http.MethodGet, "/api/v1/repository?namespace=acme", basicPw("acme+ci", tok2), nil)
	// A robot never administers its organization.
	assertError(t, e.call(http.MethodGet, "/api/v1/organization/acme/robots", basicPw("acme+ci", tok2), nil), 403, "insufficient_scope")

	// Missing robot: Quay's message.
	r = e.call(http.MethodGet, "/api/v1/user/robots/nope", basic("bob"), nil)
	assertError(t, r, 404, "not_found")
	if r.obj()["message"] != "Could not find robot with specified username" {
		t.Fatalf("missing robot: %s", r.body)
	}
	e.must(204, http.MethodDelete, "/api/v1/organization/acme/robots/ci", basic("alice"), nil)
	if _, err := e.authn.Basic(ctx, "acme+ci", tok2); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("deleted robot: %v", err)
	}
	assertError(t, e.call(http.MethodDelete, "/api/v1/organization/acme/robots/ci", basic("alice"), nil), 404, "not_found")
}

func TestRobotsDisallowed(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	r := e.must(201, http.MethodPut, "/api/v1/user/robots/bot", basic("alice"), nil)
	tok := r.obj()["token"].(string)
	e.must(200, http.MethodGet, "/api/v1/repository?namespace=alice", basicPw("alice+bot", tok), nil)

	// The same database under a server with ROBOTS_DISALLOW.
	d := newEnv(t, map[string]any{"ROBOTS_DISALLOW": true})
	d.store = e.store
	d.authn.Store = e.store
	d.api.o.Store = e.store
	d.api.o.Policy.Store = e.store
	d.api.o.Secrets = e.api.o.Secrets
	d.authn.Secrets = e.api.o.Secrets
	r = d.call(http.MethodPut, "/api/v1/user/robots/other", basic("alice"), nil)
	assertError(t, r, 400, "invalid_request")
	if r.obj()["detail"] != RobotsDisabledMessage {
		t.Fatalf("detail %v", r.obj()["detail"])
	}
	r = d.call(http.MethodGet, "/api/v1/repository?namespace=alice", basicPw("alice+bot", tok), nil)
	assertError(t, r, 401, "invalid_token")
	if !strings.Contains(r.obj()["detail"].(string), "Robot accounts have been disabled") {
		t.Fatalf("robot login detail: %s", r.body)
	}
}

func TestRepositories(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	e.user("bob", false)
	e.user("carol", false)

	r := e.must(201, http.MethodPost, "/api/v1/repository", basic("alice"), map[string]any{"repository": "app", "visibility": "private", "description": "d"})
	if m := keys(t, "created", r.v, "namespace", "name", "kind"); m["namespace"] != "alice" || m["name"] != "app" || m["kind"] != "image" {
		t.Fatalf("create: %s", r.body)
	}
	for _, name := range []string{"build", "trigger", "tag", "notification"} {
		assertError(t, e.call(http.MethodPost, "/api/v1/repository", basic("alice"), map[string]any{"repository": name, "visibility": "private"}), 400, "invalid_request")
	}
	for _, body := range []map[string]any{
		{"repository": "app", "visibility": "private"}, // exists
		{"repository": "Bad", "visibility": "private"}, // name
		{"repository": "a/b", "visibility": "private"}, // nested
		{"repository": "ok", "visibility": "secret"},   // visibility
		{"repository": "ok"},                           // no visibility
	} {
		assertError(t, e.call(http.MethodPost, "/api/v1/repository", basic("alice"), body), 400, "invalid_request")
	}
	assertError(t, e.call(http.MethodPost, "/api/v1/repository", basic("bob"), map[string]any{"namespace": "alice", "repository": "x", "visibility": "private"}), 403, "insufficient_scope")
	assertError(t, e.call(http.MethodPost, "/api/v1/repository", basic("bob"), map[string]any{"namespace": "nobody", "repository": "x", "visibility": "private"}), 404, "not_found")

	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app", basic("alice"), nil)
	m := keys(t, "repo", r.v, "namespace", "name", "kind", "description", "is_public", "is_organization", "is_starred", "status_token",
		"trust_enabled", "tag_expiration_s", "is_free_account", "state", "can_write", "can_admin")
	if m["can_admin"] != true || m["is_public"] != false || m["description"] != "d" || m["state"] != "NORMAL" {
		t.Fatalf("repo: %s", r.body)
	}
	// Hidden from others: 404, never 403; anonymous callers are asked to
	// log in, as for a repository that does not exist.
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app", basic("bob"), nil), 404, "not_found")
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app", anon, nil), 401, "invalid_token")
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/nothing", anon, nil), 401, "invalid_token")
	assertError(t, e.call(http.MethodDelete, "/api/v1/repository/alice/app", basic("bob"), nil), 404, "not_found")
	assertError(t, e.call(http.MethodDelete, "/api/v1/repository/alice/app", anon, nil), 401, "invalid_token")

	// A reader sees it, may not write or administer.
	e.must(200, http.MethodPut, "/api/v1/repository/alice/app/permissions/user/bob", basic("alice"), map[string]any{"role": "read"})
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app", basic("bob"), nil)
	if r.obj()["can_write"] != false || r.obj()["can_admin"] != false {
		t.Fatalf("reader's view: %s", r.body)
	}
	assertError(t, e.call(http.MethodPut, "/api/v1/repository/alice/app", basic("bob"), map[string]any{"description": "x"}), 403, "insufficient_scope")
	assertError(t, e.call(http.MethodPost, "/api/v1/repository/alice/app/changevisibility", basic("bob"), map[string]any{"visibility": "public"}), 403, "insufficient_scope")
	e.must(200, http.MethodPut, "/api/v1/repository/alice/app", basic("alice"), map[string]any{"description": "new"})

	// Visibility.
	assertError(t, e.call(http.MethodPost, "/api/v1/repository/alice/app/changevisibility", basic("alice"), map[string]any{"visibility": "open"}), 400, "invalid_request")
	e.must(200, http.MethodPost, "/api/v1/repository/alice/app/changevisibility", basic("alice"), map[string]any{"visibility": "public"})
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app", anon, nil)
	if r.obj()["is_public"] != true || r.obj()["description"] != "new" {
		t.Fatalf("public repo: %s", r.body)
	}

	// Listing.
	e.must(201, http.MethodPost, "/api/v1/repository", basic("alice"), map[string]any{"repository": "secret", "visibility": "private"})
	assertError(t, e.call(http.MethodGet, "/api/v1/repository", basic("alice"), nil), 400, "invalid_request")
	list := func(c cred, q string) []string {
		r := e.must(200, http.MethodGet, "/api/v1/repository?"+q, c, nil)
		var out []string
		for _, x := range r.obj()["repositories"].([]any) {
			xm := keys(t, "listed", x, "namespace", "name", "description", "is_public", "kind", "state", "is_starred")
			out = append(out, xm["namespace"].(string)+"/"+xm["name"].(string))
		}
		return out
	}
	if got := list(basic("alice"), "namespace=alice"); !slices.Equal(got, []string{"alice/app", "alice/secret"}) {
		t.Fatalf("alice lists %v", got)
	}
	if got := list(basic("carol"), "namespace=alice"); !slices.Equal(got, []string{"alice/app"}) {
		t.Fatalf("carol lists %v", got)
	}
	if got := list(anon, "public=true"); !slices.Equal(got, []string{"alice/app"}) {
		t.Fatalf("anonymous lists %v", got)
	}

	// Stars.
	e.must(201, http.MethodPost, "/api/v1/user/starred", basic("carol"), map[string]any{"namespace": "alice", "repository": "app"})
	assertError(t, e.call(http.MethodPost, "/api/v1/user/starred", basic("carol"), map[string]any{"namespace": "alice", "repository": "secret"}), 404, "not_found")
	if got := list(basic("carol"), "starred=true"); !slices.Equal(got, []string{"alice/app"}) {
		t.Fatalf("starred %v", got)
	}
	if r := e.must(200, http.MethodGet, "/api/v1/repository/alice/app", basic("carol"), nil); r.obj()["is_starred"] != true {
		t.Fatalf("is_starred: %s", r.body)
	}
	e.must(204, http.MethodDelete, "/api/v1/user/starred/alice/app", basic("carol"), nil)
	if got := list(basic("carol"), "starred=true"); len(got) != 0 {
		t.Fatalf("starred after unstar %v", got)
	}

	// Delete.
	assertError(t, e.call(http.MethodDelete, "/api/v1/repository/alice/app", basic("bob"), nil), 403, "insufficient_scope")
	if r := e.call(http.MethodDelete, "/api/v1/repository/alice/app", basic("alice"), nil); r.code != 204 || len(r.body) != 0 {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app", basic("alice"), nil), 404, "not_found")
	e.mu.Lock()
	defer e.mu.Unlock()
	if !slices.Contains(e.invalidated, "alice/app") {
		t.Fatalf("InvalidateRepo not called: %v", e.invalidated)
	}
}

func TestOrgRepositoryCreation(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	e.user("bob", false)
	e.user("carol", false)
	e.must(201, http.MethodPost, "/api/v1/organization/", basic("alice"), map[string]any{"name": "acme"})
	e.must(200, http.MethodPut, "/api/v1/organization/acme/team/makers", basic("alice"), map[string]any{"role": "creator"})
	e.must(200, http.MethodPut, "/api/v1/organization/acme/team/readers", basic("alice"), map[string]any{"role": "member"})
	e.must(200, http.MethodPut, "/api/v1/organization/acme/team/makers/members/bob", basic("alice"), nil)
	e.must(200, http.MethodPut, "/api/v1/organization/acme/team/readers/members/carol", basic("alice"), nil)
	// A prototype: whatever anyone creates, readers get read.
	r := e.must(200, http.MethodPost, "/api/v1/organization/acme/prototypes", basic("alice"),
		map[string]any{"role": "read", "delegate": map[string]any{"name": "readers", "kind": "team"}})
	keys(t, "prototype", r.v, "id", "role", "delegate")

	create := func(c cred, name string) resp {
		return e.call(http.MethodPost, "/api/v1/repository", c, map[string]any{"namespace": "acme", "repository": name, "visibility": "private"})
	}
	if r := create(basic("bob"), "made-by-bob"); r.code != 201 {
		t.Fatalf("creator: %s", r)
	}
	assertError(t, create(basic("carol"), "made-by-carol"), 403, "insufficient_scope")
	// The creator administers what it made; the prototype gave readers read.
	if r := e.must(200, http.MethodGet, "/api/v1/repository/acme/made-by-bob", basic("bob"), nil); r.obj()["can_admin"] != true {
		t.Fatalf("creator's role: %s", r.body)
	}
	if r := e.must(200, http.MethodGet, "/api/v1/repository/acme/made-by-bob", basic("carol"), nil); r.obj()["can_write"] != false {
		t.Fatalf("reader's role: %s", r.body)
	}
}

func TestPermissions(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	e.user("bob", false)
	e.must(201, http.MethodPost, "/api/v1/organization/", basic("alice"), map[string]any{"name": "acme"})
	e.must(201, http.MethodPut, "/api/v1/organization/acme/robots/test", basic("alice"), nil)
	e.must(201, http.MethodPut, "/api/v1/user/robots/bot", basic("bob"), nil)
	for _, n := range []string{"one", "two", "three"} {
		e.must(201, http.MethodPost, "/api/v1/repository", basic("alice"), map[string]any{"namespace": "acme", "repository": n, "visibility": "private"})
	}
	const base = "/api/v1/repository/acme/one/permissions"

	r := e.must(200, http.MethodPut, base+"/user/acme+test", basic("alice"), map[string]any{"role": "admin"})
	m := keys(t, "permission", r.v, "role", "name", "is_robot", "avatar", "is_org_member")
	if m["role"] != "admin" || m["name"] != "acme+test" || m["is_robot"] != true || m["avatar"].(map[string]any)["kind"] != "robot" {
		t.Fatalf("robot permission: %s", r.body)
	}
	// Percent-encoded "+" works too.
	e.must(200, http.MethodPut, base+"/user/acme%2Btest", basic("alice"), map[string]any{"role": "write"})
	e.must(200, http.MethodPut, base+"/user/bob", basic("alice"), map[string]any{"role": "read"})
	assertError(t, e.call(http.MethodPut, base+"/user/bob+bot", basic("alice"), map[string]any{"role": "read"}), 400, "invalid_request")
	assertError(t, e.call(http.MethodPut, base+"/user/bob", basic("alice"), map[string]any{"role": "owner"}), 400, "invalid_request")
	assertError(t, e.call(http.MethodPut, base+"/user/nobody", basic("alice"), map[string]any{"role": "read"}), 400, "invalid_request")
	assertError(t, e.call(http.MethodPut, base+"/user/bob", basic("bob"), map[string]any{"role": "admin"}), 403, "insufficient_scope")

	r = e.must(200, http.MethodGet, base+"/user/", basic("alice"), nil)
	perms := r.obj()["permissions"].(map[string]any)
	// alice created the repository in the organization: she holds admin on it.
	if len(perms) != 3 || perms["alice"].(map[string]any)["role"] != "admin" || perms["acme+test"].(map[string]any)["role"] != "write" || perms["bob"].(map[string]any)["role"] != "read" {
		t.Fatalf("permissions: %s", r.body)
	}
	r = e.must(200, http.MethodGet, base+"/user/bob/", basic("alice"), nil)
	if r.obj()["role"] != "read" {
		t.Fatalf("bob's permission: %s", r.body)
	}
	e.must(204, http.MethodDelete, base+"/user/bob", basic("alice"), nil)
	r = e.call(http.MethodGet, base+"/user/bob/", basic("alice"), nil)
	assertError(t, r, 404, "not_found")
	if r.obj()["message"] != "User does not have permission for repo." {
		t.Fatalf("no permission: %s", r.body)
	}

	// Teams.
	e.must(200, http.MethodPut, "/api/v1/organization/acme/team/devs", basic("alice"), map[string]any{"role": "member"})
	r = e.must(200, http.MethodPut, base+"/team/devs", basic("alice"), map[string]any{"role": "write"})
	keys(t, "team permission", r.v, "role", "name", "avatar")
	r = e.must(200, http.MethodGet, base+"/team/", basic("alice"), nil)
	if tp := r.obj()["permissions"].(map[string]any); tp["devs"].(map[string]any)["role"] != "write" {
		t.Fatalf("team permissions: %s", r.body)
	}
	assertError(t, e.call(http.MethodPut, base+"/team/nope", basic("alice"), map[string]any{"role": "write"}), 404, "not_found")
	e.must(204, http.MethodDelete, base+"/team/devs", basic("alice"), nil)

	// Bulk robot permissions.
	r = e.must(200, http.MethodPost, "/api/v1/organization/acme/robots/test/permissions", basic("alice"),
		map[string]any{"repositories": []string{"two", "three"}, "role": "read"})
	got := map[string]string{}
	for _, p := range r.obj()["permissions"].([]any) {
		pm := p.(map[string]any)
		got[pm["repository"].(map[string]any)["name"].(string)] = pm["role"].(string)
	}
	if len(got) != 3 || got["one"] != "write" || got["two"] != "read" || got["three"] != "read" {
		t.Fatalf("bulk: %s", r.body)
	}
	assertError(t, e.call(http.MethodPost, "/api/v1/organization/acme/robots/test/permissions", basic("alice"),
		map[string]any{"repositories": []string{"two", "missing"}, "role": "none"}), 400, "invalid_request")
	r = e.must(200, http.MethodPost, "/api/v1/organization/acme/robots/test/permissions", basic("alice"),
		map[string]any{"repositories": []string{"one", "two"}, "role": "none"})
	if ps := r.obj()["permissions"].([]any); len(ps) != 1 {
		t.Fatalf("bulk none: %s", r.body)
	}
	r = e.must(200, http.MethodGet, "/api/v1/organization/acme/robots/test/permissions", basic("alice"), nil)
	if ps := r.obj()["permissions"].([]any); len(ps) != 1 {
		t.Fatalf("robot permissions: %s", r.body)
	}
}

func TestPrototypes(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	e.user("testuser", false)
	e.must(201, http.MethodPost, "/api/v1/organization/", basic("alice"), map[string]any{"name": "test-org"})
	e.must(201, http.MethodPut, "/api/v1/organization/test-org/robots/test", basic("alice"), nil)

	r := e.must(200, http.MethodPost, "/api/v1/organization/test-org/prototypes", basic("alice"), map[string]any{
		"role": "admin", "delegate": map[string]any{"name": "testuser", "kind": "user"}, "activating_user": map[string]any{"name": "test-org+test"}})
	m := keys(t, "prototype", r.v, "activating_user", "delegate", "role", "id")
	au := keys(t, "activating_user", m["activating_user"], "name", "is_robot", "kind", "is_org_member", "avatar")
	dl := keys(t, "delegate", m["delegate"], "name", "is_robot", "kind", "is_org_member", "avatar")
	if au["name"] != "test-org+test" || au["is_robot"] != true || au["is_org_member"] != true ||
		dl["name"] != "testuser" || dl["is_org_member"] != false || m["role"] != "admin" ||
		!regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(m["id"].(string)) {
		t.Fatalf("prototype: %s", r.body)
	}
	id := m["id"].(string)
	r = e.must(200, http.MethodPut, "/api/v1/organization/test-org/prototypes/"+id, basic("alice"), map[string]any{"role": "write"})
	if r.obj()["role"] != "write" {
		t.Fatalf("update: %s", r.body)
	}
	r = e.must(200, http.MethodGet, "/api/v1/organization/test-org/prototypes", basic("alice"), nil)
	if ps := r.obj()["prototypes"].([]any); len(ps) != 1 {
		t.Fatalf("list: %s", r.body)
	}
	assertError(t, e.call(http.MethodPost, "/api/v1/organization/test-org/prototypes", basic("alice"),
		map[string]any{"role": "admin", "delegate": map[string]any{"name": "x", "kind": "group"}}), 400, "invalid_request")
	e.must(204, http.MethodDelete, "/api/v1/organization/test-org/prototypes/"+id, basic("alice"), nil)
	assertError(t, e.call(http.MethodDelete, "/api/v1/organization/test-org/prototypes/"+id, basic("alice"), nil), 404, "not_found")
	assertError(t, e.call(http.MethodGet, "/api/v1/organization/test-org/prototypes", basic("testuser"), nil), 404, "not_found")
}

func TestOAuthTokens(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	e.user("bob", false)
	e.must(201, http.MethodPost, "/api/v1/organization/", basic("alice"), map[string]any{"name": "acme"})
	e.must(201, http.MethodPost, "/api/v1/repository", basic("alice"), map[string]any{"namespace": "acme", "repository": "app", "visibility": "private"})

	r := e.must(200, http.MethodPost, "/api/v1/organization/acme/applications", basic("alice"), map[string]any{"name": "scripts", "redirect_uri": "http://localhost"})
	app := keys(t, "application", r.v, "name", "description", "application_uri", "client_id", "client_secret", "redirect_uri", "avatar_email")
	clientID := app["client_id"].(string)
	secret := app["client_secret"].(string)
	if len(secret) != 40 || len(clientID) != 20 {
		t.Fatalf("application: %s", r.body)
	}
	r = e.must(200, http.MethodPost, "/api/v1/organization/acme/applications/"+clientID+"/resetclientsecret", basic("alice"), nil)
	if r.obj()["client_secret"] == secret {
		t.Fatal("the secret did not change")
	}
	r = e.must(200, http.MethodGet, "/api/v1/organization/acme/applications", basic("alice"), nil)
	if len(r.obj()["applications"].([]any)) != 1 {
		t.Fatalf("applications: %s", r.body)
	}
	// Non-members cannot mint tokens through the org's applications.
	assertError(t, e.call(http.MethodPost, "/api/v1/organization/acme/applications/"+clientID+"/token", basic("bob"), map[string]any{"scopes": []string{"repo:read"}}), 404, "not_found")
	assertError(t, e.call(http.MethodPost, "/api/v1/organization/acme/applications/"+clientID+"/token", basic("alice"), map[string]any{"scopes": []string{"repo:everything"}}), 400, "invalid_request")

	token := func(scopes ...string) string {
		r := e.must(200, http.MethodPost, "/api/v1/organization/acme/applications/"+clientID+"/token", basic("alice"), map[string]any{"scopes": scopes})
		tok, _ := r.obj()["access_token"].(string)
		if !regexp.MustCompile(`^[A-Za-z0-9]{40}$`).MatchString(tok) {
			t.Fatalf("token: %s", r.body)
		}
		return tok
	}
	read, write, admin := token("repo:read"), token("repo:write"), token("repo:admin", "repo:create")
	userRead := token("user:read")

	// repo:read sees the repository but cannot change it; nor can it read the user.
	r = e.must(200, http.MethodGet, "/api/v1/repository/acme/app", bearer(read), nil)
	if r.obj()["can_write"] != false {
		t.Fatalf("read token: %s", r.body)
	}
	assertError(t, e.call(http.MethodGet, "/api/v1/user/", bearer(read), nil), 403, "insufficient_scope")
	e.must(200, http.MethodGet, "/api/v1/user/", bearer(userRead), nil)
	// user:read alone does not see the private repository at all.
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/acme/app", bearer(userRead), nil), 404, "not_found")
	// repo:write implies read, and gives write but not admin.
	r = e.must(200, http.MethodGet, "/api/v1/repository/acme/app", bearer(write), nil)
	if r.obj()["can_write"] != true || r.obj()["can_admin"] != false {
		t.Fatalf("write token: %s", r.body)
	}
	e.must(200, http.MethodPut, "/api/v1/repository/acme/app", bearer(write), map[string]any{"description": "x"})
	assertError(t, e.call(http.MethodPost, "/api/v1/repository/acme/app/changevisibility", bearer(write), map[string]any{"visibility": "public"}), 403, "insufficient_scope")
	e.must(200, http.MethodPost, "/api/v1/repository/acme/app/changevisibility", bearer(admin), map[string]any{"visibility": "public"})
	// Creation needs repo:create; org administration org:admin.
	assertError(t, e.call(http.MethodPost, "/api/v1/repository", bearer(write), map[string]any{"namespace": "acme", "repository": "new", "visibility": "private"}), 403, "insufficient_scope")
	e.must(201, http.MethodPost, "/api/v1/repository", bearer(admin), map[string]any{"namespace": "acme", "repository": "new", "visibility": "private"})
	assertError(t, e.call(http.MethodPut, "/api/v1/organization/acme/team/x", bearer(admin), map[string]any{"role": "member"}), 403, "insufficient_scope")
	// A token cannot mint tokens.
	assertError(t, e.call(http.MethodPost, "/api/v1/organization/acme/applications/"+clientID+"/token", bearer(admin), map[string]any{"scopes": []string{"repo:read"}}), 403, "insufficient_scope")
	// $oauthtoken over Basic is the same principal.
	e.must(200, http.MethodGet, "/api/v1/repository/acme/app", basicPw("$oauthtoken", read), nil)

	// Deleting the application kills its tokens at once.
	e.must(204, http.MethodDelete, "/api/v1/organization/acme/applications/"+clientID, basic("alice"), nil)
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/acme/app", bearer(write), nil), 401, "invalid_token")
}

func TestSessionCSRF(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	assertError(t, e.call(http.MethodPost, "/api/v1/signin", anon, map[string]any{"username": "alice", "password": "nope"}), 401, "invalid_token")
	r := e.must(200, http.MethodPost, "/api/v1/signin", anon, map[string]any{"username": "alice", "password": "pw-alice"})
	csrf, _ := r.obj()["csrf_token"].(string)
	if csrf == "" || r.hdr.Get(CSRFHeader) != csrf {
		t.Fatalf("signin: %s %v", r.body, r.hdr)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.hdr}).Cookies() {
		if c.Name == SessionCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.Value == "" {
		t.Fatalf("session cookie: %v", r.hdr)
	}
	withCookie := func(r *http.Request) { r.AddCookie(cookie) }
	xhr := func(r *http.Request) { r.Header.Set("X-Requested-With", "XMLHttpRequest") }
	withCSRF := func(tok string) func(r *http.Request) {
		return func(r *http.Request) { r.Header.Set(CSRFHeader, tok) }
	}

	// Quay's browser guard.
	r = e.call(http.MethodGet, "/api/v1/user/", withCookie, nil)
	assertError(t, r, 400, "invalid_request")
	if r.obj()["detail"] != "API calls must be invoked with an X-Requested-With header if called from a browser" {
		t.Fatalf("guard message: %s", r.body)
	}
	r = e.call(http.MethodGet, "/api/v1/user/", withCookie, nil, xhr)
	if r.code != 200 || r.obj()["username"] != "alice" {
		t.Fatalf("session GET: %s", r)
	}
	body := map[string]any{"repository": "app", "visibility": "private"}
	assertError(t, e.call(http.MethodPost, "/api/v1/repository", withCookie, body, xhr), 403, "invalid_request")
	assertError(t, e.call(http.MethodPost, "/api/v1/repository", withCookie, body, xhr, withCSRF("wrong")), 403, "invalid_request")
	if r := e.call(http.MethodPost, "/api/v1/repository", withCookie, body, xhr, withCSRF(csrf)); r.code != 201 {
		t.Fatalf("session POST with CSRF token: %s", r)
	}
	// Signout ends the session: the cookie is anonymous afterwards.
	e.call(http.MethodPost, "/api/v1/signout", withCookie, nil, xhr, withCSRF(csrf))
	assertError(t, e.call(http.MethodGet, "/api/v1/user/", withCookie, nil, xhr), 401, "invalid_token")
	// Robots and tokens cannot open sessions.
	assertError(t, e.call(http.MethodPost, "/api/v1/signin", anon, map[string]any{"username": "$oauthtoken", "password": "x"}), 401, "invalid_token")
}

func TestSessionXHRGuardOff(t *testing.T) {
	e := newEnv(t, map[string]any{"BROWSER_API_CALLS_XHR_ONLY": false})
	e.user("alice", false)
	r := e.must(200, http.MethodPost, "/api/v1/signin", anon, map[string]any{"username": "alice", "password": "pw-alice"})
	cookies := (&http.Response{Header: r.hdr}).Cookies()
	if r := e.call(http.MethodGet, "/api/v1/user/", anon, nil, func(r *http.Request) { r.AddCookie(cookies[0]) }); r.code != 200 {
		t.Fatalf("guard off: %s", r)
	}
}

func TestInitialize(t *testing.T) {
	body := map[string]any{"username": "quayadmin", "password": "quaypass12345", "email": "admin@example.com", "access_token": true}
	off := newEnv(t, nil)
	assertError(t, off.call(http.MethodPost, "/api/v1/user/initialize", anon, body), 404, "not_found")

	e := newEnv(t, map[string]any{"FEATURE_USER_INITIALIZE": true})
	assertError(t, e.call(http.MethodPost, "/api/v1/user/initialize", anon, map[string]any{"username": "quayadmin", "password": "short"}), 400, "invalid_request")
	r := e.must(200, http.MethodPost, "/api/v1/user/initialize", anon, body)
	m := keys(t, "initialize", r.v, "username", "email", "encrypted_password", "access_token")
	tok := m["access_token"].(string)
	// The token has every scope: superuser API and repository creation.
	e.must(200, http.MethodGet, "/api/v1/superuser/users/", bearer(tok), nil)
	e.must(201, http.MethodPost, "/api/v1/repository", bearer(tok), map[string]any{"repository": "app", "visibility": "public"})
	assertError(t, e.call(http.MethodPost, "/api/v1/user/initialize", anon, body), 400, "invalid_request")
}

func TestTagView(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.user("alice", false)
	ctx := context.Background()
	repo := &store.Repository{NamespaceID: alice.ID, Namespace: "alice", Name: "app", Visibility: store.Public}
	if err := e.store.CreateRepository(ctx, repo); err != nil {
		t.Fatal(err)
	}
	layer := store.Blob{Digest: "sha256:" + strings.Repeat("a", 64), Size: 1000}
	config := store.Blob{Digest: "sha256:" + strings.Repeat("b", 64), Size: 24}
	for _, b := range []store.Blob{layer, config} {
		if err := e.store.PutBlob(ctx, repo.ID, b); err != nil {
			t.Fatal(err)
		}
	}
	for i, tag := range []string{"v1", "v2", "latest"} {
		payload := `{"schemaVersion":2,"n":` + string(rune('0'+i)) + `}`
		m := &store.Manifest{RepoID: repo.ID, Digest: "sha256:" + strings.Repeat(string(rune('c'+i)), 64),
			MediaType: "application/vnd.oci.image.manifest.v1+json", Size: int64(len(payload)), Payload: []byte(payload),
			Refs: []store.Ref{{Digest: config.Digest, Size: config.Size, Kind: store.RefBlob}, {Digest: layer.Digest, Size: layer.Size, Kind: store.RefBlob}}}
		if err := e.store.PutManifest(ctx, m, tag); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond / 3)
	}
	r := e.must(200, http.MethodGet, "/api/v1/repository/alice/app/tag/?limit=2&page=1", anon, nil)
	keys(t, "tags", r.v, "tags", "page", "has_additional")
	tags := r.obj()["tags"].([]any)
	if len(tags) != 2 || r.obj()["has_additional"] != true || r.obj()["page"] != float64(1) {
		t.Fatalf("page 1: %s", r.body)
	}
	tg := keys(t, "tag", tags[0], "name", "reversion", "start_ts", "manifest_digest", "is_manifest_list", "size", "last_modified")
	if tg["size"] != float64(1024) || tg["reversion"] != false || tg["is_manifest_list"] != false || !quayDate.MatchString(tg["last_modified"].(string)) {
		t.Fatalf("tag: %v", tg)
	}
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app/tag/?limit=2&page=2", anon, nil)
	if len(r.obj()["tags"].([]any)) != 1 || r.obj()["has_additional"] != false {
		t.Fatalf("page 2: %s", r.body)
	}
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app/tag/?specificTag=v2", anon, nil)
	if ts := r.obj()["tags"].([]any); len(ts) != 1 || ts[0].(map[string]any)["name"] != "v2" {
		t.Fatalf("specificTag: %s", r.body)
	}
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app/tag/?limit=1000", anon, nil), 400, "invalid_request")
	assertError(t, e.call(http.MethodGet, "/api/v1/repository/alice/app/tag/?page=x", anon, nil), 400, "invalid_request")
	r = e.must(200, http.MethodGet, "/api/v1/repository/alice/app?includeTags=true", anon, nil)
	tm := r.obj()["tags"].(map[string]any)
	if len(tm) != 3 {
		t.Fatalf("includeTags: %s", r.body)
	}
	keys(t, "included tag", tm["latest"], "name", "size", "last_modified", "manifest_digest")
}

func TestDiscovery(t *testing.T) {
	e := newEnv(t, nil)
	r := e.must(200, http.MethodGet, "/api/v1/discovery", anon, nil)
	doc := r.obj()
	if doc["swagger"] != "2.0" {
		t.Fatalf("not swagger 2.0: %v", doc["swagger"])
	}
	paths := doc["paths"].(map[string]any)
	listed := map[string]bool{}
	for p, ops := range paths {
		for m := range ops.(map[string]any) {
			listed[strings.ToUpper(m)+" "+p] = true
		}
	}
	// Every registered route (but aliases and superuser routes) is listed,
	// and nothing else.
	want := map[string]bool{}
	for _, rt := range e.api.Echo().Routes() {
		k := routeKey{rt.Method, rt.Path}
		if e.api.aliases[k] || strings.HasPrefix(rt.Path, Prefix+"/superuser/") {
			continue
		}
		if _, ok := e.api.docs[k]; !ok {
			t.Errorf("route %s %s has no Doc", rt.Method, rt.Path)
		}
		want[rt.Method+" "+swaggerPath(rt.Path)] = true
	}
	for k := range want {
		if !listed[k] {
			t.Errorf("registered route %s is missing from discovery", k)
		}
	}
	for k := range listed {
		if !want[k] {
			t.Errorf("discovery lists %s, which is not a registered route", k)
		}
	}
	for _, k := range []string{"POST /api/v1/repository", "PUT /api/v1/repository/{namespace}/{repo}/permissions/user/{username}",
		"GET /api/v1/repository/{namespace}/{repo}/tag/", "POST /api/v1/organization/"} {
		if !listed[k] {
			t.Errorf("discovery lacks %s", k)
		}
	}
	for k := range listed {
		if strings.Contains(k, "superuser") {
			t.Errorf("discovery lists superuser route %s", k)
		}
	}
	if len(listed) < 50 {
		t.Fatalf("only %d operations listed", len(listed))
	}

	// Routes added later through Route are served and discovered.
	e.api.Route(http.MethodGet, "/repository/:namespace/:repo/build/", Doc{Tag: "build", Summary: "List builds."},
		func(c echo.Context) error { return c.JSON(200, map[string]any{"builds": []any{}}) })
	r = e.must(200, http.MethodGet, "/api/v1/discovery", anon, nil)
	if _, ok := r.obj()["paths"].(map[string]any)["/api/v1/repository/{namespace}/{repo}/build/"]; !ok {
		t.Fatal("a route added with Route is not discovered")
	}
}

// TestNoServerErrorForBadInput sends every route malformed and ill-typed
// bodies and odd path parameters, as a superuser and as a stranger: no
// answer may be a 500.
func TestNoServerErrorForBadInput(t *testing.T) {
	e := newEnv(t, nil)
	e.user("root", true)
	e.user("alice", false)
	e.must(201, http.MethodPost, "/api/v1/organization/", basic("root"), map[string]any{"name": "acme"})
	e.must(201, http.MethodPost, "/api/v1/repository", basic("root"), map[string]any{"namespace": "acme", "repository": "app", "visibility": "private"})
	e.must(201, http.MethodPut, "/api/v1/organization/acme/robots/ci", basic("root"), nil)
	values := map[string][]string{
		"orgname": {"acme", "nope", "a%2Bb"}, "teamname": {"owners", "Bad"}, "namespace": {"acme", "x"},
		"repo": {"app", "nope"}, "username": {"acme+ci", "nobody+x"}, "membername": {"alice", "a@b", "acme+ci"},
		"email": {"a@b", "bad"}, "robot_shortname": {"ci", "new_one", "BAD"}, "prototypeid": {"nope"},
		"client_id": {"nope"}, "uuid": {"nope", "00000000-0000-0000-0000-000000000000"},
	}
	bodies := []any{nil, "{", "[]", `{"role": 5, "name": [], "visibility": {}, "repositories": "x", "scopes": "x", "enabled": "yes"}`,
		map[string]any{"role": "admin", "name": "zz", "repository": "new", "visibility": "public", "repositories": []string{"app"},
			"scopes": []string{"repo:read"}, "delegate": map[string]any{"name": "alice"}, "unstructured_metadata": []int{1}}}
	routes := e.api.Echo().Routes()
	// Deletions last, so that the rest still finds things to act on.
	slices.SortStableFunc(routes, func(a, b *echo.Route) int {
		return strings.Compare(strconv.FormatBool(a.Method == http.MethodDelete), strconv.FormatBool(b.Method == http.MethodDelete))
	})
	n := 0
	for _, rt := range routes {
		if rt.Method == echo.RouteNotFound || strings.HasSuffix(rt.Path, "/initialize") {
			continue
		}
		paths := []string{rt.Path}
		for _, m := range echoParam.FindAllStringSubmatch(rt.Path, -1) {
			var next []string
			for _, p := range paths {
				vals := values[m[1]]
				if vals == nil {
					t.Fatalf("no test values for :%s", m[1])
				}
				for _, v := range vals {
					next = append(next, strings.Replace(p, ":"+m[1], v, 1))
				}
			}
			paths = next
		}
		for _, p := range paths {
			for i, b := range bodies {
				creds := []cred{basic("root"), basic("alice")}
				if i == 0 {
					creds = append(creds, anon)
				}
				for _, c := range creds {
					n++
					if r := e.call(rt.Method, p, c, b); r.code >= 500 {
						t.Errorf("%s %s with %v: %s", rt.Method, p, b, r)
					}
				}
			}
		}
	}
	t.Logf("%d requests", n)
}

func TestLoginThrottledThroughAPI(t *testing.T) {
	e := newEnv(t, nil)
	e.user("alice", false)
	e.authn.BaseDelay, e.authn.MaxDelay = 200*time.Millisecond, 200*time.Millisecond
	assertError(t, e.call(http.MethodGet, "/api/v1/user/", basicPw("alice", "guess"), nil), 401, "invalid_token")
	// Parallel guesses queue one delay apart; those that would wait longer
	// than MaxDelay are refused with 429.
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			r := e.call(http.MethodGet, "/api/v1/user/", basicPw("alice", "guess"), nil)
			if r.code == http.StatusTooManyRequests && r.hdr.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			mu.Lock()
			codes[r.code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[http.StatusTooManyRequests] == 0 || codes[http.StatusUnauthorized] == 0 || len(codes) != 2 {
		t.Fatalf("parallel guesses got %v, want some 401 and some 429", codes)
	}
	// A correct password after the backoff works, and then never waits.
	time.Sleep(300 * time.Millisecond)
	e.must(200, http.MethodGet, "/api/v1/user/", basic("alice"), nil)
	start := time.Now()
	for range 100 {
		e.must(200, http.MethodGet, "/api/v1/user/", basic("alice"), nil)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("100 successful logins took %v, want well over 50/s", d)
	}
}
