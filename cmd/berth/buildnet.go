package main

import (
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/worker/sandbox"
)

// buildNetworksEnv reads BUILD_ALLOWED_NETWORKS, the CIDRs (or addresses)
// that RUN steps may reach although the sandbox's network policy denies
// them (a package mirror on a private network), into the worker's
// environment. The build host's loopback stays out of reach whatever it
// says.
func buildNetworksEnv(cfg *config.Config, env map[string]string) error {
	nets, err := egress.NetworksFromConfig(cfg.Raw, "BUILD_ALLOWED_NETWORKS")
	if err != nil {
		return err
	}
	if len(nets) > 0 {
		env[sandbox.AllowedNetworksEnv] = egress.FormatNetworks(nets)
	}
	return nil
}
