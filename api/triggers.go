package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/dockerfile"
	"github.com/berth-dev/berth/gitsource"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/builderr"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
	"github.com/berth-dev/berth/triggers/webhook"
)

// TriggerOptions configure RegisterTriggers. Manager and Builds are
// required.
type TriggerOptions struct {
	Manager *buildmanager.Manager
	// Builds renders the builds a trigger started (RegisterBuilds' value).
	Builds *Builds
	// Secrets seals trigger secrets (default: the API's Secrets). It must
	// be the webhook handler's.
	Secrets *auth.Secrets
	// ExternalURL is berth's base URL for webhook URLs (default: the API's).
	ExternalURL func(r *http.Request) string
	// Forges reaches GitHub, GitLab and Bitbucket; nil reads
	// GITHUB_TRIGGER_CONFIG, GITLAB_TRIGGER_CONFIG and
	// BITBUCKET_TRIGGER_CONFIG from the config.
	Forges *webhook.Forges
	// ScanHostKey records a git server's SSH host key (default
	// triggers.ScanHostKey through the egress policy).
	ScanHostKey func(ctx context.Context, hostport string) (string, error)
}

// Triggers serves the build trigger endpoints. RegisterTriggers creates it.
type Triggers struct {
	a *API
	o TriggerOptions
	f webhook.Forges
	// egress is the API's policy plus the configured forges' git
	// servers, which an administrator named.
	egress *egress.Policy
}

// RegisterTriggers adds Quay's trigger routes (and berth's deliveries list)
// to a. The webhook itself is served by triggers/webhook.
func RegisterTriggers(a *API, o TriggerOptions) (*Triggers, error) {
	if o.Manager == nil || o.Builds == nil {
		return nil, errors.New("api.RegisterTriggers: Manager and Builds are required")
	}
	if o.Secrets == nil {
		o.Secrets = a.o.Secrets
	}
	if o.ExternalURL == nil {
		o.ExternalURL = a.externalURL
	}
	var f webhook.Forges
	if o.Forges != nil {
		f = *o.Forges
	} else {
		var err error
		if f, err = webhook.ForgesFromConfig(a.o.Config.Raw); err != nil {
			return nil, fmt.Errorf("api: trigger config: %w", err)
		}
	}
	eo := a.o.Egress.Options()
	eo.TrustedHosts = append(eo.TrustedHosts, ForgeGitHosts(f)...)
	policy, err := egress.New(eo)
	if err != nil {
		return nil, fmt.Errorf("api: trigger egress policy: %w", err)
	}
	if o.ScanHostKey == nil {
		o.ScanHostKey = func(ctx context.Context, hostport string) (string, error) {
			return triggers.ScanHostKey(ctx, policy.DialContext, hostport)
		}
	}
	t := &Triggers{a: a, o: o, f: f, egress: policy}
	const base = "/repository/:namespace/:repo/trigger"
	a.Route(http.MethodGet, base+"/", Doc{Tag: "trigger", Summary: "List the repository's build triggers."}, t.list)
	a.Route(http.MethodPost, base+"/", Doc{Tag: "trigger", Summary: "Create and activate a build trigger.",
		Body: []string{"service", "config", "pull_robot", "access_token"}}, t.create)
	a.Route(http.MethodGet, base+"/:uuid", Doc{Tag: "trigger", Summary: "Get a build trigger."}, t.get)
	a.Route(http.MethodPut, base+"/:uuid", Doc{Tag: "trigger", Summary: "Enable or disable a build trigger.",
		Body: []string{"enabled"}}, t.update)
	a.Route(http.MethodDelete, base+"/:uuid", Doc{Tag: "trigger", Summary: "Delete a build trigger and its webhook and deploy key."}, t.delete)
	a.Route(http.MethodPost, base+"/:uuid/activate", Doc{Tag: "trigger", Summary: "Activate a build trigger.",
		Body: []string{"config", "pull_robot"}}, t.activateRoute)
	a.Route(http.MethodPost, base+"/:uuid/start", Doc{Tag: "trigger", Summary: "Run a build trigger now.",
		Body: []string{"branch_name", "commit_sha", "refs"}}, t.start)
	a.Route(http.MethodGet, base+"/:uuid/builds", Doc{Tag: "trigger", Summary: "List the builds a trigger started, newest first.",
		Query: []string{"limit"}}, t.builds)
	a.Route(http.MethodPost, base+"/:uuid/analyze", Doc{Tag: "trigger", Summary: "Analyze a trigger's Dockerfile.",
		Body: []string{"config"}, Internal: true}, t.analyze)
	a.Route(http.MethodGet, base+"/:uuid/deliveries", Doc{Tag: "trigger", Summary: "List the webhook deliveries a trigger received, newest first.",
		Query: []string{"limit"}}, t.deliveries)
	return t, nil
}

// triggerView is Quay's TriggerView plus berth's connected_user.
type triggerView struct {
	ID             string         `json:"id"`
	Service        string         `json:"service"`
	IsActive       bool           `json:"is_active"`
	BuildSource    *string        `json:"build_source"`
	RepositoryURL  *string        `json:"repository_url"`
	Config         map[string]any `json:"config"`
	CanInvoke      bool           `json:"can_invoke"`
	Enabled        bool           `json:"enabled"`
	DisabledReason *string        `json:"disabled_reason"`
	PullRobot      *pullRobotView `json:"pull_robot"`
	ConnectedUser  *string        `json:"connected_user"`
}

