package triggers_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/providertest"
)

func fixture(t testing.TB, service, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", service, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signHub256(h http.Header, body, secret []byte) {
	h.Set("X-Hub-Signature-256", triggers.SignSHA256(body, secret))
}

func TestGitHubProvider(t *testing.T) {
	push := map[string]string{"X-GitHub-Event": "push"}
	providertest.Run(t, providertest.Suite{
		Provider:          triggers.GitHub{},
		Service:           "github",
		Sign:              signHub256,
		SignatureRequired: true,
		DeliveryHeader:    "X-GitHub-Delivery",
		PushHeaders:       push,
		Fixtures: []providertest.Fixture{
			{
				Name: "branch push", Headers: push, Body: fixture(t, "github", "push_branch.json"),
				Want: providertest.Want{
					Commit: "9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d", Ref: "refs/heads/main",
					DefaultBranch: "main", GitURL: "git@github.com:octo-org/hello-app.git",
					Repository: "octo-org/hello-app", Message: "Build from Containerfile\n\nAlso bump the base image.",
					AuthorUsername: "monalisa",
					Files:          []string{"cmd/health.go", "README.md", "Dockerfile", "docs/old.md"},
					FilesKnown:     true,
				},
			},
			{
				Name: "tag push", Headers: push, Body: fixture(t, "github", "push_tag.json"),
				Want: providertest.Want{
					Commit: "9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d", Ref: "refs/tags/v1.4.0",
					DefaultBranch: "main", GitURL: "git@github.com:octo-org/hello-app.git",
					Repository: "octo-org/hello-app", Message: "Build from Containerfile\n\nAlso bump the base image.",
					AuthorUsername: "monalisa",
				},
			},
			{Name: "branch deletion", Headers: push, Body: fixture(t, "github", "push_delete.json"), Want: providertest.Want{Skip: triggers.SkipRefDeleted}},
			{Name: "ping", Headers: map[string]string{"X-GitHub-Event": "ping"}, Body: fixture(t, "github", "ping.json"), Want: providertest.Want{Skip: triggers.SkipPing}},
			{Name: "issues", Headers: map[string]string{"X-GitHub-Event": "issues"}, Body: []byte(`{"action":"opened"}`), Want: providertest.Want{Skip: triggers.SkipUnsupportedEvent}},
		},
	})
}

func TestGitLabProvider(t *testing.T) {
	push := map[string]string{"X-Gitlab-Event": "Push Hook"}
	providertest.Run(t, providertest.Suite{
		Provider: triggers.GitLab{},
		Service:  "gitlab",
		Sign: func(h http.Header, _, secret []byte) {
			h.Set("X-Gitlab-Token", string(secret))
		},
		SignatureRequired: true,
		TokenAuth:         true,
		DeliveryHeader:    "X-Gitlab-Event-UUID",
		PushHeaders:       push,
		Fixtures: []providertest.Fixture{
			{
				Name: "branch push", Headers: push, Body: fixture(t, "gitlab", "push_branch.json"),
				Want: providertest.Want{
					Commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", Ref: "refs/heads/develop",
					DefaultBranch: "main", GitURL: "git@gitlab.example.com:mike/diaspora.git",
					Repository: "mike/diaspora", Message: "fixed readme", AuthorUsername: "jdoe",
					Files:      []string{"CHANGELOG", "app/controller/application.rb", "README.md"},
					FilesKnown: true,
				},
			},
			{
				Name: "tag push", Headers: map[string]string{"X-Gitlab-Event": "Tag Push Hook"}, Body: fixture(t, "gitlab", "tag_push.json"),
				Want: providertest.Want{
					Commit: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7", Ref: "refs/tags/v1.0.0",
					DefaultBranch: "master", GitURL: "git@gitlab.example.com:jsmith/example.git",
					Repository: "jsmith/example",
				},
			},
			{Name: "branch deletion", Headers: push, Body: fixture(t, "gitlab", "push_delete.json"), Want: providertest.Want{Skip: triggers.SkipRefDeleted}},
			{Name: "merge request", Headers: map[string]string{"X-Gitlab-Event": "Merge Request Hook"}, Body: fixture(t, "gitlab", "merge_request.json"), Want: providertest.Want{Skip: triggers.SkipUnsupportedEvent}},
		},
	})
}

func TestBitbucketProvider(t *testing.T) {
	push := map[string]string{"X-Event-Key": "repo:push"}
	providertest.Run(t, providertest.Suite{
		Provider: triggers.Bitbucket{},
		Service:  "bitbucket",
		Sign: func(h http.Header, body, secret []byte) {
			h.Set("X-Hub-Signature", triggers.SignSHA256(body, secret))
		},
		SignatureRequired: true,
		DeliveryHeader:    "X-Request-UUID",
		PushHeaders:       push,
		Fixtures: []providertest.Fixture{
			{
				Name: "branch push", Headers: push, Body: fixture(t, "bitbucket", "push_branch.json"),
				Want: providertest.Want{
					Commit: "f00dfacecafe0123456789abcdef0123456789ab", Ref: "refs/heads/release/2.x",
					GitURL: "git@bitbucket.org:analytical/engine.git", Repository: "analytical/engine",
					Message: "Add the store card reader\n", AuthorUsername: "ada",
				},
			},
			{
				Name: "tag push", Headers: push, Body: fixture(t, "bitbucket", "push_tag.json"),
				Want: providertest.Want{
					Commit: "f00dfacecafe0123456789abcdef0123456789ab", Ref: "refs/tags/v2.0.0",
					GitURL: "git@bitbucket.org:analytical/engine.git", Repository: "analytical/engine",
					Message: "Add the store card reader\n", AuthorUsername: "Ada Lovelace <ada@example.com>",
				},
			},
			{Name: "branch deletion", Headers: push, Body: fixture(t, "bitbucket", "push_delete.json"), Want: providertest.Want{Skip: triggers.SkipRefDeleted}},
			{Name: "ping", Headers: map[string]string{"X-Event-Key": "diagnostics:ping"}, Body: fixture(t, "bitbucket", "ping.json"), Want: providertest.Want{Skip: triggers.SkipPing}},
			{Name: "pull request", Headers: map[string]string{"X-Event-Key": "pullrequest:created"}, Body: []byte(`{}`), Want: providertest.Want{Skip: triggers.SkipUnsupportedEvent}},
		},
	})
}

func TestCustomGitProvider(t *testing.T) {
	providertest.Run(t, providertest.Suite{
		Provider:       triggers.CustomGit{},
		Service:        "custom-git",
		Sign:           signHub256,
		DeliveryHeader: "X-Berth-Delivery",
		Fixtures: []providertest.Fixture{
			{
				Name: "Quay's documented payload", Body: fixture(t, "custom-git", "push.json"),
				Want: providertest.Want{
					Commit: "1c002dd", Ref: "refs/heads/master", DefaultBranch: "master",
					Message: "initial commit", AuthorUsername: "user",
				},
			},
			{
				Name: "tag without commit_info", Body: fixture(t, "custom-git", "push_tag_minimal.json"),
				Want: providertest.Want{Commit: "3f786850e387550fdab836ed7e6dc881de23001b", Ref: "refs/tags/v0.9", DefaultBranch: "main"},
			},
		},
	})
}
