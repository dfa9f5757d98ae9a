package tenancy

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// toolTimeout bounds one podman/buildah invocation.
const toolTimeout = 3 * time.Minute

// containerDir holds podman's and buildah's storage, config and auth files
// for this test binary, so nothing touches the machine's own images or
// logins; cleanupContainerEnv removes it.
var containerDir string

// toolEnv returns the environment for podman and buildah: vfs storage (works
// on any filesystem without kernel overlay), no search registries, chroot
// isolation for buildah, and a private default auth file.
func toolEnv(t *testing.T) []string {
	t.Helper()
	if containerDir == "" {
		dir, err := os.MkdirTemp("", "berth-tenancy-containers-")
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]string{
			"storage.conf": "[storage]\ndriver = \"vfs\"\ngraphroot = \"" + filepath.Join(dir, "graph") +
				"\"\nrunroot = \"" + filepath.Join(dir, "run") + "\"\n",
			"containers.conf": "[engine]\ntmp_dir = \"" + filepath.Join(dir, "tmp") +
				"\"\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
			"registries.conf": "unqualified-search-registries = []\n",
			"auth.json":       "{}\n",
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		containerDir = dir
	}
	return append(os.Environ(),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(containerDir, "storage.conf"),
		"CONTAINERS_CONF="+filepath.Join(containerDir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF="+filepath.Join(containerDir, "registries.conf"),
		"REGISTRY_AUTH_FILE="+filepath.Join(containerDir, "auth.json"),
		"BUILDAH_ISOLATION=chroot",
	)
}

// cleanupContainerEnv removes the storage; vfs layers may hold read-only
// directories, hence the chmod pass when the first attempt fails.
func cleanupContainerEnv() {
	if containerDir == "" {
		return
	}
	if err := os.RemoveAll(containerDir); err != nil {
		_ = exec.Command("chmod", "-R", "u+w", containerDir).Run()
		_ = os.RemoveAll(containerDir)
	}
}

type toolResult struct {
	stdout, stderr string
	err            error
}

// tool runs name args with stdin in the isolated environment. secrets are
// replaced by *** in the log line.
func tool(t *testing.T, stdin string, secrets []string, name string, args ...string) toolResult {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = toolEnv(t)
	cmd.Dir = containerDir
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	line := strings.Join(args, " ")
	for _, s := range secrets {
		line = strings.ReplaceAll(line, s, "***")
	}
	t.Logf("$ %s %s  (%s)", name, line, time.Since(start).Round(time.Millisecond))
	return toolResult{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// mustTool is tool that fails the test when the command fails.
func mustTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	r := tool(t, "", nil, name, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// buildBusybox commits a one-layer image holding Debian's static busybox
// and a marker file, named name in local storage.
func buildBusybox(t *testing.T, name string) {
	t.Helper()
	toolEnv(t)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox-static is not installed: %v", err)
	}
	rootfs := filepath.Join(containerDir, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", "sh")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "tenancy.txt"), []byte("berth tenancy "+randomHex(4)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctr := strings.TrimSpace(mustTool(t, "buildah", "from", "scratch"))
	defer tool(t, "", nil, "buildah", "rm", ctr)
	mustTool(t, "buildah", "copy", ctr, rootfs, "/")
	mustTool(t, "buildah", "config", "--arch", "amd64", "--os", "linux", "--cmd", "/bin/sh", ctr)
	mustTool(t, "buildah", "commit", "--format", "oci", ctr, name)
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
func login(t *testing.T, s *server, authfile, user, secret string) toolResult {
	t.Helper()
	return tool(t, secret+"\n", []string{secret}, "podman", "login", "--tls-verify=false",
		"--authfile", authfile, "--username", user, "--password-stdin", s.addr)
}

// push pushes ref with the credentials in authfile.
func push(t *testing.T, authfile, ref string) toolResult {
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
	app := s.addr + "/podorg/app:v1"
	other := s.addr + "/podorg/other:v1"
	mustTool(t, "podman", "tag", local, app)
	mustTool(t, "podman", "tag", local, other)
	wantID := imageID(t, app)

	oldAuth := filepath.Join(containerDir, "robot-old.json")
	if r := login(t, s, oldAuth, "podorg+ci", oldToken); r.err != nil {
		t.Fatalf("podman login as podorg+ci: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	if r := push(t, oldAuth, app); r.err != nil {
		t.Fatalf("robot push to podorg/app: %v\n%s", r.err, r.stderr)
	}
	mustTool(t, "podman", "rmi", app)
	mustTool(t, "podman", "pull", "--tls-verify=false", "--authfile", oldAuth, app)
	if got := imageID(t, app); got != wantID {
		t.Fatalf("pulled image ID %s, pushed %s", got, wantID)
	}

	t.Run("denied-without-permission", func(t *testing.T) {
		r := push(t, oldAuth, other)
		if r.err == nil {
			t.Fatalf("robot pushed to podorg/other without permission:\n%s", r.stderr)
		}
		if msg := strings.ToLower(r.stderr); !strings.Contains(msg, "denied") && !strings.Contains(msg, "403") {
			t.Errorf("push refused, but not for permission:\n%s", r.stderr)
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
		assertQuayError(t, s.api(t, http.MethodGet, "/repository/podorg/app", basic("podorg+ci", oldToken), nil), http.StatusUnauthorized, "invalid_token")
		s.mustAPI(t, http.StatusOK, http.MethodGet, "/repository/podorg/app", basic("podorg+ci", newToken), nil)
		if r := login(t, s, filepath.Join(containerDir, "robot-again.json"), "podorg+ci", oldToken); r.err == nil {
			t.Error("podman login with the regenerated-away token succeeded")
		}
		// The auth file from before still holds the old token.
		mustTool(t, "podman", "tag", local, s.addr+"/podorg/app:v2")
		if r := push(t, oldAuth, s.addr+"/podorg/app:v2"); r.err == nil {
			t.Error("push with the old robot credentials succeeded after regenerate")
		}
		newAuth := filepath.Join(containerDir, "robot-new.json")
		if r := login(t, s, newAuth, "podorg+ci", newToken); r.err != nil {
			t.Fatalf("podman login with the new token: %v\n%s", r.err, r.stderr)
		}
		if r := push(t, newAuth, s.addr+"/podorg/app:v2"); r.err != nil {
			t.Fatalf("push with the new token: %v\n%s", r.err, r.stderr)
		}
	})

	t.Run("oauthtoken", func(t *testing.T) {
		s.createUser(t, "poduser")
		s.mustAPI(t, http.StatusOK, http.MethodPut, "/repository/podorg/app/permissions/user/poduser", admin, map[string]string{"role": "write"})
		token := adminToken(t, s, "poduser", "repo:write")
		auth := filepath.Join(containerDir, "oauth.json")
		if r := login(t, s, auth, "$oauthtoken", token); r.err != nil {
			t.Fatalf("podman login -u $oauthtoken: %v\n%s", r.err, r.stderr)
		}
		ref := s.addr + "/podorg/app:oauth"
		mustTool(t, "podman", "tag", local, ref)
		if r := push(t, auth, ref); r.err != nil {
			t.Fatalf("push with a repo:write OAuth token: %v\n%s", r.err, r.stderr)
		}
		mustTool(t, "podman", "rmi", ref)
		mustTool(t, "podman", "pull", "--tls-verify=false", "--authfile", auth, ref)
		if got := imageID(t, ref); got != wantID {
			t.Fatalf("pulled image ID %s, pushed %s", got, wantID)
		}
		// repo:write does not reach a repository the user has no role on.
		ref = s.addr + "/podorg/other:oauth"
		mustTool(t, "podman", "tag", local, ref)
		if r := push(t, auth, ref); r.err == nil {
			t.Error("a repo:write token pushed to a repository its user may not write")
		}
	})
}

// adminToken mints an OAuth token with `berth admin token create`, against
// the running server's database.
func adminToken(t *testing.T, s *server, user string, scopes ...string) string {
	t.Helper()
	args := []string{"admin", "token", "create", "--user", user, "--data-dir", s.dataDir, "--config", s.configPath}
	for _, sc := range scopes {
		args = append(args, "--scope", sc)
	}
	cmd := exec.Command(s.bin, args...)
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
