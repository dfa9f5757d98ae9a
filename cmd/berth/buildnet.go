package main

import (
	"fmt"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/worker/sandbox"
)

// buildNetworksEnv reads BUILD_ALLOWED_NETWORKS, the CIDRs (or addresses)
// that RUN steps may reach although the sandbox's network policy denies
// them (a package mirror on a private network), into the worker's
// environment. The build host's loopback stays out of reach whatever it
// says.
func buildNetworksEnv(cfg *config.Config, env map[string]string) error {
	v, ok := cfg.Raw["BUILD_ALLOWED_NETWORKS"]
	if !ok || v == nil {
		return nil
	}
	list, isList := v.([]any)
	if !isList {
		return fmt.Errorf("BUILD_ALLOWED_NETWORKS must be a list of CIDRs, not %T", v)
	}
	strs := make([]string, 0, len(list))
	for _, x := range list {
		s, isStr := x.(string)
		if !isStr {
			return fmt.Errorf("BUILD_ALLOWED_NETWORKS entries must be strings, not %T", x)
		}
		strs = append(strs, s)
	}
	prefixes, err := sandbox.ParsePrefixes(strs)
	if err != nil {
		return fmt.Errorf("BUILD_ALLOWED_NETWORKS: %w", err)
	}
	if len(prefixes) > 0 {
		env["BERTH_BUILD_ALLOWED_NETWORKS"] = sandbox.FormatPrefixes(prefixes)
	}
	return nil
}
