// Package config reads berth's configuration: a Quay-style config.yaml with
// Quay's key names, overridden by command-line flags. With no file at all
// every value has an embedded default (SQLite and local storage under the
// data directory), so `berth serve` runs with zero setup.
package config

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the parsed configuration. Fields carry Quay's key names in their
// yaml tags; Raw keeps every key of the file for features that read their own.
type Config struct {
	ServerHostname     string   `yaml:"SERVER_HOSTNAME"`
	PreferredURLScheme string   `yaml:"PREFERRED_URL_SCHEME"`
	DBURI              string   `yaml:"DB_URI"`
	SuperUsers         []string `yaml:"SUPER_USERS"`
	// DistributedStorageConfig maps a location name to [DriverName, {params}],
	// e.g. {"default": ["LocalStorage", {"storage_path": "/data"}]}.
	DistributedStorageConfig     map[string][]any `yaml:"DISTRIBUTED_STORAGE_CONFIG"`
	DistributedStoragePreference []string         `yaml:"DISTRIBUTED_STORAGE_PREFERENCE"`
	// InstanceServiceKeyLocation is the file of the Ed25519 key that signs
	// registry tokens (created when missing; default
	// <data-dir>/token-signing.pem). Servers sharing a database share it,
	// so that each accepts the tokens the others issue.
	InstanceServiceKeyLocation string `yaml:"INSTANCE_SERVICE_KEY_LOCATION"`
	// TokenLifetime is how long registry bearer tokens live (berth key).
	TokenLifetime time.Duration `yaml:"-"`
	// Features holds every FEATURE_* key.
	Features map[string]bool `yaml:"-"`

	// Raw is the whole file as read.
	Raw map[string]any `yaml:"-"`

	// Runtime settings: from flags, not from the file.
	Listen  string `yaml:"-"`
	DataDir string `yaml:"-"`
	TLSCert string `yaml:"-"`
	TLSKey  string `yaml:"-"`
}

// Defaults returns the embedded configuration for a data directory.
func Defaults(dataDir string) *Config {
	return &Config{
		Listen:        ":8080",
		DataDir:       dataDir,
		TokenLifetime: 5 * time.Minute,
		Features:      map[string]bool{},
		Raw:           map[string]any{},
	}
}