func (t *Triggers) view(c echo.Context, tr *store.Trigger) (triggerView, error) {
	cfg := map[string]any{}
	if len(tr.Config) > 0 {
		if err := json.Unmarshal(tr.Config, &cfg); err != nil {
			return triggerView{}, err
		}
	}
	src := webhook.BuildSource(tr)
	v := triggerView{ID: tr.UUID, Service: tr.Service, IsActive: tr.Active(), BuildSource: strPtr(src),
		RepositoryURL: strPtr(t.repositoryURL(tr.Service, src)), Config: cfg, CanInvoke: true,
		Enabled: tr.Enabled, ConnectedUser: strPtr(tr.ConnectedUser)}
	if !tr.Enabled {
		v.DisabledReason = strPtr(tr.DisabledReason)
	}
	if tr.PullRobot != "" {
		v.PullRobot = &pullRobotView{Name: tr.PullRobot, Kind: "user", IsRobot: true}
	}
	if tr.Active() {
		hookSecret := ""
		if tr.Service == triggers.ServiceCustomGit {
			s, err := t.o.Secrets.Open(tr.SealedSecret, webhook.SecretPurpose(tr.UUID))
			if err != nil {
				return triggerView{}, err
			}
			hookSecret = string(s)
		}
		cfg["credentials"] = triggers.Credentials(tr.Service, tr.PublicKey, t.webhookURL(c, tr.UUID, hookSecret))
	}
	return v, nil
}

// webhookURL is the trigger's endpoint, with the $token credentials when
// secret is not empty.
func (t *Triggers) webhookURL(c echo.Context, id, secret string) string {
	base, err := url.Parse(t.o.ExternalURL(c.Request()))
	if err != nil || base.Host == "" {
		return ""
	}
	return triggers.WebhookURL(base.Scheme, base.Host, id, secret)
}

// forgeHost is the web host of a forge service.
func (t *Triggers) forgeHost(service string) string {
	return forgeWebHost(t.f, service)
}

// forgeWebHost is the web host (host[:port]) of a forge service as f
// configures it.
func forgeWebHost(f webhook.Forges, service string) string {
	host := func(endpoint, def string) string {
		if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
			return u.Host
		}
		return def
	}
	switch service {
	case triggers.ServiceGitHub:
		if f.GitHub != nil {
			return host(f.GitHub.GitHubEndpoint, "github.com")
		}
		return "github.com"
	case triggers.ServiceGitLab:
		if f.GitLab != nil {
			return host(f.GitLab.GitLabEndpoint, "gitlab.com")
		}
		return "gitlab.com"
	case triggers.ServiceBitbucket:
		return "bitbucket.org"
	}
	return ""
}

// ForgeGitHosts are the git servers of the forges f configures, as
// host:port for the egress policy's trusted hosts: each forge's web
// address (HTTPS clones) and its host on port 22 (the SSH URL builds
// fetch). An administrator named them, so they stay reachable when they
// sit on a private network.
func ForgeGitHosts(f webhook.Forges) []string {
	var hosts []string
	for _, service := range []string{triggers.ServiceGitHub, triggers.ServiceGitLab, triggers.ServiceBitbucket} {
		web := forgeWebHost(f, service)
		host, port, err := net.SplitHostPort(web)
		if err != nil {
			host, port = web, "443"
			if service == triggers.ServiceGitHub && f.GitHub != nil && strings.HasPrefix(f.GitHub.GitHubEndpoint, "http://") ||
				service == triggers.ServiceGitLab && f.GitLab != nil && strings.HasPrefix(f.GitLab.GitLabEndpoint, "http://") {
				port = "80"
			}
		}
		hosts = append(hosts, net.JoinHostPort(host, port), net.JoinHostPort(host, "22"))
	}
	return hosts
}

func (t *Triggers) repositoryURL(service, src string) string {
	if src == "" || service == triggers.ServiceCustomGit {
		return ""
	}
	return "https://" + t.forgeHost(service) + "/" + src
}

