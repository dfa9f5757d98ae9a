package egress

import (
	"fmt"
	"strings"
	"testing"
)

// FuzzParseNetworks checks that the networks of OUTBOUND_ALLOWED_NETWORKS
// parse without panicking, come out masked, allow their own addresses,
// and survive the trip to a worker's environment unchanged.
func FuzzParseNetworks(f *testing.F) {
	for _, s := range []string{"127.0.0.0/8", "10.0.0.0/8,fd00::/8", "::ffff:10.0.0.0/104", "192.168.1.10", "10.1.2.3/8",
		"fe80::1%eth0", "0.0.0.0/0", "::/0", "", " , ", "1.2.3.4/32,::1/128", "::ffff:0:0/96"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		nets, err := ParseNetworks(strings.Split(s, ","))
		if err != nil {
			return
		}
		p, err := New(Options{AllowedNetworks: nets})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		for _, n := range p.AllowedNetworks() {
			if n != n.Masked() || !n.IsValid() {
				t.Fatalf("%q: network %s is not masked", s, n)
			}
			if !p.Allowed(n.Addr()) {
				t.Fatalf("%q: %s refuses its own address", s, n)
			}
		}
		env := p.Env()
		q, err := FromEnv(func(k string) string { return env[k] })
		if err != nil {
			t.Fatalf("%q: the environment %v does not parse: %v", s, env, err)
		}
		if fmt.Sprint(q.AllowedNetworks()) != fmt.Sprint(p.AllowedNetworks()) {
			t.Fatalf("%q: %v became %v", s, p.AllowedNetworks(), q.AllowedNetworks())
		}
	})
}
