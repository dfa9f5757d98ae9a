package egress

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// TestNonPublicIPv4IsWhatPublicRefuses checks that the list the build
// sandbox turns into routes and the predicate the server dials by agree:
// an IPv4 address is public exactly when it is neither loopback nor in the
// list. The edges of every listed range, their neighbours and random
// addresses are tried.
func TestNonPublicIPv4IsWhatPublicRefuses(t *testing.T) {
	inList := func(a netip.Addr) bool {
		for _, p := range NonPublicIPv4() {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	check := func(a netip.Addr) {
		if !a.IsValid() {
			return
		}
		if want := !a.IsLoopback() && !inList(a); Public(a) != want {
			t.Errorf("Public(%s) = %v, but the list says %v", a, !want, want)
		}
	}
	for _, p := range NonPublicIPv4() {
		first := p.Masked().Addr()
		last := lastAddr(p)
		check(first)
		check(last)
		check(first.Prev())
		check(last.Next())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		check(netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}))
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// TestNonPublicIPv4IsACopy: a caller appending to or editing the list it
// got must not change what Public refuses.
func TestNonPublicIPv4IsACopy(t *testing.T) {
	l := NonPublicIPv4()
	l[0] = netip.MustParsePrefix("8.8.8.0/24")
	if !Public(netip.MustParseAddr("8.8.8.8")) {
		t.Fatal("editing the returned list changed the policy")
	}
}

func TestNetworksFromConfigNamesTheKey(t *testing.T) {
	nets, err := NetworksFromConfig(map[string]any{"BUILD_ALLOWED_NETWORKS": []any{"10.30.0.0/24", " 192.0.2.7 "}}, "BUILD_ALLOWED_NETWORKS")
	if err != nil {
		t.Fatal(err)
	}
	if s := FormatNetworks(nets); s != "10.30.0.0/24,192.0.2.7/32" {
		t.Fatalf("FormatNetworks = %q", s)
	}
	back, err := ParseList(FormatNetworks(nets) + ",")
	if err != nil || FormatNetworks(back) != FormatNetworks(nets) {
		t.Fatalf("ParseList(FormatNetworks) = %v, %v", back, err)
	}
	for _, v := range []any{"10.0.0.0/8", []any{"10.1.2.3/8"}, []any{"example.com"}, []any{7}} {
		_, err := NetworksFromConfig(map[string]any{"BUILD_ALLOWED_NETWORKS": v}, "BUILD_ALLOWED_NETWORKS")
		if err == nil {
			t.Errorf("%v accepted", v)
			continue
		}
		if got := err.Error(); !strings.HasPrefix(got, "config key BUILD_ALLOWED_NETWORKS") {
			t.Errorf("error %q does not name the key", got)
		}
	}
	if nets, err := NetworksFromConfig(map[string]any{}, "BUILD_ALLOWED_NETWORKS"); err != nil || nets != nil {
		t.Errorf("absent key = %v, %v", nets, err)
	}
}
