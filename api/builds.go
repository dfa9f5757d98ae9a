package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/registry/reference"
	"github.com/berth-dev/berth/triggers/manage"
)

// BuildOptions configure RegisterBuilds. Manager, Contexts and FiledropKey
// are required.
type BuildOptions struct {
	Manager *buildmanager.Manager
	// Contexts receives the bytes PUT to a filedrop URL; it must be the
	// manager's, so that workers find what was uploaded.
	Contexts buildmanager.ContextStore
	// FiledropKey signs upload URLs (HMAC-SHA256, at least 32 bytes).
	// Servers sharing a database must share it.
	FiledropKey []byte
	// FiledropTTL is how long an upload URL stays valid (default 1 hour).
	FiledropTTL time.Duration
	// Limits bound each account's uploads (zero fields: no limit).
	Limits FiledropLimits
	// MaxAttempts is the manager's attempt limit (default
	// buildmanager.DefaultMaxAttempts): an internalerror build that used
	// them all is shown as "expired", as Quay does.
	MaxAttempts int
	// Heartbeat is the pause between SSE keep-alive comments (default 15 s).
	Heartbeat time.Duration
}

// Builds serves Quay's build endpoints, the filedrop upload URLs and the
// build page. RegisterBuilds creates it.
type Builds struct {
	a *API
	o BuildOptions
}

