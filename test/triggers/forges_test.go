package triggers

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/gitserver"
	"github.com/berth-dev/berth/test/harness"
)

// statusTimeout bounds how long a commit status may take to reach the forge
// after the build event.
const statusTimeout = 30 * time.Second

// fixture reads a forge payload from triggers/testdata and makes it point
// at the local repository: every old→new replacement is applied.
func fixture(t *testing.T, name string, replace ...string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "triggers", "testdata", filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.NewReplacer(replace...).Replace(string(data)))
}

// sign is "sha256=<hex HMAC-SHA256 of body with secret>".
func sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// hookURL is a forge trigger's webhook endpoint (no $token: forges sign).
func (e *env) hookURL(id string) string {
	return e.srv.URL("/webhooks/push/trigger/" + id)
}

// forgeRepo is a git repository with a Dockerfile commit pushed to main,
// served by git daemon; it returns the repo, its git:// URL and the SHA.
func (e *env) forgeRepo(t *testing.T) (*gitserver.Repo, string, string) {
	t.Helper()
	repo := gitserver.NewRepo(t)
	sha := repo.Commit("add a Dockerfile", map[string]string{"Dockerfile": e.dockerfile()})
	repo.Push("main")
	return repo, gitserver.ServeGitDaemon(t, repo.Root) + "/" + repo.Name, sha
}

// checkActivation asserts the deploy key and webhook calls a forge got when
// the trigger was activated and returns the webhook secret berth
// registered.
func checkActivation(t *testing.T, e *env, tr triggerView, keyCall, hookCall forgeCall, auth string, secretField ...string) string {
	t.Helper()
	for _, c := range []forgeCall{keyCall, hookCall} {
		if c.Auth != auth {
			t.Errorf("%s %s authorization %q, want %q", c.Method, c.Path, c.Auth, auth)
		}
	}
	if k := bodyString(keyCall, "key"); !strings.HasPrefix(k, "ssh-ed25519 ") || k != tr.credential(t, "SSH Public Key") {
		t.Errorf("deploy key %q is not the trigger's public key %q", k, tr.credential(t, "SSH Public Key"))
	}
	secret := bodyString(hookCall, secretField...)
	if len(secret) < 16 {
		t.Fatalf("webhook created with secret %q (body %v), want a real secret", secret, hookCall.Body)
	}
	return secret
}

