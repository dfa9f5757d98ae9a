// Package registry serves the OCI distribution API (/v2/) over berth's
// metadata store and a blob storage driver.
package registry

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	regauth "github.com/berth-dev/berth/registry/auth"
	"github.com/berth-dev/berth/registry/reference"
	"github.com/berth-dev/berth/storage"
)

// Authorizer decides whether a /v2 request may proceed. Errors of type
// *regauth.ChallengeError are sent as the registry's 401/403 challenge.
type Authorizer interface {
	// AuthorizeBase checks the credentials of a request that names no repository.
	AuthorizeBase(r *http.Request) (*auth.Principal, error)
	// Authorize checks that the request's credentials grant actions on repo.
	Authorize(r *http.Request, repo string, actions ...auth.Action) (*auth.Principal, error)
}

// Handler serves /v2/.
type Handler struct {
	store  Store
	blobs  storage.Driver
	authz  Authorizer
	policy *auth.Policy
	log    *slog.Logger
	// externalURL returns scheme://host for absolute URLs in responses.
	externalURL func(r *http.Request) string

	// repos caches repository rows by full name. Entries are dropped when a
	// repository is created or deleted through this handler; a short TTL
	// bounds staleness from changes made elsewhere (the REST API, another
	// instance).
	repos *lru.LRU[string, *store.Repository]
	// manifests caches manifests by repository ID and digest. Content is
	// immutable; deletions drop the entry.
	manifests *lru.LRU[manifestKey, *store.Manifest]
	// tags caches tag → digest with a short TTL, dropped on tag writes.
	tags *lru.LRU[tagKey, string]

	// uploadLocks serializes requests on one upload within this process;
	// the store's compare-and-set guards across processes.
	uploadLocks sync.Map
	// uploadSlots caps the requests streaming blob bytes per account.
	uploadSlots *uploadSlots
}

type manifestKey struct {
	repo   int64
	digest string
}

type tagKey struct {
	repo int64
	tag  string
}

// Options configures a Handler.
type Options struct {
	Store       Store
	Blobs       storage.Driver
	Authorizer  Authorizer
	Policy      *auth.Policy
	Logger      *slog.Logger
	ExternalURL func(r *http.Request) string
	// CacheTTL bounds how long repository and tag lookups may be served
	// from memory after a change made outside this handler. Default 2 s.
	CacheTTL time.Duration
	// MaxUploadsPerAccount caps the requests carrying blob bytes that one
	// account may have in flight here (default
	// DefaultMaxUploadsPerAccount; negative: no cap).
	MaxUploadsPerAccount int
}

// New builds the /v2 handler.
func New(o Options) *Handler {
	ttl := o.CacheTTL
	if ttl == 0 {
		ttl = 2 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	maxUploads := o.MaxUploadsPerAccount
	if maxUploads == 0 {
		maxUploads = DefaultMaxUploadsPerAccount
	}
	return &Handler{
		store:       o.Store,
		blobs:       o.Blobs,
		authz:       o.Authorizer,
		policy:      o.Policy,
		log:         log.With("component", "registry"),
		externalURL: o.ExternalURL,
		repos:       lru.NewLRU[string, *store.Repository](4096, nil, ttl),
		manifests:   lru.NewLRU[manifestKey, *store.Manifest](8192, nil, time.Hour),
		tags:        lru.NewLRU[tagKey, string](16384, nil, ttl),
		uploadSlots: newUploadSlots(maxUploads),
	}
}

// InvalidateRepository drops cached state for a repository; the REST API
// calls it after changing or deleting one.
func (h *Handler) InvalidateRepository(fullName string) { h.repos.Remove(fullName) }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	herr := h.route(w, r)
	if herr == nil {
		return
	}
	if herr.Status >= 500 {
		h.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", herr)
	}
	writeError(w, r, herr)
}

