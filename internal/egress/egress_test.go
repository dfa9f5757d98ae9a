package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

func TestPublicRefusesEveryInternalRange(t *testing.T) {
	refused := []string{
		"127.0.0.1", "127.255.255.254", // loopback
		"10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", // RFC 1918
		"169.254.169.254", "169.254.0.1", // link-local, cloud metadata
		"100.64.0.1", "100.100.100.200", "100.127.255.255", // CGNAT
		"0.0.0.0", "0.1.2.3", // this network
		"255.255.255.255", "240.0.0.1", // broadcast, reserved
		"224.0.0.1", "239.255.255.250", // multicast
		"192.0.0.170", "192.0.2.1", "198.18.0.1", "198.19.255.255", "198.51.100.1", "203.0.113.1", "192.88.99.1",
		"::", "::1", // unspecified, loopback
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0", // IPv4-mapped
		"::127.0.0.1", "::10.0.0.1", // IPv4-compatible
		"fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "fec0::1", // link-, unique-, site-local
		"ff02::1", "ff05::2", // multicast
		"64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1", "64:ff9b:1::8.8.8.8", // NAT64 to internal, local-use NAT64
		"2002:7f00:1::1", "2002:c0a8:101::1", "2002:a9fe:a9fe::", // 6to4 of internal addresses
		"2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
		"2001:db8::1", "3fff::1", "100::1", "5f00::1",
	}
	for _, s := range refused {
		if a := netip.MustParseAddr(s); Public(a) {
			t.Errorf("Public(%s) = true", s)
		}
		if a := netip.MustParseAddr(s); (*Policy)(nil).Allowed(a) {
			t.Errorf("the default policy allows %s", s)
		}
	}
	if Public(netip.Addr{}) {
		t.Error("the invalid address is public")
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "93.184.216.34", "::ffff:8.8.8.8", "2606:4700::1111", "2a00:1450:4001::200e",
		"64:ff9b::808:808", "2002:808:808::1", "100.63.255.255", "100.128.0.0", "172.32.0.1", "11.0.0.1"} {
		if !Public(netip.MustParseAddr(s)) {
			t.Errorf("Public(%s) = false", s)
		}
	}
}

func TestAllowedNetworksAreExceptions(t *testing.T) {
	nets, err := ParseNetworks([]string{"127.0.0.0/8", "fd00::/8", "::ffff:10.0.0.0/104", "192.168.1.10"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{AllowedNetworks: nets})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"127.0.0.1", "127.1.2.3", "::ffff:127.0.0.1", "fd00::1", "10.9.9.9", "::ffff:10.0.0.1", "192.168.1.10", "8.8.8.8"} {
		if !p.Allowed(netip.MustParseAddr(s)) {
			t.Errorf("%s refused", s)
		}
	}
	for _, s := range []string{"::1", "169.254.169.254", "192.168.1.11", "172.16.0.1", "fe80::1", "64:ff9b::7f00:1"} {
		if p.Allowed(netip.MustParseAddr(s)) {
			t.Errorf("%s allowed", s)
		}
	}
}