// triggerFromPath is the path's trigger of the path's repository, for a
// repository admin.
func (t *Triggers) triggerFromPath(c echo.Context) (*store.Repository, *store.Trigger, error) {
	repo, _, err := t.a.repoFromPath(c, store.RoleAdmin)
	if err != nil {
		return nil, nil, err
	}
	tr, err := t.a.o.Store.GetTrigger(c.Request().Context(), Param(c, "uuid"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, NotFound()
	}
	if err != nil {
		return nil, nil, Internal(err)
	}
	if tr.RepoID != repo.ID {
		return nil, nil, NotFound()
	}
	return repo, tr, nil
}

func (t *Triggers) respond(c echo.Context, code int, tr *store.Trigger) error {
	v, err := t.view(c, tr)
	if err != nil {
		return Internal(err)
	}
	return c.JSON(code, v)
}

func (t *Triggers) list(c echo.Context) error {
	repo, _, err := t.a.repoFromPath(c, store.RoleAdmin)
	if err != nil {
		return err
	}
	ts, err := t.a.o.Store.ListTriggers(c.Request().Context(), repo.ID)
	if err != nil {
		return Internal(err)
	}
	views := make([]triggerView, 0, len(ts))
	for i := range ts {
		v, err := t.view(c, &ts[i])
		if err != nil {
			return Internal(err)
		}
		views = append(views, v)
	}
	return c.JSON(http.StatusOK, map[string]any{"triggers": views})
}

func (t *Triggers) get(c echo.Context) error {
	_, tr, err := t.triggerFromPath(c)
	if err != nil {
		return err
	}
	return t.respond(c, http.StatusOK, tr)
}

type activateBody struct {
	Service     string          `json:"service"`
	Config      json.RawMessage `json:"config"`
	PullRobot   string          `json:"pull_robot"`
	AccessToken string          `json:"access_token"`
}

func (t *Triggers) create(c echo.Context) error {
	repo, _, err := t.a.repoFromPath(c, store.RoleAdmin)
	if err != nil {
		return err
	}
	var body activateBody
	if err := DecodeJSON(c, &body, false); err != nil {
		return err
	}
	if _, err := triggers.ForService(body.Service); err != nil {
		return BadRequest("Unknown trigger service " + strconv.Quote(body.Service))
	}
	ctx := c.Request().Context()
	tr := &store.Trigger{UUID: uuid.NewString(), RepoID: repo.ID, Service: body.Service, Enabled: true}
	if acct := Caller(c).Account; acct != nil {
		tr.ConnectedUserID = acct.ID
	}
	if err := t.a.o.Store.CreateTrigger(ctx, tr); err != nil {
		return Internal(err)
	}
	if err := t.activate(c, tr, body); err != nil {
		if derr := t.a.o.Store.DeleteTrigger(context.WithoutCancel(ctx), tr.UUID); derr != nil {
			t.a.log.ErrorContext(ctx, "removing a trigger that failed to activate failed", "trigger", tr.UUID, "err", derr)
		}
		return err
	}
	return t.respond(c, http.StatusCreated, tr)
}

func (t *Triggers) activateRoute(c echo.Context) error {
	_, tr, err := t.triggerFromPath(c)
	if err != nil {
		return err
	}
	if tr.Active() {
		return BadRequest("Trigger is already activated")
	}
	var body activateBody
	if err := DecodeJSON(c, &body, false); err != nil {
		return err
	}
	if body.Config == nil {
		return BadRequest("config is required")
	}
	if err := t.activate(c, tr, body); err != nil {
		return err
	}
	return t.respond(c, http.StatusOK, tr)
}

// hostKeyTimeout bounds recording a git server's host key.
const hostKeyTimeout = 15 * time.Second

// activate checks the config, makes the trigger's secret and deploy key,
// records the git server's host key (custom-git over SSH) or installs the
// webhook and deploy key on the forge, and saves the trigger.
func (t *Triggers) activate(c echo.Context, tr *store.Trigger, body activateBody) error {
	ctx := c.Request().Context()
	cfgMap := map[string]any{}
	if len(body.Config) > 0 && string(body.Config) != "null" {
		if err := json.Unmarshal(body.Config, &cfgMap); err != nil {
			return BadRequest("config must be a JSON object")
		}
	}
	// Credentials are derived on every read, never stored.
	delete(cfgMap, "credentials")
	cfgJSON, err := json.Marshal(cfgMap)
	if err != nil {
		return Internal(err)
	}
	var cfg triggers.Config
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return BadRequest("Invalid trigger config: " + jsonProblem(err))
	}
	if err := triggers.ValidateConfig(cfg); err != nil {
		return BadRequest(err.Error())
	}
	if p, ok := cfgMap["concurrency"]; ok && p != webhook.ConcurrencyParallel && p != webhook.ConcurrencySerial {
		return BadRequest(`concurrency must be "parallel" or "serial"`)
	}
	if cfg.BuildSource == "" {
		return BadRequest("config.build_source is required")
	}
	if err := t.checkGitURL(ctx, tr, cfg); err != nil {
		return err
	}
	if body.PullRobot != "" {
		if err := t.o.Builds.checkPullRobot(c, body.PullRobot); err != nil {
			return err
		}
	}
	key, err := triggers.GenerateDeployKey("berth trigger " + tr.UUID)
	if err != nil {
		return Internal(err)
	}
	secret := auth.RandomString(auth.RobotTokenLen, auth.UpperAlnum)
	tr.Config, tr.PublicKey, tr.PullRobot = cfgJSON, key.PublicKey, body.PullRobot
	if body.AccessToken != "" {
		tr.SealedAuthToken = t.o.Secrets.Seal([]byte(body.AccessToken), webhook.AuthTokenPurpose(tr.UUID))
	}
	var fg forge.Forge
	if tr.Service != triggers.ServiceCustomGit {
		if !strings.Contains(cfg.BuildSource, "/") {
			return BadRequest("config.build_source must name the forge repository as owner/name")
		}
		if fg, err = t.f.ForTrigger(tr, t.o.Secrets); err != nil {
			return BadRequest("Could not activate the trigger: " + err.Error())
		}
	}
	// Builds fetch over SSH with the deploy key and check the server's host
	// key against the one recorded now, at activation, by the admin setting
	// the trigger up. For a forge without clone_url that server is the
	// forge's own SSH host.
	if hostport, ok := sshHost(t.triggerGitURL(tr, cfg)); ok {
		sctx, cancel := context.WithTimeout(ctx, hostKeyTimeout)
		line, err := t.o.ScanHostKey(sctx, hostport)
		cancel()
		switch {
		case err == nil:
			tr.KnownHosts = line
		case errors.Is(err, egress.ErrRefused):
			return BadRequest(refusedGitServer)
		case fg == nil || cfg.CloneURL != "":
			// The cause (refused, reset, timed out, not SSH) stays in the
			// log: told to the caller, it maps the server's ports.
			t.a.log.WarnContext(ctx, "recording a git server's SSH host key failed", "trigger", tr.UUID, "host", hostport, "err", err)
			return BadRequest("Could not record the SSH host key of " + hostport + ": no SSH server answered there.")
		default:
			// The forge's SSH host is derived from its endpoint, not given by
			// the admin, and its pushes may name another clone URL: the
			// trigger is still activated, and a build that fetches over SSH
			// fails with a message that names the missing host key.
			t.a.log.WarnContext(ctx, "forge SSH host key not recorded", "trigger", tr.UUID, "host", hostport, "err", err)
		}
	}
	if fg != nil {
		if err := webhook.Install(ctx, fg, tr, t.webhookURL(c, tr.UUID, ""), []byte(secret)); err != nil {
			return BadRequest("Could not activate the trigger: " + err.Error())
		}
	}
	tr.SealedSecret = t.o.Secrets.Seal([]byte(secret), webhook.SecretPurpose(tr.UUID))
	tr.SealedPrivateKey = t.o.Secrets.Seal(key.PrivateKeyPEM, webhook.PrivateKeyPurpose(tr.UUID))
	if acct := Caller(c).Account; acct != nil {
		tr.ConnectedUserID = acct.ID
	}
	if err := t.a.o.Store.UpdateTrigger(ctx, tr); err != nil {
		return Internal(err)
	}
	return nil
}