// RegisterBuilds adds the build and filedrop routes to a. The upload URLs
// and the build page live outside /api/v1: mount FiledropHandler at
// FiledropPath and PageHandler at PagePath.
func RegisterBuilds(a *API, o BuildOptions) *Builds {
	if o.Manager == nil || o.Contexts == nil || len(o.FiledropKey) < 32 {
		panic("api.RegisterBuilds: Manager, Contexts and a FiledropKey of at least 32 bytes are required")
	}
	if o.FiledropTTL <= 0 {
		o.FiledropTTL = time.Hour
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = buildmanager.DefaultMaxAttempts
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	b := &Builds{a: a, o: o}
	const base = "/repository/:namespace/:repo/build"
	a.Route(http.MethodPost, base+"/", Doc{Tag: "build", Summary: "Request a build of the repository.",
		Body: []string{"file_id", "archive_url", "docker_tags", "subdirectory", "dockerfile_path", "context", "pull_robot",
			"build_args", "labels", "target", "no_cache"}}, b.requestBuild)
	a.Route(http.MethodGet, base+"/", Doc{Tag: "build", Summary: "List the repository's builds, newest first.",
		Query: []string{"limit", "since"}}, b.listBuilds)
	a.Route(http.MethodGet, base+"/:uuid", Doc{Tag: "build", Summary: "Get a build."}, b.getBuild)
	a.Route(http.MethodDelete, base+"/:uuid", Doc{Tag: "build", Summary: "Cancel a build that has not ended."}, b.cancelBuild)
	a.Route(http.MethodGet, base+"/:uuid/status", Doc{Tag: "build", Summary: "Get a build's status."}, b.getBuild)
	a.Route(http.MethodGet, base+"/:uuid/logs", Doc{Tag: "build", Summary: "Get a build's log entries from start.",
		Query: []string{"start"}}, b.buildLogs)
	a.Route(http.MethodGet, base+"/:uuid/logs/stream", Doc{Tag: "build",
		Summary:     "Stream a build's log as server-sent events.",
		Description: "Each event is one log entry (id: its index, data: the entry); the stream replays from Last-Event-ID (or ?start=) and ends after the build's last entry.",
		Query:       []string{"start"}}, b.streamLogs)
	a.Route(http.MethodPost, "/filedrop/", Doc{Tag: "build", Summary: "Get a pre-signed URL to upload a build context to.",
		Body: []string{"mimeType"}}, b.filedrop)
	return b
}

// buildRequestBody is Quay's RepositoryBuildRequest plus berth's additions.
type buildRequestBody struct {
	FileID         string            `json:"file_id"`
	ArchiveURL     string            `json:"archive_url"`
	DockerTags     []string          `json:"docker_tags"`
	Subdirectory   string            `json:"subdirectory"`
	DockerfilePath string            `json:"dockerfile_path"`
	Context        string            `json:"context"`
	PullRobot      string            `json:"pull_robot"`
	BuildArgs      map[string]string `json:"build_args"`
	Labels         map[string]string `json:"labels"`
	Target         string            `json:"target"`
	NoCache        bool              `json:"no_cache"`
}

// buildArgPattern is what buildah accepts as an ARG name.
var buildArgPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (b *Builds) requestBuild(c echo.Context) error {
	repo, role, err := b.a.repoFromPath(c, store.RoleWrite)
	if err != nil {
		return err
	}
	var body buildRequestBody
	if err := DecodeJSON(c, &body, false); err != nil {
		return err
	}
	req, err := b.validateRequest(c, &body)
	if err != nil {
		return err
	}
	displayName, err := b.claimUpload(c, repo, req.FileID)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	built, err := b.o.Manager.Submit(ctx, buildmanager.BuildRequest{
		Repository: repo, Requester: Caller(c).Account, Tags: body.DockerTags, Request: req,
		DisplayName: displayName,
	})
	if err != nil {
		return submitError(err)
	}
	// Submit leaves the names for reads to fill.
	built.Namespace, built.Repository = repo.Namespace, repo.Name
	if acct := Caller(c).Account; acct != nil {
		built.Requester = acct.Name
	}
	c.Response().Header().Set("Location", b.a.externalURL(c.Request())+Prefix+"/repository/"+
		repo.Namespace+"/"+repo.Name+"/build/"+built.ID+"/status")
	return c.JSON(http.StatusCreated, b.view(built, role))
}

// validateRequest checks the body as Quay does and resolves the Dockerfile
// path and context (Quay's get_dockerfile_context). Whether the caller may
// build its file_id is claimUpload's to check.
func (b *Builds) validateRequest(c echo.Context, body *buildRequestBody) (store.BuildRequest, error) {
	var req store.BuildRequest
	switch {
	case body.FileID == "" && body.ArchiveURL == "":
		return req, BadRequest("file_id or archive_url required")
	case body.FileID != "" && body.ArchiveURL != "":
		return req, BadRequest("Specify only one of file_id and archive_url")
	case body.Subdirectory != "" && body.DockerfilePath != "":
		return req, BadRequest("You can only specify one of subdirectory and dockerfile_path")
	}
	if body.ArchiveURL != "" {
		u, err := url.Parse(body.ArchiveURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return req, BadRequest("archive_url must be an http or https URL")
		}
		if err := b.a.checkArchiveURL(c.Request().Context(), u); err != nil {
			return req, err
		}
	}
	if body.DockerTags == nil {
		body.DockerTags = []string{"latest"}
	}
	if len(body.DockerTags) == 0 {
		return req, BadRequest("docker_tags must name at least one tag")
	}
	seen := map[string]bool{}
	for _, t := range body.DockerTags {
		if reference.ValidateTag(t) != nil {
			return req, BadRequest(fmt.Sprintf("Invalid tag %q", t))
		}
		if seen[t] {
			return req, BadRequest(fmt.Sprintf("Duplicate tag %q", t))
		}
		seen[t] = true
	}
	for k := range body.BuildArgs {
		if !buildArgPattern.MatchString(k) {
			return req, BadRequest(fmt.Sprintf("Invalid build argument name %q", k))
		}
	}
	for k := range body.Labels {
		if strings.TrimSpace(k) == "" {
			return req, BadRequest("Label names must not be empty")
		}
	}
	if body.PullRobot != "" {
		if err := b.checkPullRobot(c, body.PullRobot); err != nil {
			return req, err
		}
	}
	req = store.BuildRequest{
		FileID: body.FileID, ArchiveURL: body.ArchiveURL, Subdirectory: body.Subdirectory,
		DockerfilePath: body.DockerfilePath, Context: body.Context, PullRobot: body.PullRobot,
		BuildArgs: body.BuildArgs, Labels: body.Labels, Target: body.Target, NoCache: body.NoCache,
	}
	switch {
	case req.DockerfilePath != "":
		if req.Context == "" {
			req.Context = path.Dir(req.DockerfilePath)
		}
	case req.Subdirectory != "":
		req.Context = req.Subdirectory
		req.DockerfilePath = path.Join(req.Subdirectory, "Dockerfile")
	default:
		if req.Context == "" {
			req.Context = "/"
		}
		req.DockerfilePath = path.Join(req.Context, "Dockerfile")
	}
	return req, nil
}

// buildableFile returns the uploaded file fileID when the caller may build
// it: the caller uploaded it, or holds write on the repository it was
// first built in. To anyone else it does not exist, so that a file ID
// (shown in old build views, logs, shell histories) grants nothing.
func (b *Builds) buildableFile(c echo.Context, fileID string) (*store.BuildFile, error) {
	ctx := c.Request().Context()
	unknown := BadRequest("No uploaded file with this file_id")
	f, err := b.a.o.Store.GetBuildFile(ctx, fileID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, unknown
	}
	if err != nil {
		return nil, Internal(err)
	}
	who := Caller(c)
	allowed := who.Account != nil && f.UploaderID != 0 && who.Account.ID == f.UploaderID
	if !allowed && f.RepoID != 0 {
		first, err := b.a.o.Store.GetRepository(ctx, f.RepoNamespace, f.RepoName)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, Internal(err)
		}
		if err == nil {
			role, err := b.a.o.Policy.RepositoryRole(ctx, who, first)
			if err != nil {
				return nil, Internal(err)
			}
			allowed = auth.RoleAtLeast(role, store.RoleWrite)
		}
	}
	if !allowed {
		return nil, unknown
	}
	if f.Digest == "" {
		return nil, BadRequest("Nothing was uploaded to this file_id's URL yet")
	}
	return f, nil
}