// TestFakeGitHubPush: activation creates a signed webhook and a read-only
// deploy key on the (fake) GitHub API; a push payload signed with that
// secret builds the commit from the local git server, tagged by branch,
// latest and short SHA, with commit statuses pending then success linking
// the build page. A tampered signature is refused, ping and a branch
// deletion are skipped, a replayed delivery ID builds once, and a tag push of
// the already-built commit builds again.
func TestFakeGitHubPush(t *testing.T) {
	e := requireEnv(t)
	const berthRepo, ghRepo = "gh", "octo-org/hello-app"
	const auth = "Bearer " + githubToken
	e.createRepo(t, berthRepo)
	repo, gitURL, sha := e.forgeRepo(t)
	tr := e.createTrigger(t, berthRepo, "github", ghRepo)

	api := "/github/api/v3/repos/" + ghRepo
	keyCall := e.forge.onlyCall(t, http.MethodPost, api+"/keys")
	hookCall := e.forge.onlyCall(t, http.MethodPost, api+"/hooks")
	if ro, _ := keyCall.Body["read_only"].(bool); !ro {
		t.Errorf("GitHub deploy key created with read_only=%v, want true (body %v)", keyCall.Body["read_only"], keyCall.Body)
	}
	if u := bodyString(hookCall, "config", "url"); u != e.hookURL(tr.ID) {
		t.Errorf("GitHub webhook url %q, want %q", u, e.hookURL(tr.ID))
	}
	if ct := bodyString(hookCall, "config", "content_type"); ct != "json" {
		t.Errorf("GitHub webhook content_type %q, want json", ct)
	}
	if ev, _ := hookCall.Body["events"].([]any); !slices.Contains(ev, any("push")) {
		t.Errorf("GitHub webhook events %v, want push", hookCall.Body["events"])
	}
	secret := checkActivation(t, e, tr, keyCall, hookCall, auth, "config", "secret")

	const fixtureSHA = "9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d"
	rewrite := []string{fixtureSHA, sha, "git@github.com:octo-org/hello-app.git", gitURL, "https://github.com/octo-org/hello-app.git", gitURL}
	deliver := func(event, deliveryID string, body []byte, signature string) (int, string) {
		return e.post(t, e.hookURL(tr.ID), map[string]string{
			"X-GitHub-Event": event, "X-GitHub-Delivery": deliveryID, "X-Hub-Signature-256": signature,
		}, body)
	}
	push := fixture(t, "github/push_branch.json", rewrite...)

	t.Run("tampered signature", func(t *testing.T) {
		tampered := []byte(strings.Replace(string(push), `"refs/heads/main"`, `"refs/heads/evil"`, 1))
		if code, body := deliver("push", harness.RandomHex(8), tampered, sign(secret, push)); code != http.StatusUnauthorized {
			t.Errorf("tampered payload: %d %s, want 401", code, body)
		}
		if code, body := deliver("push", harness.RandomHex(8), push, sign("not-the-secret", push)); code != http.StatusUnauthorized {
			t.Errorf("payload signed with another secret: %d %s, want 401", code, body)
		}
		if code, body := deliver("push", harness.RandomHex(8), push, ""); code != http.StatusUnauthorized {
			t.Errorf("unsigned payload: %d %s, want 401", code, body)
		}
		e.latestDelivery(t, berthRepo, tr.ID, "rejected")
		if bs := e.triggerBuilds(t, berthRepo, tr.ID); len(bs) != 0 {
			t.Errorf("%d builds after refused deliveries, want 0", len(bs))
		}
	})
	t.Run("ping", func(t *testing.T) {
		ping := fixture(t, "github/ping.json")
		if code, body := deliver("ping", harness.RandomHex(8), ping, sign(secret, ping)); code != http.StatusOK {
			t.Fatalf("ping: %d %s, want 200", code, body)
		}
		d := e.latestDelivery(t, berthRepo, tr.ID, "skipped")
		if d.Event != "ping" {
			t.Errorf("ping recorded as event %q", d.Event)
		}
	})
	t.Run("branch deletion", func(t *testing.T) {
		del := fixture(t, "github/push_delete.json", rewrite...)
		if code, body := deliver("push", harness.RandomHex(8), del, sign(secret, del)); code != http.StatusOK {
			t.Fatalf("branch deletion: %d %s, want 200", code, body)
		}
		e.latestDelivery(t, berthRepo, tr.ID, "skipped")
		if bs := e.triggerBuilds(t, berthRepo, tr.ID); len(bs) != 0 {
			t.Errorf("%d builds after ping and deletion, want 0", len(bs))
		}
	})

	// The push, delivered twice with the same delivery ID (a redelivery).
	deliveryID := "72d3162e-cc78-11e3-81ab-" + harness.RandomHex(6)
	for i := range 2 {
		if code, body := deliver("push", deliveryID, push, sign(secret, push)); code != http.StatusOK {
			t.Fatalf("push delivery %d: %d %s, want 200", i+1, code, body)
		}
	}
	bs := e.triggerBuilds(t, berthRepo, tr.ID)
	if len(bs) != 1 {
		t.Fatalf("a push delivered twice with one delivery ID started %d builds, want 1: %+v", len(bs), bs)
	}
	ds := e.deliveries(t, berthRepo, tr.ID)
	if len(ds) < 2 || ds[0].Status != "skipped" || !strings.Contains(ds[0].Reason, "replay") ||
		ds[1].Status != "accepted" || ds[1].ID != deliveryID || ds[1].BuildID == nil || *ds[1].BuildID != bs[0].ID {
		t.Errorf("deliveries after a replay = %+v, want the replay skipped over the accepted %s (build %s)", ds, deliveryID, bs[0].ID)
	}
	wantTags := []string{"main", "latest", sha[:7]}
	if !sameTags(bs[0].Tags, wantTags) {
		t.Errorf("build tags %q, want %q", bs[0].Tags, wantTags)
	}
	b := e.waitBuild(t, berthRepo, bs[0].ID)
	e.checkImage(t, berthRepo, b, wantTags...)

	statuses := api + "/statuses/" + sha
	state := func(c forgeCall) string { return bodyString(c, "state") }
	checkStatuses := func(t *testing.T, cs []forgeCall, buildIDs ...string) {
		t.Helper()
		for i, c := range cs {
			want := "/repository/" + adminUser + "/" + berthRepo + "/build/" + buildIDs[i/2]
			if u := bodyString(c, "target_url"); !strings.HasPrefix(u, "http") || !strings.HasSuffix(u, want) {
				t.Errorf("status %d target_url %q, want the build page …%s", i, u, want)
			}
			if ctx := bodyString(c, "context"); ctx != "berth/build" {
				t.Errorf("status %d context %q", i, ctx)
			}
			if c.Auth != auth {
				t.Errorf("status %d authorization %q", i, c.Auth)
			}
		}
	}
	cs := e.forge.waitStatuses(t, statuses, state, []string{"pending", "success"}, statusTimeout)
	checkStatuses(t, cs, b.ID)

	t.Run("tag push of a built commit", func(t *testing.T) {
		repo.Tag("v1.4.0")
		repo.Push("refs/tags/v1.4.0")
		tag := fixture(t, "github/push_tag.json", rewrite...)
		if code, body := deliver("push", harness.RandomHex(8), tag, sign(secret, tag)); code != http.StatusOK {
			t.Fatalf("tag push: %d %s, want 200", code, body)
		}
		bs := e.triggerBuilds(t, berthRepo, tr.ID)
		if len(bs) != 2 {
			t.Fatalf("a tag push of an already-built commit left %d builds, want 2 (no dedup by commit)", len(bs))
		}
		if want := []string{"v1.4.0", sha[:7]}; !sameTags(bs[0].Tags, want) {
			t.Errorf("tag build tags %q, want %q", bs[0].Tags, want)
		}
		nb := e.waitBuild(t, berthRepo, bs[0].ID)
		e.checkImage(t, berthRepo, nb, "v1.4.0")
		cs := e.forge.waitStatuses(t, statuses, state, []string{"pending", "success", "pending", "success"}, statusTimeout)
		checkStatuses(t, cs, b.ID, nb.ID)
	})
}