// refusedGitServer is the answer for a git source at an address the
// egress policy refuses: the same for every address and port, since
// nothing was sent there.
const refusedGitServer = "The git server's address is not reachable from berth: loopback, private and link-local addresses are refused unless an administrator allows their network (OUTBOUND_ALLOWED_NETWORKS)."

// checkGitURL refuses, at creation and activation, a git URL builds of tr
// could never fetch: a transport other than ssh, https, http and git (a
// file:// URL or a local path would read the server's disk), or a server
// the egress policy refuses.
func (t *Triggers) checkGitURL(ctx context.Context, tr *store.Trigger, cfg triggers.Config) error {
	err := gitsource.CheckURL(ctx, t.egress, t.triggerGitURL(tr, cfg))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gitsource.ErrRefusedHost):
		return BadRequest(refusedGitServer)
	}
	if ue, ok := builderr.AsUserError(err); ok {
		return BadRequest("Invalid git source: " + ue.Message)
	}
	return Internal(err)
}

// sshHost returns host:port of an SSH git URL (ssh://[user@]host[:port]/path
// or scp-like [user@]host:path); other URLs need no host key.
func sshHost(src string) (string, bool) {
	if strings.Contains(src, "://") {
		u, err := url.Parse(src)
		if err != nil || (u.Scheme != "ssh" && u.Scheme != "git+ssh" && u.Scheme != "ssh+git") || u.Hostname() == "" {
			return "", false
		}
		port := u.Port()
		if port == "" {
			port = "22"
		}
		return net.JoinHostPort(u.Hostname(), port), true
	}
	hostPart, _, ok := strings.Cut(src, ":")
	if !ok || strings.Contains(hostPart, "/") {
		return "", false
	}
	if i := strings.LastIndex(hostPart, "@"); i >= 0 {
		hostPart = hostPart[i+1:]
	}
	if hostPart == "" {
		return "", false
	}
	return net.JoinHostPort(hostPart, "22"), true
}

func (t *Triggers) update(c echo.Context) error {
	_, tr, err := t.triggerFromPath(c)
	if err != nil {
		return err
	}
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := DecodeJSON(c, &body, false); err != nil {
		return err
	}
	if body.Enabled == nil {
		return BadRequest("enabled is required")
	}
	if !tr.Active() {
		return BadRequest("Cannot update an inactive trigger")
	}
	tr.Enabled = *body.Enabled
	if tr.Enabled {
		tr.DisabledReason, tr.DisabledAt = "", time.Time{}
	} else {
		tr.DisabledReason, tr.DisabledAt = store.DisabledByUser, t.a.now()
	}
	if err := t.a.o.Store.UpdateTrigger(c.Request().Context(), tr); err != nil {
		return Internal(err)
	}
	return t.respond(c, http.StatusOK, tr)
}