// claimUpload checks that the caller may build the uploaded file fileID,
// records repo as the first repository it is built in when it was built
// nowhere yet, and returns the build's display name: the first 7 hex
// digits of the bytes' SHA-256, as Quay shows, never the file ID. ("",
// nil) without a file.
func (b *Builds) claimUpload(c echo.Context, repo *store.Repository, fileID string) (string, error) {
	if fileID == "" {
		return "", nil
	}
	f, err := b.buildableFile(c, fileID)
	if err != nil {
		return "", err
	}
	if f.RepoID == 0 {
		if err := b.a.o.Store.ClaimBuildFile(c.Request().Context(), f.ID, repo.ID); err != nil {
			return "", Internal(err)
		}
	}
	_, hex, _ := strings.Cut(f.Digest, ":")
	return hex[:min(7, len(hex))], nil
}

// checkPullRobot allows a pull robot only to callers administering the
// robot's namespace: the build reads with the robot's rights (Quay's rule).
func (b *Builds) checkPullRobot(c echo.Context, name string) error {
	ctx := c.Request().Context()
	nsName, _, ok := strings.Cut(name, "+")
	if !ok {
		return BadRequest("Invalid pull_robot: not a robot account name")
	}
	robot, err := b.a.o.Store.GetAccountByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) || err == nil && robot.Kind != store.KindRobot {
		return BadRequest("Invalid pull_robot: no such robot account")
	}
	if err != nil {
		return Internal(err)
	}
	ns, err := b.a.o.Store.GetAccountByName(ctx, nsName)
	if err != nil {
		return Internal(err)
	}
	if ns.ID != robot.OwnerID {
		return BadRequest("Invalid pull_robot: no such robot account")
	}
	ok, err = b.a.o.Policy.CanAdminNamespace(ctx, Caller(c), ns)
	if err != nil {
		return Internal(err)
	}
	if !ok {
		return Forbidden()
	}
	return nil
}

