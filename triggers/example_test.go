package triggers_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/berth-dev/berth/triggers"
)

// webhook shows the order the webhook route calls this package in: size
// limit, authentication, delivery dedup, parse, prepare. Trigger lookup,
// the delivery store and the build manager belong to the caller.
func webhook(p triggers.Provider, secret []byte, cfg triggers.Config, seen map[string]bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := triggers.ReadPayload(r, triggers.MaxPayloadBytes)
		if err != nil {
			http.Error(w, err.Error(), triggers.StatusCode(err))
			return
		}
		if p.Service() == triggers.ServiceCustomGit {
			if err := triggers.CheckTokenAuth(r, secret); err != nil {
				http.Error(w, "Unauthorized", triggers.StatusCode(err))
				return
			}
		}
		if err := p.Verify(r, body, secret); err != nil {
			http.Error(w, "Unauthorized", triggers.StatusCode(err))
			return
		}
		if id := p.DeliveryID(r); id != "" {
			if seen[id] {
				fmt.Fprint(w, "Okay") // replay: recorded as skipped, no build
				return
			}
			seen[id] = true
		}
		ev, err := p.Parse(r, body)
		if err != nil {
			http.Error(w, err.Error(), triggers.StatusCode(err))
			return
		}
		if ev.Skip.Skipped() {
			fmt.Printf("skipped: %s\n", ev.Skip.Reason)
			fmt.Fprint(w, "Okay")
			return
		}
		prep, sk := triggers.Prepare(cfg, *ev.Push)
		if sk.Skipped() {
			fmt.Printf("skipped: %s\n", sk.Reason)
			fmt.Fprint(w, "Okay")
			return
		}
		fmt.Printf("build %s from %s, tags %v\n", prep.DisplayName(), prep.Metadata.GitURL, prep.Tags)
		fmt.Fprint(w, "Okay")
	}
}

func Example_webhookOrder() {
	secret := []byte("trigger-secret")
	cfg := triggers.Config{TagTemplates: []string{"${commit_info.short_sha}"}}
	h := webhook(triggers.GitHub{}, secret, cfg, map[string]bool{})
	body, _ := os.ReadFile("testdata/github/push_branch.json")
	deliver := func(sign bool) int {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/push/trigger/u", bytes.NewReader(body))
		r.Header.Set("X-GitHub-Event", "push")
		r.Header.Set("X-GitHub-Delivery", "d-1")
		if sign {
			r.Header.Set("X-Hub-Signature-256", triggers.SignSHA256(body, secret))
		}
		w := httptest.NewRecorder()
		h(w, r)
		return w.Code
	}
	fmt.Println(deliver(false)) // unsigned
	fmt.Println(deliver(true))  // builds
	fmt.Println(deliver(true))  // replay of d-1
	// Output:
	// 401
	// build 9a3c5f7 from git@github.com:octo-org/hello-app.git, tags [9a3c5f7 main latest]
	// 200
	// 200
}
