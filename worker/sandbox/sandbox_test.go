package sandbox

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPolicyRoutes(t *testing.T) {
	p := NetworkPolicy{
		Denied: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("192.168.0.0/16"),
			netip.MustParsePrefix("192.168.7.0/24"),
			netip.MustParsePrefix("fd00::/8"),
		},
		Allowed: []netip.Prefix{
			netip.MustParsePrefix("10.20.0.5/32"),
			netip.MustParsePrefix("192.168.0.0/16"),
		},
	}
	var got []string
	for _, r := range p.routes() {
		got = append(got, strings.Join(r, " "))
	}
	want := []string{
		// 10/8 stays closed but for the allowed host, which gets a more
		// specific route; 192.168/16 is allowed whole, so neither of its
		// denials is installed; IPv6 has no route in the sandbox at all.
		"ip -4 route replace prohibit 10.0.0.0/8",
		"ip -4 route replace 10.20.0.5/32 via " + Gateway,
		"ip -4 route replace 192.168.0.0/16 via " + Gateway,
	}
	if !slices.Equal(got, want) {
		t.Errorf("routes =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestWrapAndParseFlags(t *testing.T) {
	cfg := Config{
		Init:     []string{"/usr/bin/berth", "sandbox-init"},
		StateDir: "/w/sandbox",
		Network:  NetworkPolicy{Denied: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}, Allowed: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")}},
	}
	argv := cfg.Wrap([]string{"buildah", "build", "--", "x"})
	if argv[0] != "rootlesskit" || !slices.Contains(argv, "--disable-host-loopback") || !slices.Contains(argv, "--net=slirp4netns") || !slices.Contains(argv, "--pidns") {
		t.Fatalf("Wrap = %v: not a slirp4netns sandbox without host loopback", argv)
	}
	if !slices.Contains(argv, "--slirp4netns-sandbox=auto") || !slices.Contains(argv, "--slirp4netns-seccomp=auto") {
		t.Errorf("Wrap = %v: slirp4netns is not confined", argv)
	}
	inPlace := cfg
	inPlace.SlirpInPlace = true
	if a := inPlace.Wrap([]string{"true"}); !slices.Contains(a, "--slirp4netns-sandbox=false") || !slices.Contains(a, "--slirp4netns-seccomp=auto") {
		t.Errorf("Wrap in place = %v: want no mount sandbox but the seccomp filter", a)
	}
	i := slices.Index(argv, "sandbox-init")
	if i < 0 {
		t.Fatalf("Wrap = %v: no sandbox-init", argv)
	}
	policy, cmd, err := parseFlags(argv[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cmd, []string{"buildah", "build", "--", "x"}) {
		t.Errorf("command = %v", cmd)
	}
	if !slices.Equal(policy.Denied, cfg.Network.Denied) || !slices.Equal(policy.Allowed, cfg.Network.Allowed) {
		t.Errorf("policy = %+v, want %+v", policy, cfg.Network)
	}
	for _, bad := range [][]string{
		{"--deny=10.0.0.0/8"},
		{"--deny=not-a-cidr", "--", "x"},
		{"--open=10.0.0.0/8", "--", "x"},
		{"--deny=10.0.0.0/8", "--"},
	} {
		if _, _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestDefaultPolicyDeniesHostAddresses(t *testing.T) {
	p, err := DefaultPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"} {
		if !slices.Contains(p.Denied, netip.MustParsePrefix(want)) {
			t.Errorf("default policy does not deny %s", want)
		}
	}
	for _, d := range p.Denied {
		if d.Addr().IsLoopback() {
			t.Errorf("default policy closes the sandbox's own loopback (%s)", d)
		}
	}
}

func TestHasSubordinateIDs(t *testing.T) {
	dir := t.TempDir()
	subuid, subgid := filepath.Join(dir, "subuid"), filepath.Join(dir, "subgid")
	if err := os.WriteFile(subuid, []byte("alice:100000:65536\n1001:200000:65536\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(subgid, []byte("alice:100000:65536\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := hasSubordinateIDs("alice", "1000", subuid, subgid); err != nil {
		t.Errorf("alice has both ranges: %v", err)
	}
	// bob has a uid range (by number) but no gid range: the check names the
	// file that lacks one.
	if err := hasSubordinateIDs("bob", "1001", subuid, subgid); err == nil || !strings.Contains(err.Error(), subgid) {
		t.Errorf("bob without a gid range: %v", err)
	}
	if err := hasSubordinateIDs("carol", "1002", filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file passed")
	}
}

// Preflight asks for the sandbox's programs and the engine's, and no
// engine's programs beyond those it is given.
func TestPreflightPrograms(t *testing.T) {
	if slices.Contains(Programs, "buildah") || slices.Contains(Programs, "buildkitd") {
		t.Errorf("Programs = %v: an engine's programs are the engine's to name", Programs)
	}
	for _, p := range Programs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed: Preflight stops there", p)
		}
	}
	err := Preflight(context.Background(), Config{}, []string{"berth-no-such-engine"}, nil)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "berth-no-such-engine is not installed") {
		t.Errorf("Preflight with a missing engine program = %v, want ErrUnavailable naming it", err)
	}
}
