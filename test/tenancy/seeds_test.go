package tenancy

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"testing"
)

// The seeds' curl examples (seed 003 chapters 3–7, the richest; 000/001
// repeat the repository ones) replayed in order against the live server,
// with a superuser's bearer token as the seeds use. Each step asserts the
// status and the keys the seed's "Example output" shows.

var (
	quayDate     = regexp.MustCompile(`^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} -0000$`)
	genPassword  = regexp.MustCompile(`^[A-Z0-9]{32}$`)
	uuidPattern  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	avatarKeys   = []string{"name", "hash", "color", "kind"}
	robotKeys    = []string{"name", "created", "last_accessed", "description", "token", "unstructured_metadata"}
	teamKeys     = []string{"name", "description", "can_view", "role", "avatar", "new_team"}
	memberKeys   = []string{"name", "kind", "is_robot", "avatar", "invited"}
	userListKeys = []string{"kind", "name", "username", "email", "verified", "avatar", "super_user", "enabled"}
	protoKeys    = []string{"activating_user", "delegate", "role", "id"}
	protoUser    = []string{"name", "is_robot", "kind", "is_org_member", "avatar"}
)

// obj returns m[key] as an object, failing the test otherwise.
func obj(t *testing.T, what string, m map[string]any, key string) map[string]any {
	t.Helper()
	v, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("%s: %q is %T (%v), want an object", what, key, m[key], m[key])
	}
	return v
}

// list returns m[key] as an array of objects, failing the test otherwise.
func list(t *testing.T, what string, m map[string]any, key string) []map[string]any {
	t.Helper()
	raw, ok := m[key].([]any)
	if !ok {
		t.Fatalf("%s: %q is %T (%v), want an array", what, key, m[key], m[key])
	}
	out := make([]map[string]any, 0, len(raw))
	for i, e := range raw {
		o, ok := e.(map[string]any)
		if !ok {
			t.Fatalf("%s: %s[%d] is %T, want an object", what, key, i, e)
		}
		out = append(out, o)
	}
	return out
}

// assertAvatar checks an avatar object and its kind.
func assertAvatar(t *testing.T, what string, a map[string]any, kind string) {
	t.Helper()
	assertKeys(t, what+" avatar", a, avatarKeys...)
	if a["kind"] != kind {
		t.Errorf("%s: avatar kind %v, want %s", what, a["kind"], kind)
	}
	if h, _ := a["hash"].(string); !regexp.MustCompile(`^[0-9a-f]{32}([0-9a-f]{32})?$`).MatchString(h) {
		t.Errorf("%s: avatar hash %q is not 32 or 64 hex digits", what, h)
	}
}

// assertCreatedLiteral checks a 201 whose body is the JSON string "Created".
func assertCreatedLiteral(t *testing.T, r response) {
	t.Helper()
	var s string
	if r.status != http.StatusCreated || json.Unmarshal(r.body, &s) != nil || s != "Created" {
		t.Fatalf(`%s: want 201 "Created"`, r)
	}
}

// assertNoBody checks a 204 with nothing in it (the seeds' "does not
// return output").
func assertNoBody(t *testing.T, r response) {
	t.Helper()
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Errorf("%s: want 204 and no body", r)
	}
}

