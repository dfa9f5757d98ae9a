package builds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// TestArchiveURLOnAllowedLoopback: the shared server allows 127.0.0.0/8
// (harness.LoopbackEgressConfig), and its worker, which gets the policy
// through its environment, builds from an archive URL there.
func TestArchiveURLOnAllowedLoopback(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, e.dockerfile("RUN true"))
	}))
	defer srv.Close()
	repo := newRepo(t, e, "archiveurl")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := e.client.RequestBuild(ctx, repo, harness.BuildRequest{ArchiveURL: srv.URL + "/Dockerfile", DockerTags: []string{"v1"}})
	if err != nil {
		t.Fatalf("requesting the build: %v", err)
	}
	b, _ = await(t, e, repo, b.ID, nil)
	if b.Phase != "complete" {
		t.Fatalf("build ended %s (error %q), want complete\n%s", b.Phase, deref(b.Error), formatLog(logsOf(t, e, repo, b.ID)))
	}
}

// TestLoopbackRefusedWithoutException: a server without
// OUTBOUND_ALLOWED_NETWORKS refuses a loopback archive_url and trigger
// build_source with one clear answer, the same for an open and a closed
// port, and never connects there.
func TestLoopbackRefusedWithoutException(t *testing.T) {
	suite.Require(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := harness.StartServer(ctx, harness.ServerOptions{Bin: suite.Bin, Dir: t.TempDir(),
		Config: harness.BuildManagerConfig(1, timeLimit), User: adminUser})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	client := harness.NewClient(srv)
	if err := client.CreateRepo(ctx, adminUser, "ssrf"); err != nil {
		t.Fatal(err)
	}

	var hits atomic.Int32
	open := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, `{"basePath":"/","secret":"internal"}`)
	}))
	defer open.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	details := map[string]string{}
	for _, addr := range []string{open.Listener.Addr().String(), closed} {
		_, err := client.RequestBuild(ctx, adminUser+"/ssrf", harness.BuildRequest{ArchiveURL: "http://" + addr + "/api/v1/discovery"})
		details["archive_url "+addr] = badRequestDetail(t, err)
		err = postJSON(ctx, client, "/api/v1/repository/"+adminUser+"/ssrf/trigger/",
			map[string]any{"service": "custom-git", "config": map[string]any{"build_source": "ssh://git@" + addr + "/x.git"}})
		details["build_source "+addr] = badRequestDetail(t, err)
	}
	seen := map[string]bool{}
	for what, d := range details {
		t.Logf("%s: %s", what, d)
		seen[d] = true
		if !strings.Contains(d, "OUTBOUND_ALLOWED_NETWORKS") || strings.Contains(d, "basePath") {
			t.Errorf("%s: detail %q", what, d)
		}
	}
	// One answer for archive URLs and one for git sources, whatever the port.
	if len(seen) != 2 {
		t.Errorf("answers differ by port: %v", details)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback server was reached %d times", n)
	}
}

// badRequestDetail is the detail of a 400 answer.
func badRequestDetail(t *testing.T, err error) string {
	t.Helper()
	var se *harness.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Fatalf("got %v, want a 400", err)
	}
	var body struct {
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal([]byte(se.Body), &body); err != nil || body.Detail == "" {
		t.Fatalf("400 without a detail: %s", se.Body)
	}
	return body.Detail
}

// postJSON posts body as c's user and wants 201.
func postJSON(ctx context.Context, c *harness.Client, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.User, c.Password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return &harness.StatusError{Method: http.MethodPost, URL: path, Code: resp.StatusCode, Body: string(data)}
	}
	return nil
}
