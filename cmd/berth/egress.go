package main

import (
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/triggers"
)

// outboundPolicy is the egress policy for what the server and its workers
// fetch on a user's behalf: public addresses, the networks of
// OUTBOUND_ALLOWED_NETWORKS, and the git servers of the configured forges.
// Local workers get it through their environment (egress.FromEnv).
func outboundPolicy(cfg *config.Config) (*egress.Policy, error) {
	nets, err := egress.FromConfig(cfg.Raw)
	if err != nil {
		return nil, err
	}
	forges, err := triggers.ForgesFromConfig(cfg.Raw)
	if err != nil {
		return nil, err
	}
	return egress.New(egress.Options{AllowedNetworks: nets, TrustedHosts: forges.GitHosts()})
}
