package tenancy

import (
	"net/http"
	"testing"
)

// vis indexes a [2]bool by repository visibility.
const (
	public  = 0
	private = 1
)

var visNames = [2]string{"public", "private"}

// rights is one principal's row of the expected table, written from Quay's
// rules (seeds §1.4–1.7, §2.2; docs/api.md "Permission rules"):
//   - anonymous: pull public repositories, nothing else;
//   - a user outside the organization: pull public repositories;
//   - member (team role member, the team holds no repository permission):
//     only what teams and permissions give, i.e. pull public;
//   - creator: member's rights plus creating repositories;
//   - team admin: everything in the organization;
//   - robots: their repository permissions only, never organization
//     administration;
//   - OAuth tokens (held by owner, an organization admin, so the scope is the
//     only limit): repo:admin ⊃ repo:write ⊃ repo:read cap repository roles,
//     repo:create gates creation, org:admin gates teams and robots, the
//     user scopes give nothing in an organization, and super:user gives
//     nothing to an account that is not a superuser;
//   - superuser: everything.
//
// Public repositories stay pullable by anyone.
type rights struct {
	pull, push, del [2]bool // on an existing repository, by visibility
	create          [2]bool // a new repository of that visibility (push-to-create makes private)
	team, robot     bool    // create a team / a robot in the organization
	// seesOrg: the principal may know the organization exists (a member of
	// one of its teams, one of its robots, a superuser), so a refusal of an
	// organization-level action is 403 rather than 404.
	seesOrg bool
}

var (
	both    = [2]bool{true, true}
	pubOnly = [2]bool{true, false}
)

// expected is the table. Every cell of every row is asserted.
var expected = map[string]rights{
	"anonymous":         {pull: pubOnly},
	"user":              {pull: pubOnly},
	"member":            {pull: pubOnly, seesOrg: true},
	"creator":           {pull: pubOnly, create: both, seesOrg: true},
	"team-admin":        {pull: both, push: both, del: both, create: both, team: true, robot: true, seesOrg: true},
	"robot-read":        {pull: both, seesOrg: true},
	"robot-write":       {pull: both, push: both, seesOrg: true},
	"oauth-repo:read":   {pull: both, seesOrg: true},
	"oauth-repo:write":  {pull: both, push: both, seesOrg: true},
	"oauth-repo:admin":  {pull: both, push: both, del: both, seesOrg: true},
	"oauth-repo:create": {pull: pubOnly, create: both, seesOrg: true},
	"oauth-user:read":   {pull: pubOnly, seesOrg: true},
	"oauth-user:admin":  {pull: pubOnly, seesOrg: true},
	"oauth-org:admin":   {pull: pubOnly, team: true, robot: true, seesOrg: true},
	"oauth-super:user":  {pull: pubOnly, seesOrg: true},
	"superuser":         {pull: both, push: both, del: both, create: both, team: true, robot: true, seesOrg: true},
}

// principalOrder is the order rows run in.
var principalOrder = []string{
	"anonymous", "user", "member", "creator", "team-admin", "robot-read", "robot-write",
	"oauth-repo:read", "oauth-repo:write", "oauth-repo:admin", "oauth-repo:create",
	"oauth-user:read", "oauth-user:admin", "oauth-org:admin", "oauth-super:user", "superuser",
}

// apiDenied is the /api/v1 status of a refusal: 401 without credentials,
// 404 when the caller may not know the thing exists, 403 when it may.
func apiDenied(p principal, sees bool) int {
	switch {
	case p.api.isAnonymous():
		return http.StatusUnauthorized
	case sees:
		return http.StatusForbidden
	}
	return http.StatusNotFound
}

// v2Denied is the /v2 status of a refusal: 401 anonymous, 403 otherwise.
func v2Denied(p principal) int {
	if p.v2.isAnonymous() {
		return http.StatusUnauthorized
	}
	return http.StatusForbidden
}

func want(allowed bool, ok, denied int) int {
	if allowed {
		return ok
	}
	return denied
}

// cell is one assertion: name, the status Quay's rules call for, the
// request, and (for allowed creates and deletes) a check, as the superuser,
// that the change really happened.
type cell struct {
	name   string
	want   int
	run    func(t *testing.T) response
	effect func(t *testing.T)
}