func TestDialRefusesBeforeConnecting(t *testing.T) {
	listening, accepted := testenv.CountingListener(t)
	_, port, _ := net.SplitHostPort(listening)
	ctx := context.Background()
	for _, addr := range []string{listening, "localhost:" + port, "[::ffff:127.0.0.1]:" + port, "0.0.0.0:" + port, "127.1:" + port, "2130706433:" + port} {
		if c, err := (*Policy)(nil).DialContext(ctx, "tcp", addr); err == nil {
			c.Close()
			t.Errorf("dial %s: connected", addr)
		}
	}
	if err := (*Policy)(nil).CheckHost(ctx, "localhost", port); !errors.Is(err, ErrRefused) {
		t.Errorf("CheckHost(localhost) = %v, want ErrRefused", err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the listener accepted %d connections", n)
	}
	nets, _ := ParseNetworks([]string{"127.0.0.0/8"})
	p, _ := New(Options{AllowedNetworks: nets})
	c, err := p.DialContext(ctx, "tcp", "localhost:"+port)
	if err != nil {
		t.Fatalf("dial with 127.0.0.0/8 allowed: %v", err)
	}
	c.Close()
}

func TestOpenAndClosedPortsLookAlike(t *testing.T) {
	open := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"secret":"internal"}`)
	}))
	defer open.Close()
	closedL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := closedL.Addr().String()
	closedL.Close()
	get := func(addr string) string {
		_, port, _ := net.SplitHostPort(addr)
		resp, err := (*Policy)(nil).HTTPClient().Get("http://" + addr + "/api/v1/discovery")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET %s succeeded", addr)
		}
		if !errors.Is(err, ErrRefused) {
			t.Errorf("GET %s: %v, want ErrRefused", addr, err)
		}
		return strings.ReplaceAll(err.Error(), port, "PORT")
	}
	if o, c := get(open.Listener.Addr().String()), get(closed); o != c {
		t.Fatalf("open and closed ports differ:\n%s\n%s", o, c)
	} else if strings.Contains(o, "secret") || strings.Contains(o, "refused\"") {
		t.Fatalf("error %q", o)
	}
}

// fakeNet resolves names from a script and sends dials of "public"
// addresses to loopback servers, recording every address dialled.
type fakeNet struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr // name -> answers, one per lookup (the last repeats)
	lookups map[string]int
	routes  map[netip.Addr]string // public address -> loopback host
	dialled []string
}

func (f *fakeNet) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	as, ok := f.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	i := min(f.lookups[host], len(as)-1)
	f.lookups[host]++
	return as[i], nil
}

func (f *fakeNet) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	f.mu.Lock()
	f.dialled = append(f.dialled, address)
	ap, err := netip.ParseAddrPort(address)
	target := address
	if err == nil {
		if h, ok := f.routes[ap.Addr()]; ok {
			target = net.JoinHostPort(h, fmt.Sprint(ap.Port()))
		}
	}
	f.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, target)
}

func (f *fakeNet) dialledAny(prefix string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.dialled {
		if strings.HasPrefix(d, prefix) {
			return true
		}
	}
	return false
}

var publicIP = netip.MustParseAddr("93.184.216.34")

func newFakeNet(t *testing.T) (*fakeNet, *Policy) {
	f := &fakeNet{answers: map[string][][]netip.Addr{}, lookups: map[string]int{}, routes: map[netip.Addr]string{publicIP: "127.0.0.1"}}
	p, err := New(Options{Resolver: f, Dial: f.Dial})
	if err != nil {
		t.Fatal(err)
	}
	return f, p
}

func TestDNSRebinding(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	f, p := newFakeNet(t)
	loop := netip.MustParseAddr("127.0.0.1")
	f.answers["rebind.test"] = [][]netip.Addr{{publicIP}, {loop}}
	f.answers["mixed.test"] = [][]netip.Addr{{loop, publicIP}}
	f.answers["inside.test"] = [][]netip.Addr{{loop, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("::1")}}

	get := func(host string) error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+host+":"+port+"/", nil)
		req.Close = true // a new connection, and so a new lookup, each time
		resp, err := p.HTTPClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get("rebind.test"); err != nil {
		t.Fatalf("first GET (public answer): %v", err)
	}
	if err := get("rebind.test"); !errors.Is(err, ErrRefused) {
		t.Fatalf("second GET (loopback answer) = %v, want ErrRefused", err)
	}
	if err := get("mixed.test"); err != nil {
		t.Fatalf("GET of a name with a loopback and a public address: %v", err)
	}
	if err := get("inside.test"); !errors.Is(err, ErrRefused) {
		t.Fatalf("GET of a name with only internal addresses = %v, want ErrRefused", err)
	}
	for _, a := range []string{"127.", "10.", "[::1]"} {
		if f.dialledAny(a) {
			t.Errorf("dialled %s…: %v", a, f.dialled)
		}
	}
}

func TestRedirectToRefusedAddress(t *testing.T) {
	var secretHits atomic.Int32
	secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secretHits.Add(1)
		_, _ = io.WriteString(w, "secret")
	}))
	defer secret.Close()
	var target string
	public := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target, http.StatusFound)
	}))
	defer public.Close()
	_, port, _ := net.SplitHostPort(public.Listener.Addr().String())
	_, secretPort, _ := net.SplitHostPort(secret.Listener.Addr().String())
	f, p := newFakeNet(t)
	f.answers["public.test"] = [][]netip.Addr{{publicIP}}
	f.answers["internal.test"] = [][]netip.Addr{{netip.MustParseAddr("10.0.0.5")}}
	f.answers["localhost"] = [][]netip.Addr{{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}}
	for _, tc := range []string{
		secret.URL + "/",
		"http://localhost:" + secretPort + "/",
		"http://[::ffff:127.0.0.1]:" + secretPort + "/",
		"http://internal.test:" + secretPort + "/",
	} {
		target = tc
		resp, err := p.HTTPClient().Get("http://public.test:" + port + "/archive.tar")
		if err == nil {
			resp.Body.Close()
			t.Errorf("redirect to %s followed", tc)
			continue
		}
		if !errors.Is(err, ErrRefused) {
			t.Errorf("redirect to %s: %v, want ErrRefused", tc, err)
		}
	}
	if n := secretHits.Load(); n != 0 {
		t.Fatalf("the internal server was reached %d times", n)
	}
	if !f.dialledAny(publicIP.String()) {
		t.Fatal("the public server was never dialled")
	}
}

func TestTrustedHostsByNameAndPort(t *testing.T) {
	listening, _ := testenv.CountingListener(t)
	_, port, _ := net.SplitHostPort(listening)
	f := &fakeNet{answers: map[string][][]netip.Addr{"forge.internal": {{netip.MustParseAddr("127.0.0.1")}}}, lookups: map[string]int{}}
	// The trusted host is dialled by name: the fake dialer resolves it as
	// the system would.
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		host, p, _ := net.SplitHostPort(address)
		if host == "forge.internal" {
			address = net.JoinHostPort("127.0.0.1", p)
		}
		return f.Dial(ctx, network, address)
	}
	p, err := New(Options{Resolver: f, Dial: dial, TrustedHosts: []string{"Forge.Internal:" + port}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.DialContext(context.Background(), "tcp", "forge.internal:"+port)
	if err != nil {
		t.Fatalf("trusted host: %v", err)
	}
	c.Close()
	if _, err := p.DialContext(context.Background(), "tcp", "forge.internal:6379"); !errors.Is(err, ErrRefused) {
		t.Fatalf("another port of the trusted host: %v, want ErrRefused", err)
	}
	if _, err := p.DialContext(context.Background(), "tcp", "127.0.0.1:"+port); !errors.Is(err, ErrRefused) {
		t.Fatalf("the trusted host's address: %v, want ErrRefused", err)
	}
	if _, err := New(Options{TrustedHosts: []string{"forge.internal"}}); err == nil {
		t.Fatal("a trusted host without a port was accepted")
	}
}

func TestProxyGetsOnlyAllowedTargets(t *testing.T) {
	var proxied atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		_, _ = io.WriteString(w, "via proxy")
	}))
	defer proxy.Close()
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("NO_PROXY", "")
	f, p := newFakeNet(t)
	f.answers["public.test"] = [][]netip.Addr{{publicIP}}
	f.answers["internal.test"] = [][]netip.Addr{{netip.MustParseAddr("10.0.0.5")}}
	resp, err := p.HTTPClient().Get("http://internal.test/")
	if err == nil {
		resp.Body.Close()
		t.Fatal("an internal target went to the proxy")
	}
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("internal target through the proxy: %v, want ErrRefused", err)
	}
	if proxied.Load() != 0 {
		t.Fatal("the proxy received the internal request")
	}
	resp, err = p.HTTPClient().Get("http://public.test/")
	if err != nil {
		t.Fatalf("public target through the proxy: %v", err)
	}
	resp.Body.Close()
	if proxied.Load() != 1 {
		t.Fatalf("the proxy received %d requests, want 1", proxied.Load())
	}
}

func TestConfigAndEnvironment(t *testing.T) {
	nets, err := FromConfig(map[string]any{ConfigKey: []any{"127.0.0.0/8", "fd00::/8", "10.0.0.7"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(nets); got != "[127.0.0.0/8 fd00::/8 10.0.0.7/32]" {
		t.Fatalf("networks %s", got)
	}
	if nets, err := FromConfig(map[string]any{}); err != nil || nets != nil {
		t.Fatalf("absent key: %v %v", nets, err)
	}
	for _, bad := range []any{"127.0.0.0/8", []any{"127.0.0.1/8"}, []any{"localhost"}, []any{8}, []any{"fe80::1%eth0"}, []any{"10.0.0.0/33"}, map[string]any{}} {
		if _, err := FromConfig(map[string]any{ConfigKey: bad}); err == nil {
			t.Errorf("FromConfig(%#v) accepted", bad)
		}
	}
	p, err := New(Options{AllowedNetworks: nets, TrustedHosts: []string{"git.corp:22", "[fd00::1]:443"}})
	if err != nil {
		t.Fatal(err)
	}
	env := p.Env()
	q, err := FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(q.AllowedNetworks()) != fmt.Sprint(nets) || !q.Trusted("GIT.corp:22") || !q.Trusted("[fd00::1]:443") || q.Trusted("git.corp:23") {
		t.Fatalf("policy from %v: %+v", env, q.Options())
	}
	if _, err := FromEnv(func(k string) string {
		if k == EnvAllowedNetworks {
			return "127.0.0.0/8,nonsense"
		}
		return ""
	}); err == nil {
		t.Fatal("a bad network in the environment was accepted")
	}
}
