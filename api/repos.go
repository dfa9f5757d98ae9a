package api

import (
	"errors"
	"net/http"
	"sort"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

func (a *API) repoRoutes() {
	a.Route(http.MethodPost, "/repository", Doc{Tag: "repository", Summary: "Create a repository.",
		Description: "namespace defaults to the caller's; the names build, trigger, tag and notification are reserved.",
		Body:        []string{"repository", "visibility", "description", "namespace", "repo_kind"}}, a.createRepo)
	a.Route(http.MethodGet, "/repository", Doc{Tag: "repository", Summary: "List visible repositories.",
		Query: []string{"namespace", "public", "starred", "last_modified", "popularity"}}, a.listRepos)
	const one = "/repository/:namespace/:repo"
	a.Route(http.MethodGet, one, Doc{Tag: "repository", Summary: "Get a repository.", Query: []string{"includeTags"}}, a.getRepo)
	a.Route(http.MethodPut, one, Doc{Tag: "repository", Summary: "Change a repository's description.", Body: []string{"description"}}, a.updateRepo)
	a.Route(http.MethodDelete, one, Doc{Tag: "repository", Summary: "Delete a repository."}, a.deleteRepo)
	a.Route(http.MethodPost, one+"/changevisibility", Doc{Tag: "repository", Summary: "Make a repository public or private.",
		Body: []string{"visibility"}}, a.changeVisibility)
	a.Route(http.MethodGet, one+"/tag/", Doc{Tag: "tag", Summary: "List a repository's tags, newest first.",
		Query: []string{"page", "limit", "specificTag", "onlyActiveTags"}}, a.listTags)
}

type createRepoBody struct {
	Namespace   string `json:"namespace"`
	Repository  string `json:"repository"`
	Visibility  string `json:"visibility"`
	Description string `json:"description"`
	RepoKind    string `json:"repo_kind"`
}

func (a *API) createRepo(c echo.Context) error {
	acct, err := RequireAccount(c)
	if err != nil {
		return err
	}
	var b createRepoBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	if b.Namespace == "" {
		if acct.Kind != store.KindUser {
			return BadRequest("namespace is required")
		}
		b.Namespace = acct.Name
	}
	switch {
	case ReservedRepositoryNames[b.Repository]:
		return BadRequest("Cannot create a repository named " + b.Repository + ": the name is reserved")
	case !validRepoName(b.Repository):
		return BadRequest("Invalid repository name: use lowercase letters, digits and single separators (. _ -)")
	case b.Visibility != string(store.Public) && b.Visibility != string(store.Private):
		return BadRequest("visibility must be public or private")
	case b.RepoKind != "" && b.RepoKind != "image":
		return BadRequest("repo_kind must be image")
	}
	ctx := c.Request().Context()
	ns, err := a.o.Store.GetAccountByName(ctx, b.Namespace)
	if errors.Is(err, store.ErrNotFound) || err == nil && ns.Kind == store.KindRobot {
		return NotFound()
	} else if err != nil {
		return Internal(err)
	}
	ok, err := a.o.Policy.CanCreateIn(ctx, Caller(c), ns)
	if err != nil {
		return Internal(err)
	}
	if !ok {
		return a.refuseInNamespace(c, ns)
	}
	repo := &store.Repository{NamespaceID: ns.ID, Namespace: ns.Name, Name: b.Repository,
		Visibility: store.Visibility(b.Visibility), Description: b.Description}
	// In an organization the creator gets admin on what it created, as in
	// Quay; in a user namespace the owner already has it.
	var creatorID int64
	if ns.ID != acct.ID {
		creatorID = acct.ID
	}
	err = a.o.Store.CreateRepositoryWithDefaults(ctx, repo, creatorID, store.RoleAdmin)
	if errors.Is(err, store.ErrConflict) {
		return BadRequest("Repository already exists")
	} else if err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusCreated, map[string]any{"namespace": repo.Namespace, "name": repo.Name, "kind": "image"})
}

// repoSummary is one entry of the repository list.
type repoSummary struct {
	Namespace    string `json:"namespace"`
	Name         string `json:"name"`
	Description  string `json:"description"`
	IsPublic     bool   `json:"is_public"`
	Kind         string `json:"kind"`
	State        string `json:"state"`
	IsStarred    bool   `json:"is_starred"`
	LastModified *int64 `json:"last_modified,omitempty"`
	Popularity   *int   `json:"popularity,omitempty"`
}

func queryBool(c echo.Context, name string) bool {
	b, _ := strconv.ParseBool(c.QueryParam(name))
	return b
}

