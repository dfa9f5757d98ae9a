package triggers

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/test/gitserver"
)

// postReceiveHook is a git server's post-receive hook that POSTs Quay's
// custom-git payload for every updated ref (Quay's schema requires
// username, url and avatar_url of the author and committer) to each webhook URL with curl,
// and appends "<http status> <ref> <url index>" to results.
func postReceiveHook(results string, urls ...string) string {
	quoted := make([]string, len(urls))
	for i, u := range urls {
		// Single quotes: the URL's "$token" user must reach curl as is.
		quoted[i] = "'" + u + "'"
	}
	return `#!/bin/sh
set -u
esc() { sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
while read old new ref; do
	case "$new" in 0000000000000000000000000000000000000000) continue ;; esac
	msg=$(git log -1 --format=%s "$new" | esc)
	date=$(git log -1 --format=%cI "$new")
	author=$(git log -1 --format=%an "$new" | esc)
	committer=$(git log -1 --format=%cn "$new" | esc)
	payload=$(printf '{"commit": "%s", "ref": "%s", "default_branch": "main", "commit_info": {"url": "%s", "message": "%s", "date": "%s", "author": {"username": "%s", "url": "%s", "avatar_url": "%s"}, "committer": {"username": "%s", "url": "%s", "avatar_url": "%s"}}}' \
		"$new" "$ref" "https://git.invalid/commit/$new" "$msg" "$date" \
		"$author" "https://git.invalid/users/author" "https://git.invalid/avatars/author.png" \
		"$committer" "https://git.invalid/users/committer" "https://git.invalid/avatars/committer.png")
	i=0
	for url in ` + strings.Join(quoted, " ") + `; do
		i=$((i + 1))
		code=$(printf '%s' "$payload" | curl -s -o /dev/null -w '%{http_code}' -X POST \
			-H 'Content-Type: application/json' --data-binary @- "$url")
		echo "$code $ref $i" >> '` + results + `'
	done
done
`
}