// route serves r by the endpoint its path names. An endpoint answers
// success itself and returns its failure, which ServeHTTP alone writes.
func (h *Handler) route(w http.ResponseWriter, r *http.Request) *Error {
	rt, err := reference.SplitV2Path(r.URL.EscapedPath())
	if errors.Is(err, reference.ErrNameInvalid) {
		return newError(CodeNameInvalid, "invalid repository name")
	}
	if err != nil {
		return errNoEndpoint()
	}
	switch rt.Kind {
	case reference.KindBase:
		return h.serveBase(w, r)
	case reference.KindCatalog:
		return h.serveCatalog(w, r)
	case reference.KindManifests:
		return h.serveManifest(w, r, rt.Name, rt.Rest)
	case reference.KindBlobs:
		return h.serveBlob(w, r, rt.Name, rt.Rest)
	case reference.KindUploads:
		return h.serveUpload(w, r, rt.Name, rt.Rest)
	case reference.KindTagsList:
		return h.serveTags(w, r, rt.Name)
	case reference.KindReferrers:
		return h.serveReferrers(w, r, rt.Name, rt.Rest)
	}
	return errNoEndpoint()
}

func (h *Handler) serveBase(w http.ResponseWriter, r *http.Request) *Error {
	if _, err := h.authz.AuthorizeBase(r); err != nil {
		return authError(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte("{}"))
	}
	return nil
}

// access authorizes actions on name and returns the repository, or nil
// when it does not exist yet. A refusal is the challenge to send.
func (h *Handler) access(r *http.Request, name string, actions ...auth.Action) (*store.Repository, *Error) {
	if _, err := h.authz.Authorize(r, name, actions...); err != nil {
		return nil, authError(err)
	}
	return h.lookupRepo(r.Context(), name)
}

// lookupRepo returns the repository or nil if it does not exist.
func (h *Handler) lookupRepo(ctx context.Context, name string) (*store.Repository, *Error) {
	if repo, ok := h.repos.Get(name); ok {
		return repo, nil
	}
	ns, rest, ok := strings.Cut(name, "/")
	if !ok {
		return nil, newError(CodeNameInvalid, "repository name needs a namespace")
	}
	repo, err := h.store.GetRepository(ctx, ns, rest)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, errInternal(err)
	}
	h.repos.Add(name, repo)
	return repo, nil
}

// requireRepo is lookupRepo for reads: a missing repository is NAME_UNKNOWN.
func (h *Handler) requireRepo(r *http.Request, name string) (*store.Repository, *Error) {
	repo, herr := h.access(r, name, regauth.ActionsFor(r.Method)...)
	if herr != nil {
		return nil, herr
	}
	if repo == nil {
		return nil, errNameUnknown(name)
	}
	return repo, nil
}

// ensureRepo is lookupRepo for writes: a push to a repository that does not
// exist creates it, private, in its namespace. Authorization already
// decided the principal may create it.
func (h *Handler) ensureRepo(r *http.Request, name string) (*store.Repository, *Error) {
	_, repo, herr := h.ensureRepoFor(r, name)
	return repo, herr
}

// ensureRepoFor is ensureRepo that also returns the principal pushing.
func (h *Handler) ensureRepoFor(r *http.Request, name string) (*auth.Principal, *store.Repository, *Error) {
	who, err := h.authz.Authorize(r, name, auth.Pull, auth.Push)
	if err != nil {
		return nil, nil, authError(err)
	}
	repo, herr := h.lookupRepo(r.Context(), name)
	if herr != nil || repo != nil {
		return who, repo, herr
	}
	ctx := r.Context()
	nsName, rest, _ := strings.Cut(name, "/")
	ns, err := h.store.GetAccountByName(ctx, nsName)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, errNameUnknown(name)
	}
	if err != nil {
		return nil, nil, errInternal(err)
	}
	// As through the REST API: in an organization the creator gets admin on
	// what it created and the organization's default permissions apply; in
	// a user namespace the owner already has every right.
	var creatorID int64
	if ns.Kind == store.KindOrganization && !who.IsAnonymous() {
		creator, err := h.store.GetAccountByName(ctx, who.Name())
		if err != nil {
			return nil, nil, errInternal(err)
		}
		creatorID = creator.ID
	}
	repo = &store.Repository{NamespaceID: ns.ID, Namespace: ns.Name, Name: rest, Visibility: store.Private}
	err = h.store.CreateRepositoryWithDefaults(ctx, repo, creatorID, store.RoleAdmin)
	created := err == nil
	if errors.Is(err, store.ErrConflict) {
		// Another request created it first, and logged it.
		repo, err = h.store.GetRepository(ctx, nsName, rest)
	}
	if err != nil {
		return nil, nil, errInternal(err)
	}
	if created {
		h.log.InfoContext(ctx, "repository created on push", "repository", name)
	}
	h.repos.Add(name, repo)
	return who, repo, nil
}
