package triggers

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/berth-dev/berth/triggers/forge"
)

// Registration is one trigger service as the rest of berth finds it by its
// name: the webhook dialect and, for a forge, how to reach its API. Each
// service registers itself (Register, from its provider file's init), so
// adding a forge edits no switch elsewhere.
type Registration struct {
	// Provider is the service's webhook dialect; its Service() is the key.
	Provider Provider
	// API is how berth reaches the forge's REST API; nil for a service
	// without one (custom-git), whose triggers get no webhook installed,
	// no deploy key and no commit statuses.
	API *ForgeAPI
}

// ForgeAPI is how berth reaches a forge's REST API and its web pages.
type ForgeAPI struct {
	// ConfigKey is config.yaml's key of the forge's API access
	// (GITHUB_TRIGGER_CONFIG).
	ConfigKey string
	// DefaultWebHost is the forge's web host (host[:port]) when its config
	// names no web endpoint ("github.com").
	DefaultWebHost string
	// ParseConfig decodes ConfigKey's value, given as JSON.
	ParseConfig func(raw []byte) (forge.Config, error)
	// SparsePayload: the forge's payloads name no clone URL builds can
	// trust, no changed files and no default branch (Bitbucket's). So
	// activation records the clone link its repository API names
	// (Config.ForgeGitURL), which builds then clone, and the webhook asks
	// the API for the changed files and the default branch of each push.
	SparsePayload bool
}

var (
	registryMu sync.RWMutex
	registered = map[string]Registration{}
)

// Register adds a trigger service. Like database/sql.Register it panics on a
// nil provider, an incomplete forge API or a service registered twice: each
// is a programming error found at start.
func Register(r Registration) {
	if r.Provider == nil {
		panic("triggers.Register: nil Provider")
	}
	service := r.Provider.Service()
	if api := r.API; api != nil && (api.ConfigKey == "" || api.DefaultWebHost == "" || api.ParseConfig == nil) {
		panic("triggers.Register: forge " + service + " needs a ConfigKey, a DefaultWebHost and ParseConfig")
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registered[service]; dup || service == "" {
		panic(fmt.Sprintf("triggers.Register: service %q registered twice or unnamed", service))
	}
	registered[service] = r
}

// Lookup is the registration of service.
func Lookup(service string) (Registration, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	r, ok := registered[service]
	return r, ok
}

// Services are the registered service names, sorted.
func Services() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registered))
	for s := range registered {
		names = append(names, s)
	}
	sort.Strings(names)
	return names
}

// SparsePayload reports whether service is a forge registered with
// ForgeAPI.SparsePayload.
func SparsePayload(service string) bool {
	r, ok := Lookup(service)
	return ok && r.API != nil && r.API.SparsePayload
}

// ErrUnknownService: no trigger service is registered under the name.
var ErrUnknownService = errors.New("triggers: unknown service")

// ForService returns the provider registered for a Quay service name.
func ForService(service string) (Provider, error) {
	r, ok := Lookup(service)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, service)
	}
	return r.Provider, nil
}
