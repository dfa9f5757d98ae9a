package egress

import "net/netip"

// nonPublicIPv4 is every IPv4 range Public refuses besides loopback:
// addresses that reach this machine, its provider's network or nothing at
// all on the public internet.
var nonPublicIPv4 = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network": 0.0.0.0 connects to the local host
	netip.MustParsePrefix("10.0.0.0/8"),      // private (RFC 1918)
	netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT shared space (some clouds' metadata, 100.100.100.200)
	netip.MustParsePrefix("169.254.0.0/16"),  // link-local: cloud metadata services
	netip.MustParsePrefix("172.16.0.0/12"),   // private (RFC 1918)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast
	netip.MustParsePrefix("192.168.0.0/16"),  // private (RFC 1918)
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking, used inside networks
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("224.0.0.0/4"),     // multicast
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and 255.255.255.255
}

// NonPublicIPv4 returns the IPv4 ranges that are not public besides
// loopback, for a policy enforced by routes rather than by Public (the
// build sandbox's), so that both refuse the same networks.
func NonPublicIPv4() []netip.Prefix {
	return append([]netip.Prefix(nil), nonPublicIPv4...)
}

// refusedIPv6 are the IPv6 ranges refused beyond what netip classifies as
// loopback, private (fc00::/7), link-local, multicast or unspecified.
var refusedIPv6 = []netip.Prefix{
	netip.MustParsePrefix("::/96"),          // IPv4-compatible (deprecated): ::127.0.0.1
	netip.MustParsePrefix("100::/64"),       // discard-only
	netip.MustParsePrefix("2001::/23"),      // IETF protocol assignments: Teredo, ORCHID, benchmarking
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("3fff::/20"),      // documentation
	netip.MustParsePrefix("5f00::/16"),      // SRv6 SIDs
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	netip.MustParsePrefix("fec0::/10"),      // site-local (deprecated)
}

// nat64 and sixToFour embed an IPv4 address that the gateway or relay
// connects to: 64:ff9b::7f00:1 reaches 127.0.0.1 of the NAT64 gateway.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Public reports whether addr is a public unicast address, one berth may
// connect to without an exception. An IPv4-mapped IPv6 address is judged
// as its IPv4 address, and so are the IPv4 addresses embedded in NAT64
// and 6to4 addresses.
func Public(addr netip.Addr) bool {
	a := addr.WithZone("").Unmap()
	if !a.IsValid() || !a.IsGlobalUnicast() || a.IsPrivate() {
		return false
	}
	refused := refusedIPv6
	if a.Is4() {
		refused = nonPublicIPv4
	}
	for _, p := range refused {
		if p.Contains(a) {
			return false
		}
	}
	b := a.As16()
	switch {
	case nat64.Contains(a):
		return Public(netip.AddrFrom4([4]byte(b[12:16])))
	case sixToFour.Contains(a):
		return Public(netip.AddrFrom4([4]byte(b[2:6])))
	}
	return true
}

// normalPrefix masks p and writes an IPv4-mapped prefix as IPv4, as
// Allowed compares unmapped addresses.
func normalPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}
