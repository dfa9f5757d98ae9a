package webhook

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
)

// F16: GitHub's delivery-ID header is not covered by the signature, so a
// captured delivery replayed under a fresh ID used to build again; a
// custom-git hook without X-Berth-Delivery could be replayed as it was.
// The body decides now, within the replay window.
func TestReplayedBodyIsSkippedWhateverItsDeliveryID(t *testing.T) {
	e := newEnv(t, Options{})
	e.trigger("gh", triggers.ServiceGitHub, `{"build_source":"octo-org/hello-app"}`)
	e.trigger("cg", triggers.ServiceCustomGit, `{"build_source":"git@git.example.com:team/app.git"}`)
	branch := fixture(t, "github", "push_branch.json")
	sign := func(delivery string) map[string]string {
		return map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
			"X-Hub-Signature-256": triggers.SignSHA256(branch, []byte(secret))}
	}
	code, body := e.post("gh", branch, sign("d-1"))
	wantAnswer(t, code, body, 200, "Okay")
	for _, replay := range []map[string]string{sign("d-forged"), with(sign(""), "X-GitHub-Delivery", "")} {
		code, body = e.post("gh", branch, replay)
		wantAnswer(t, code, body, 200, "Okay")
	}
	push := fixture(t, "custom-git", "push.json")
	for range 2 {
		code, body = e.post("cg", push, tokenAuth(secret))
		wantAnswer(t, code, body, 200, "Okay")
	}
	if n := len(e.builds()); n != 2 {
		t.Fatalf("%d builds, want one per trigger", n)
	}
	for _, id := range []string{"gh", "cg"} {
		replays := 0
		for _, d := range e.deliveries(id) {
			if d.Status == store.DeliverySkipped && d.Reason == "replay of an earlier delivery's payload" {
				replays++
			}
		}
		if want := map[string]int{"gh": 2, "cg": 1}[id]; replays != want {
			t.Errorf("trigger %s: %d deliveries recorded as replays, want %d: %+v", id, replays, want, e.deliveries(id))
		}
	}
	// Another body (a new push) builds as usual.
	other := []byte(strings.Replace(string(push), "1c002dd", "2d113ee", 1))
	code, body = e.post("cg", other, tokenAuth(secret))
	wantAnswer(t, code, body, 200, "Okay")
	if n := len(e.builds()); n != 3 {
		t.Fatalf("%d builds after a new push, want 3", n)
	}
}

// After the window a body is new again: the window bounds what is kept.
func TestReplayWindowEnds(t *testing.T) {
	e := newEnv(t, Options{ReplayWindow: 2 * time.Second})
	e.trigger("cg", triggers.ServiceCustomGit, `{"build_source":"git@git.example.com:team/app.git"}`)
	push := fixture(t, "custom-git", "push.json")
	e.post("cg", push, tokenAuth(secret))
	e.post("cg", push, tokenAuth(secret))
	if n := len(e.builds()); n != 1 {
		t.Fatalf("%d builds within the window, want 1", n)
	}
	time.Sleep(2200 * time.Millisecond)
	code, body := e.post("cg", push, tokenAuth(secret))
	wantAnswer(t, code, body, 200, "Okay")
	if n := len(e.builds()); n != 2 {
		t.Fatalf("%d builds after the window, want 2", n)
	}
}

// F17(c): every unauthenticated post to a known trigger URL wrote a
// delivery row, and 1,000 of them pushed the real deliveries out of the
// kept history. Beyond a few a minute they are answered 429 and not
// recorded; authenticated deliveries are never held back.
func TestUnauthenticatedDeliveriesAreRateLimited(t *testing.T) {
	e := newEnv(t, Options{})
	e.trigger("cg", triggers.ServiceCustomGit, `{"build_source":"git@git.example.com:team/app.git"}`)
	push := fixture(t, "custom-git", "push.json")
	answered, limited := 0, 0
	for i := range 100 {
		code, _ := e.post("cg", push, tokenAuth("guess"))
		switch code {
		case http.StatusUnauthorized:
			answered++
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("unauthenticated post %d answered %d", i, code)
		}
		if i == 50 {
			code, body := e.post("cg", push, tokenAuth(secret))
			wantAnswer(t, code, body, 200, "Okay")
		}
	}
	// The bucket refills one every 6 s while the loop runs: allow a few.
	if answered > rejectedBurst+3 || limited < 100-rejectedBurst-3 {
		t.Fatalf("%d answered 401 and %d 429 of 100 unauthenticated posts", answered, limited)
	}
	ds := e.deliveries("cg")
	if len(ds) != answered+1 {
		t.Fatalf("%d deliveries recorded, want the %d answered and the real one", len(ds), answered)
	}
	if n := len(e.builds()); n != 1 {
		t.Fatalf("%d builds, want the authenticated delivery's", n)
	}
	// Another trigger's deliveries are not affected.
	e.trigger("other", triggers.ServiceCustomGit, `{"build_source":"git@git.example.com:team/app.git"}`)
	code, _ := e.post("other", push, tokenAuth("guess"))
	wantAnswer(t, code, "", 401, "")
}