func (b *Builds) listBuilds(c echo.Context) error {
	repo, role, err := b.a.repoFromPath(c, store.RoleRead)
	if err != nil {
		return err
	}
	limit := 5 // Quay's default
	if s := c.QueryParam("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return BadRequest("limit must be a positive integer")
		}
		limit = n
	}
	var since time.Time
	if s := c.QueryParam("since"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return BadRequest("since must be a unix time in seconds")
		}
		since = time.Unix(n, 0)
	}
	bs, err := b.o.Manager.List(c.Request().Context(), repo.ID, limit, since)
	if err != nil {
		return Internal(err)
	}
	views := make([]buildView, 0, len(bs))
	for i := range bs {
		views = append(views, b.view(&bs[i], role))
	}
	return c.JSON(http.StatusOK, map[string]any{"builds": views})
}

// buildFromPath is the path's build of the path's repository, for a
// caller holding need on it. A build of another repository is a 404.
func (b *Builds) buildFromPath(c echo.Context, need store.Role) (*store.Build, store.Role, error) {
	repo, role, err := b.a.repoFromPath(c, need)
	if err != nil {
		return nil, "", err
	}
	built, err := b.o.Manager.Get(c.Request().Context(), Param(c, "uuid"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", NotFound()
	}
	if err != nil {
		return nil, "", Internal(err)
	}
	if built.RepoID != repo.ID {
		return nil, "", NotFound()
	}
	return built, role, nil
}

// logRole is the role reading a build's log needs: write, as Quay, unless
// FEATURE_READER_BUILD_LOGS lets readers see it.
func (b *Builds) logRole() store.Role {
	if b.a.o.Config.Features["FEATURE_READER_BUILD_LOGS"] {
		return store.RoleRead
	}
	return store.RoleWrite
}

func (b *Builds) getBuild(c echo.Context) error {
	built, role, err := b.buildFromPath(c, store.RoleRead)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, b.view(built, role))
}

// cancelBuild answers as Quay does: 201 "Okay", or 400 once the build
// ended. Repository admins may cancel any build, writers their own.
func (b *Builds) cancelBuild(c echo.Context) error {
	built, role, err := b.buildFromPath(c, store.RoleWrite)
	if err != nil {
		return err
	}
	who := Caller(c)
	if role != store.RoleAdmin && (who.Account == nil || who.Account.ID != built.RequesterID) {
		return Forbidden()
	}
	if _, err := b.o.Manager.Cancel(c.Request().Context(), built.ID); err != nil {
		if errors.Is(err, buildmanager.ErrNotCancellable) {
			return BadRequest("Build is currently running or has finished")
		}
		return Internal(err)
	}
	return c.JSON(http.StatusCreated, "Okay")
}

func (b *Builds) buildLogs(c echo.Context) error {
	built, _, err := b.buildFromPath(c, b.logRole())
	if err != nil {
		return err
	}
	start, err := startParam(c.QueryParam("start"))
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	w := c.Response()
	err = b.o.Manager.ReadLog(ctx, built.ID, start, logPage, func(total int, entries iter.Seq2[buildmanager.LogEntry, error]) error {
		w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, `{"start":%d,"total":%d,"logs":[`, start, total)
		sep := ""
		for e, err := range entries {
			if err != nil {
				return err
			}
			line, err := json.Marshal(e)
			if err != nil {
				return err
			}
			io.WriteString(w, sep)
			if _, err := w.Write(line); err != nil {
				return err
			}
			sep = ","
		}
		_, err := io.WriteString(w, "]}\n")
		return err
	})
	switch {
	case err == nil:
		return nil
	case !w.Committed:
		return Internal(err)
	case ctx.Err() == nil:
		// The answer stops short of its closing brackets, so the client
		// cannot take it for the whole page.
		b.a.log.ErrorContext(ctx, "sending a build log failed", "build", built.ID, "err", err)
	}
	return nil
}

