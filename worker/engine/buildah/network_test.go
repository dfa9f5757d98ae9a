package buildah

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

// TestSandboxNetwork: a RUN step cannot reach a service on the build host's
// own address, and reaches it once BUILD_ALLOWED_NETWORKS (the engine's
// AllowedNetworks) names that address, through slirp4netns. It runs as a
// build user (TestEngineSuiteUnprivileged runs it).
func TestSandboxNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end build")
	}
	if os.Geteuid() == 0 {
		t.Skip("builds never run as root: TestEngineSuiteUnprivileged runs this as a build user")
	}
	testenv.RequireTools(t, "buildah", "skopeo")
	host := hostAddress(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(host.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "mirror-ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String() + "/"
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
		// (busybox's nc: Debian's static busybox wget crashes in getaddrinfo.)
		df := "FROM " + base + "\nRUN printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 " + host.String() + " " + port + "\n"
		if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(df), 0o644); err != nil {
			t.Fatal(err)
		}
		req := engine.Request{
			ContextDir: ctxDir, DockerfilePath: filepath.Join(ctxDir, "Dockerfile"),
			Tags:        []string{reg.Host + "/test/net:latest"},
			Registry:    engine.Registry{Host: reg.Host, Username: creds.Username, Password: creds.Password, Insecure: true},
			StorageRoot: filepath.Join(dir, "storage"), RunRoot: filepath.Join(dir, "run"), WorkDir: filepath.Join(dir, "work"),
			BaseImages: []string{base},
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
		t.Fatalf("a RUN step reached %s on the build host's own address:\n%s", url, out)
	}
	t.Logf("denied as it should be: %v", err)
	out, err = build([]netip.Prefix{netip.PrefixFrom(host, 32)})
	if err != nil || !strings.Contains(out, "mirror-ok") {
		t.Fatalf("with %s allowed, the RUN step did not reach %s: %v\n%s", host, url, err, out)
	}
}

// hostAddress is one of the build host's own non-loopback IPv4 addresses.
func hostAddress(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok && ipnet.IP.To4() != nil && !ipnet.IP.IsLoopback() {
			addr, _ := netip.AddrFromSlice(ipnet.IP.To4())
			return addr
		}
	}
	t.Skip("the host has no non-loopback IPv4 address")
	return netip.Addr{}
}
