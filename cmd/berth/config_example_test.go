package main

import (
	"testing"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/executors/local"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/triggers"
)

// The example configuration shipped in deploy/ must load as berth reads it:
// no unknown or ignored keys, and the parts read by their own packages valid too.
func TestDeployConfigExample(t *testing.T) {
	cfg, unknown, err := config.Load("../../deploy/config.example.yaml", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(unknown) > 0 {
		t.Errorf("unknown keys in the example: %v", unknown)
	}
	if ignored := cfg.NotSupportedKeys(); len(ignored) > 0 {
		t.Errorf("the example sets keys berth does not read yet: %v", ignored)
	}
	if !cfg.IsSuperUser("admin") || !cfg.Feature("USER_INITIALIZE", false) {
		t.Errorf("SUPER_USERS or FEATURE_USER_INITIALIZE not read: %+v", cfg)
	}
	if got := cfg.TokenSigningKeyPath(); got != "/etc/berth/token-signing.pem" {
		t.Errorf("token signing key at %q", got)
	}
	if name, params, err := cfg.StorageDriver(); err != nil || name != "LocalStorage" || params["storage_path"] != "/var/lib/berth/storage" {
		t.Errorf("storage = %q %v %v", name, params, err)
	}
	bc, err := buildmanager.ParseConfig(cfg.Raw["BUILD_MANAGER"])
	if err != nil {
		t.Fatal(err)
	}
	if bc.AllowedWorkerCount != 2 || bc.Redis == nil || len(bc.Executors) != 1 || bc.Executors[0].Kind != "local" || bc.MaxQueuedPerNamespace != 50 {
		t.Errorf("BUILD_MANAGER = %+v", bc)
	}
	if _, err := triggers.ForgesFromConfig(cfg.Raw); err != nil {
		t.Fatal(err)
	}
	if nets, err := egress.FromConfig(cfg.Raw); err != nil || len(nets) != 1 || nets[0].String() != "10.20.0.0/16" {
		t.Errorf("OUTBOUND_ALLOWED_NETWORKS = %v, %v", nets, err)
	}
	env := map[string]string{}
	if err := buildNetworksEnv(cfg, env); err != nil || env["BERTH_BUILD_ALLOWED_NETWORKS"] != "10.30.0.0/24" {
		t.Errorf("BUILD_ALLOWED_NETWORKS = %v, %v", env, err)
	}
	if lc, err := local.ConfigFromMap(bc.Executors[0].Params, "/var/lib/berth"); err != nil || lc.UserPrefix != "berth-build-" {
		t.Errorf("local executor config = %+v, %v", lc, err)
	}
}