// Load reads a config.yaml. Keys missing from the Keys table are returned
// as unknown, for a warning; type errors in known keys and values the table
// refuses are errors.
func Load(path, dataDir string) (*Config, []string, error) {
	cfg := Defaults(dataDir)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	if err := yaml.Unmarshal(b, &cfg.Raw); err != nil {
		return nil, nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	if cfg.Raw == nil {
		cfg.Raw = map[string]any{}
	}
	if err := yaml.Unmarshal(b, cfg); err != nil {
		return nil, nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	var warnings []string
	keys := make([]string, 0, len(cfg.Raw))
	for k := range cfg.Raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := cfg.Raw[k]
		switch {
		case strings.HasPrefix(k, "FEATURE_"):
			on, ok := v.(bool)
			if !ok {
				return nil, nil, fmt.Errorf("config key %s: want true or false, got %v", k, v)
			}
			cfg.Features[k] = on
		case k == "REGISTRY_TOKEN_LIFETIME_S":
			n, ok := v.(int)
			if !ok || n < 60 {
				return nil, nil, fmt.Errorf("config key %s: want whole seconds >= 60, got %v", k, v)
			}
			cfg.TokenLifetime = time.Duration(n) * time.Second
		}
		if _, known := keysByName[k]; !known {
			warnings = append(warnings, k)
		}
	}
	if err := cfg.checkRefused(); err != nil {
		return nil, nil, err
	}
	// Quay keeps its certificate beside config.yaml as ssl.cert / ssl.key.
	dir := filepath.Dir(path)
	cert, key := filepath.Join(dir, "ssl.cert"), filepath.Join(dir, "ssl.key")
	if fileExists(cert) && fileExists(key) {
		cfg.TLSCert, cfg.TLSKey = cert, key
	}
	return cfg, warnings, nil
}

// NotSupportedKeys lists the keys of the file that berth recognises but
// does not read yet (status NotSupportedYet), sorted, for a warning at start.
func (c *Config) NotSupportedKeys() []string {
	var keys []string
	for k := range c.Raw {
		if e, ok := keysByName[k]; ok && e.Status == NotSupportedYet {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// NonNegativeInt reads a whole number >= 0 from raw config keys (Config.Raw
// or a map within it), def when the key is absent.
func NonNegativeInt(raw map[string]any, key string, def int) (int, error) {
	v, ok := raw[key]
	if !ok || v == nil {
		return def, nil
	}
	n, ok := v.(int)
	if !ok || n < 0 {
		return 0, fmt.Errorf("config key %s: want a whole number >= 0, got %v", key, v)
	}
	return n, nil
}

// Feature reports whether FEATURE_<name> is on, with def when unset.
func (c *Config) Feature(name string, def bool) bool {
	if v, ok := c.Features["FEATURE_"+name]; ok {
		return v
	}
	return def
}

// TokenSigningKeyPath is the registry token signing key's file.
func (c *Config) TokenSigningKeyPath() string {
	if c.InstanceServiceKeyLocation != "" {
		return c.InstanceServiceKeyLocation
	}
	return filepath.Join(c.DataDir, "token-signing.pem")
}

// DatabaseURI is DB_URI or the embedded SQLite file in the data directory.
func (c *Config) DatabaseURI() string {
	if c.DBURI != "" {
		return c.DBURI
	}
	return "sqlite://" + filepath.Join(c.DataDir, "berth.db")
}

// ExternalScheme is the scheme clients reach this server by, where no
// request says: PREFERRED_URL_SCHEME (for a TLS-terminating proxy in
// front), else https when the server itself serves TLS.
func (c *Config) ExternalScheme() string {
	switch {
	case c.PreferredURLScheme != "":
		return c.PreferredURLScheme
	case c.TLSCert != "":
		return "https"
	}
	return "http"
}

// ExternalURL is how clients reach this server, for the links and token
// realms it hands out: the external scheme and SERVER_HOSTNAME when that is
// set, else the scheme and Host of the request at hand.
func (c *Config) ExternalURL(r *http.Request) string {
	if c.ServerHostname != "" {
		return c.ExternalScheme() + "://" + c.ServerHostname
	}
	return RequestURL(r)
}

// RequestURL is the scheme and Host a request reached this server with:
// how the client sees it when nothing configured says otherwise.
func RequestURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// StorageDriver returns the name and parameters of the preferred storage
// location, or the filesystem under the data directory when none is set.
func (c *Config) StorageDriver() (string, map[string]any, error) {
	if len(c.DistributedStorageConfig) == 0 {
		return "LocalStorage", map[string]any{"storage_path": filepath.Join(c.DataDir, "storage")}, nil
	}
	loc := "default"
	if len(c.DistributedStoragePreference) > 0 {
		loc = c.DistributedStoragePreference[0]
	}
	entry, ok := c.DistributedStorageConfig[loc]
	if !ok {
		return "", nil, fmt.Errorf("DISTRIBUTED_STORAGE_CONFIG has no location %q", loc)
	}
	if len(entry) != 2 {
		return "", nil, fmt.Errorf("DISTRIBUTED_STORAGE_CONFIG[%s]: want [DriverName, {params}]", loc)
	}
	name, ok := entry[0].(string)
	if !ok {
		return "", nil, fmt.Errorf("DISTRIBUTED_STORAGE_CONFIG[%s][0]: want a driver name", loc)
	}
	params, ok := entry[1].(map[string]any)
	if !ok {
		return "", nil, fmt.Errorf("DISTRIBUTED_STORAGE_CONFIG[%s][1]: want a map of parameters", loc)
	}
	return name, params, nil
}

// IsSuperUser reports whether name is listed in SUPER_USERS.
func (c *Config) IsSuperUser(name string) bool {
	for _, u := range c.SuperUsers {
		if u == name {
			return true
		}
	}
	return false
}

// Validate checks the runtime settings.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data directory is empty")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("TLS needs both a certificate and a key")
	}
	if c.PreferredURLScheme != "" && c.PreferredURLScheme != "http" && c.PreferredURLScheme != "https" {
		return fmt.Errorf("PREFERRED_URL_SCHEME must be http or https, not %q", c.PreferredURLScheme)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