// waitFirstStatus waits for the first commit status under prefix and
// returns it.
func waitFirstStatus(t *testing.T, f *fakeForge, prefix string) forgeCall {
	t.Helper()
	deadline := time.Now().Add(statusTimeout)
	for {
		if cs := f.callsTo(http.MethodPost, prefix); len(cs) > 0 {
			return cs[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no commit status posted to %s", prefix)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFakeGitLabPush: activation creates a webhook with a secret token and
// a deploy key without push access; a "Push Hook" with that token builds the
// pushed commit with the branch and short-SHA tags and sets a pending status; a
// wrong token is refused and a branch deletion skipped.
func TestFakeGitLabPush(t *testing.T) {
	e := requireEnv(t)
	const berthRepo = "gl"
	const auth = "PRIVATE-TOKEN " + gitlabToken
	e.createRepo(t, berthRepo)
	repo, gitURL, _ := e.forgeRepo(t)
	repo.Branch("develop")
	sha := repo.Commit("develop work", map[string]string{"notes.txt": "develop\n"})
	repo.Push("develop")
	tr := e.createTrigger(t, berthRepo, "gitlab", "mike/diaspora")

	api := "/gitlab/api/v4/projects/mike%2Fdiaspora"
	keyCall := e.forge.onlyCall(t, http.MethodPost, api+"/deploy_keys")
	hookCall := e.forge.onlyCall(t, http.MethodPost, api+"/hooks")
	if cp, ok := keyCall.Body["can_push"].(bool); !ok || cp {
		t.Errorf("GitLab deploy key can_push=%v, want false (body %v)", keyCall.Body["can_push"], keyCall.Body)
	}
	if u := bodyString(hookCall, "url"); u != e.hookURL(tr.ID) {
		t.Errorf("GitLab webhook url %q, want %q", u, e.hookURL(tr.ID))
	}
	for _, k := range []string{"push_events", "tag_push_events"} {
		if on, _ := hookCall.Body[k].(bool); !on {
			t.Errorf("GitLab webhook %s=%v, want true", k, hookCall.Body[k])
		}
	}
	secret := checkActivation(t, e, tr, keyCall, hookCall, auth, "token")

	const fixtureSHA = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
	rewrite := []string{fixtureSHA, sha, "git@gitlab.example.com:mike/diaspora.git", gitURL, "https://gitlab.example.com/mike/diaspora.git", gitURL}
	deliver := func(name string, token string) (int, string) {
		body := fixture(t, name, rewrite...)
		return e.post(t, e.hookURL(tr.ID), map[string]string{
			"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": token, "X-Gitlab-Event-UUID": harness.RandomHex(16),
		}, body)
	}
	if code, body := deliver("gitlab/push_branch.json", secret+"x"); code != http.StatusUnauthorized {
		t.Errorf("wrong X-Gitlab-Token: %d %s, want 401", code, body)
	}
	e.latestDelivery(t, berthRepo, tr.ID, "rejected")
	if code, body := deliver("gitlab/push_delete.json", secret); code != http.StatusOK {
		t.Errorf("branch deletion: %d %s, want 200", code, body)
	}
	e.latestDelivery(t, berthRepo, tr.ID, "skipped")
	if bs := e.triggerBuilds(t, berthRepo, tr.ID); len(bs) != 0 {
		t.Fatalf("%d builds before the push, want 0", len(bs))
	}
	if code, body := deliver("gitlab/push_branch.json", secret); code != http.StatusOK {
		t.Fatalf("push: %d %s, want 200", code, body)
	}
	bs := e.triggerBuilds(t, berthRepo, tr.ID)
	if len(bs) != 1 {
		t.Fatalf("push queued %d builds, want 1", len(bs))
	}
	if want := []string{"develop", sha[:7]}; !sameTags(bs[0].Tags, want) {
		t.Errorf("build tags %q, want %q (develop is not the default branch)", bs[0].Tags, want)
	}
	d := e.latestDelivery(t, berthRepo, tr.ID, "accepted")
	if d.BuildID == nil || *d.BuildID != bs[0].ID {
		t.Errorf("accepted delivery %+v does not name build %s", d, bs[0].ID)
	}
	st := waitFirstStatus(t, e.forge, api+"/statuses/"+sha)
	if s := bodyString(st, "state"); s != "pending" {
		t.Errorf("first GitLab status %q, want pending", s)
	}
	if u := bodyString(st, "target_url"); !strings.HasSuffix(u, "/repository/"+adminUser+"/"+berthRepo+"/build/"+bs[0].ID) {
		t.Errorf("GitLab status target_url %q does not link build %s", u, bs[0].ID)
	}
	// GitLab's happy path, built end to end: the worker fetches the pushed
	// commit from the clone URL of the payload (the local git daemon).
	b := e.waitBuild(t, berthRepo, bs[0].ID)
	e.checkImage(t, berthRepo, b, "develop", sha[:7])
}

// TestFakeBitbucketPush: activation creates a webhook with a secret and an
// access key; a "repo:push" signed with X-Hub-Signature builds the pushed
// commit (from clone_url) with the escaped branch and short-SHA tags (the
// default branch comes from the API) and sets an INPROGRESS status; a
// tampered signature is refused and a branch deletion skipped.
func TestFakeBitbucketPush(t *testing.T) {
	e := requireEnv(t)
	const berthRepo = "bb"
	const auth = "Bearer " + bitbucketToken
	e.createRepo(t, berthRepo)
	// Bitbucket's payloads name no clone URL (Quay derives
	// git@bitbucket.org:<full_name>.git); clone_url points the build at the
	// local git daemon instead.
	repo, gitURL, _ := e.forgeRepo(t)
	repo.Branch("release/2.x")
	sha := repo.Commit("release work", map[string]string{"notes.txt": "release\n"})
	repo.Push("release/2.x")
	cfg := triggerConfig("analytical/engine")
	cfg["clone_url"] = gitURL
	var tr triggerView
	if code, resp := e.api(t, http.MethodPost, "/api/v1/repository/"+adminUser+"/"+berthRepo+"/trigger/",
		map[string]any{"service": "bitbucket", "config": cfg}, &tr); code != http.StatusCreated {
		t.Fatalf("creating the bitbucket trigger: %d %s", code, resp)
	}

	api := "/bitbucket/2.0/repositories/analytical/engine"
	keyCall := e.forge.onlyCall(t, http.MethodPost, api+"/deploy-keys")
	hookCall := e.forge.onlyCall(t, http.MethodPost, api+"/hooks")
	if u := bodyString(hookCall, "url"); u != e.hookURL(tr.ID) {
		t.Errorf("Bitbucket webhook url %q, want %q", u, e.hookURL(tr.ID))
	}
	if ev, _ := hookCall.Body["events"].([]any); !slices.Contains(ev, any("repo:push")) {
		t.Errorf("Bitbucket webhook events %v, want repo:push", hookCall.Body["events"])
	}
	secret := checkActivation(t, e, tr, keyCall, hookCall, auth, "secret")
	// Activation took the clone link from the repository's API (the fake
	// Bitbucket-compatible server), not git@bitbucket.org; clone_url still
	// overrides it for the builds below.
	if want := "ssh://git@git.bitbucket.test:7999/analytical/engine.git"; tr.Config.ForgeGitURL != want {
		t.Errorf("recorded clone link %q, want the API's %q", tr.Config.ForgeGitURL, want)
	}

	const fixtureSHA = "f00dfacecafe0123456789abcdef0123456789ab"
	deliver := func(name string, tamper bool) (int, string) {
		body := fixture(t, name, fixtureSHA, sha)
		sig := sign(secret, body)
		if tamper {
			// Change the commit's last hex digit to another one: a fixed
			// replacement would leave 1 commit in 16 untouched.
			last := "0"
			if sha[39] == '0' {
				last = "1"
			}
			tampered := []byte(strings.Replace(string(body), sha, sha[:39]+last, 1))
			if bytes.Equal(tampered, body) {
				t.Fatalf("tampering left %s unchanged", name)
			}
			body = tampered
		}
		return e.post(t, e.hookURL(tr.ID), map[string]string{
			"X-Event-Key": "repo:push", "X-Hub-Signature": sig, "X-Request-UUID": harness.RandomHex(16),
		}, body)
	}
	if code, body := deliver("bitbucket/push_branch.json", true); code != http.StatusUnauthorized {
		t.Errorf("tampered payload: %d %s, want 401", code, body)
	}
	e.latestDelivery(t, berthRepo, tr.ID, "rejected")
	if code, body := deliver("bitbucket/push_delete.json", false); code != http.StatusOK {
		t.Errorf("branch deletion: %d %s, want 200", code, body)
	}
	e.latestDelivery(t, berthRepo, tr.ID, "skipped")
	if code, body := deliver("bitbucket/push_branch.json", false); code != http.StatusOK {
		t.Fatalf("push: %d %s, want 200", code, body)
	}
	bs := e.triggerBuilds(t, berthRepo, tr.ID)
	if len(bs) != 1 {
		t.Fatalf("push queued %d builds, want 1", len(bs))
	}
	if want := []string{"release_2.x", sha[:7]}; !sameTags(bs[0].Tags, want) {
		t.Errorf("build tags %q, want %q", bs[0].Tags, want)
	}
	st := waitFirstStatus(t, e.forge, api+"/commit/"+sha+"/statuses/build")
	if s := bodyString(st, "state"); s != "INPROGRESS" {
		t.Errorf("first Bitbucket status %q, want INPROGRESS", s)
	}
	if u := bodyString(st, "url"); !strings.HasSuffix(u, "/repository/"+adminUser+"/"+berthRepo+"/build/"+bs[0].ID) {
		t.Errorf("Bitbucket status url %q does not link build %s", u, bs[0].ID)
	}
	// Bitbucket's happy path, built end to end from clone_url.
	b := e.waitBuild(t, berthRepo, bs[0].ID)
	e.checkImage(t, berthRepo, b, "release_2.x", sha[:7])
}