// readResults returns the hook's result lines.
func readResults(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the post-receive hook wrote no results: %v", err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// authorizeKey replaces the authorized key of the sshd that ServeSSH started
// right after marker was made: ServeSSH takes its key before berth has
// generated the deploy key, and berth must scan the running server's host
// key at activation, so the deploy key is installed afterwards. ServeSSH's
// directory is the test's next TempDir, a sibling of marker; sshd reads the
// file on every login.
func authorizeKey(t *testing.T, marker, placeholder, key string) {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(marker), "*", "authorized_keys"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil || !strings.Contains(string(data), placeholder) {
			continue
		}
		if err := os.WriteFile(m, []byte("restrict "+strings.TrimSpace(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no authorized_keys of the test's sshd beside %s", marker)
}

// TestCustomGitPostReceive: a bare repository served by sshd (with the
// trigger's deploy key authorized, the host key recorded at activation) and
// by git daemon; its post-receive hook POSTs the custom-git payload to two
// triggers, one cloning over SSH and one over git://. A push builds both and
// the images are pullable by branch, latest and short SHA; a "[skip build]"
// push is answered 200, builds nothing and is recorded as skipped; a wrong
// $token is refused with 401 and recorded as rejected.
func TestCustomGitPostReceive(t *testing.T) {
	e := requireEnv(t)
	const sshRepo, daemonRepo = "custom-ssh", "custom-daemon"
	e.createRepo(t, sshRepo)
	e.createRepo(t, daemonRepo)

	repo := gitserver.NewRepo(t)
	_, placeholder := gitserver.NewSSHKey(t)
	marker := t.TempDir()
	sshBase, knownHosts := gitserver.ServeSSH(t, repo.Root, placeholder)
	t.Logf("sshd: %s (%s)", sshBase, knownHosts)
	daemonBase := gitserver.ServeGitDaemon(t, repo.Root)

	trSSH := e.createTrigger(t, sshRepo, "custom-git", sshBase+"/"+repo.Name)
	trGit := e.createTrigger(t, daemonRepo, "custom-git", daemonBase+"/"+repo.Name)
	deployKey := trSSH.credential(t, "SSH Public Key")
	if !strings.HasPrefix(deployKey, "ssh-ed25519 ") {
		t.Fatalf("deploy key %q is not an ed25519 public key", deployKey)
	}
	authorizeKey(t, marker, placeholder, deployKey)
	hooks := map[string]string{}
	for _, tr := range []triggerView{trSSH, trGit} {
		u := tr.credential(t, "Webhook Endpoint URL")
		want := "http://$token:"
		if !strings.HasPrefix(u, want) || !strings.HasSuffix(u, "@"+e.srv.Addr+"/webhooks/push/trigger/"+tr.ID) {
			t.Fatalf("webhook URL %q, want http://$token:<secret>@%s/webhooks/push/trigger/%s", u, e.srv.Addr, tr.ID)
		}
		hooks[tr.ID] = u
	}
	results := filepath.Join(t.TempDir(), "results")
	repo.PostReceiveHook(postReceiveHook(results, hooks[trSSH.ID], hooks[trGit.ID]))

	sha := repo.Commit("add a Dockerfile", map[string]string{"Dockerfile": e.dockerfile()})
	repo.Push("main")
	if got, want := readResults(t, results), []string{"200 refs/heads/main 1", "200 refs/heads/main 2"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("hook deliveries = %q, want %q", got, want)
	}
	wantTags := []string{"main", "latest", sha[:7]}
	cases := []struct {
		repo string
		tr   triggerView
	}{{sshRepo, trSSH}, {daemonRepo, trGit}}
	built := map[string]build{}
	for _, c := range cases {
		bs := e.triggerBuilds(t, c.repo, c.tr.ID)
		if len(bs) != 1 {
			t.Fatalf("%s: trigger started %d builds, want 1: %+v", c.repo, len(bs), bs)
		}
		if !sameTags(bs[0].Tags, wantTags) {
			t.Errorf("%s: build tags %q, want %q", c.repo, bs[0].Tags, wantTags)
		}
		d := e.latestDelivery(t, c.repo, c.tr.ID, "accepted")
		if d.BuildID == nil || *d.BuildID != bs[0].ID {
			t.Errorf("%s: accepted delivery %+v does not name build %s", c.repo, d, bs[0].ID)
		}
		built[c.repo] = bs[0]
	}
	for _, c := range cases {
		t.Run("build over "+strings.TrimPrefix(c.repo, "custom-"), func(t *testing.T) {
			b := e.waitBuild(t, c.repo, built[c.repo].ID)
			e.checkImage(t, c.repo, b, wantTags...)
		})
	}

	t.Run("skip build", func(t *testing.T) {
		repo.Commit("docs only [skip build]", map[string]string{"README.md": "notes\n"})
		repo.Push("main")
		got := readResults(t, results)
		if len(got) != 4 || got[2] != "200 refs/heads/main 1" || got[3] != "200 refs/heads/main 2" {
			t.Fatalf("hook deliveries = %q, want two more 200s", got)
		}
		for _, c := range cases {
			if bs := e.triggerBuilds(t, c.repo, c.tr.ID); len(bs) != 1 {
				t.Errorf("%s: %d builds after a [skip build] push, want still 1", c.repo, len(bs))
			}
			d := e.latestDelivery(t, c.repo, c.tr.ID, "skipped")
			if d.BuildID != nil && *d.BuildID != "" {
				t.Errorf("%s: skipped delivery names build %s", c.repo, *d.BuildID)
			}
			if !strings.Contains(strings.ToLower(d.Reason), "skip") {
				t.Errorf("%s: skipped delivery reason %q does not say why", c.repo, d.Reason)
			}
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		u := hooks[trSSH.ID]
		at := strings.Index(u, "@")
		bad := "http://$token:WRONGSECRET" + u[at:]
		payload := fmt.Sprintf(`{"commit": %q, "ref": "refs/heads/main", "default_branch": "main"}`, sha)
		code, body := e.post(t, bad, nil, []byte(payload))
		if code != http.StatusUnauthorized {
			t.Fatalf("delivery with a wrong $token: %d %s, want 401", code, body)
		}
		// No credentials at all is refused the same way.
		noAuth := "http://" + u[at+1:]
		if code, body := e.post(t, noAuth, nil, []byte(payload)); code != http.StatusUnauthorized {
			t.Errorf("delivery without $token: %d %s, want 401", code, body)
		}
		e.latestDelivery(t, sshRepo, trSSH.ID, "rejected")
		if bs := e.triggerBuilds(t, sshRepo, trSSH.ID); len(bs) != 1 {
			t.Errorf("%d builds after rejected deliveries, want still 1", len(bs))
		}
	})
}
