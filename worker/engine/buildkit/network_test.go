package buildkit

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/engine/enginetest"
)

// TestSandboxNetwork: a RUN step under buildkitd cannot reach a service on
// the build host's own address, and reaches it once AllowedNetworks names
// that address. It runs as a build user (TestEngineSuiteUnprivileged runs
// it).
func TestSandboxNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end build")
	}
	if os.Geteuid() == 0 {
		t.Skip("builds never run as root: TestEngineSuiteUnprivileged runs this as a build user")
	}
	testenv.RequireTools(t, "buildkitd", "skopeo", "runc", "rootlesskit")
	host := ownAddress(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(host.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "mirror-ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	creds := testenv.Creds{Username: "builder", Password: "b3rth-net"}
	reg := testenv.StartDistributionAuth(t, creds)
	base := testenv.BusyboxImage(t, reg.Host, "lib/busybox", creds)
	build := func(allowed []netip.Prefix) (string, error) {
		dir := t.TempDir()
		ctxDir := filepath.Join(dir, "context")
		if err := os.MkdirAll(ctxDir, 0o755); err != nil {
			t.Fatal(err)
		}
		// The hostname too: RUN steps see BuildKit's, as under docker buildx.
		df := "FROM " + base + "\nRUN hostname && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 " + host.String() + " " + port + "\n"
		if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(df), 0o644); err != nil {
			t.Fatal(err)
		}
		req := engine.Request{
			ContextDir: ctxDir, DockerfilePath: filepath.Join(ctxDir, "Dockerfile"),
			Tags:        []string{reg.Host + "/test/net:latest"},
			Registry:    engine.Registry{Host: reg.Host, Username: creds.Username, Password: creds.Password, Insecure: true},
			StorageRoot: filepath.Join(dir, "storage"), RunRoot: filepath.Join(dir, "run"), WorkDir: filepath.Join(dir, "work"),
			BaseImages: []string{base},
			NoCache:    true,
		}
		if err := os.MkdirAll(req.WorkDir, 0o700); err != nil {
			t.Fatal(err)
		}
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

// ownAddress is one of the build host's non-loopback IPv4 addresses.
func ownAddress(t *testing.T) netip.Addr {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, iface := range ifaces {
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			prefix, err := netip.ParsePrefix(a.String())
			if err == nil && prefix.Addr().Is4() && !prefix.Addr().IsLoopback() {
				return prefix.Addr()
			}
		}
	}
	t.Skip("the host has no non-loopback IPv4 address")
	return netip.Addr{}
}
