package buildkit

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/worker/engine/enginetest"
)

// TestSandboxNetwork: a RUN step under buildkitd cannot reach a service on
// the build host's own address, and reaches it once AllowedNetworks names
// that address. It runs as a build user (TestEngineSuiteUnprivileged runs
// it).
func TestSandboxNetwork(t *testing.T) {
	requireBuildUser(t)
	host := enginetest.HostAddress(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(host.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "mirror-ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	b := enginetest.StartBuildRegistry(t, "b3rth-net")
	build := func(allowed []netip.Prefix) (string, error) {
		dir := t.TempDir()
		ctxDir := filepath.Join(dir, "context")
		// The hostname too: RUN steps see BuildKit's, as under docker buildx.
		enginetest.WriteFiles(t, ctxDir, map[string]string{"Dockerfile": "FROM " + b.Base +
			"\nRUN hostname && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 " + host.String() + " " + port + "\n"})
		req := b.Request(t, dir, ctxDir, filepath.Join(ctxDir, "Dockerfile"), "test/net")
		req.NoCache = true
		eng := New()
		eng.Sandbox.AllowedNetworks = allowed
		log := &enginetest.Log{}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := eng.Build(ctx, req, log)
		return log.Text(), err
	}

	out, err := build(nil)
	if err == nil || strings.Contains(out, "mirror-ok") {
		t.Fatalf("a RUN step reached %s:%s on the build host's own address:\n%s", host, port, out)
	}
	if !strings.Contains(out, "\nbuildkitsandbox\n") {
		t.Errorf("the RUN step's hostname is not buildkitsandbox:\n%s", out)
	}
	t.Logf("denied as it should be: %v", err)
	out, err = build([]netip.Prefix{netip.PrefixFrom(host, 32)})
	if err != nil || !strings.Contains(out, "mirror-ok") {
		t.Fatalf("with %s allowed, the RUN step did not reach it: %v\n%s", host, err, out)
	}
}
