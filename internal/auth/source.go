package auth

import (
	"context"
	"net"
	"net/http"
	"net/netip"
)

type sourceKey struct{}

// WithSource returns ctx carrying the network address a login attempt
// comes from (an IP address, with or without a port), by which the
// Authenticator throttles failures.
func WithSource(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, sourceKey{}, sourceOfAddr(addr))
}

// SourceHandler puts each request's remote address into its context (see
// WithSource). Behind a reverse proxy every request has the proxy's
// address, and failures are throttled per username as if from one source.
func SourceHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(WithSource(r.Context(), r.RemoteAddr)))
	})
}

// sourceOf is the throttling source of ctx: "" when unknown.
func sourceOf(ctx context.Context) string {
	s, _ := ctx.Value(sourceKey{}).(string)
	return s
}

// sourceOfAddr names the source of addr: an IPv4 address, or the /64 of an
// IPv6 one (a single client commonly holds a whole /64, so counting its
// addresses one by one would let it start afresh at will).
func sourceOfAddr(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
