package tenancy

import (
	"bytes"
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/test/harness"
)

// tool runs name args with stdin in the suite's isolated podman and buildah
// environment (its own vfs storage, configuration and auth file). secrets
// are replaced by *** in the log line.
func tool(t *testing.T, stdin string, secrets []string, name string, args ...string) harness.Result {
	t.Helper()
	return tools.RunT(t, harness.Cmd{Name: name, Args: args, Stdin: stdin, Secrets: secrets})
}

// mustTool is tool that fails the test when the command fails.
func mustTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	r := tool(t, "", nil, name, args...)
	if r.Err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s", name, strings.Join(args, " "), r.Err, r.Stdout)
	}
	return r.Stdout
}

// buildBusybox commits a harness.Busybox image holding a marker file, named
// name in local storage.
func buildBusybox(t *testing.T, name string) {
	t.Helper()
	marker := map[string]string{"tenancy.txt": "berth tenancy " + harness.RandomHex(4) + "\n"}
	if err := tools.WithLog(t.Logf).BuildBusybox(context.Background(), harness.Busybox{Name: name, Files: marker}); err != nil {
		t.Fatalf("building %s: %v", name, err)
	}
}

func imageID(t *testing.T, ref string) string {
	t.Helper()
	id := strings.TrimSpace(mustTool(t, "podman", "image", "inspect", "--format", "{{.Id}}", ref))
	if id == "" {
		t.Fatalf("no image ID for %s", ref)
	}
	return id
}

// login runs podman login into authfile and returns the result.
func login(t *testing.T, s *server, authfile, user, secret string) harness.Result {
	t.Helper()
	return tool(t, secret+"\n", []string{secret}, "podman", "login", "--tls-verify=false",
		"--authfile", authfile, "--username", user, "--password-stdin", s.Addr)
}

// push pushes ref with the credentials in authfile.
func push(t *testing.T, authfile, ref string) harness.Result {
	t.Helper()
	return tool(t, "", nil, "podman", "push", "--tls-verify=false", "--authfile", authfile, ref)
}

