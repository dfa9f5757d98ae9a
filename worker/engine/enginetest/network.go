package enginetest

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

	"github.com/berth-dev/berth/worker/engine"
)

// SandboxNetwork checks that a RUN step of a build cannot reach a service
// on the build host's own address, and reaches it once the engine's
// AllowedNetworks names that address. newEngine makes the engine with
// those exceptions; run, when not empty, is a command the RUN step runs
// first. It returns the log of the denied build, for the engine's own
// checks of what its RUN step saw.
func SandboxNetwork(t *testing.T, newEngine func(allowed []netip.Prefix) engine.Engine, run string) (deniedLog string) {
	t.Helper()
	host := HostAddress(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(host.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "mirror-ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String() + "/"
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if run != "" {
		run += " && "
	}

	b := StartBuildRegistry(t, "b3rth-net")
	build := func(allowed []netip.Prefix) (string, error) {
		dir := t.TempDir()
		ctxDir := filepath.Join(dir, "context")
		// (busybox's nc: Debian's static busybox wget crashes in getaddrinfo.)
		WriteFiles(t, ctxDir, map[string]string{"Dockerfile": "FROM " + b.Base +
			"\nRUN " + run + "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 " + host.String() + " " + port + "\n"})
		req := b.Request(t, dir, ctxDir, filepath.Join(ctxDir, "Dockerfile"), "test/net")
		req.NoCache = true
		log := &Log{}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := newEngine(allowed).Build(ctx, req, log)
		return log.Text(), err
	}

	denied, err := build(nil)
	if err == nil || strings.Contains(denied, "mirror-ok") {
		t.Fatalf("a RUN step reached %s on the build host's own address:\n%s", url, denied)
	}
	t.Logf("denied as it should be: %v", err)
	out, err := build([]netip.Prefix{netip.PrefixFrom(host, 32)})
	if err != nil || !strings.Contains(out, "mirror-ok") {
		t.Fatalf("with %s allowed, the RUN step did not reach %s: %v\n%s", host, url, err, out)
	}
	return denied
}