// delete removes the forge's webhook and deploy key as well as it can
// (their failure is logged, as Quay ignores it) and the trigger.
func (t *Triggers) delete(c echo.Context) error {
	_, tr, err := t.triggerFromPath(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if tr.Service != triggers.ServiceCustomGit && (tr.HookID != "" || tr.DeployKeyID != "") {
		fg, err := t.f.ForTrigger(tr, t.o.Secrets)
		if err == nil {
			err = webhook.Uninstall(ctx, fg, tr)
		}
		if err != nil {
			t.a.log.WarnContext(ctx, "removing a trigger's webhook or deploy key failed", "trigger", tr.UUID, "err", err)
		}
	}
	if err := t.a.o.Store.DeleteTrigger(ctx, tr.UUID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return Internal(err)
	}
	return c.NoContent(http.StatusNoContent)
}

type runParameters struct {
	BranchName string `json:"branch_name"`
	CommitSHA  string `json:"commit_sha"`
	Refs       *struct {
		Kind string `json:"kind"`
		Name string `json:"name"`
	} `json:"refs"`
}

// start is Quay's manual run: the ref from refs{kind,name} or branch_name
// (default: the default branch), the commit from commit_sha or else the
// ref's head on the git server now (git ls-remote), so that the queued
// build names the commit it will build.
func (t *Triggers) start(c echo.Context) error {
	repo, tr, err := t.triggerFromPath(c)
	if err != nil {
		return err
	}
	var body runParameters
	if err := DecodeJSON(c, &body, true); err != nil {
		return err
	}
	switch {
	case !tr.Active():
		return BadRequest("Trigger is not active.")
	case !tr.Enabled:
		return BadRequest(webhook.DisabledMessage)
	}
	if body.CommitSHA != "" && !isHex(body.CommitSHA) {
		return BadRequest("commit_sha must be a hexadecimal commit id")
	}
	var cfg triggers.Config
	if err := json.Unmarshal(tr.Config, &cfg); err != nil {
		return Internal(err)
	}
	ctx := c.Request().Context()
	src := webhook.BuildSource(tr)
	md := triggers.Metadata{Commit: body.CommitSHA, GitURL: t.triggerGitURL(tr, cfg)}
	if tr.Service != triggers.ServiceCustomGit {
		if fg, err := t.f.ForTrigger(tr, t.o.Secrets); err == nil {
			if b, err := fg.DefaultBranch(ctx, src); err == nil {
				md.DefaultBranch = b
			}
		}
	}
	switch {
	case body.Refs != nil && body.Refs.Name != "":
		kind := "heads"
		if body.Refs.Kind == "tag" {
			kind = "tags"
		}
		md.Ref = "refs/" + kind + "/" + body.Refs.Name
	case body.BranchName != "":
		md.Ref = "refs/heads/" + body.BranchName
	case md.DefaultBranch != "":
		md.Ref = "refs/heads/" + md.DefaultBranch
	}
	if md.Commit == "" {
		head, err := t.resolveHead(ctx, tr, cfg, md.Ref)
		if err != nil {
			return err
		}
		md.Commit, md.Ref = head.Commit, head.Name
		if md.DefaultBranch == "" {
			md.DefaultBranch = head.DefaultBranch
		}
	}
	if md.Ref == "" {
		md.Ref = "refs/heads/master"
	}
	prep, sk := triggers.Prepare(cfg, triggers.PushEvent{Service: tr.Service, Repository: src, Metadata: md})
	if sk.Skipped() && sk.Reason != triggers.SkipFiltered {
		return BadRequest(sk.Message)
	}
	if sk.Skipped() {
		// A manual run builds what was asked even when the regex would
		// not; Prepare without the filter gives the tags.
		cfg.BranchTagRegex = ""
		prep, sk = triggers.Prepare(cfg, triggers.PushEvent{Service: tr.Service, Repository: src, Metadata: md})
		if sk.Skipped() {
			return BadRequest(sk.Message)
		}
	}
	built, err := webhook.Submit(ctx, t.a.o.Store, t.o.Manager, tr, prep)
	if err != nil {
		return submitError(err)
	}
	built.Namespace, built.Repository, built.Requester = repo.Namespace, repo.Name, tr.ConnectedUser
	c.Response().Header().Set("Location", t.a.externalURL(c.Request())+Prefix+"/repository/"+
		repo.Namespace+"/"+repo.Name+"/build/"+built.ID+"/status")
	return c.JSON(http.StatusCreated, t.o.Builds.view(built, store.RoleAdmin))
}

// resolveHead asks the trigger's git server for ref's head ("": the
// default branch). Every failure is a 400 the caller can act on.
func (t *Triggers) resolveHead(ctx context.Context, tr *store.Trigger, cfg triggers.Config, ref string) (gitsource.RemoteRef, error) {
	if t.triggerGitURL(tr, cfg) == "" {
		return gitsource.RemoteRef{}, BadRequest("The trigger has no build_source to build from.")
	}
	src, err := t.gitSource(ctx, tr, cfg, ref)
	if err != nil {
		return gitsource.RemoteRef{}, Internal(err)
	}
	head, err := gitsource.ResolveRef(ctx, t.egress, src, ref)
	if err == nil {
		return head, nil
	}
	if errors.Is(err, gitsource.ErrRefNotFound) {
		what := "The default branch"
		switch kind, name := triggers.ParsedRef(ref); kind {
		case "heads":
			what = "Branch " + strconv.Quote(name)
		case "tags":
			what = "Tag " + strconv.Quote(name)
		}
		return gitsource.RemoteRef{}, BadRequest(what + " does not exist in the trigger's git repository.")
	}
	if ue, ok := builderr.AsUserError(err); ok {
		return gitsource.RemoteRef{}, BadRequest("Could not read the trigger's git repository: " + ue.Message)
	}
	t.a.log.WarnContext(ctx, "resolving a trigger's ref failed", "trigger", tr.UUID, "ref", ref, "err", err)
	return gitsource.RemoteRef{}, BadRequest("Could not reach the trigger's git repository to find the commit to build; try again, or give commit_sha.")
}

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return s != ""
}

