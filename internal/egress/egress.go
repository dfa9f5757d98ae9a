// Package egress is berth's outbound network policy: it decides which
// addresses the server and its workers may connect to on a user's behalf
// (an archive_url, a trigger's git source, its SSH host key scan).
//
// Loopback, private, link-local, unique-local, CGNAT, multicast, reserved
// and documentation addresses are refused unless an administrator allows
// their network (OUTBOUND_ALLOWED_NETWORKS). The check is made on the
// address actually dialled, after the name is resolved, so a redirect or a
// name that resolves differently the second time (DNS rebinding) gets
// nowhere. Names an administrator configured (a self-hosted forge) are
// trusted by host and port instead.
//
// A refused destination is never connected to, so its error is the same
// whether a port is open or closed.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrRefused is in the chain of every error for a destination the policy
// refuses. Its text names no address, port or answer from the network.
var ErrRefused = errors.New("the address is refused by the server's outbound network policy (loopback, private and link-local networks are not reachable)")

// Resolver looks up a name's addresses; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DialFunc connects to an address; (*net.Dialer).DialContext is one.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Options configure New. The zero value refuses every non-public address
// and resolves and dials with the standard library.
type Options struct {
	// AllowedNetworks are reachable even when not public
	// (OUTBOUND_ALLOWED_NETWORKS).
	AllowedNetworks []netip.Prefix
	// TrustedHosts are "host:port" destinations an administrator
	// configured (a forge's web and SSH address); they are dialled by name
	// without an address check.
	TrustedHosts []string
	// Resolver resolves names (nil: net.DefaultResolver).
	Resolver Resolver
	// Dial connects to an address that passed the check, always an IP
	// literal and port, and to trusted hosts (nil: a net.Dialer with
	// timeouts that checks the address once more before connecting).
	Dial DialFunc
}

// dialTimeout bounds one connection attempt of the default dialer.
const dialTimeout = 30 * time.Second

// Policy is an outbound network policy. A nil *Policy is the default one:
// nothing but public addresses.
type Policy struct {
	allowed  []netip.Prefix
	trusted  map[string]bool
	resolver Resolver
	dial     DialFunc

	httpOnce   sync.Once
	httpClient *http.Client
}

// defaultPolicy is what a nil *Policy stands for.
var defaultPolicy = &Policy{}

// New returns the policy o describes. A trusted host that is not
// host:port is an error.
func New(o Options) (*Policy, error) {
	p := &Policy{resolver: o.Resolver, dial: o.Dial}
	for _, n := range o.AllowedNetworks {
		p.allowed = append(p.allowed, normalPrefix(n))
	}
	for _, h := range o.TrustedHosts {
		key, err := hostKey(h)
		if err != nil {
			return nil, fmt.Errorf("egress: trusted host %q: %w", h, err)
		}
		if p.trusted == nil {
			p.trusted = map[string]bool{}
		}
		p.trusted[key] = true
	}
	return p, nil
}

// or returns p, or the default policy when p is nil.
func (p *Policy) or() *Policy {
	if p == nil {
		return defaultPolicy
	}
	return p
}

// Options returns what p was made from, so that a derived policy can add
// to it.
func (p *Policy) Options() Options {
	p = p.or()
	o := Options{AllowedNetworks: append([]netip.Prefix(nil), p.allowed...), Resolver: p.resolver, Dial: p.dial}
	for h := range p.trusted {
		o.TrustedHosts = append(o.TrustedHosts, h)
	}
	return o
}

// AllowedNetworks are the exceptions p makes for non-public addresses.
func (p *Policy) AllowedNetworks() []netip.Prefix {
	return append([]netip.Prefix(nil), p.or().allowed...)
}

// Allowed reports whether p lets a connection reach addr.
func (p *Policy) Allowed(addr netip.Addr) bool {
	p = p.or()
	a := addr.WithZone("").Unmap()
	for _, n := range p.allowed {
		if n.Contains(a) {
			return true
		}
	}
	return Public(a)
}

// Trusted reports whether hostport ("host:port") is a destination an
// administrator configured.
func (p *Policy) Trusted(hostport string) bool {
	key, err := hostKey(hostport)
	return err == nil && p.or().trusted[key]
}

// hostKey is the normal form of host:port in the trusted set.
func hostKey(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	if host == "" || port == "" {
		return "", errors.New("host and port are required")
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.ToLower(host), "."), port), nil
}

// DialContext connects to address (host:port) over TCP when the policy
// allows it: a trusted host by name, anything else only at a resolved
// address the policy allows, tried in the resolver's order. When the name
// has no such address the error wraps ErrRefused and nothing was
// connected to.
func (p *Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	p = p.or()
	ipNetwork, err := resolveNetwork(network)
	if err != nil {
		return nil, err
	}
	if p.Trusted(address) {
		return p.dialer(false)(ctx, network, address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	addrs, err := p.allowedAddrs(ctx, ipNetwork, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		conn, err := p.dialer(true)(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// CheckHost resolves host as DialContext would for host:port and returns
// an error wrapping ErrRefused when the policy allows none of its
// addresses; other errors are the resolver's.
func (p *Policy) CheckHost(ctx context.Context, host, port string) error {
	p = p.or()
	if p.Trusted(net.JoinHostPort(host, port)) {
		return nil
	}
	_, err := p.allowedAddrs(ctx, "ip", host)
	return err
}

// LookupAllowed resolves host (an IP literal stands for itself) and
// returns the addresses the policy allows, in the resolver's order, for a
// client that must dial an address itself. None is an error wrapping
// ErrRefused.
func (p *Policy) LookupAllowed(ctx context.Context, host string) ([]netip.Addr, error) {
	return p.or().allowedAddrs(ctx, "ip", host)
}

// allowedAddrs resolves host (an IP literal stands for itself) and keeps
// the addresses the policy allows.
func (p *Policy) allowedAddrs(ctx context.Context, network, host string) ([]netip.Addr, error) {
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		var r Resolver = net.DefaultResolver
		if p.resolver != nil {
			r = p.resolver
		}
		if addrs, err = r.LookupNetIP(ctx, network, host); err != nil {
			return nil, fmt.Errorf("egress: look up %s: %w", host, err)
		}
	}
	allowed := addrs[:0:0]
	for _, a := range addrs {
		if p.Allowed(a) {
			allowed = append(allowed, a)
		}
	}
	if len(allowed) == 0 {
		return nil, fmt.Errorf("egress: %s: %w", host, ErrRefused)
	}
	return allowed, nil
}

// resolveNetwork is the resolver network of a TCP dial network.
func resolveNetwork(network string) (string, error) {
	switch network {
	case "tcp":
		return "ip", nil
	case "tcp4":
		return "ip4", nil
	case "tcp6":
		return "ip6", nil
	}
	return "", fmt.Errorf("egress: network %q is not supported", network)
}

// dialer is the configured Dial, or a net.Dialer with timeouts. With
// check, the net.Dialer checks the address once more in its Control, which
// runs on the very address of the socket; a trusted host is dialled by name
// and may resolve to a private address, so its dial has no check.
func (p *Policy) dialer(check bool) DialFunc {
	if p.dial != nil {
		return p.dial
	}
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	if check {
		d.Control = p.control
	}
	return d.DialContext
}

// control refuses a socket whose address the policy does not allow.
func (p *Policy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	if !p.Allowed(ap.Addr()) {
		return fmt.Errorf("egress: %w", ErrRefused)
	}
	return nil
}
