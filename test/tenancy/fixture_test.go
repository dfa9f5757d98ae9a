package tenancy

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// The matrix world: organization acme, owned by the user owner (so owner is
// in the owners team, role admin), with
//
//	team readers  (role member)  holding member, and no repository permission
//	team builders (role creator) holding creator
//	team admins   (role admin)   holding teamadmin
//	robot acme+reader  read  on every acme repository made here
//	robot acme+writer  write on every acme repository made here
//	user outsider      in no team of acme
//	OAuth tokens of owner (an organization admin, so the scope is the only
//	limit), one per scope, minted through an acme OAuth application
//
// and repositories acme/pub (public) and acme/priv (private) holding tag v1,
// plus one repository per delete cell, since an allowed delete consumes it.
const matrixOrg = "acme"

// principal is one row of the matrix and how it authenticates on each
// surface.
type principal struct {
	name string // subtest name, e.g. "robot-read", "oauth-repo:write"
	api  cred   // /api/v1
	v2   cred   // /v2 token endpoint (bearer creds become $oauthtoken)
}

// slug is the principal's name reduced to lower-case letters and digits,
// which every kind of name (repository, team, robot) accepts.
func (p principal) slug() string {
	var b strings.Builder
	for _, r := range p.name {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

type world struct {
	passwords  map[string]string    // user → password
	robots     map[string]string    // robot full name → token
	tokens     map[string]string    // scope → owner's OAuth token
	principals map[string]principal // by name
	digests    map[string]string    // repository → manifest digest of tag v1
}

// oauthScopes are Quay's scopes, one matrix row each.
var oauthScopes = []string{"repo:read", "repo:write", "repo:admin", "repo:create", "user:read", "user:admin", "org:admin", "super:user"}

var (
	worldOnce sync.Once
	theWorld  *world
	worldErr  string
)

// admin is the superuser's credential.
func (s *server) admin() cred { return basic(adminUser, s.Opts.Password) }

// matrixWorld builds the world once; a failure fails every test that needs
// it.
func matrixWorld(t *testing.T) *world {
	t.Helper()
	s := requireServer(t)
	worldOnce.Do(func() {
		worldErr = "building the matrix world failed in an earlier test"
		theWorld = buildWorld(t, s)
		worldErr = ""
	})
	if worldErr != "" {
		t.Fatal(worldErr)
	}
	return theWorld
}

// createUser makes a user through the superuser API and returns its
// generated password.
func (s *server) createUser(t testing.TB, name string) string {
	t.Helper()
	r := s.mustAPI(t, http.StatusOK, http.MethodPost, "/superuser/users/", s.admin(),
		map[string]string{"username": name, "email": name + "@tenancy.example.com"})
	pw, _ := r.object(t)["password"].(string)
	if pw == "" {
		t.Fatalf("%s: no generated password", r)
	}
	return pw
}

// deleteCellRepo names the repository a delete cell consumes.
func deleteCellRepo(p principal, vis, surface string) string {
	return fmt.Sprintf("del-%s-%s-%s", p.slug(), vis, surface)
}

func buildWorld(t *testing.T, s *server) *world {
	w := &world{
		passwords:  map[string]string{},
		robots:     map[string]string{},
		tokens:     map[string]string{},
		principals: map[string]principal{},
		digests:    map[string]string{},
	}
	for _, u := range []string{"owner", "outsider", "member", "creator", "teamadmin"} {
		w.passwords[u] = s.createUser(t, u)
	}
	owner := basic("owner", w.passwords["owner"])
	s.mustAPI(t, http.StatusCreated, http.MethodPost, "/organization/", owner,
		map[string]string{"name": matrixOrg, "email": "acme@org.tenancy.example.com"})
	for team, spec := range map[string][2]string{"readers": {"member", "member"}, "builders": {"creator", "creator"}, "admins": {"admin", "teamadmin"}} {
		s.mustAPI(t, http.StatusOK, http.MethodPut, "/organization/acme/team/"+team, owner, map[string]string{"role": spec[0]})
		s.mustAPI(t, http.StatusOK, http.MethodPut, "/organization/acme/team/"+team+"/members/"+spec[1], owner, nil)
	}
	for _, short := range []string{"reader", "writer"} {
		r := s.mustAPI(t, http.StatusCreated, http.MethodPut, "/organization/acme/robots/"+short, owner, nil)
		tok, _ := r.object(t)["token"].(string)
		if tok == "" {
			t.Fatalf("%s: no robot token", r)
		}
		w.robots["acme+"+short] = tok
	}
	app := s.mustAPI(t, http.StatusOK, http.MethodPost, "/organization/acme/applications", owner, map[string]string{"name": "matrix"}).object(t)
	clientID, _ := app["client_id"].(string)
	for _, scope := range oauthScopes {
		r := s.mustAPI(t, http.StatusOK, http.MethodPost, "/organization/acme/applications/"+clientID+"/token", owner,
			map[string]any{"scopes": []string{scope}})
		tok, _ := r.object(t)["access_token"].(string)
		if tok == "" {
			t.Fatalf("%s: no access token", r)
		}
		w.tokens[scope] = tok
	}

	add := func(p principal) { w.principals[p.name] = p }
	add(principal{name: "anonymous"})
	for name, user := range map[string]string{"user": "outsider", "member": "member", "creator": "creator", "team-admin": "teamadmin"} {
		c := basic(user, w.passwords[user])
		add(principal{name: name, api: c, v2: c})
	}
	add(principal{name: "robot-read", api: basic("acme+reader", w.robots["acme+reader"]), v2: basic("acme+reader", w.robots["acme+reader"])})
	add(principal{name: "robot-write", api: basic("acme+writer", w.robots["acme+writer"]), v2: basic("acme+writer", w.robots["acme+writer"])})
	for _, scope := range oauthScopes {
		add(principal{name: "oauth-" + scope, api: bearer(w.tokens[scope]), v2: bearer(w.tokens[scope])})
	}
	add(principal{name: "superuser", api: s.admin(), v2: s.admin()})

	// Repositories, with the robots' permissions on each.
	reg := s.registry(owner, true)
	makeRepo := func(name, visibility string, withImage bool) {
		s.mustAPI(t, http.StatusCreated, http.MethodPost, "/repository", owner, map[string]string{
			"namespace": matrixOrg, "repository": name, "visibility": visibility, "description": "matrix fixture",
		})
		for robot, role := range map[string]string{"acme+reader": "read", "acme+writer": "write"} {
			s.mustAPI(t, http.StatusOK, http.MethodPut, "/repository/acme/"+name+"/permissions/user/"+robot, owner, map[string]string{"role": role})
		}
		if withImage {
			w.digests[name] = reg.pushImage(t, matrixOrg+"/"+name, "v1")
		}
	}
	makeRepo("pub", "public", true)
	makeRepo("priv", "private", true)
	for _, p := range w.principals {
		for _, vis := range []string{"public", "private"} {
			makeRepo(deleteCellRepo(p, vis, "api"), vis, false)
			makeRepo(deleteCellRepo(p, vis, "v2"), vis, true)
		}
	}
	return w
}