func limitParam(c echo.Context, def int) (int, error) {
	s := c.QueryParam("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, BadRequest("limit must be a positive integer")
	}
	return n, nil
}

func (t *Triggers) builds(c echo.Context) error {
	repo, tr, err := t.triggerFromPath(c)
	if err != nil {
		return err
	}
	limit, err := limitParam(c, 5)
	if err != nil {
		return err
	}
	bs, err := t.a.o.Store.ListTriggerBuilds(c.Request().Context(), tr.UUID, limit)
	if err != nil {
		return Internal(err)
	}
	views := []buildView{}
	for i := range bs {
		if bs[i].RepoID == repo.ID {
			views = append(views, t.o.Builds.view(&bs[i], store.RoleAdmin))
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"builds": views})
}

// Analyzer statuses (Quay's): the Dockerfile's base image needs no
// credentials (publicbase), needs a pull robot (requiresrobot), may not
// build (warning), or cannot build (error).
const (
	analyzePublicBase    = "publicbase"
	analyzeRequiresRobot = "requiresrobot"
	analyzeWarning       = "warning"
	analyzeError         = "error"
)

// analyzeRank orders the statuses of a multi-stage Dockerfile's bases: the
// highest is reported. A private base surely fails without a robot, a
// warning only may.
var analyzeRank = map[string]int{analyzePublicBase: 1, analyzeWarning: 2, analyzeRequiresRobot: 3, analyzeError: 4}

// maxAnalyzedDockerfile bounds the Dockerfile analyze reads, as the
// worker's parser does.
const maxAnalyzedDockerfile = 1 << 20

// analyzeRobot is a robot of the trigger's namespace in the analyzer view.
type analyzeRobot struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	IsRobot bool   `json:"is_robot"`
	CanRead bool   `json:"can_read"`
}

// analyzeView is Quay's analyzer answer. Namespace and Name are the
// berth repository of the reported base image, when it is one.
type analyzeView struct {
	Namespace *string        `json:"namespace"`
	Name      *string        `json:"name"`
	Robots    []analyzeRobot `json:"robots"`
	Status    string         `json:"status"`
	Message   string         `json:"message"`
	IsAdmin   bool           `json:"is_admin"`
}

// analysis is the finding about one base image (or the whole Dockerfile).
type analysis struct {
	status, message string
	// repo is the berth repository of the base image, when the caller may
	// know it exists.
	repo *store.Repository
}

// analyze is Quay's trigger analyzer: it reads the Dockerfile a build of
// the proposed config would use, from the default branch of the trigger's
// git source with the trigger's own credentials, and tells whether its
// base images need a pull robot. Multi-stage Dockerfiles are judged on
// every FROM that pulls; the gravest finding is reported.
func (t *Triggers) analyze(c echo.Context) error {
	repo, tr, err := t.triggerFromPath(c)
	if err != nil {
		return err
	}
	var body struct {
		Config map[string]any `json:"config"`
	}
	if err := DecodeJSON(c, &body, true); err != nil {
		return err
	}
	cfg, err := proposedConfig(tr, body.Config)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	found, err := t.analyzeConfig(c, tr, cfg)
	if err != nil {
		return err
	}
	ns, err := t.a.o.Store.GetAccountByID(ctx, repo.NamespaceID)
	if err != nil {
		return Internal(err)
	}
	isAdmin, err := t.a.o.Policy.CanAdminNamespace(ctx, Caller(c), ns)
	if err != nil {
		return Internal(err)
	}
	v := analyzeView{Status: found.status, Message: found.message, IsAdmin: isAdmin, Robots: []analyzeRobot{}}
	if found.repo != nil {
		v.Namespace, v.Name = &found.repo.Namespace, &found.repo.Name
	}
	if isAdmin {
		if v.Robots, err = t.analyzeRobots(ctx, ns, found.repo); err != nil {
			return Internal(err)
		}
	}
	return c.JSON(http.StatusOK, v)
}

// proposedConfig is the trigger's stored config with the proposed keys
// laid over it.
func proposedConfig(tr *store.Trigger, proposed map[string]any) (triggers.Config, error) {
	merged := map[string]any{}
	if len(tr.Config) > 0 {
		if err := json.Unmarshal(tr.Config, &merged); err != nil {
			return triggers.Config{}, Internal(err)
		}
	}
	for k, v := range proposed {
		merged[k] = v
	}
	b, err := json.Marshal(merged)
	if err != nil {
		return triggers.Config{}, Internal(err)
	}
	var cfg triggers.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return triggers.Config{}, BadRequest("Invalid trigger config: " + jsonProblem(err))
	}
	return cfg, nil
}

