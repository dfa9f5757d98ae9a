package webhook

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/buildmanager/buildmanagertest"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
	"github.com/berth-dev/berth/storage/filesystem"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
	"github.com/berth-dev/berth/triggers/manage"
)

// env is the handler over a real SQLite store and a real Manager with the
// embedded queue and no executors: submitted builds stay waiting.
type env struct {
	t       *testing.T
	st      store.Store
	m       *buildmanager.Manager
	secrets *auth.Secrets
	h       *Handler
	repo    *store.Repository
	alice   *store.Account
}

func newEnv(t *testing.T, o Options) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite://"+t.TempDir()+"/db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rc := buildmanagertest.Redis(t)
	blobs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m, err := buildmanager.New(buildmanager.Options{Store: st, Blobs: blobs, Redis: rc, Prefix: "t-", SigningKey: key,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := auth.NewSecrets([]byte("webhook test key material"))
	if err != nil {
		t.Fatal(err)
	}
	alice := &store.Account{Kind: store.KindUser, Name: "alice", Enabled: true}
	if err := st.CreateAccount(ctx, alice); err != nil {
		t.Fatal(err)
	}
	repo := &store.Repository{NamespaceID: alice.ID, Name: "app", Visibility: store.Private}
	if err := st.CreateRepository(ctx, repo); err != nil {
		t.Fatal(err)
	}
	repo.Namespace = "alice"
	o.Store, o.Manager, o.Secrets = st, m, sec
	o.Logger = slog.New(slog.DiscardHandler)
	if o.ExternalURL == "" {
		o.ExternalURL = "https://berth.example.com"
	}
	return &env{t: t, st: st, m: m, secrets: sec, h: NewHandler(o), repo: repo, alice: alice}
}

const secret = "s3cr3t-webhook-secret"

// trigger makes an enabled, activated trigger of service with config.
func (e *env) trigger(id, service, config string) *store.Trigger {
	e.t.Helper()
	tr := &store.Trigger{UUID: id, RepoID: e.repo.ID, Service: service, Config: json.RawMessage(config), Enabled: true,
		SealedSecret: e.secrets.Seal([]byte(secret), manage.SecretPurpose(id)), PublicKey: "ssh-ed25519 AAAA test",
		SealedPrivateKey: e.secrets.Seal([]byte("PRIVATE KEY PEM"), manage.PrivateKeyPurpose(id)),
		KnownHosts:       "[git.example.com]:22 ssh-ed25519 HOSTKEY", ConnectedUserID: e.alice.ID, HookID: "1"}
	if err := e.st.CreateTrigger(context.Background(), tr); err != nil {
		e.t.Fatal(err)
	}
	return tr
}

func fixture(t *testing.T, service, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", service, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post delivers body to trigger id and returns the status and body.
func (e *env) post(id string, body []byte, hdr map[string]string) (int, string) {
	e.t.Helper()
	r := httptest.NewRequest(http.MethodPost, PathPrefix+id, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

func tokenAuth(pw string) map[string]string {
	r, _ := http.NewRequest(http.MethodPost, "/", nil)
	r.SetBasicAuth(triggers.TokenUsername, pw)
	return map[string]string{"Authorization": r.Header.Get("Authorization")}
}

func with(h map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// builds lists the repository's builds, oldest first.
func (e *env) builds() []store.Build {
	e.t.Helper()
	bs, err := e.st.ListBuilds(context.Background(), e.repo.ID, time.Time{}, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	slices.Reverse(bs)
	return bs
}

func (e *env) deliveries(id string) []store.TriggerDelivery {
	e.t.Helper()
	ds, err := e.st.ListTriggerDeliveries(context.Background(), id, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return ds
}

func wantAnswer(t *testing.T, code int, body string, wantCode int, wantBody string) {
	t.Helper()
	if code != wantCode || (wantBody != "" && strings.TrimSpace(body) != wantBody) {
		t.Fatalf("answer %d %q, want %d %q", code, body, wantCode, wantBody)
	}
}

func TestCustomGitAnswers(t *testing.T) {
	e := newEnv(t, Options{MaxPayloadBytes: 4096})
	e.trigger("cg", triggers.ServiceCustomGit, `{"build_source":"git@git.example.com:team/app.git","dockerfile_path":"/build/Dockerfile"}`)
	push := fixture(t, "custom-git", "push.json")

	code, body := e.post("cg", push, nil)
	wantAnswer(t, code, body, 401, "Unauthorized")
	code, body = e.post("cg", push, tokenAuth("wrong"))
	wantAnswer(t, code, body, 401, "Unauthorized")
	// A present but wrong HMAC fails even with the right token.
	code, _ = e.post("cg", push, with(tokenAuth(secret), "X-Hub-Signature-256", triggers.SignSHA256(push, []byte("other"))))
	wantAnswer(t, code, "", 401, "")
	if n := len(e.builds()); n != 0 {
		t.Fatalf("%d builds after unauthenticated deliveries", n)
	}

	code, body = e.post("cg", push, tokenAuth(secret))
	wantAnswer(t, code, body, 200, "Okay")
	bs := e.builds()
	if len(bs) != 1 {
		t.Fatalf("%d builds", len(bs))
	}
	b := bs[0]
	g := b.Request.Git
	if g == nil || g.URL != "git@git.example.com:team/app.git" || g.CommitSHA != "1c002dd" || g.Ref != "refs/heads/master" {
		t.Fatalf("git source %+v", g)
	}
	if !slices.Equal(b.Tags, []string{"master", "latest"}) || b.TriggerID != "cg" || b.Phase != store.PhaseWaiting ||
		b.Request.DockerfilePath != "/build/Dockerfile" || b.Request.Context != "/build" || b.DisplayName != "1c002dd" ||
		b.Requester != "alice" {
		t.Fatalf("build %+v", b)
	}
	var md triggers.Metadata
	if err := json.Unmarshal(b.TriggerMetadata, &md); err != nil || md.GitURL != g.URL || md.CommitInfo == nil || md.CommitInfo.Message != "initial commit" {
		t.Fatalf("trigger metadata %s: %v", b.TriggerMetadata, err)
	}

	// The worker gets the trigger's deploy key and the recorded host key.
	src, err := manage.GitSource(e.st, e.secrets)(context.Background(), &b)
	if err != nil || src.PrivateKey != "PRIVATE KEY PEM" || src.KnownHosts != "[git.example.com]:22 ssh-ed25519 HOSTKEY" ||
		src.Url != g.URL || src.CommitSha != "1c002dd" {
		t.Fatalf("GitSource = %+v, %v", src, err)
	}

	skip := bytes.Replace(push, []byte("initial commit"), []byte("docs only [skip build]"), 1)
	code, body = e.post("cg", skip, tokenAuth(secret))
	wantAnswer(t, code, body, 200, "Okay")
	code, _ = e.post("cg", []byte(`{"commit": 5`), tokenAuth(secret))
	wantAnswer(t, code, "", 400, "")
	code, _ = e.post("cg", []byte(`{"commit":"xyz","ref":"refs/heads/a","default_branch":"a"}`), tokenAuth(secret))
	wantAnswer(t, code, "", 400, "")
	code, _ = e.post("cg", bytes.Repeat([]byte(" "), 5000), tokenAuth(secret))
	wantAnswer(t, code, "", 413, "")
	code, _ = e.post("nope", push, tokenAuth(secret))
	wantAnswer(t, code, "", 404, "")
	if n := len(e.builds()); n != 1 {
		t.Fatalf("%d builds, want still 1", n)
	}

	ds := e.deliveries("cg")
	var statuses []string
	for i := len(ds) - 1; i >= 0; i-- {
		statuses = append(statuses, string(ds[i].Status))
	}
	want := []string{"rejected", "rejected", "rejected", "accepted", "skipped", "rejected", "rejected", "rejected"}
	if !slices.Equal(statuses, want) {
		t.Fatalf("delivery statuses %v, want %v", statuses, want)
	}
	acc := ds[len(ds)-4]
	if acc.BuildID != b.ID || acc.Event != "push" {
		t.Fatalf("accepted delivery %+v", acc)
	}
	if r := ds[len(ds)-5].Reason; !strings.HasPrefix(r, string(triggers.SkipCommitMessage)) {
		t.Fatalf("skip reason %q", r)
	}

	// A disabled trigger answers Quay's 400 to an authenticated delivery.
	tr, _ := e.st.GetTrigger(context.Background(), "cg")
	tr.Enabled, tr.DisabledReason = false, store.DisabledByUser
	if err := e.st.UpdateTrigger(context.Background(), tr); err != nil {
		t.Fatal(err)
	}
	code, body = e.post("cg", push, tokenAuth(secret))
	wantAnswer(t, code, body, 400, manage.DisabledMessage)
	code, _ = e.post("cg", push, nil)
	wantAnswer(t, code, "", 401, "")
	if n := len(e.builds()); n != 1 {
		t.Fatalf("disabled trigger built: %d builds", n)
	}
}

func TestGitHubReplayAndTagOnBuiltCommit(t *testing.T) {
	e := newEnv(t, Options{})
	e.trigger("gh", triggers.ServiceGitHub, `{"build_source":"octo-org/hello-app","tag_templates":["${commit_info.short_sha}"]}`)
	branch := fixture(t, "github", "push_branch.json")
	sign := func(body []byte, delivery string) map[string]string {
		return map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
			"X-Hub-Signature-256": triggers.SignSHA256(body, []byte(secret))}
	}
	code, _ := e.post("gh", branch, map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"})
	wantAnswer(t, code, "", 401, "")
	// The unsigned attempt did not burn d-1.
	code, body := e.post("gh", branch, sign(branch, "d-1"))
	wantAnswer(t, code, body, 200, "Okay")
	code, body = e.post("gh", branch, sign(branch, "d-1"))
	wantAnswer(t, code, body, 200, "Okay")
	bs := e.builds()
	if len(bs) != 1 || !slices.Equal(bs[0].Tags, []string{"9a3c5f7", "main", "latest"}) ||
		bs[0].Request.Git.URL != "git@github.com:octo-org/hello-app.git" {
		t.Fatalf("builds after a replay: %+v", bs)
	}
	// A tag push of the commit just built builds again: no dedup by commit.
	tag := fixture(t, "github", "push_tag.json")
	code, _ = e.post("gh", tag, sign(tag, "d-2"))
	wantAnswer(t, code, "", 200, "")
	bs = e.builds()
	if len(bs) != 2 || bs[1].Request.Git.Ref != "refs/tags/v1.4.0" || !slices.Equal(bs[1].Tags, []string{"9a3c5f7", "v1.4.0"}) ||
		bs[1].Request.Git.CommitSHA != bs[0].Request.Git.CommitSHA {
		t.Fatalf("tag build: %+v", bs)
	}
	ping := fixture(t, "github", "ping.json")
	code, _ = e.post("gh", ping, with(sign(ping, "d-3"), "X-GitHub-Event", "ping"))
	wantAnswer(t, code, "", 200, "")
	del := fixture(t, "github", "push_delete.json")
	code, _ = e.post("gh", del, sign(del, "d-4"))
	wantAnswer(t, code, "", 200, "")
	code, _ = e.post("gh", tag, with(sign(tag, "d-5"), "X-Hub-Signature-256", triggers.SignSHA256(tag, []byte("nope"))))
	wantAnswer(t, code, "", 401, "")
	code, _ = e.post("gh", []byte("{not json"), sign([]byte("{not json"), "d-6"))
	wantAnswer(t, code, "", 400, "")
	if n := len(e.builds()); n != 2 {
		t.Fatalf("%d builds, want 2", n)
	}
	byID := map[string]store.TriggerDelivery{}
	replays := 0
	for _, d := range e.deliveries("gh") {
		byID[d.ID] = d
		if strings.HasPrefix(d.Reason, "replay of delivery d-1") {
			replays++
		}
	}
	if byID["d-1"].Status != store.DeliveryAccepted || byID["d-2"].Status != store.DeliveryAccepted ||
		byID["d-3"].Status != store.DeliverySkipped || byID["d-3"].Event != "ping" ||
		byID["d-4"].Status != store.DeliverySkipped || !strings.HasPrefix(byID["d-4"].Reason, string(triggers.SkipRefDeleted)) ||
		byID["d-6"].Status != store.DeliveryRejected || replays != 1 {
		t.Fatalf("deliveries %+v", byID)
	}
	if _, ok := byID["d-5"]; ok {
		t.Fatal("a badly signed delivery claimed its delivery id")
	}
}

func TestGitLabAndBitbucketSignatures(t *testing.T) {
	e := newEnv(t, Options{})
	e.trigger("gl", triggers.ServiceGitLab, `{"build_source":"mike/diaspora"}`)
	e.trigger("bb", triggers.ServiceBitbucket, `{"build_source":"analytical/engine","branchtag_regex":"heads/release/.+"}`)
	gl := fixture(t, "gitlab", "push_branch.json")
	code, _ := e.post("gl", gl, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "wrong"})
	wantAnswer(t, code, "", 401, "")
	code, _ = e.post("gl", gl, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": "g1"})
	wantAnswer(t, code, "", 200, "")
	bb := fixture(t, "bitbucket", "push_branch.json")
	code, _ = e.post("bb", bb, map[string]string{"X-Event-Key": "repo:push"})
	wantAnswer(t, code, "", 401, "")
	code, _ = e.post("bb", bb, map[string]string{"X-Event-Key": "repo:push", "X-Request-UUID": "b1",
		"X-Hub-Signature": triggers.SignSHA256(bb, []byte(secret))})
	wantAnswer(t, code, "", 200, "")
	// Filtered by branchtag_regex: answered, recorded, not built.
	tag := fixture(t, "bitbucket", "push_tag.json")
	code, _ = e.post("bb", tag, map[string]string{"X-Event-Key": "repo:push", "X-Request-UUID": "b2",
		"X-Hub-Signature": triggers.SignSHA256(tag, []byte(secret))})
	wantAnswer(t, code, "", 200, "")
	bs := e.builds()
	if len(bs) != 2 || bs[0].TriggerID != "gl" || bs[0].Request.Git.Ref != "refs/heads/develop" ||
		bs[1].TriggerID != "bb" || !slices.Equal(bs[1].Tags, []string{"release_2.x"}) {
		t.Fatalf("builds %+v", bs)
	}
	if d := e.deliveries("bb")[0]; d.ID != "b2" || d.Status != store.DeliverySkipped || !strings.HasPrefix(d.Reason, "filtered") {
		t.Fatalf("filtered delivery %+v", d)
	}
}

func TestSerialPolicyCancelsSupersededBuilds(t *testing.T) {
	e := newEnv(t, Options{})
	e.trigger("cg", triggers.ServiceCustomGit, `{"build_source":"https://git.example.com/app.git","concurrency":"serial"}`)
	e.trigger("par", triggers.ServiceCustomGit, `{"build_source":"https://git.example.com/app.git"}`)
	push := func(id, commit, ref string) {
		body := []byte(`{"commit":"` + commit + `","ref":"` + ref + `","default_branch":"main"}`)
		code, b := e.post(id, body, tokenAuth(secret))
		wantAnswer(t, code, b, 200, "Okay")
	}
	push("cg", "aaaaaaa", "refs/heads/main")
	push("cg", "bbbbbbb", "refs/heads/feature")
	push("cg", "ccccccc", "refs/heads/main")
	push("par", "ddddddd", "refs/heads/main")
	push("par", "eeeeeee", "refs/heads/main")
	phases := map[string]store.BuildPhase{}
	for _, b := range e.builds() {
		phases[b.Request.Git.CommitSHA] = b.Phase
	}
	want := map[string]store.BuildPhase{"aaaaaaa": store.PhaseCancelled, "bbbbbbb": store.PhaseWaiting,
		"ccccccc": store.PhaseWaiting, "ddddddd": store.PhaseWaiting, "eeeeeee": store.PhaseWaiting}
	for sha, p := range want {
		if phases[sha] != p {
			t.Fatalf("phases %v, want %v", phases, want)
		}
	}
}

// recorder is a local fake of a forge's API that records every request.
type recorder struct {
	mu    sync.Mutex
	calls []string
	srv   *httptest.Server
	seen  chan string
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{seen: make(chan string, 64)}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c := r.Method + " " + r.URL.Path + " " + string(b)
		rec.mu.Lock()
		rec.calls = append(rec.calls, c)
		rec.mu.Unlock()
		rec.seen <- c
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id": 1}`)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (r *recorder) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case c := <-r.seen:
		method, rest, _ := strings.Cut(c, " ")
		path, body, _ := strings.Cut(rest, " ")
		var m map[string]any
		_ = json.Unmarshal([]byte(body), &m)
		if m == nil {
			m = map[string]any{}
		}
		m["_method"], m["_path"] = method, path
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("the forge was not called")
		return nil
	}
}

func TestFakeGitHubCommitStatusesAndAutoDisable(t *testing.T) {
	fake := newRecorder(t)
	e := newEnv(t, Options{Forges: triggers.Forges{Configs: map[string]forge.Config{
		triggers.ServiceGitHub: forge.GitHubConfig{APIEndpoint: fake.srv.URL, AccessToken: "tok"}}},
		FailureThreshold: 2, InternalErrorThreshold: 1})
	e.trigger("gh", triggers.ServiceGitHub, `{"build_source":"octo-org/hello-app"}`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(50 * time.Millisecond) // let Run subscribe

	branch := fixture(t, "github", "push_branch.json")
	code, _ := e.post("gh", branch, map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1",
		"X-Hub-Signature-256": triggers.SignSHA256(branch, []byte(secret))})
	wantAnswer(t, code, "", 200, "")
	b := e.builds()[0]
	const statuses = "/repos/octo-org/hello-app/statuses/9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d"
	got := fake.next(t)
	wantURL := "https://berth.example.com/repository/alice/app/build/" + b.ID
	if got["_path"] != statuses || got["state"] != "pending" || got["target_url"] != wantURL || got["context"] != "berth/build" {
		t.Fatalf("queued status %v", got)
	}
	if _, err := e.m.Cancel(context.Background(), b.ID); err != nil {
		t.Fatal(err)
	}
	if got := fake.next(t); got["state"] != "error" || got["target_url"] != wantURL {
		t.Fatalf("cancelled status %v", got)
	}

	// Build ends the manager would publish: success and failure statuses,
	// and the counters that disable the trigger.
	md, _ := json.Marshal(map[string]string{"commit": "9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d"})
	end := func(kind events.Kind, phase store.BuildPhase) {
		e.m.Events().Publish(events.Event{Kind: kind, Namespace: "alice", Repository: "app", Data: events.BuildData{
			BuildID: b.ID, BuildName: "9a3c5f7", TriggerID: "gh", TriggerMetadata: json.RawMessage(md), Phase: string(phase)}})
	}
	end(events.BuildFailure, store.PhaseError)
	if got := fake.next(t); got["state"] != "failure" {
		t.Fatalf("failure status %v", got)
	}
	end(events.BuildSuccess, store.PhaseComplete)
	if got := fake.next(t); got["state"] != "success" {
		t.Fatalf("success status %v", got)
	}
	end(events.BuildFailure, store.PhaseError)
	fake.next(t)
	if tr, _ := e.st.GetTrigger(context.Background(), "gh"); !tr.Enabled || tr.SuccessiveFailures != 1 {
		t.Fatalf("after one failure since the success: %+v", tr)
	}
	end(events.BuildFailure, store.PhaseError)
	fake.next(t)
	tr, _ := e.st.GetTrigger(context.Background(), "gh")
	if tr.Enabled || tr.DisabledReason != store.DisabledByFailures {
		t.Fatalf("after two successive failures: enabled=%v reason=%q", tr.Enabled, tr.DisabledReason)
	}
	code, body := e.post("gh", branch, map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-2",
		"X-Hub-Signature-256": triggers.SignSHA256(branch, []byte(secret))})
	wantAnswer(t, code, body, 400, manage.DisabledMessage)
}