// logPage bounds the entries of one GET …/logs answer, which is streamed
// as it is read; a client asks for the rest with ?start=. Big enough that
// paging through a log at the default limits takes few requests.
const logPage = 5000

func startParam(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, BadRequest("start must be a non-negative integer")
	}
	return n, nil
}

// buildView is Quay's BuildView plus berth's manifest_digests.
type buildView struct {
	ID              string            `json:"id"`
	Phase           string            `json:"phase"`
	Started         string            `json:"started"`
	DisplayName     string            `json:"display_name"`
	Status          map[string]any    `json:"status"`
	Subdirectory    string            `json:"subdirectory"`
	DockerfilePath  string            `json:"dockerfile_path"`
	Context         string            `json:"context"`
	Tags            []string          `json:"tags"`
	ManualUser      *string           `json:"manual_user"`
	IsWriter        bool              `json:"is_writer"`
	Trigger         map[string]any    `json:"trigger"`
	TriggerMetadata json.RawMessage   `json:"trigger_metadata"`
	ResourceKey     *string           `json:"resource_key"`
	PullRobot       *pullRobotView    `json:"pull_robot"`
	Repository      buildRepoView     `json:"repository"`
	Error           *string           `json:"error"`
	ArchiveURL      *string           `json:"archive_url"`
	ManifestDigests map[string]string `json:"manifest_digests"`
}

type pullRobotView struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	IsRobot bool   `json:"is_robot"`
}

type buildRepoView struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// view renders a build for a caller holding role on its repository.
func (b *Builds) view(built *store.Build, role store.Role) buildView {
	r := built.Request
	writer := auth.RoleAtLeast(role, store.RoleWrite)
	v := buildView{
		ID:              built.ID,
		Phase:           string(built.Phase),
		Started:         FormatDate(built.CreatedAt),
		DisplayName:     built.DisplayName,
		Status:          map[string]any{},
		Subdirectory:    r.Subdirectory,
		DockerfilePath:  r.DockerfilePath,
		Context:         r.Context,
		Tags:            built.Tags,
		IsWriter:        writer,
		Repository:      buildRepoView{Namespace: built.Namespace, Name: built.Repository},
		Error:           strPtr(built.ErrorMessage),
		ManifestDigests: built.ManifestDigests,
	}
	if v.Subdirectory == "" {
		v.Subdirectory = r.Context
	}
	if v.Tags == nil {
		v.Tags = []string{}
	}
	if v.ManifestDigests == nil {
		v.ManifestDigests = map[string]string{}
	}
	if built.Phase == store.PhaseInternalError && built.Attempts >= b.o.MaxAttempts {
		v.Phase = "expired"
	}
	if built.TriggerID == "" {
		v.ManualUser = strPtr(built.Requester)
	} else {
		v.Trigger = map[string]any{"id": built.TriggerID}
	}
	if len(built.TriggerMetadata) > 0 {
		v.TriggerMetadata = built.TriggerMetadata
	} else {
		v.TriggerMetadata = json.RawMessage("null")
	}
	if r.PullRobot != "" {
		v.PullRobot = &pullRobotView{Name: r.PullRobot, Kind: "user", IsRobot: true}
	}
	if writer || b.a.o.Config.Features["FEATURE_READER_BUILD_LOGS"] {
		v.ArchiveURL = strPtr(r.ArchiveURL)
	}
	if writer {
		// Writers may build the file again; to readers it is no use.
		v.ResourceKey = strPtr(r.FileID)
	}
	return v
}

// submitError is the API's answer to a build the manager would not queue,
// for manual builds and trigger runs alike.
func submitError(err error) error {
	switch code, msg := manage.SubmitStatus(err); code {
	case http.StatusTooManyRequests:
		return &Error{Status: code, Type: "too_many_requests", Detail: msg}
	case http.StatusBadRequest:
		return BadRequest(msg)
	}
	return Internal(err)
}