// TestPermissionMatrix walks principals × actions × visibility through /v2
// and /api/v1 and asserts the exact status of every cell. Subtests are
// named action/visibility/principal/surface, e.g. pull/private/robot-read/v2.
func TestPermissionMatrix(t *testing.T) {
	s := requireServer(t)
	w := matrixWorld(t)
	if len(expected) != len(principalOrder) || len(w.principals) != len(principalOrder) {
		t.Fatalf("table has %d rows, order %d, world %d principals", len(expected), len(principalOrder), len(w.principals))
	}
	var cells []cell
	for _, name := range principalOrder {
		p, r := w.principals[name], expected[name]
		cells = append(cells, matrixCells(s, w, p, r)...)
	}
	for _, c := range cells {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := c.run(t)
			if got.status != c.want {
				t.Errorf("want %d, got %s", c.want, got)
			} else if c.effect != nil && got.status < 300 {
				c.effect(t)
			}
		})
	}
}

// matrixCells lists the cells of one principal.
func matrixCells(s *server, w *world, p principal, r rights) []cell {
	var cells []cell
	add := func(action, vis, surface string, want int, run func(t *testing.T) response) {
		cells = append(cells, cell{name: action + "/" + vis + "/" + p.name + "/" + surface, want: want, run: run})
	}
	// then attaches an effect check to the cell added last.
	then := func(effect func(t *testing.T)) { cells[len(cells)-1].effect = effect }
	su := s.registry(s.admin(), false)
	for v, vis := range visNames {
		repo := map[int]string{public: "pub", private: "priv"}[v]
		full := matrixOrg + "/" + repo
		sees := r.pull[v]

		// pull: GET the manifest / GET the repository.
		add("pull", vis, "v2", want(r.pull[v], http.StatusOK, v2Denied(p)), func(t *testing.T) response {
			return s.registry(p.v2, false).do(t, http.MethodGet, "/v2/"+full+"/manifests/v1", nil,
				map[string]string{"Accept": "application/vnd.oci.image.manifest.v1+json"})
		})
		add("pull", vis, "api", want(r.pull[v], http.StatusOK, apiDenied(p, sees)), func(t *testing.T) response {
			return s.api(t, http.MethodGet, "/repository/"+full, p.api, nil)
		})

		// push: start a blob upload / change the description (Quay's
		// updateRepo needs write).
		add("push", vis, "v2", want(r.push[v], http.StatusAccepted, v2Denied(p)), func(t *testing.T) response {
			return s.registry(p.v2, false).do(t, http.MethodPost, "/v2/"+full+"/blobs/uploads/", nil, nil)
		})
		add("push", vis, "api", want(r.push[v], http.StatusOK, apiDenied(p, sees)), func(t *testing.T) response {
			return s.api(t, http.MethodPut, "/repository/"+full, p.api, map[string]string{"description": "changed by " + p.name})
		})

		// delete: DELETE the manifest / DELETE the repository, each on a
		// repository of its own.
		v2Repo := matrixOrg + "/" + deleteCellRepo(p, vis, "v2")
		add("delete", vis, "v2", want(r.del[v], http.StatusAccepted, v2Denied(p)), func(t *testing.T) response {
			return s.registry(p.v2, false).do(t, http.MethodDelete, "/v2/"+v2Repo+"/manifests/"+w.digests[deleteCellRepo(p, vis, "v2")], nil, nil)
		})
		then(func(t *testing.T) {
			if r := su.do(t, http.MethodGet, "/v2/"+v2Repo+"/manifests/v1", nil, nil); r.status != http.StatusNotFound {
				t.Errorf("after an allowed delete the manifest is still there: %s", r)
			}
		})
		apiRepo := matrixOrg + "/" + deleteCellRepo(p, vis, "api")
		add("delete", vis, "api", want(r.del[v], http.StatusNoContent, apiDenied(p, sees)), func(t *testing.T) response {
			return s.api(t, http.MethodDelete, "/repository/"+apiRepo, p.api, nil)
		})
		then(func(t *testing.T) {
			if r := s.api(t, http.MethodGet, "/repository/"+apiRepo, s.admin(), nil); r.status != http.StatusNotFound {
				t.Errorf("after an allowed delete the repository is still there: %s", r)
			}
		})

		// create: POST /api/v1/repository with this visibility.
		newName := "new-" + p.slug() + "-" + vis
		add("create", vis, "api", want(r.create[v], http.StatusCreated, apiDenied(p, r.seesOrg)), func(t *testing.T) response {
			return s.api(t, http.MethodPost, "/repository", p.api, map[string]string{
				"namespace": matrixOrg, "repository": newName, "visibility": vis, "description": "",
			})
		})
		isPublic := v == public
		then(func(t *testing.T) {
			r := s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/"+matrixOrg+"/"+newName, s.admin(), nil)
			if m := r.object(t); m["is_public"] != isPublic {
				t.Errorf("created repository: %s, want is_public %v", r, isPublic)
			}
		})
	}
	// create on /v2 is push-to-create, which always makes a private
	// repository (seeds §3.1).
	add("create", "private", "v2", want(r.create[private], http.StatusAccepted, v2Denied(p)), func(t *testing.T) response {
		return s.registry(p.v2, false).do(t, http.MethodPost, "/v2/"+matrixOrg+"/new-"+p.slug()+"-v2/blobs/uploads/", nil, nil)
	})
	// Teams and robots belong to the organization, not to a repository,
	// and have no /v2 form.
	add("manage-team", "org", "api", want(r.team, http.StatusOK, apiDenied(p, r.seesOrg)), func(t *testing.T) response {
		return s.api(t, http.MethodPut, "/organization/acme/team/t"+p.slug(), p.api, map[string]string{"role": "member"})
	})
	add("manage-robot", "org", "api", want(r.robot, http.StatusCreated, apiDenied(p, r.seesOrg)), func(t *testing.T) response {
		return s.api(t, http.MethodPut, "/organization/acme/robots/r"+p.slug(), p.api, nil)
	})
	return cells
}

