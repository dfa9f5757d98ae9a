package triggers

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/test/gitserver"
)

// TestCustomGitAnalyzeAndStart: through the real binary, with a custom-git
// trigger cloning over SSH (its deploy key authorized, the host key
// recorded at activation):
//   - analyze reads the Dockerfile from the default branch on the server,
//     finds that it starts from a private repository of this berth, and
//     answers requiresrobot naming it;
//   - a manual start naming only a branch queues a build of that branch's
//     head (the commit is in the build's trigger_metadata and tags when it
//     is queued), and the build completes.
func TestCustomGitAnalyzeAndStart(t *testing.T) {
	e := requireEnv(t)
	const appRepo, baseRepo = "analyze-app", "analyze-base"
	e.createRepo(t, appRepo)
	e.createRepo(t, baseRepo)

	repo := gitserver.NewRepo(t)
	repo.Commit("private base", map[string]string{"Dockerfile": "FROM " + e.srv.Addr + "/" + adminUser + "/" + baseRepo + ":latest\nRUN true\n"})
	repo.Push("main")
	repo.Branch("feature")
	featureHead := repo.Commit("buildable", map[string]string{"Dockerfile": e.dockerfile()})
	repo.Push("feature")

	_, placeholder := gitserver.NewSSHKey(t)
	marker := t.TempDir()
	sshBase, _ := gitserver.ServeSSH(t, repo.Root, placeholder)
	tr := e.createTrigger(t, appRepo, "custom-git", sshBase+"/"+repo.Name)
	authorizeKey(t, marker, placeholder, tr.credential(t, "SSH Public Key"))
	base := "/api/v1/repository/" + adminUser + "/" + appRepo + "/trigger/" + tr.ID

	t.Run("analyze", func(t *testing.T) {
		var a struct {
			Namespace *string `json:"namespace"`
			Name      *string `json:"name"`
			Status    string  `json:"status"`
			Message   string  `json:"message"`
			IsAdmin   bool    `json:"is_admin"`
			Robots    []struct {
				Name    string `json:"name"`
				IsRobot bool   `json:"is_robot"`
			} `json:"robots"`
		}
		code, body := e.api(t, http.MethodPost, base+"/analyze", map[string]any{"config": triggerConfig(sshBase + "/" + repo.Name)}, &a)
		if code != http.StatusOK {
			t.Fatalf("analyze: %d %s", code, body)
		}
		if a.Status != "requiresrobot" || a.Namespace == nil || *a.Namespace != adminUser || a.Name == nil || *a.Name != baseRepo || !a.IsAdmin {
			t.Fatalf("analyze = %s, want requiresrobot for %s/%s", body, adminUser, baseRepo)
		}
		if a.Robots == nil {
			t.Errorf("analyze for the namespace admin has no robots list: %s", body)
		}
	})

	t.Run("start a branch", func(t *testing.T) {
		var b build
		code, body := e.api(t, http.MethodPost, base+"/start", map[string]any{"branch_name": "feature"}, &b)
		if code != http.StatusCreated {
			t.Fatalf("start: %d %s", code, body)
		}
		var md struct {
			Commit string `json:"commit"`
			Ref    string `json:"ref"`
		}
		if err := json.Unmarshal(b.TriggerMetadata, &md); err != nil {
			t.Fatalf("trigger_metadata %s: %v", b.TriggerMetadata, err)
		}
		if md.Commit != featureHead || md.Ref != "refs/heads/feature" {
			t.Fatalf("queued build names %s at %s, want the head of feature %s", md.Ref, md.Commit, featureHead)
		}
		if want := []string{featureHead[:7], "feature"}; !sameTags(b.Tags, want) {
			t.Errorf("build tags %q, want %q", b.Tags, want)
		}
		e.waitBuild(t, appRepo, b.ID)

		code, body = e.api(t, http.MethodPost, base+"/start", map[string]any{"branch_name": "gone"}, nil)
		if code != http.StatusBadRequest || !strings.Contains(body, "does not exist") {
			t.Errorf("start of a missing branch: %d %s, want 400 saying it does not exist", code, body)
		}
	})
}
