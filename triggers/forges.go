package triggers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/berth-dev/berth/triggers/forge"
)

// ErrForgeNotConfigured: the service's *_TRIGGER_CONFIG is absent, so
// berth cannot talk to that forge.
var ErrForgeNotConfigured = errors.New("triggers: forge is not configured")

// Forges are the forge APIs config.yaml configures, by service name (each
// registered forge's ForgeAPI.ConfigKey). A forge without an entry is not
// configured.
type Forges struct {
	Configs map[string]forge.Config
	// HTTPClient is used for every forge call (nil: a default client).
	HTTPClient *http.Client
}

// ForgesFromConfig reads every registered forge's config key from
// config.yaml's raw map; absent keys leave their forge unconfigured.
func ForgesFromConfig(raw map[string]any) (Forges, error) {
	f := Forges{Configs: map[string]forge.Config{}}
	var errs []error
	for _, service := range Services() {
		r, _ := Lookup(service)
		if r.API == nil {
			continue
		}
		v, ok := raw[r.API.ConfigKey]
		if !ok || v == nil {
			continue
		}
		b, err := json.Marshal(v)
		var cfg forge.Config
		if err == nil {
			cfg, err = r.API.ParseConfig(b)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.API.ConfigKey, err))
			continue
		}
		f.Configs[service] = cfg
	}
	return f, errors.Join(errs...)
}

// Client returns the API client of service acting with token ("": the
// configured service token). A service without a forge API (custom-git)
// has none: (nil, nil).
func (f Forges) Client(service, token string) (forge.Forge, error) {
	r, ok := Lookup(service)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, service)
	}
	if r.API == nil {
		return nil, nil
	}
	cfg, ok := f.Configs[service]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrForgeNotConfigured, r.API.ConfigKey)
	}
	return cfg.NewClient(token, f.HTTPClient)
}

// WebHost is the web host (host[:port]) of a forge service: its configured
// web endpoint's, else the forge's default; "" for a service without a
// forge API.
func (f Forges) WebHost(service string) string {
	host, _ := f.web(service)
	return host
}

// web is WebHost and whether the forge's web endpoint is plain http.
func (f Forges) web(service string) (host string, plain bool) {
	r, ok := Lookup(service)
	if !ok || r.API == nil {
		return "", false
	}
	if cfg, ok := f.Configs[service]; ok {
		if u, err := url.Parse(cfg.WebEndpoint()); err == nil && u.Host != "" {
			return u.Host, u.Scheme == "http"
		}
	}
	return r.API.DefaultWebHost, false
}

// GitHosts are the git servers of every registered forge as f configures
// it, as host:port for the egress policy's trusted hosts: each forge's web
// address (HTTPS clones) and its host on port 22 (the SSH URL builds
// fetch). An administrator named them, so they stay reachable when they
// sit on a private network.
func (f Forges) GitHosts() []string {
	var hosts []string
	for _, service := range Services() {
		web, plain := f.web(service)
		if web == "" {
			continue
		}
		host, port, err := net.SplitHostPort(web)
		if err != nil {
			host, port = web, "443"
			if plain {
				port = "80"
			}
		}
		hosts = append(hosts, net.JoinHostPort(host, port), net.JoinHostPort(host, "22"))
	}
	return hosts
}