// TestHiding checks that a caller never learns that an organization or a
// private repository it cannot see exists: for an outsider (and for an
// anonymous caller) each request about acme or acme/priv answers exactly as
// the same request about something that does not exist.
func TestHiding(t *testing.T) {
	s := requireServer(t)
	w := matrixWorld(t)
	pairs := []struct {
		name, method, hidden, missing string
		body                          any
	}{
		{"get-repository", http.MethodGet, "/repository/acme/priv", "/repository/acme/nosuchrepo", nil},
		{"get-tags", http.MethodGet, "/repository/acme/priv/tag/", "/repository/acme/nosuchrepo/tag/", nil},
		{"get-permissions", http.MethodGet, "/repository/acme/priv/permissions/user/", "/repository/acme/nosuchrepo/permissions/user/", nil},
		{"update-repository", http.MethodPut, "/repository/acme/priv", "/repository/acme/nosuchrepo", map[string]string{"description": "x"}},
		{"delete-repository", http.MethodDelete, "/repository/acme/priv", "/repository/acme/nosuchrepo", nil},
		{"get-organization", http.MethodGet, "/organization/acme", "/organization/nosuchorg", nil},
		{"list-robots", http.MethodGet, "/organization/acme/robots", "/organization/nosuchorg/robots", nil},
		{"put-team", http.MethodPut, "/organization/acme/team/hidden", "/organization/nosuchorg/team/hidden", map[string]string{"role": "member"}},
		{"put-robot", http.MethodPut, "/organization/acme/robots/hidden", "/organization/nosuchorg/robots/hidden", nil},
		{"list-prototypes", http.MethodGet, "/organization/acme/prototypes", "/organization/nosuchorg/prototypes", nil},
	}
	createIn := func(ns string) any {
		return map[string]string{"namespace": ns, "repository": "hidden", "visibility": "private", "description": ""}
	}
	for _, who := range []struct {
		name string
		c    cred
	}{{"user", basic("outsider", w.passwords["outsider"])}, {"anonymous", anonymous}} {
		for _, p := range pairs {
			t.Run(who.name+"/"+p.name, func(t *testing.T) {
				hidden := s.api(t, p.method, p.hidden, who.c, p.body)
				missing := s.api(t, p.method, p.missing, who.c, p.body)
				if hidden.status != missing.status || hidden.comparable() != missing.comparable() {
					t.Errorf("the answers tell them apart:\n  %s\n  %s", hidden, missing)
				}
			})
		}
		t.Run(who.name+"/create-repository", func(t *testing.T) {
			hidden := s.api(t, http.MethodPost, "/repository", who.c, createIn(matrixOrg))
			missing := s.api(t, http.MethodPost, "/repository", who.c, createIn("nosuchorg"))
			if hidden.status != missing.status || hidden.comparable() != missing.comparable() {
				t.Errorf("the answers tell them apart:\n  %s\n  %s", hidden, missing)
			}
		})
	}
}