// analyzeConfig reads and judges the Dockerfile of cfg. Only a store
// failure is an error; everything about the Dockerfile is a finding.
func (t *Triggers) analyzeConfig(c echo.Context, tr *store.Trigger, cfg triggers.Config) (analysis, error) {
	ctx := c.Request().Context()
	dfPath, contextPath, err := triggers.BuildPaths(cfg)
	if err != nil {
		return analysis{status: analyzeError, message: "The trigger's paths are invalid: " + err.Error()}, nil
	}
	if t.triggerGitURL(tr, cfg) == "" {
		return analysis{status: analyzeError, message: "The trigger has no build_source to read the Dockerfile from."}, nil
	}
	src, err := t.gitSource(ctx, tr, cfg, "")
	if err != nil {
		return analysis{}, Internal(err)
	}
	content, err := gitsource.ReadFile(ctx, t.egress, src, dfPath, maxAnalyzedDockerfile)
	if finding, ok := t.readFinding(ctx, tr, dfPath, err); ok {
		return finding, nil
	}
	bases, perr := triggers.BaseImages(content)
	if perr != nil && !errors.Is(perr, dockerfile.ErrNoFrom) && !errors.Is(perr, dockerfile.ErrUnresolvedArg) {
		return analysis{status: analyzeError, message: "The Dockerfile " + dfPath + " cannot be parsed: " + userMessage(perr)}, nil
	}
	if !triggers.InContext(dfPath, contextPath) {
		return analysis{status: analyzeError, message: fmt.Sprintf("The Dockerfile %s is not inside the build context %s.", dfPath, contextPath)}, nil
	}
	switch {
	case errors.Is(perr, dockerfile.ErrNoFrom):
		return analysis{status: analyzeWarning, message: "The Dockerfile " + dfPath + " has no FROM instruction, so its builds will fail."}, nil
	case perr != nil:
		return analysis{status: analyzeWarning, message: "The Dockerfile " + dfPath + " may not build: " + userMessage(perr)}, nil
	}
	hosts := t.registryHosts(c.Request())
	var worst analysis
	for _, b := range bases {
		found, err := t.analyzeBase(c, b, hosts)
		if err != nil {
			return analysis{}, err
		}
		if analyzeRank[found.status] > analyzeRank[worst.status] {
			worst = found
		}
	}
	if worst.status == "" {
		// Only scratch and earlier stages: nothing to pull.
		worst = analysis{status: analyzePublicBase, message: "The Dockerfile pulls no base image."}
	}
	return worst, nil
}

// readFinding turns a failure to read the Dockerfile into a finding; ok
// is false when it was read.
func (t *Triggers) readFinding(ctx context.Context, tr *store.Trigger, dfPath string, err error) (analysis, bool) {
	switch {
	case err == nil:
		return analysis{}, false
	case errors.Is(err, gitsource.ErrFileNotFound), errors.Is(err, gitsource.ErrRefNotFound):
		return analysis{status: analyzeWarning, message: "The Dockerfile " + dfPath +
			" was not found on the default branch of the git repository; builds of this trigger may fail."}, true
	case errors.Is(err, gitsource.ErrFileTooLarge):
		return analysis{status: analyzeError, message: fmt.Sprintf("The Dockerfile %s is larger than %d bytes.", dfPath, maxAnalyzedDockerfile)}, true
	}
	if ue, ok := builderr.AsUserError(err); ok {
		return analysis{status: analyzeError, message: "The git repository could not be read: " + ue.Message}, true
	}
	t.a.log.WarnContext(ctx, "reading a trigger's Dockerfile failed", "trigger", tr.UUID, "err", err)
	return analysis{status: analyzeError, message: "The git repository could not be read: its server did not answer in time or broke the connection."}, true
}

// userMessage is a Dockerfile error's message for the caller.
func userMessage(err error) string {
	if ue, ok := builderr.AsUserError(err); ok {
		return ue.Message
	}
	return err.Error()
}

// analyzeBase judges one base image. A berth repository the caller cannot
// read is reported exactly like a missing one.
func (t *Triggers) analyzeBase(c echo.Context, b triggers.BaseImage, hosts map[string]bool) (analysis, error) {
	line := fmt.Sprintf("line %d: ", b.Line)
	if len(b.Unresolved) > 0 {
		return analysis{status: analyzeWarning, message: line + "FROM " + b.Ref + " uses the build argument " +
			strings.Join(b.Unresolved, ", ") + " without a value; trigger builds pass none, so the base image may not be the one meant."}, nil
	}
	if !hosts[normalHost(b.Host)] {
		return analysis{status: analyzePublicBase, message: line + "the base image " + b.Ref + " is from another registry: no robot of this one is needed to pull it."}, nil
	}
	ns, name, ok := strings.Cut(b.Repository, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return analysis{status: analyzeWarning, message: line + "the base image " + b.Ref + " does not name a repository of this registry as namespace/name."}, nil
	}
	ctx := c.Request().Context()
	hidden := analysis{status: analyzeError, message: line + "the base repository " + ns + "/" + name + " was not found."}
	base, err := t.a.o.Store.GetRepository(ctx, ns, name)
	if errors.Is(err, store.ErrNotFound) {
		return hidden, nil
	}
	if err != nil {
		return analysis{}, Internal(err)
	}
	role, err := t.a.o.Policy.RepositoryRole(ctx, Caller(c), base)
	if err != nil {
		return analysis{}, Internal(err)
	}
	switch {
	case role == "":
		return hidden, nil
	case base.Visibility == store.Public:
		return analysis{status: analyzePublicBase, repo: base, message: line + "the base repository " + base.FullName() + " is public."}, nil
	}
	return analysis{status: analyzeRequiresRobot, repo: base, message: line + "the base repository " + base.FullName() +
		" is private: the trigger needs a pull robot that can read it."}, nil
}