func (a *API) listRepos(c echo.Context) error {
	nsName := c.QueryParam("namespace")
	public, starred := queryBool(c, "public"), queryBool(c, "starred")
	if nsName == "" && !public && !starred {
		return BadRequest("namespace, starred or public are required for this API call")
	}
	who := Caller(c)
	if starred && who.IsAnonymous() {
		return Unauthorized()
	}
	ctx := c.Request().Context()
	var repos []store.Repository
	var err error
	switch {
	case starred:
		repos, err = a.o.Store.ListStarred(ctx, who.Account.ID)
	case nsName != "":
		ns, nerr := a.o.Store.GetAccountByName(ctx, nsName)
		if errors.Is(nerr, store.ErrNotFound) {
			return c.JSON(http.StatusOK, map[string]any{"repositories": []repoSummary{}})
		} else if nerr != nil {
			return Internal(nerr)
		}
		repos, err = a.o.Store.ListRepositoriesByNamespace(ctx, ns.ID)
	default:
		repos, err = a.o.Store.ListRepositories(ctx, "", 0)
	}
	if err != nil {
		return Internal(err)
	}
	stars := map[int64]bool{}
	if !who.IsAnonymous() {
		mine, err := a.o.Store.ListStarred(ctx, who.Account.ID)
		if err != nil {
			return Internal(err)
		}
		for _, r := range mine {
			stars[r.ID] = true
		}
	}
	lastModified, popularity := queryBool(c, "last_modified"), queryBool(c, "popularity")
	out := []repoSummary{}
	for i := range repos {
		r := &repos[i]
		if nsName != "" && r.Namespace != nsName {
			continue
		}
		role, err := a.o.Policy.RepositoryRole(ctx, who, r)
		if err != nil {
			return Internal(err)
		}
		// public=true lists public repositories besides the caller's own.
		if role == "" {
			continue
		}
		s := repoSummary{Namespace: r.Namespace, Name: r.Name, Description: r.Description,
			IsPublic: r.Visibility == store.Public, Kind: "image", State: "NORMAL", IsStarred: stars[r.ID]}
		if lastModified {
			ts, err := a.lastModified(c, r)
			if err != nil {
				return err
			}
			s.LastModified = &ts
		}
		if popularity {
			zero := 0
			s.Popularity = &zero
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return c.JSON(http.StatusOK, map[string]any{"repositories": out})
}

// lastModified is the newest tag change of a repository in unix seconds,
// or its creation time without tags.
func (a *API) lastModified(c echo.Context, r *store.Repository) (int64, error) {
	tags, err := a.o.Store.ListTagDetails(c.Request().Context(), r.ID, "", -1)
	if err != nil {
		return 0, Internal(err)
	}
	t := r.CreatedAt
	for _, tag := range tags {
		if tag.UpdatedAt.After(t) {
			t = tag.UpdatedAt
		}
	}
	return t.Unix(), nil
}

func (a *API) tagExpiration(c echo.Context, nsID int64) (int64, bool, error) {
	s, err := a.o.Store.GetOrgSettings(c.Request().Context(), nsID)
	if errors.Is(err, store.ErrNotFound) {
		return DefaultTagExpirationS, false, nil
	}
	if err != nil {
		return 0, false, Internal(err)
	}
	return s.TagExpirationS, true, nil
}

func (a *API) getRepo(c echo.Context) error {
	repo, role, err := a.repoFromPath(c, store.RoleRead)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	ns, err := a.o.Store.GetAccountByID(ctx, repo.NamespaceID)
	if err != nil {
		return Internal(err)
	}
	expiration := int64(DefaultTagExpirationS)
	if ns.Kind == store.KindOrganization {
		if expiration, _, err = a.tagExpiration(c, ns.ID); err != nil {
			return err
		}
	}
	starred := false
	if who := Caller(c); !who.IsAnonymous() && who.Account.Kind == store.KindUser {
		if starred, err = a.o.Store.IsStarred(ctx, who.Account.ID, repo.ID); err != nil {
			return Internal(err)
		}
	}
	v := map[string]any{
		"namespace": repo.Namespace, "name": repo.Name, "kind": "image", "description": repo.Description,
		"is_public": repo.Visibility == store.Public, "is_organization": ns.Kind == store.KindOrganization,
		"is_starred": starred, "status_token": "", "trust_enabled": false, "tag_expiration_s": expiration,
		"is_free_account": true, "state": "NORMAL",
		"can_write": auth.RoleAtLeast(role, store.RoleWrite), "can_admin": auth.RoleAtLeast(role, store.RoleAdmin),
	}
	if queryBool(c, "includeTags") {
		tags, err := a.tagViews(c, repo, "", 0, -1)
		if err != nil {
			return err
		}
		m := map[string]any{}
		for _, t := range tags {
			m[t.Name] = map[string]any{"name": t.Name, "size": t.Size, "last_modified": t.LastModified, "manifest_digest": t.ManifestDigest}
		}
		v["tags"] = m
	}
	return c.JSON(http.StatusOK, v)
}

type updateRepoBody struct {
	Description *string `json:"description"`
}

func (a *API) updateRepo(c echo.Context) error {
	if _, err := RequireAccount(c); err != nil {
		return err
	}
	repo, _, err := a.repoFromPath(c, store.RoleWrite)
	if err != nil {
		return err
	}
	var b updateRepoBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	if b.Description == nil {
		return BadRequest("description is required")
	}
	repo.Description = *b.Description
	if err := a.o.Store.UpdateRepository(c.Request().Context(), repo); err != nil {
		return Internal(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true})
}

type visibilityBody struct {
	Visibility string `json:"visibility"`
}

func (a *API) changeVisibility(c echo.Context) error {
	if _, err := RequireAccount(c); err != nil {
		return err
	}
	repo, _, err := a.repoFromPath(c, store.RoleAdmin)
	if err != nil {
		return err
	}
	var b visibilityBody
	if err := DecodeJSON(c, &b, false); err != nil {
		return err
	}
	if b.Visibility != string(store.Public) && b.Visibility != string(store.Private) {
		return BadRequest("visibility must be public or private")
	}
	repo.Visibility = store.Visibility(b.Visibility)
	if err := a.o.Store.UpdateRepository(c.Request().Context(), repo); err != nil {
		return Internal(err)
	}
	a.o.InvalidateRepo(repo.FullName())
	return c.JSON(http.StatusOK, map[string]any{"success": true})
}

func (a *API) deleteRepo(c echo.Context) error {
	if _, err := RequireAccount(c); err != nil {
		return err
	}
	repo, _, err := a.repoFromPath(c, store.RoleAdmin)
	if err != nil {
		return err
	}
	if err := a.o.Store.DeleteRepository(c.Request().Context(), repo.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return Internal(err)
	}
	a.o.InvalidateRepo(repo.FullName())
	return c.NoContent(http.StatusNoContent)
}

// Manifest list media types (a tag pointing at one is a manifest list).
const (
	mediaTypeOCIIndex   = "application/vnd.oci.image.index.v1+json"
	mediaTypeDockerList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

type tagView struct {
	Name           string `json:"name"`
	Reversion      bool   `json:"reversion"`
	StartTS        int64  `json:"start_ts"`
	ManifestDigest string `json:"manifest_digest"`
	IsManifestList bool   `json:"is_manifest_list"`
	Size           *int64 `json:"size"`
	LastModified   string `json:"last_modified"`
}

// tagViews lists a page of a repository's current tags, newest first:
// offset skipped, at most n (n < 0: all), only the tag called name when it
// is not "". A manifest's size is the sum of the blobs it references
// (config and layers); a manifest list has none (null), as in Quay.
func (a *API) tagViews(c echo.Context, repo *store.Repository, name string, offset, n int) ([]tagView, error) {
	tags, err := a.o.Store.ListTagsNewestFirst(c.Request().Context(), repo.ID, name, offset, n)
	if err != nil {
		return nil, Internal(err)
	}
	out := make([]tagView, 0, len(tags))
	for _, t := range tags {
		v := tagView{Name: t.Name, StartTS: t.UpdatedAt.Unix(), ManifestDigest: t.Digest, LastModified: FormatDate(t.UpdatedAt)}
		v.IsManifestList = t.MediaType == mediaTypeOCIIndex || t.MediaType == mediaTypeDockerList
		if !v.IsManifestList {
			size := t.BlobSize
			v.Size = &size
		}
		out = append(out, v)
	}
	return out, nil
}

// Tag listing page sizes.
const (
	defaultTagLimit = 50
	maxTagLimit     = 100
)

func (a *API) listTags(c echo.Context) error {
	repo, _, err := a.repoFromPath(c, store.RoleRead)
	if err != nil {
		return err
	}
	page, limit := 1, defaultTagLimit
	if v := c.QueryParam("page"); v != "" {
		if page, err = strconv.Atoi(v); err != nil || page < 1 || page > 1_000_000 {
			return BadRequest("page must be between 1 and 1000000")
		}
	}
	if v := c.QueryParam("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxTagLimit {
			return BadRequest("limit must be between 1 and 100")
		}
	}
	// One more than the page tells whether another follows.
	tags, err := a.tagViews(c, repo, c.QueryParam("specificTag"), (page-1)*limit, limit+1)
	if err != nil {
		return err
	}
	more := len(tags) > limit
	if more {
		tags = tags[:limit]
	}
	return c.JSON(http.StatusOK, map[string]any{"tags": tags, "page": page, "has_additional": more})
}

// refuseInNamespace answers a refused action in namespace ns without
// telling an outsider that an organization exists: anonymous callers get
// 401 and callers who are not members of the organization 404, as for a
// namespace that is not there; only those who can see it learn that they
// lack the right (403).
func (a *API) refuseInNamespace(c echo.Context, ns *store.Account) error {
	who := Caller(c)
	if who.IsAnonymous() {
		return Unauthorized()
	}
	ctx := c.Request().Context()
	// Users are public (their names appear on every repository page); an
	// organization is visible to its members only.
	visible := ns.Kind == store.KindUser
	if !visible {
		member, err := a.o.Policy.IsOrgMember(ctx, who, ns)
		if err != nil {
			return Internal(err)
		}
		visible = member
	}
	if !visible {
		return NotFound()
	}
	return Forbidden()
}
