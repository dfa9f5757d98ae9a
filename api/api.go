// Package api is berth's Quay-compatible REST API v1 (/api/v1/...): users,
// organizations, teams, robots, repositories, permissions, default
// permissions, OAuth applications and tokens, web sessions, and the Swagger
// document describing all of it.
//
// Every permission decision is the auth.Policy's; handlers only map its
// answers to Quay's status codes: a resource the caller may not see is 404
// (it never learns that it exists), no credentials 401, credentials without
// the right 403, bad input 400, always in Quay's error shape.
package api

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/internal/store"
)

// Prefix is where the API lives; mount Handler there.
const Prefix = "/api/v1"

// Options configures New. Store, Policy, Authenticator, Revoker, Secrets
// and Config are required.
type Options struct {
	Store  store.Store
	Policy *auth.Policy
	// Authenticator must be the one the registry's token endpoint uses, so
	// that Forget (robot token regenerated, user disabled) reaches both.
	Authenticator *auth.Authenticator
	// Revoker must be the registry TokenService's, so that registry tokens
	// issued to a robot die when its token is regenerated.
	Revoker *auth.TokenRevoker
	Secrets *auth.Secrets
	Config  *config.Config
	// ExternalURL is the server's base URL as clients see it (error "type"
	// URLs, the Swagger host). nil: Config.ExternalURL.
	ExternalURL func(r *http.Request) string
	// Logger receives failures; nil means slog.Default().
	Logger *slog.Logger
	// InvalidateRepo is called with "namespace/name" after a repository is
	// deleted or its visibility changes, so that caches (the registry's
	// repository cache) drop it. nil: nothing to invalidate.
	InvalidateRepo func(fullName string)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Egress is the outbound network policy for what the API fetches or
	// checks on a user's behalf (trigger git sources, archive URLs); nil
	// reads OUTBOUND_ALLOWED_NETWORKS from Config.
	Egress *egress.Policy
}

// API is the REST API. Create it with New, add routes with Route, serve it
// with Handler.
type API struct {
	o   Options
	e   *echo.Echo
	log *slog.Logger
	// docs describes each documented route, keyed by method and echo path.
	docs map[routeKey]Doc
	// aliases are the trailing-slash twins Route registers so that both
	// spellings work; discovery leaves them out.
	aliases map[routeKey]bool

	robotsDisallowed bool
	xhrOnly          bool
}

type routeKey struct{ method, path string }

// New builds the API and registers every route.
func New(o Options) *API {
	if o.Store == nil || o.Policy == nil || o.Authenticator == nil || o.Revoker == nil || o.Secrets == nil || o.Config == nil {
		panic("api.New: Store, Policy, Authenticator, Revoker, Secrets and Config are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.InvalidateRepo == nil {
		o.InvalidateRepo = func(string) {}
	}
	if o.Egress == nil {
		nets, err := egress.FromConfig(o.Config.Raw)
		if err != nil {
			panic("api.New: " + err.Error())
		}
		if o.Egress, err = egress.New(egress.Options{AllowedNetworks: nets}); err != nil {
			panic("api.New: " + err.Error())
		}
	}
	a := &API{
		o:                o,
		log:              o.Logger,
		docs:             map[routeKey]Doc{},
		aliases:          map[routeKey]bool{},
		robotsDisallowed: configBool(o.Config, "ROBOTS_DISALLOW", false),
		xhrOnly:          configBool(o.Config, "BROWSER_API_CALLS_XHR_ONLY", true),
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = a.handleError
	e.Use(a.authenticate)
	a.e = e
	a.registerRoutes()
	return a
}

// Handler serves the API; mount it at Prefix + "/".
func (a *API) Handler() http.Handler { return a.e }

// Echo is the underlying router, for tests and for middleware that must see
// every request. Add routes with Route, not through it, so that they are
// documented.
func (a *API) Echo() *echo.Echo { return a.e }

// Doc describes a route in the Swagger document.
type Doc struct {
	// Summary is one line; Description may be longer.
	Summary, Description string
	// Tag groups routes (Quay's categories: "user", "organization",
	// "repository", "robot", "permission", "prototype", "team", "tag",
	// "build", "trigger", ...).
	Tag string
	// Body names the JSON body's keys, for documentation only.
	Body []string
	// Query lists the query parameters.
	Query []string
	// Internal hides the route from discovery (superuser routes, as Quay
	// does).
	Internal bool
}

// Route registers a handler for method and path (relative to Prefix, with
// echo's ":param" syntax, e.g. "/repository/:namespace/:repo/build/") and
// documents it. The other trailing-slash spelling is registered too, so
// that "/x" and "/x/" both work; the one given is the documented one.
func (a *API) Route(method, path string, doc Doc, h echo.HandlerFunc) {
	full := Prefix + path
	a.e.Add(method, full, h)
	a.docs[routeKey{method, full}] = doc
	alt := full + "/"
	if strings.HasSuffix(full, "/") {
		alt = strings.TrimSuffix(full, "/")
	}
	a.e.Add(method, alt, h)
	a.aliases[routeKey{method, alt}] = true
}

// configBool reads a boolean config key from the raw file.
func configBool(c *config.Config, key string, def bool) bool {
	if v, ok := c.Raw[key].(bool); ok {
		return v
	}
	return def
}

func (a *API) now() time.Time { return a.o.Now() }

func (a *API) externalURL(r *http.Request) string {
	if a.o.ExternalURL != nil {
		return strings.TrimSuffix(a.o.ExternalURL(r), "/")
	}
	return a.o.Config.ExternalURL(r)
}

// registerRoutes adds every route of this package.
func (a *API) registerRoutes() {
	a.userRoutes()
	a.sessionRoutes()
	a.superuserRoutes()
	a.orgRoutes()
	a.teamRoutes()
	a.robotRoutes()
	a.repoRoutes()
	a.permissionRoutes()
	a.prototypeRoutes()
	a.appRoutes()
	a.Route(http.MethodGet, "/discovery", Doc{Tag: "discovery", Summary: "The Swagger 2.0 description of this API."}, a.discovery)
}