// TestPodmanRobot is the robot-account workflow of the seeds (§1.5): a robot
// with write on podorg/app logs in, pushes and pulls; it is refused on
// podorg/other; regenerating its token makes the old credentials fail at
// once, and the new token works.
func TestPodmanRobot(t *testing.T) {
	s := requireServer(t)
	admin := s.admin()
	s.mustAPI(t, http.StatusCreated, http.MethodPost, "/organization/", admin, map[string]string{"name": "podorg", "email": "podorg@org.tenancy.example.com"})
	for _, repo := range []string{"app", "other"} {
		s.mustAPI(t, http.StatusCreated, http.MethodPost, "/repository", admin,
			map[string]string{"namespace": "podorg", "repository": repo, "visibility": "private", "description": ""})
	}
	robot := s.mustAPI(t, http.StatusCreated, http.MethodPut, "/organization/podorg/robots/ci", admin, map[string]string{"description": "pushes app"}).object(t)
	oldToken, _ := robot["token"].(string)
	if robot["name"] != "podorg+ci" || oldToken == "" {
		t.Fatalf("robot answer %v", robot)
	}
	s.mustAPI(t, http.StatusOK, http.MethodPut, "/repository/podorg/app/permissions/user/podorg+ci", admin, map[string]string{"role": "write"})

	local := "localhost/tenancy/busybox:latest"
	buildBusybox(t, local)
	app := s.Addr + "/podorg/app:v1"
	other := s.Addr + "/podorg/other:v1"
	mustTool(t, "podman", "tag", local, app)
	mustTool(t, "podman", "tag", local, other)
	wantID := imageID(t, app)

	oldAuth := filepath.Join(tools.Dir, "robot-old.json")
	if r := login(t, s, oldAuth, "podorg+ci", oldToken); r.Err != nil {
		t.Fatalf("podman login as podorg+ci: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
	}
	if r := push(t, oldAuth, app); r.Err != nil {
		t.Fatalf("robot push to podorg/app: %v\n%s", r.Err, r.Stderr)
	}
	mustTool(t, "podman", "rmi", app)
	mustTool(t, "podman", "pull", "--tls-verify=false", "--authfile", oldAuth, app)
	if got := imageID(t, app); got != wantID {
		t.Fatalf("pulled image ID %s, pushed %s", got, wantID)
	}

	t.Run("denied-without-permission", func(t *testing.T) {
		r := push(t, oldAuth, other)
		if r.Err == nil {
			t.Fatalf("robot pushed to podorg/other without permission:\n%s", r.Stderr)
		}
		if msg := strings.ToLower(r.Stderr); !strings.Contains(msg, "denied") && !strings.Contains(msg, "403") {
			t.Errorf("push refused, but not for permission:\n%s", r.Stderr)
		}
		tags := s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/podorg/other/tag/", admin, nil).object(t)
		if list, _ := tags["tags"].([]any); len(list) != 0 {
			t.Errorf("podorg/other has tags after a refused push: %v", list)
		}
	})

	t.Run("regenerate", func(t *testing.T) {
		// A registry token issued from the old robot token before the
		// regenerate.
		rc := s.registry(basic("podorg+ci", oldToken), true)
		manifest := "/v2/podorg/app/manifests/v1"
		accept := map[string]string{"Accept": "application/vnd.oci.image.manifest.v1+json"}
		if r := rc.do(t, http.MethodGet, manifest, nil, accept); r.status != http.StatusOK {
			t.Fatalf("robot pull before regenerate: %s", r)
		}
		var issued string
		for _, tok := range rc.tokens {
			issued = tok
		}

		regen := s.mustAPI(t, http.StatusOK, http.MethodPost, "/organization/podorg/robots/ci/regenerate", admin, nil).object(t)
		newToken, _ := regen["token"].(string)
		if newToken == "" || newToken == oldToken {
			t.Fatalf("regenerate answered token %q (old %q)", newToken, oldToken)
		}
		if r := s.do(t, http.MethodGet, manifest, bearer(issued), nil, accept); r.status != http.StatusUnauthorized {
			t.Errorf("a registry token issued before regenerate still works: %s", r)
		}
		// The revocation is in the database, not only in the process: a
		// crash and restart within the token's lifetime do not revive it.
		if err := s.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatalf("restarting the server: %v", err)
		}
		if r := s.do(t, http.MethodGet, manifest, bearer(issued), nil, accept); r.status != http.StatusUnauthorized {
			t.Errorf("a registry token issued before regenerate works again after a restart: %s", r)
		}
		assertQuayError(t, s.api(t, http.MethodGet, "/repository/podorg/app", basic("podorg+ci", oldToken), nil), http.StatusUnauthorized, "invalid_token")
		s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/podorg/app", basic("podorg+ci", newToken), nil)
		if r := login(t, s, filepath.Join(tools.Dir, "robot-again.json"), "podorg+ci", oldToken); r.Err == nil {
			t.Error("podman login with the regenerated-away token succeeded")
		}
		// The auth file from before still holds the old token.
		mustTool(t, "podman", "tag", local, s.Addr+"/podorg/app:v2")
		if r := push(t, oldAuth, s.Addr+"/podorg/app:v2"); r.Err == nil {
			t.Error("push with the old robot credentials succeeded after regenerate")
		}
		newAuth := filepath.Join(tools.Dir, "robot-new.json")
		if r := login(t, s, newAuth, "podorg+ci", newToken); r.Err != nil {
			t.Fatalf("podman login with the new token: %v\n%s", r.Err, r.Stderr)
		}
		if r := push(t, newAuth, s.Addr+"/podorg/app:v2"); r.Err != nil {
			t.Fatalf("push with the new token: %v\n%s", r.Err, r.Stderr)
		}
	})

	t.Run("oauthtoken", func(t *testing.T) {
		s.createUser(t, "poduser")
		s.mustAPI(t, http.StatusOK, http.MethodPut, "/repository/podorg/app/permissions/user/poduser", admin, map[string]string{"role": "write"})
		token := adminToken(t, s, "poduser", "repo:write")
		auth := filepath.Join(tools.Dir, "oauth.json")
		if r := login(t, s, auth, "$oauthtoken", token); r.Err != nil {
			t.Fatalf("podman login -u $oauthtoken: %v\n%s", r.Err, r.Stderr)
		}
		ref := s.Addr + "/podorg/app:oauth"
		mustTool(t, "podman", "tag", local, ref)
		if r := push(t, auth, ref); r.Err != nil {
			t.Fatalf("push with a repo:write OAuth token: %v\n%s", r.Err, r.Stderr)
		}
		mustTool(t, "podman", "rmi", ref)
		mustTool(t, "podman", "pull", "--tls-verify=false", "--authfile", auth, ref)
		if got := imageID(t, ref); got != wantID {
			t.Fatalf("pulled image ID %s, pushed %s", got, wantID)
		}
		// repo:write does not reach a repository the user has no role on.
		ref = s.Addr + "/podorg/other:oauth"
		mustTool(t, "podman", "tag", local, ref)
		if r := push(t, auth, ref); r.Err == nil {
			t.Error("a repo:write token pushed to a repository its user may not write")
		}
	})
}

// adminToken mints an OAuth token with `berth admin token create`, against
// the running server's database.
func adminToken(t *testing.T, s *server, user string, scopes ...string) string {
	t.Helper()
	args := []string{"admin", "token", "create", "--user", user, "--data-dir", s.DataDir, "--config", s.ConfigPath}
	for _, sc := range scopes {
		args = append(args, "--scope", sc)
	}
	cmd := exec.Command(s.Opts.Bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("berth admin token create: %v\n%s", err, stderr.String())
	}
	token := strings.TrimSpace(stdout.String())
	if token == "" || strings.ContainsAny(token, " \n") {
		t.Fatalf("berth admin token create printed %q, want only the token", stdout.String())
	}
	return token
}
