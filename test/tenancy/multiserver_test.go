package tenancy

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// TestSecondServerOnTheSameDatabase runs a second berth beside the shared
// one, on the same database (PostgreSQL, or the first server's SQLite file)
// with the same secrets and token signing keys, as a highly available
// deployment does. A registry token issued by either server works on the
// other, and a robot token regenerated through one stops working on the
// other, registry tokens and cached logins included, as does an OAuth token
// of an application deleted through it, within the revocation sync
// interval (2 s), with no restart.
func TestSecondServerOnTheSameDatabase(t *testing.T) {
	s := requireServer(t)
	b, err := harness.StartServer(context.Background(), harness.ServerOptions{
		Bin: suite.Bin, Dir: filepath.Join(suite.Work, "second"), StopTimeout: stopTimeout,
		Config: sharedConfig + fmt.Sprintf("DB_URI: %q\n", dbURI), User: adminUser, Password: s.Opts.Password,
	})
	if err != nil {
		t.Fatalf("starting a second server on the %s database: %v", dbKind, err)
	}
	second := &server{b}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("second server: %v\n%s", err, b.Tail(40))
		}
		second.removeBuildRoot()
	})

	admin := s.admin()
	s.mustAPI(t, http.StatusCreated, http.MethodPost, "/organization/", admin, map[string]string{"name": "haorg", "email": "haorg@org.tenancy.example.com"})
	s.mustAPI(t, http.StatusCreated, http.MethodPost, "/repository", admin,
		map[string]string{"namespace": "haorg", "repository": "app", "visibility": "private", "description": ""})
	robot := s.mustAPI(t, http.StatusCreated, http.MethodPut, "/organization/haorg/robots/ci", admin, map[string]string{}).object(t)
	oldToken, _ := robot["token"].(string)
	s.mustAPI(t, http.StatusOK, http.MethodPut, "/repository/haorg/app/permissions/user/haorg+ci", admin, map[string]string{"role": "write"})
	s.registry(admin, false).pushImage(t, "haorg/app", "v1")

	const manifest = "/v2/haorg/app/manifests/v1"
	accept := map[string]string{"Accept": "application/vnd.oci.image.manifest.v1+json"}
	// The robot logs in on both servers (each caches the login) and gets a
	// registry token from the first, which the second accepts.
	second.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/haorg/app", basic("haorg+ci", oldToken), nil)
	rc := s.registry(basic("haorg+ci", oldToken), true)
	if r := rc.do(t, http.MethodGet, manifest, nil, accept); r.status != http.StatusOK {
		t.Fatalf("robot pull from the first server: %s", r)
	}
	var issued string
	for _, tok := range rc.tokens {
		issued = tok
	}
	if r := second.do(t, http.MethodGet, manifest, bearer(issued), nil, accept); r.status != http.StatusOK {
		t.Fatalf("the second server refuses a token the first issued: %s", r)
	}

	// An OAuth token of an application of the organization, used once on
	// the second server so that it caches the login.
	app := s.mustAPI(t, http.StatusOK, http.MethodPost, "/organization/haorg/applications", admin,
		map[string]string{"name": "deployer"}).object(t)
	clientID, _ := app["client_id"].(string)
	minted := s.mustAPI(t, http.StatusOK, http.MethodPost, "/organization/haorg/applications/"+clientID+"/token", admin,
		map[string]any{"scopes": []string{"repo:read"}}).object(t)
	oauth, _ := minted["access_token"].(string)
	second.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/haorg/app", bearer(oauth), nil)

	s.mustAPI(t, http.StatusOK, http.MethodPost, "/organization/haorg/robots/ci/regenerate", admin, nil)
	s.mustAPI(t, http.StatusNoContent, http.MethodDelete, "/organization/haorg/applications/"+clientID, admin, nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		tokenDead := second.do(t, http.MethodGet, manifest, bearer(issued), nil, accept).status == http.StatusUnauthorized
		loginDead := second.api(t, http.MethodGet, "/repository/haorg/app", basic("haorg+ci", oldToken), nil).status == http.StatusUnauthorized
		oauthDead := second.api(t, http.MethodGet, "/repository/haorg/app", bearer(oauth), nil).status == http.StatusUnauthorized
		if tokenDead && loginDead && oauthDead {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the regenerate and the application's deletion the second server still accepts old credentials: "+
				"registry token refused %v, cached robot login refused %v, cached OAuth token refused %v", tokenDead, loginDead, oauthDead)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