// analyzeRobots lists the robots of the trigger's namespace, each saying
// whether it may read base (never, when base is nil).
func (t *Triggers) analyzeRobots(ctx context.Context, ns *store.Account, base *store.Repository) ([]analyzeRobot, error) {
	robots, err := t.a.o.Store.ListRobots(ctx, ns.ID)
	if err != nil {
		return nil, err
	}
	out := make([]analyzeRobot, 0, len(robots))
	for i := range robots {
		r := analyzeRobot{Name: robots[i].Name, Kind: "user", IsRobot: true}
		if base != nil {
			role, err := t.a.o.Policy.RepositoryRole(ctx, &auth.Principal{Account: &robots[i]}, base)
			if err != nil {
				return nil, err
			}
			r.CanRead = auth.RoleAtLeast(role, store.RoleRead)
		}
		out = append(out, r)
	}
	return out, nil
}

// registryHosts are the names clients reach this registry by: the
// external URL's host, the request's Host and SERVER_HOSTNAME.
func (t *Triggers) registryHosts(r *http.Request) map[string]bool {
	hosts := map[string]bool{}
	add := func(h string) {
		if h != "" {
			hosts[normalHost(h)] = true
		}
	}
	if u, err := url.Parse(t.a.externalURL(r)); err == nil {
		add(u.Host)
	}
	add(r.Host)
	add(t.a.o.Config.ServerHostname)
	return hosts
}

// normalHost lower-cases a host[:port] and drops a default port.
func normalHost(h string) string {
	h = strings.ToLower(h)
	for _, p := range []string{":443", ":80"} {
		h = strings.TrimSuffix(h, p)
	}
	return h
}

// triggerGitURL is the URL builds of tr clone, as Prepare decides it:
// custom-git's build_source, a forge's clone_url, else the forge's SSH URL.
func (t *Triggers) triggerGitURL(tr *store.Trigger, cfg triggers.Config) string {
	switch {
	case tr.Service == triggers.ServiceCustomGit:
		return cfg.BuildSource
	case cfg.CloneURL != "":
		return cfg.CloneURL
	case cfg.BuildSource == "":
		return ""
	}
	// The SSH host is the web host without its port: an scp-like URL has
	// no room for one, and a forge's SSH port is not its web port.
	host := t.forgeHost(tr.Service)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return "git@" + host + ":" + cfg.BuildSource + ".git"
}

// gitSource is the git source a build of tr would fetch ref from, with the
// deploy key and recorded host key the worker gets (webhook.GitSource).
func (t *Triggers) gitSource(ctx context.Context, tr *store.Trigger, cfg triggers.Config, ref string) (gitsource.Source, error) {
	b := &store.Build{TriggerID: tr.UUID, Request: store.BuildRequest{Git: &store.BuildGitSource{URL: t.triggerGitURL(tr, cfg), Ref: ref}}}
	src, err := webhook.GitSource(t.a.o.Store, t.o.Secrets)(ctx, b)
	if err != nil {
		return gitsource.Source{}, err
	}
	return gitsource.Source{URL: src.GetUrl(), CommitSHA: src.GetCommitSha(), Ref: src.GetRef(), PrivateKey: src.GetPrivateKey(),
		KnownHosts: src.GetKnownHosts(), Username: src.GetUsername(), Password: src.GetPassword()}, nil
}

func (t *Triggers) deliveries(c echo.Context) error {
	_, tr, err := t.triggerFromPath(c)
	if err != nil {
		return err
	}
	limit, err := limitParam(c, 100)
	if err != nil {
		return err
	}
	ds, err := t.a.o.Store.ListTriggerDeliveries(c.Request().Context(), tr.UUID, limit)
	if err != nil {
		return Internal(err)
	}
	type deliveryView struct {
		ID         string  `json:"id"`
		ReceivedAt string  `json:"received_at"`
		Event      string  `json:"event"`
		Status     string  `json:"status"`
		Reason     string  `json:"reason"`
		BuildID    *string `json:"build_id"`
	}
	out := make([]deliveryView, 0, len(ds))
	for _, d := range ds {
		out = append(out, deliveryView{ID: d.ID, ReceivedAt: FormatDate(d.ReceivedAt), Event: d.Event,
			Status: string(d.Status), Reason: d.Reason, BuildID: strPtr(d.BuildID)})
	}
	return c.JSON(http.StatusOK, map[string]any{"deliveries": out})
}
