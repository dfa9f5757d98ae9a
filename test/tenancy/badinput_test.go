package tenancy

import (
	"net/http"
	"strings"
	"testing"
)

// TestBadInput sends malformed JSON, wrong types, unknown roles and scopes,
// invalid names and reserved repository names to the tenancy endpoints and
// expects 400 in Quay's error shape every time (which also proves none of
// them is a 500).
func TestBadInput(t *testing.T) {
	s := requireServer(t)
	su := s.admin()
	assertCreatedLiteral(t, s.api(t, http.MethodPost, "/organization/", su, map[string]string{"name": "badorg"}))
	s.mustAPI(t, http.StatusCreated, http.MethodPost, "/repository", su,
		map[string]string{"namespace": "badorg", "repository": "app", "visibility": "private", "description": ""})
	s.mustAPI(t, http.StatusOK, http.MethodPut, "/organization/badorg/team/good", su, map[string]string{"role": "member"})
	s.mustAPI(t, http.StatusCreated, http.MethodPut, "/organization/badorg/robots/bot", su, nil)
	app := s.mustAPI(t, http.StatusOK, http.MethodPost, "/organization/badorg/applications", su, map[string]string{"name": "bad"}).object(t)
	clientID, _ := app["client_id"].(string)

	cases := []struct {
		name, method, path string
		body               any
	}{
		// Malformed JSON.
		{"malformed/org-create", http.MethodPost, "/organization/", `{"name": "x"`},
		{"malformed/org-update", http.MethodPut, "/organization/badorg", `{"email": }`},
		{"malformed/repo-create", http.MethodPost, "/repository", `[`},
		{"malformed/repo-update", http.MethodPut, "/repository/badorg/app", `{"description"`},
		{"malformed/changevisibility", http.MethodPost, "/repository/badorg/app/changevisibility", `visibility=public`},
		{"malformed/team", http.MethodPut, "/organization/badorg/team/good", `{"role": "member"}}`},
		{"malformed/robot", http.MethodPut, "/organization/badorg/robots/bot2", `{"description": 'x'}`},
		{"malformed/permission", http.MethodPut, "/repository/badorg/app/permissions/user/badorg+bot", `{"role":`},
		{"malformed/prototype", http.MethodPost, "/organization/badorg/prototypes", `nope`},
		{"malformed/superuser-create", http.MethodPost, "/superuser/users/", `{"username": "x", "email": `},
		{"malformed/app-token", http.MethodPost, "/organization/badorg/applications/" + clientID + "/token", `{"scopes": [`},
		// Wrong types.
		{"types/repo-create", http.MethodPost, "/repository", map[string]any{"repository": 5, "visibility": "private", "namespace": "badorg"}},
		{"types/team-role", http.MethodPut, "/organization/badorg/team/good", map[string]any{"role": []string{"member"}}},
		{"types/permission-role", http.MethodPut, "/repository/badorg/app/permissions/user/badorg+bot", map[string]any{"role": 3}},
		// Unknown roles, visibilities and scopes.
		{"role/team", http.MethodPut, "/organization/badorg/team/good", map[string]string{"role": "owner"}},
		{"role/user-permission", http.MethodPut, "/repository/badorg/app/permissions/user/badorg+bot", map[string]string{"role": "superadmin"}},
		{"role/team-permission", http.MethodPut, "/repository/badorg/app/permissions/team/good", map[string]string{"role": "pull"}},
		{"role/missing", http.MethodPut, "/repository/badorg/app/permissions/user/badorg+bot", map[string]string{}},
		{"role/prototype", http.MethodPost, "/organization/badorg/prototypes", map[string]any{
			"role": "god", "delegate": map[string]string{"name": "good", "kind": "team"}}},
		{"role/robot-bulk", http.MethodPost, "/organization/badorg/robots/bot/permissions", map[string]any{
			"repositories": []string{"app"}, "role": "owner"}},
		{"visibility/repo-create", http.MethodPost, "/repository", map[string]string{
			"namespace": "badorg", "repository": "vis", "visibility": "internal"}},
		{"visibility/change", http.MethodPost, "/repository/badorg/app/changevisibility", map[string]string{"visibility": "secret"}},
		{"scope/app-token", http.MethodPost, "/organization/badorg/applications/" + clientID + "/token", map[string]any{
			"scopes": []string{"repo:everything"}}},
		// Invalid names (seeds §1.3, §1.4, §1.5).
		{"name/org-upper", http.MethodPost, "/organization/", map[string]string{"name": "BadOrg"}},
		{"name/org-short", http.MethodPost, "/organization/", map[string]string{"name": "a"}},
		{"name/org-space", http.MethodPost, "/organization/", map[string]string{"name": "bad org"}},
		{"name/org-robot", http.MethodPost, "/organization/", map[string]string{"name": "bad+org"}},
		{"name/org-long", http.MethodPost, "/organization/", map[string]string{"name": strings.Repeat("a", 256)}},
		{"name/team-upper", http.MethodPut, "/organization/badorg/team/Team", map[string]string{"role": "member"}},
		{"name/team-digit", http.MethodPut, "/organization/badorg/team/1team", map[string]string{"role": "member"}},
		{"name/team-dash", http.MethodPut, "/organization/badorg/team/team-x", map[string]string{"role": "member"}},
		{"name/robot-upper", http.MethodPut, "/organization/badorg/robots/Robot", nil},
		{"name/robot-digit", http.MethodPut, "/organization/badorg/robots/9bot", nil},
		{"name/robot-dot", http.MethodPut, "/organization/badorg/robots/bad.bot", nil},
		{"name/user-robot", http.MethodPut, "/user/robots/Bad", nil},
		{"name/repo-upper", http.MethodPost, "/repository", map[string]string{"namespace": "badorg", "repository": "App", "visibility": "private"}},
		{"name/repo-space", http.MethodPost, "/repository", map[string]string{"namespace": "badorg", "repository": "my app", "visibility": "private"}},
		{"name/repo-empty", http.MethodPost, "/repository", map[string]string{"namespace": "badorg", "repository": "", "visibility": "private"}},
		{"name/org-taken", http.MethodPost, "/organization/", map[string]string{"name": "badorg"}},
		{"name/org-is-user", http.MethodPost, "/organization/", map[string]string{"name": adminUser}},
	}
	// Reserved repository names (seeds §3.2).
	for _, reserved := range []string{"build", "trigger", "tag", "notification"} {
		cases = append(cases, struct {
			name, method, path string
			body               any
		}{"reserved/" + reserved, http.MethodPost, "/repository", map[string]string{
			"namespace": "badorg", "repository": reserved, "visibility": "private", "description": "",
		}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assertQuayError(t, s.api(t, c.method, c.path, su, c.body), http.StatusBadRequest, "invalid_request")
		})
	}

	t.Run("nothing-changed", func(t *testing.T) {
		// The refused requests left the organization as it was.
		r := s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository?namespace=badorg", su, nil)
		if repos := list(t, r.String(), r.object(t), "repositories"); len(repos) != 1 || repos[0]["name"] != "app" {
			t.Errorf("%s: want badorg/app alone", r)
		}
		r = s.mustAPI(t, http.StatusOK, http.MethodGet, "/organization/badorg/robots", su, nil)
		if robots := list(t, r.String(), r.object(t), "robots"); len(robots) != 1 {
			t.Errorf("%s: want badorg+bot alone", r)
		}
		team := s.mustAPI(t, http.StatusOK, http.MethodGet, "/organization/badorg", su, nil).object(t)
		if role := obj(t, "org", obj(t, "org", team, "teams"), "good")["role"]; role != "member" {
			t.Errorf("team good has role %v after refused updates, want member", role)
		}
	})

	t.Run("body-too-large", func(t *testing.T) {
		big := `{"description": "` + strings.Repeat("x", 2<<20) + `"}`
		assertQuayError(t, s.api(t, http.MethodPut, "/repository/badorg/app", su, big), http.StatusRequestEntityTooLarge, "")
	})

	t.Run("bad-credentials", func(t *testing.T) {
		// Credentials that fail are 401 in Quay's shape, never a 500.
		for _, c := range []cred{basic(adminUser, "wrong"), basic("badorg+bot", "WRONG"), bearer(strings.Repeat("A", 40)), basic("$oauthtoken", "nope")} {
			assertQuayError(t, s.api(t, http.MethodGet, "/user/", c, nil), http.StatusUnauthorized, "invalid_token")
		}
	})
}
