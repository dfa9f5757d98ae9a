package egress

import (
	"fmt"
	"net/netip"
	"strings"
)

// ConfigKey is the config.yaml key of the networks allowed besides public
// addresses: a list of CIDRs (["10.0.0.0/8", "127.0.0.0/8"]).
const ConfigKey = "OUTBOUND_ALLOWED_NETWORKS"

// The environment variables that hand a server's policy to its workers.
const (
	// EnvAllowedNetworks holds the allowed networks, comma-separated.
	EnvAllowedNetworks = "BERTH_OUTBOUND_ALLOWED_NETWORKS"
	// EnvTrustedHosts holds the trusted host:port destinations,
	// comma-separated.
	EnvTrustedHosts = "BERTH_OUTBOUND_TRUSTED_HOSTS"
)

// ParseNetworks parses CIDRs ("10.0.0.0/8", "fd00::/8") or single
// addresses ("192.168.1.10", a /32 or /128). A CIDR with bits set past
// its prefix length ("10.1.2.3/8") is refused rather than guessed at, and
// so is a zone.
func ParseNetworks(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, fmt.Errorf("%q is not a network in CIDR form (10.0.0.0/8, fd00::/8)", s)
			}
			if p != p.Masked() {
				return nil, fmt.Errorf("%q has bits set past its /%d; the network is %s", s, p.Bits(), p.Masked())
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not a network in CIDR form (10.0.0.0/8, fd00::/8) nor an IP address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, normalPrefix(p))
	}
	return out, nil
}

// FromConfig reads OUTBOUND_ALLOWED_NETWORKS from a config.yaml's keys:
// absent means none, anything but a list of strings is an error.
func FromConfig(raw map[string]any) ([]netip.Prefix, error) {
	return NetworksFromConfig(raw, ConfigKey)
}

// NetworksFromConfig reads the config.yaml key named key as a list of
// networks in ParseNetworks' forms: absent means none, anything but a list
// of strings is an error. Every key that names networks reads them this way.
func NetworksFromConfig(raw map[string]any, key string) ([]netip.Prefix, error) {
	v, ok := raw[key]
	if !ok || v == nil {
		return nil, nil
	}
	items, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("config key %s: want a list of CIDRs such as [\"10.0.0.0/8\"], got %T", key, v)
	}
	list := make([]string, 0, len(items))
	for _, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil, fmt.Errorf("config key %s: want a list of CIDRs such as [\"10.0.0.0/8\"], got an item %v", key, it)
		}
		list = append(list, s)
	}
	nets, err := ParseNetworks(list)
	if err != nil {
		return nil, fmt.Errorf("config key %s: %w", key, err)
	}
	return nets, nil
}

// FormatNetworks writes nets comma-separated, the form ParseList reads back
// from a worker's environment.
func FormatNetworks(nets []netip.Prefix) string {
	s := make([]string, len(nets))
	for i, n := range nets {
		s[i] = n.String()
	}
	return strings.Join(s, ",")
}

// ParseList parses a comma-separated list of networks (FormatNetworks'
// output); empty items are skipped.
func ParseList(s string) ([]netip.Prefix, error) {
	return ParseNetworks(splitList(s))
}

// Env is p as the environment variables FromEnv reads.
func (p *Policy) Env() map[string]string {
	p = p.or()
	hosts := make([]string, 0, len(p.trusted))
	for h := range p.trusted {
		hosts = append(hosts, h)
	}
	return map[string]string{EnvAllowedNetworks: FormatNetworks(p.allowed), EnvTrustedHosts: strings.Join(hosts, ",")}
}

// FromEnv is the policy a server handed to a worker through Env, with
// the standard resolver and dialer.
func FromEnv(getenv func(string) string) (*Policy, error) {
	nets, err := ParseList(getenv(EnvAllowedNetworks))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvAllowedNetworks, err)
	}
	return New(Options{AllowedNetworks: nets, TrustedHosts: splitList(getenv(EnvTrustedHosts))})
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
