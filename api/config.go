package api

import (
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
)

// LoadSecrets returns the server's secret box: keyed by config
// DATABASE_SECRET_KEY when set, otherwise by a key file generated in the
// data directory (auth.SecretKeyFile, mode 0600). Every server sharing one
// database must get the same key.
func LoadSecrets(cfg *config.Config) (*auth.Secrets, error) {
	key, _ := cfg.Raw["DATABASE_SECRET_KEY"].(string)
	return auth.LoadSecrets(key, cfg.DataDir)
}

// RobotsDisallowed reports config ROBOTS_DISALLOW, for the Authenticator.
func RobotsDisallowed(cfg *config.Config) bool { return configBool(cfg, "ROBOTS_DISALLOW", false) }
