package api

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/testenv"
)

// loopbackListener is testenv.CountingListener's address and count, and
// the address of a port that was just closed.
func loopbackListener(t *testing.T) (open, closed string, accepted *atomic.Int32) {
	t.Helper()
	open, accepted = testenv.CountingListener(t)
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed = cl.Addr().String()
	cl.Close()
	return open, closed, accepted
}

// sameDetail asserts that every response is a 400 with the same detail,
// once each address's port is taken out, and returns that detail.
func sameDetail(t *testing.T, rs map[string]resp) string {
	t.Helper()
	var first, firstName string
	for name, r := range rs {
		assertError(t, r, http.StatusBadRequest, "invalid_request")
		d := r.obj()["detail"].(string)
		if first == "" {
			first, firstName = d, name
		} else if d != first {
			t.Errorf("%s and %s answer differently:\n%s\n%s", firstName, name, first, d)
		}
	}
	return first
}

func TestArchiveURLOnInternalAddressesIsRefused(t *testing.T) {
	e := newBuildEnv(t, nil)
	e.setup()
	open, closed, accepted := loopbackListener(t)
	_, openPort, _ := net.SplitHostPort(open)
	const path = "/api/v1/repository/alice/app/build/"
	rs := map[string]resp{}
	for _, u := range []string{
		"http://" + open + "/api/v1/discovery",
		"http://" + closed + "/api/v1/discovery",
		"http://localhost:" + openPort + "/",
		"https://[::1]/ctx.tar.gz",
		"http://169.254.169.254/latest/meta-data/",
		"http://[::ffff:10.0.0.1]/ctx.tar",
		"http://0.0.0.0:" + openPort + "/",
		"http://100.100.100.200/",
		"http://[fd00::1]/",
	} {
		rs[u] = e.call(http.MethodPost, path, basic("alice"), map[string]any{"archive_url": u})
	}
	if d := sameDetail(t, rs); !strings.Contains(d, "OUTBOUND_ALLOWED_NETWORKS") {
		t.Errorf("detail %q does not say how to allow a network", d)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the API connected to a refused address %d times", n)
	}
	// An allowed network is an exception.
	allowed := newBuildEnv(t, map[string]any{"OUTBOUND_ALLOWED_NETWORKS": []any{"127.0.0.0/8"}})
	allowed.setup()
	allowed.must(http.StatusCreated, http.MethodPost, path, basic("alice"), map[string]any{"archive_url": "http://" + open + "/ctx.tar.gz"})
}

func TestTriggerSourcesOnInternalAddressesAreRefused(t *testing.T) {
	e, _, scanned := newTriggerEnvConfig(t, nil)
	open, closed, accepted := loopbackListener(t)
	_, openPort, _ := net.SplitHostPort(open)
	const base = "/api/v1/repository/alice/app/trigger/"
	create := func(source string) resp {
		return e.call(http.MethodPost, base, basic("alice"), map[string]any{"service": "custom-git", "config": map[string]any{"build_source": source}})
	}
	rs := map[string]resp{}
	for _, src := range []string{
		"ssh://git@" + open + "/x.git", "ssh://git@" + closed + "/x.git",
		"git://" + open + "/x.git", "git://" + closed + "/x.git",
		"http://" + open + "/x.git", "https://localhost:" + openPort + "/x.git",
		"git@127.0.0.1:x.git", "ssh://git@[::1]/x.git", "git@169.254.169.254:x.git", "ssh://git@10.0.0.1/x.git",
	} {
		rs["create "+src] = create(src)
	}
	// Activating an inactive trigger checks the same way.
	repo, err := e.store.GetRepository(context.Background(), "alice", "app")
	if err != nil {
		t.Fatal(err)
	}
	inactive := &store.Trigger{UUID: uuid.NewString(), RepoID: repo.ID, Service: "custom-git", Enabled: true}
	if err := e.store.CreateTrigger(context.Background(), inactive); err != nil {
		t.Fatal(err)
	}
	rs["activate"] = e.call(http.MethodPost, base+inactive.UUID+"/activate", basic("alice"),
		map[string]any{"config": map[string]any{"build_source": "ssh://git@" + open + "/x.git"}})
	if d := sameDetail(t, rs); !strings.Contains(d, "OUTBOUND_ALLOWED_NETWORKS") {
		t.Errorf("detail %q does not say how to allow a network", d)
	}
	// Local transports are refused when the trigger is made, not only
	// when a build fetches.
	for _, src := range []string{"file:///etc/app.git", "/srv/git/app.git", "ftp://git.example.com/app.git", "git@[::1]:x.git"} {
		r := create(src)
		assertError(t, r, http.StatusBadRequest, "invalid_request")
		if d := r.obj()["detail"].(string); !strings.Contains(d, "Invalid git source") {
			t.Errorf("%s: detail %q", src, d)
		}
	}
	if l := e.must(http.StatusOK, http.MethodGet, base, basic("alice"), nil); len(l.obj()["triggers"].([]any)) != 1 {
		t.Fatalf("refused triggers were kept: %s", l.body)
	}
	if len(*scanned) != 0 {
		t.Errorf("host keys were scanned: %v", *scanned)
	}

	// A trigger made before the policy (or whose source was allowed then)
	// is refused by start and analyze, which fetch from it.
	tr := e.must(http.StatusCreated, http.MethodPost, base, basic("alice"), map[string]any{"service": "custom-git",
		"config": map[string]any{"build_source": "git@git.example.com:team/app.git"}})
	id := tr.obj()["id"].(string)
	stored, err := e.store.GetTrigger(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	stored.Config, _ = json.Marshal(map[string]any{"build_source": "git://" + open + "/x.git"})
	if err := e.store.UpdateTrigger(context.Background(), stored); err != nil {
		t.Fatal(err)
	}
	r := e.call(http.MethodPost, base+id+"/start", basic("alice"), map[string]any{})
	assertError(t, r, http.StatusBadRequest, "invalid_request")
	if d := r.obj()["detail"].(string); !strings.Contains(d, "OUTBOUND_ALLOWED_NETWORKS") {
		t.Errorf("start: detail %q", d)
	}
	for _, src := range []string{"git://" + open + "/x.git", "git://" + closed + "/x.git", "http://" + open + "/x.git"} {
		a := e.must(http.StatusOK, http.MethodPost, base+id+"/analyze", basic("alice"), map[string]any{"config": map[string]any{"build_source": src}})
		if a.obj()["status"] != "error" || !strings.Contains(a.obj()["message"].(string), "OUTBOUND_ALLOWED_NETWORKS") {
			t.Errorf("analyze of %s: %s", src, a.body)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the API connected to a refused address %d times", n)
	}
}