func TestSeedsReplay(t *testing.T) {
	s := requireServer(t)
	su := bearer(adminToken(t, s, adminUser, oauthScopes...))

	t.Run("superuser-users", func(t *testing.T) {
		// 3.2: POST /api/v1/superuser/users/ returns a generated password.
		r := s.mustAPI(t, http.StatusOK, http.MethodPost, "/superuser/users/", su,
			map[string]string{"username": "newuser", "email": "newuser@example.com"})
		m := r.object(t)
		assertKeys(t, r.String(), m, "username", "email", "password", "encrypted_password")
		pw, _ := m["password"].(string)
		if m["username"] != "newuser" || m["email"] != "newuser@example.com" || !genPassword.MatchString(pw) {
			t.Errorf("%s: want newuser, its email and a 32-character A-Z0-9 password", r)
		}
		// "login with the username and password generated from the API call"
		me := s.mustAPI(t, http.StatusOK, http.MethodGet, "/user/", basic("newuser", pw), nil).object(t)
		if me["username"] != "newuser" {
			t.Errorf("GET /user/ as newuser: %v", me)
		}
		// Email is unique.
		dup := s.api(t, http.MethodPost, "/superuser/users/", su, map[string]string{"username": "newuser2", "email": "newuser@example.com"})
		assertQuayError(t, dup, http.StatusBadRequest, "invalid_request")

		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/superuser/users/", su, nil)
		users := list(t, r.String(), r.object(t), "users")
		found := map[string]map[string]any{}
		for _, u := range users {
			assertKeys(t, "superuser user list entry", u, userListKeys...)
			assertAvatar(t, "user "+u["name"].(string), obj(t, "user", u, "avatar"), "user")
			found[u["username"].(string)] = u
		}
		if found[adminUser]["super_user"] != true || found["newuser"]["super_user"] != false || found["newuser"]["enabled"] != true {
			t.Errorf("user list: admin %v, newuser %v", found[adminUser], found["newuser"])
		}
	})

	t.Run("organization", func(t *testing.T) {
		// 4.2: create answers "Created"; PUT answers the org object.
		assertCreatedLiteral(t, s.api(t, http.MethodPost, "/organization/", su, map[string]string{"name": "seedorg"}))
		r := s.mustAPI(t, http.StatusOK, http.MethodPut, "/organization/seedorg", su, map[string]any{
			"email": "new-contact@test-org.com", "invoice_email": true, "invoice_email_address": "billing@test-org.com",
		})
		for _, resp := range []response{r, s.mustAPI(t, http.StatusOK, http.MethodGet, "/organization/seedorg", su, nil)} {
			m := resp.object(t)
			assertHasKeys(t, resp.String(), m, "name", "email", "avatar", "is_admin", "is_member", "teams", "ordered_teams",
				"invoice_email", "invoice_email_address", "tag_expiration_s", "is_free_account")
			if m["name"] != "seedorg" || m["email"] != "new-contact@test-org.com" || m["invoice_email"] != true ||
				m["invoice_email_address"] != "billing@test-org.com" || m["tag_expiration_s"] != float64(1209600) || m["is_admin"] != true {
				t.Errorf("%s: values differ from the seed's", resp)
			}
			assertAvatar(t, "org", obj(t, "org", m, "avatar"), "user")
			owners := obj(t, "teams", obj(t, "org", m, "teams"), "owners")
			assertKeys(t, "owners team", owners, "name", "description", "role", "avatar", "can_view", "repo_count", "member_count", "is_synced")
			if owners["role"] != "admin" || owners["member_count"] != float64(1) {
				t.Errorf("owners team %v: want role admin with its creator as the one member", owners)
			}
			if ot, _ := m["ordered_teams"].([]any); !slices.Equal(ot, []any{"owners"}) {
				t.Errorf("ordered_teams %v, want [owners]", m["ordered_teams"])
			}
		}
	})

	var digest string
	t.Run("repository", func(t *testing.T) {
		// 5.3: POST /api/v1/repository without a namespace uses the caller's.
		r := s.mustAPI(t, http.StatusCreated, http.MethodPost, "/repository", su, map[string]string{
			"repository": "seedrepo", "visibility": "private", "description": "This is a description of the new repository.",
		})
		m := r.object(t)
		assertKeys(t, r.String(), m, "namespace", "name", "kind")
		if m["namespace"] != adminUser || m["name"] != "seedrepo" || m["kind"] != "image" {
			t.Errorf("%s: want admin/seedrepo of kind image", r)
		}
		// [001]/[004]'s form with a namespace.
		r = s.mustAPI(t, http.StatusCreated, http.MethodPost, "/repository", su, map[string]string{
			"namespace": "seedorg", "repository": "app", "visibility": "private", "description": "app",
		})
		if m := r.object(t); m["namespace"] != "seedorg" || m["name"] != "app" {
			t.Errorf("%s: want seedorg/app", r)
		}
		digest = s.registry(s.admin(), true).pushImage(t, "seedorg/app", "example")

		// 8.2: GET with includeTags=true.
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/seedorg/app?includeTags=true", su, nil)
		m = r.object(t)
		assertHasKeys(t, r.String(), m, "namespace", "name", "kind", "description", "is_public", "is_organization", "is_starred",
			"status_token", "trust_enabled", "tag_expiration_s", "is_free_account", "state", "tags", "can_write", "can_admin")
		if m["is_public"] != false || m["is_organization"] != true || m["state"] != "NORMAL" || m["can_admin"] != true {
			t.Errorf("%s: values differ from a private organization repository's", r)
		}
		tag := obj(t, "tags", obj(t, "repository", m, "tags"), "example")
		assertKeys(t, "includeTags tag", tag, "name", "size", "last_modified", "manifest_digest")
		if tag["manifest_digest"] != digest || !quayDate.MatchString(tag["last_modified"].(string)) {
			t.Errorf("tag %v: want digest %s and a Quay date", tag, digest)
		}

		// 8.2: GET …/tag/.
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/seedorg/app/tag/", su, nil)
		m = r.object(t)
		assertHasKeys(t, r.String(), m, "tags", "page", "has_additional")
		tags := list(t, r.String(), m, "tags")
		if len(tags) != 1 {
			t.Fatalf("%s: want one tag", r)
		}
		assertHasKeys(t, "tag entry", tags[0], "name", "reversion", "start_ts", "manifest_digest", "is_manifest_list", "size", "last_modified")

		// GET /api/v1/repository?namespace=… lists it.
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository?namespace=seedorg&last_modified=true&popularity=true", su, nil)
		repos := list(t, r.String(), r.object(t), "repositories")
		if len(repos) != 1 {
			t.Fatalf("%s: want seedorg/app alone", r)
		}
		assertHasKeys(t, "repository list entry", repos[0], "namespace", "name", "description", "is_public", "kind", "state", "last_modified", "popularity", "is_starred")
	})

	var robotToken string
	t.Run("robots", func(t *testing.T) {
		// 6.2: PUT creates, 201, with the token.
		for path, name := range map[string]string{"/organization/seedorg/robots/test": "seedorg+test", "/user/robots/test": adminUser + "+test"} {
			r := s.mustAPI(t, http.StatusCreated, http.MethodPut, path, su, nil)
			m := r.object(t)
			assertKeys(t, r.String(), m, robotKeys...)
			if m["name"] != name || m["last_accessed"] != nil || m["description"] != "" || m["unstructured_metadata"] != nil ||
				!quayDate.MatchString(m["created"].(string)) || m["token"] == "" {
				t.Errorf("%s: values differ from the seed's", r)
			}
			if path == "/organization/seedorg/robots/test" {
				robotToken, _ = m["token"].(string)
			}
		}
		// 6.5: regenerate answers the robot with a new token.
		for _, path := range []string{"/organization/seedorg/robots/test", "/user/robots/test"} {
			before, _ := s.mustAPI(t, http.StatusOK, http.MethodGet, path, su, nil).object(t)["token"].(string)
			r := s.mustAPI(t, http.StatusOK, http.MethodPost, path+"/regenerate", su, nil)
			m := r.object(t)
			assertHasKeys(t, r.String(), m, "name", "created", "last_accessed", "description", "token")
			if tok, _ := m["token"].(string); tok == "" || tok == before {
				t.Errorf("%s: token not replaced", r)
			}
			if path == "/organization/seedorg/robots/test" {
				robotToken, _ = m["token"].(string)
			}
		}
		r := s.mustAPI(t, http.StatusOK, http.MethodGet, "/organization/seedorg/robots", su, nil)
		if robots := list(t, r.String(), r.object(t), "robots"); len(robots) != 1 || robots[0]["name"] != "seedorg+test" {
			t.Errorf("%s: want seedorg+test alone", r)
		}
	})

	t.Run("teams", func(t *testing.T) {
		// 7.1.4.2: PUT team creates (new_team true), then updates.
		for i, newTeam := range []bool{true, false} {
			r := s.mustAPI(t, http.StatusOK, http.MethodPut, "/organization/seedorg/team/testteam", su, map[string]string{"role": []string{"member", "creator"}[i]})
			m := r.object(t)
			assertKeys(t, r.String(), m, teamKeys...)
			if m["name"] != "testteam" || m["new_team"] != newTeam || m["can_view"] != true || m["role"] != []string{"member", "creator"}[i] {
				t.Errorf("%s: want new_team %v", r, newTeam)
			}
			assertAvatar(t, "team", obj(t, "team", m, "avatar"), "team")
		}
		// 7.1.4.1: members, a user and a robot.
		r := s.mustAPI(t, http.StatusOK, http.MethodPut, "/organization/seedorg/team/testteam/members/newuser", su, nil)
		m := r.object(t)
		assertKeys(t, r.String(), m, memberKeys...)
		if m["name"] != "newuser" || m["kind"] != "user" || m["is_robot"] != false || m["invited"] != false {
			t.Errorf("%s: values differ from the seed's", r)
		}
		r = s.mustAPI(t, http.StatusOK, http.MethodPut, "/organization/seedorg/team/testteam/members/seedorg+test", su, nil)
		if m := r.object(t); m["is_robot"] != true || m["kind"] != "user" {
			t.Errorf("%s: want a robot member of kind user", r)
		}
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/organization/seedorg/team/testteam/members", su, nil)
		m = r.object(t)
		assertHasKeys(t, r.String(), m, "name", "members", "can_edit")
		members := map[string]map[string]any{}
		for _, e := range list(t, r.String(), m, "members") {
			assertKeys(t, "member entry", e, memberKeys...)
			members[e["name"].(string)] = e
		}
		if len(members) != 2 || members["seedorg+test"]["is_robot"] != true || m["can_edit"] != true {
			t.Errorf("%s: want newuser and seedorg+test", r)
		}
		if rb := members["seedorg+test"]; rb != nil {
			assertAvatar(t, "robot member", obj(t, "member", rb, "avatar"), "robot")
		}
		assertNoBody(t, s.api(t, http.MethodDelete, "/organization/seedorg/team/testteam/members/newuser", su, nil))
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/organization/seedorg/team/testteam/members", su, nil)
		for _, e := range list(t, r.String(), r.object(t), "members") {
			if e["name"] == "newuser" {
				t.Errorf("%s: newuser still listed after DELETE", r)
			}
		}
		// Invitations by email.
		r = s.mustAPI(t, http.StatusOK, http.MethodPut, "/organization/seedorg/team/testteam/invite/someone@example.com", su, nil)
		if m := r.object(t); m["invited"] != true {
			t.Errorf("%s: want invited true", r)
		}
		assertNoBody(t, s.api(t, http.MethodDelete, "/organization/seedorg/team/testteam/invite/someone@example.com", su, nil))

		// Team repository permissions.
		r = s.mustAPI(t, http.StatusOK, http.MethodPut, "/repository/seedorg/app/permissions/team/testteam", su, map[string]string{"role": "admin"})
		m = r.object(t)
		assertHasKeys(t, r.String(), m, "role", "name", "avatar")
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/organization/seedorg/team/testteam/permissions", su, nil)
		perms := list(t, r.String(), r.object(t), "permissions")
		if len(perms) != 1 || perms[0]["role"] != "admin" {
			t.Fatalf("%s: want one admin permission", r)
		}
		assertKeys(t, "team permission", perms[0], "repository", "role")
		repo := obj(t, "permission", perms[0], "repository")
		assertKeys(t, "team permission repository", repo, "name", "is_public")
		if repo["name"] != "app" || repo["is_public"] != false {
			t.Errorf("team permission repository %v", repo)
		}
	})

	t.Run("repository-permissions", func(t *testing.T) {
		// 7.5: PUT …/permissions/user/{robot}.
		r := s.mustAPI(t, http.StatusOK, http.MethodPut, "/repository/seedorg/app/permissions/user/seedorg+test", su, map[string]string{"role": "admin"})
		m := r.object(t)
		assertHasKeys(t, r.String(), m, "role", "name", "is_robot", "avatar")
		if m["role"] != "admin" || m["name"] != "seedorg+test" || m["is_robot"] != true {
			t.Errorf("%s: values differ from the seed's", r)
		}
		assertAvatar(t, "permission", obj(t, "permission", m, "avatar"), "robot")
		// The robot now reads the private repository with its token.
		s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/seedorg/app", basic("seedorg+test", robotToken), nil)

		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/seedorg/app/permissions/user/seedorg+test/", su, nil)
		if m := r.object(t); m["role"] != "admin" {
			t.Errorf("%s: want role admin", r)
		}
		assertNoBody(t, s.api(t, http.MethodDelete, "/repository/seedorg/app/permissions/user/seedorg+test", su, nil))
		r = s.api(t, http.MethodGet, "/repository/seedorg/app/permissions/user/seedorg+test/", su, nil)
		if m := r.object(t); r.status != http.StatusNotFound || m["message"] != "User does not have permission for repo." {
			t.Errorf("%s: want 404 with the seed's message", r)
		}
	})

	t.Run("prototypes", func(t *testing.T) {
		// 7.3: POST, PUT, DELETE, GET.
		r := s.mustAPI(t, http.StatusOK, http.MethodPost, "/organization/seedorg/prototypes", su, map[string]any{
			"role": "admin", "delegate": map[string]string{"name": "newuser", "kind": "user"},
			"activating_user": map[string]string{"name": "seedorg+test"},
		})
		m := r.object(t)
		assertKeys(t, r.String(), m, protoKeys...)
		au, dl := obj(t, "prototype", m, "activating_user"), obj(t, "prototype", m, "delegate")
		assertKeys(t, "activating_user", au, protoUser...)
		assertKeys(t, "delegate", dl, protoUser...)
		if au["name"] != "seedorg+test" || au["is_robot"] != true || au["is_org_member"] != true || dl["name"] != "newuser" ||
			dl["is_robot"] != false || dl["is_org_member"] != false || m["role"] != "admin" {
			t.Errorf("%s: values differ from the seed's", r)
		}
		assertAvatar(t, "activating_user", obj(t, "activating_user", au, "avatar"), "robot")
		id, _ := m["id"].(string)
		if !uuidPattern.MatchString(id) {
			t.Fatalf("prototype id %q is not a UUID", id)
		}
		r = s.mustAPI(t, http.StatusOK, http.MethodPut, "/organization/seedorg/prototypes/"+id, su, map[string]string{"role": "write"})
		if m := r.object(t); m["role"] != "write" || m["id"] != id {
			t.Errorf("%s: want role write, same id", r)
		}
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/organization/seedorg/prototypes", su, nil)
		if l := list(t, r.String(), r.object(t), "prototypes"); len(l) != 1 {
			t.Errorf("%s: want one prototype", r)
		}
		// It applies: a repository the robot (in testteam, role creator)
		// creates gives newuser write.
		s.mustAPI(t, http.StatusCreated, http.MethodPost, "/repository", basic("seedorg+test", robotToken), map[string]string{
			"namespace": "seedorg", "repository": "protorepo", "visibility": "private", "description": "",
		})
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/seedorg/protorepo/permissions/user/newuser/", su, nil)
		if m := r.object(t); m["role"] != "write" {
			t.Errorf("%s: the default permission was not applied", r)
		}
		assertNoBody(t, s.api(t, http.MethodDelete, "/organization/seedorg/prototypes/"+id, su, nil))
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/organization/seedorg/prototypes", su, nil)
		if string(r.body) != `{"prototypes":[]}` && string(r.body) != "{\"prototypes\":[]}\n" {
			t.Errorf(`%s: want {"prototypes": []}`, r)
		}
	})

	t.Run("deletes", func(t *testing.T) {
		// 6.7: robots.
		assertNoBody(t, s.api(t, http.MethodDelete, "/organization/seedorg/robots/test", su, nil))
		r := s.mustAPI(t, http.StatusOK, http.MethodGet, "/organization/seedorg/robots", su, nil)
		if l := list(t, r.String(), r.object(t), "robots"); len(l) != 0 {
			t.Errorf(`%s: want {"robots": []}`, r)
		}
		assertNoBody(t, s.api(t, http.MethodDelete, "/user/robots/test", su, nil))
		r = s.api(t, http.MethodGet, "/user/robots/test", su, nil)
		if m := r.object(t); r.status != http.StatusNotFound || m["message"] != "Could not find robot with specified username" {
			t.Errorf("%s: want 404 with the seed's message", r)
		}
		// 7.1.4.3: team.
		assertNoBody(t, s.api(t, http.MethodDelete, "/organization/seedorg/team/testteam", su, nil))
		// 5.5: repository, then GET is the 404 body.
		assertNoBody(t, s.api(t, http.MethodDelete, "/repository/seedorg/app", su, nil))
		assertSeedNotFound(t, s.api(t, http.MethodGet, "/repository/seedorg/app", su, nil))
		// 4.5: organization.
		assertNoBody(t, s.api(t, http.MethodDelete, "/organization/seedorg", su, nil))
		assertSeedNotFound(t, s.api(t, http.MethodGet, "/organization/seedorg", su, nil))
		// 3.4: user.
		assertNoBody(t, s.api(t, http.MethodDelete, "/superuser/users/newuser", su, nil))
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/superuser/users/", su, nil)
		for _, u := range list(t, r.String(), r.object(t), "users") {
			if u["username"] == "newuser" {
				t.Errorf("newuser still listed after DELETE")
			}
		}
	})
}

// assertSeedNotFound checks the 404 body the seeds print verbatim.
func assertSeedNotFound(t *testing.T, r response) {
	t.Helper()
	assertQuayError(t, r, http.StatusNotFound, "not_found")
	if r.status != http.StatusNotFound {
		return
	}
	m := r.object(t)
	if m["detail"] != "Not Found" || m["error_message"] != "Not Found" || m["title"] != "not_found" ||
		m["type"] != srv.URL("/api/v1/error/not_found") {
		t.Errorf("%s: differs from the seed's 404 body", r)
	}
}
