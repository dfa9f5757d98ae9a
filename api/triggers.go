package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/manage"
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
	// Forges reaches the registered forges' APIs; nil reads each one's
	// *_TRIGGER_CONFIG from the config.
	Forges *triggers.Forges
	// ScanHostKey records a git server's SSH host key (default
	// triggers.ScanHostKey through the egress policy).
	ScanHostKey func(ctx context.Context, hostport string) (string, error)
}

// Triggers serves the build trigger endpoints. RegisterTriggers creates it.
// What a trigger does is the trigger service's (triggers/manage); the
// handlers decode, call it, and map its errors.
type Triggers struct {
	a       *API
	o       TriggerOptions
	service *manage.Service
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
	var f triggers.Forges
	if o.Forges != nil {
		f = *o.Forges
	} else {
		var err error
		if f, err = triggers.ForgesFromConfig(a.o.Config.Raw); err != nil {
			return nil, fmt.Errorf("api: trigger config: %w", err)
		}
	}
	service, err := manage.New(manage.Options{Store: a.o.Store, Manager: o.Manager, Secrets: o.Secrets, Forges: f,
		Egress: a.o.Egress, ScanHostKey: o.ScanHostKey, Logger: a.log})
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	t := &Triggers{a: a, o: o, service: service}
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
	v := triggerView{ID: tr.UUID, Service: tr.Service, IsActive: tr.Active(), BuildSource: strPtr(manage.BuildSource(tr)),
		RepositoryURL: strPtr(t.service.RepositoryURL(tr)), Config: cfg, CanInvoke: true,
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
			s, err := t.service.WebhookSecret(tr)
			if err != nil {
				return triggerView{}, err
			}
			hookSecret = s
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
	tr, err := t.service.Create(c.Request().Context(), repo.ID, body.Service, t.activation(c, body))
	if err != nil {
		return triggerError(err)
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
	if err := t.service.Activate(c.Request().Context(), tr, t.activation(c, body)); err != nil {
		return triggerError(err)
	}
	return t.respond(c, http.StatusOK, tr)
}

// activation is what the trigger service needs of the request to activate.
func (t *Triggers) activation(c echo.Context, body activateBody) manage.Activation {
	in := manage.Activation{Config: body.Config, PullRobot: body.PullRobot, AccessToken: body.AccessToken,
		HookURL:        func(id string) string { return t.webhookURL(c, id, "") },
		CheckPullRobot: func(_ context.Context, name string) error { return t.o.Builds.checkPullRobot(c, name) }}
	if acct := Caller(c).Account; acct != nil {
		in.ConnectedUserID = acct.ID
	}
	return in
}

// triggerError is the API's answer to an error of the trigger service:
// its RequestError's message as 400, a build the manager would not queue as
// for any build, an API error (the pull robot check's) as it is, anything
// else as the server's failure.
func triggerError(err error) error {
	var re *manage.RequestError
	var ae *Error
	switch {
	case errors.As(err, &re):
		return BadRequest(re.Message)
	case errors.As(err, &ae):
		return ae
	}
	return submitError(err)
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
	if err := t.service.Delete(c.Request().Context(), tr); err != nil {
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
	p := manage.RunParams{BranchName: body.BranchName, CommitSHA: body.CommitSHA}
	if body.Refs != nil {
		p.RefKind, p.RefName = body.Refs.Kind, body.Refs.Name
	}
	built, err := t.service.RunNow(c.Request().Context(), tr, p)
	if err != nil {
		return triggerError(err)
	}
	built.Namespace, built.Repository, built.Requester = repo.Namespace, repo.Name, tr.ConnectedUser
	c.Response().Header().Set("Location", t.a.externalURL(c.Request())+Prefix+"/repository/"+
		repo.Namespace+"/"+repo.Name+"/build/"+built.ID+"/status")
	return c.JSON(http.StatusCreated, t.o.Builds.view(built, store.RoleAdmin))
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

// analyze is Quay's trigger analyzer (manage.Service.Analyze), with the
// namespace's robots for its admins.
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
	ctx := c.Request().Context()
	found, err := t.service.Analyze(ctx, tr, body.Config, manage.Registry{Hosts: t.registryHosts(c.Request()),
		Repository: func(ctx context.Context, ns, name string) (*store.Repository, error) {
			return t.readableRepository(c, ns, name)
		}})
	if err != nil {
		return triggerError(err)
	}
	ns, err := t.a.o.Store.GetAccountByID(ctx, repo.NamespaceID)
	if err != nil {
		return Internal(err)
	}
	isAdmin, err := t.a.o.Policy.CanAdminNamespace(ctx, Caller(c), ns)
	if err != nil {
		return Internal(err)
	}
	v := analyzeView{Status: found.Status, Message: found.Message, IsAdmin: isAdmin, Robots: []analyzeRobot{}}
	if found.Repository != nil {
		v.Namespace, v.Name = &found.Repository.Namespace, &found.Repository.Name
	}
	if isAdmin {
		if v.Robots, err = t.analyzeRobots(ctx, ns, found.Repository); err != nil {
			return Internal(err)
		}
	}
	return c.JSON(http.StatusOK, v)
}

// readableRepository is the repository ns/name when the caller may read
// it, nil when it does not exist or the caller may not.
func (t *Triggers) readableRepository(c echo.Context, ns, name string) (*store.Repository, error) {
	ctx := c.Request().Context()
	base, err := t.a.o.Store.GetRepository(ctx, ns, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	role, err := t.a.o.Policy.RepositoryRole(ctx, Caller(c), base)
	if err != nil || role == "" {
		return nil, err
	}
	return base, nil
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
			hosts[manage.NormalHost(h)] = true
		}
	}
	if u, err := url.Parse(t.a.externalURL(r)); err == nil {
		add(u.Host)
	}
	add(r.Host)
	add(t.a.o.Config.ServerHostname)
	return hosts
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
