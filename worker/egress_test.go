package worker

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/worker/engine"
)

// loopbackEgress lets tests fetch from their loopback servers, as
// OUTBOUND_ALLOWED_NETWORKS: ["127.0.0.0/8"] does.
var loopbackEgress = func() *egress.Policy {
	p, err := egress.New(egress.Options{AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		panic(err)
	}
	return p
}()

// failedBuild runs job with the worker's default egress policy unless
// policy is given, and returns the build error it finished with.
func failedBuild(t *testing.T, job *pb.Job, policy *egress.Policy) *pb.BuildError {
	t.Helper()
	m := newFakeManager(t, baseJob(job), nil)
	cfg := m.config(t)
	cfg.Egress = policy
	eng := &fakeEngine{}
	if err := runWorker(t, m, cfg, eng); err != nil {
		t.Fatalf("Run: %v", err)
	}
	be := m.finish.GetError()
	if be == nil {
		t.Fatalf("finish = %v, want an error", m.finish)
	}
	if eng.called {
		t.Error("the engine ran")
	}
	return be
}

func TestArchiveURLOnLoopbackIsRefused(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "FROM scratch\n")
	}))
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	message := func(addr string) string {
		be := failedBuild(t, &pb.Job{Source: &pb.Job_ArchiveUrl{ArchiveUrl: "http://" + addr + "/api/v1/discovery"}}, nil)
		if be.GetCode() != engine.CodeContext || be.GetRetryable() || !strings.Contains(be.GetMessage(), "OUTBOUND_ALLOWED_NETWORKS") {
			t.Errorf("error = %v, want a %s user error naming OUTBOUND_ALLOWED_NETWORKS", be, engine.CodeContext)
		}
		return be.GetMessage()
	}
	if o, c := message(srv.Listener.Addr().String()), message(closed); o != c {
		t.Errorf("an open and a closed port give different errors:\n%s\n%s", o, c)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback server was fetched from %d times", n)
	}
}

func TestArchiveURLRedirectToMetadataIsRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	}))
	defer srv.Close()
	be := failedBuild(t, &pb.Job{Source: &pb.Job_ArchiveUrl{ArchiveUrl: srv.URL + "/ctx.tar.gz"}}, loopbackEgress)
	if be.GetCode() != engine.CodeContext || !strings.Contains(be.GetMessage(), "redirect") {
		t.Fatalf("error = %v, want the refused redirect", be)
	}
}

func TestFetchedTextIsNotEchoed(t *testing.T) {
	const body = `{"basePath":"/","definitions":{"ApiError":{"secret":"s3cr3t"}}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	be := failedBuild(t, &pb.Job{Source: &pb.Job_ArchiveUrl{ArchiveUrl: srv.URL + "/api/v1/discovery"}}, loopbackEgress)
	if be.GetCode() != engine.CodeDockerfile || be.GetRetryable() {
		t.Errorf("error = %v, want a %s user error", be, engine.CodeDockerfile)
	}
	for _, s := range []string{"basePath", "s3cr3t", "ApiError", "{"} {
		if strings.Contains(be.GetMessage(), s) {
			t.Errorf("the error quotes the fetched body (%q): %s", s, be.GetMessage())
		}
	}
	// A 4xx's reason phrase is the server's text too.
	teapot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj, _ := w.(http.Hijacker)
		c, buf, _ := hj.Hijack()
		defer c.Close()
		_, _ = buf.WriteString("HTTP/1.1 404 internal-token-abc\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		_ = buf.Flush()
	}))
	defer teapot.Close()
	be = failedBuild(t, &pb.Job{Source: &pb.Job_ArchiveUrl{ArchiveUrl: teapot.URL + "/x.tar"}}, loopbackEgress)
	if !strings.Contains(be.GetMessage(), "404 Not Found") || strings.Contains(be.GetMessage(), "internal-token-abc") {
		t.Errorf("404 error = %q", be.GetMessage())
	}
}
