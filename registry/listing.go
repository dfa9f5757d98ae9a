package registry

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/opencontainers/go-digest"
)

// maxPageSize caps `n` on list endpoints.
const maxPageSize = 10000

// pageParams reads the `n` and `last` query parameters. n is -1 when absent.
func pageParams(q url.Values) (n int, last string, herr *Error) {
	n = -1
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			return 0, "", errPageSizeInvalid()
		}
		n = min(v, maxPageSize)
	}
	return n, q.Get("last"), nil
}

func writeJSON(w http.ResponseWriter, r *http.Request, contentType string, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

func (h *Handler) serveTags(w http.ResponseWriter, r *http.Request, name string) *Error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errMethodNotAllowed()
	}
	repo, herr := h.requireRepo(r, name)
	if herr != nil {
		return herr
	}
	n, last, herr := pageParams(r.URL.Query())
	if herr != nil {
		return herr
	}
	tags := []string{}
	if n != 0 {
		// One more than asked tells whether a next page exists.
		limit := n
		if n > 0 {
			limit = n + 1
		}
		got, err := h.store.ListTags(r.Context(), repo.ID, last, limit)
		if err != nil {
			return errInternal(err)
		}
		if n > 0 && len(got) > n {
			got = got[:n]
			next := url.Values{"n": {strconv.Itoa(n)}, "last": {got[n-1]}}
			w.Header().Set("Link", `</v2/`+name+`/tags/list?`+next.Encode()+`>; rel="next"`)
		}
		if got != nil {
			tags = got
		}
	}
	writeJSON(w, r, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{name, tags})
	return nil
}

func (h *Handler) serveReferrers(w http.ResponseWriter, r *http.Request, name, ref string) *Error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errMethodNotAllowed()
	}
	dgst, herr := parseDigest(ref)
	if herr != nil {
		return herr
	}
	repo, herr := h.access(r, name, auth.Pull)
	if herr != nil {
		return herr
	}
	index := v1.Index{MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{}}
	index.SchemaVersion = 2
	artifactType := r.URL.Query().Get("artifactType")
	if repo != nil {
		found, err := h.store.ListReferrers(r.Context(), repo.ID, dgst.String(), artifactType)
		if err != nil {
			return errInternal(err)
		}
		for _, m := range found {
			d := v1.Descriptor{MediaType: m.MediaType, Digest: digest.Digest(m.Digest), Size: m.Size, ArtifactType: m.ArtifactType}
			if m.Annotations != "" {
				_ = json.Unmarshal([]byte(m.Annotations), &d.Annotations)
			}
			index.Manifests = append(index.Manifests, d)
		}
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	writeJSON(w, r, v1.MediaTypeImageIndex, index)
	return nil
}

// serveCatalog lists the repositories the caller may pull, in order.
func (h *Handler) serveCatalog(w http.ResponseWriter, r *http.Request) *Error {
	who, err := h.authz.AuthorizeBase(r)
	if err != nil {
		return authError(err)
	}
	n, last, herr := pageParams(r.URL.Query())
	if herr != nil {
		return herr
	}
	if n < 0 {
		n = 100
	}
	if who.ClaimOnly() {
		names, herr := h.claimCatalog(r, who.Token(), n, last)
		if herr != nil {
			return herr
		}
		writeCatalog(w, r, names, n)
		return nil
	}
	ctx := r.Context()
	names := []string{}
	// Scan in pages, keeping only what the caller may pull, until the page is
	// full or the repositories run out.
	cursor := last
	for len(names) < n {
		repos, err := h.store.ListRepositories(ctx, cursor, 500)
		if err != nil {
			return errInternal(err)
		}
		for _, repo := range repos {
			cursor = repo.FullName()
			// The policy gets the row at hand rather than looking it up
			// again: for an anonymous caller it is then decided without a
			// query, on the repository's visibility alone.
			role, err := h.policy.RepositoryRole(ctx, who, &repo)
			if err != nil {
				return errInternal(err)
			}
			if auth.RoleAtLeast(role, store.RoleRead) {
				names = append(names, repo.FullName())
				if len(names) == n {
					break
				}
			}
		}
		if len(repos) < 500 {
			break
		}
	}
	writeCatalog(w, r, names, n)
	return nil
}

// writeCatalog sends a catalog page of at most n names, with a link to the
// next page when it is full.
func writeCatalog(w http.ResponseWriter, r *http.Request, names []string, n int) {
	if len(names) == n && n > 0 {
		next := url.Values{"n": {strconv.Itoa(n)}, "last": {names[n-1]}}
		w.Header().Set("Link", `</v2/_catalog?`+next.Encode()+`>; rel="next"`)
	}
	writeJSON(w, r, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{names})
}

// claimCatalog lists, for a caller whose scoped token is all it may use
// (a build's worker, an OAuth login), the existing repositories its access
// claim lets it pull: nothing its subject could read otherwise shows.
func (h *Handler) claimCatalog(r *http.Request, c *auth.Claims, n int, last string) ([]string, *Error) {
	var candidates []string
	for _, ra := range c.Access {
		if ra.Type == auth.TypeRepository && ra.Name > last && auth.Covers(ra.Actions, auth.Pull) {
			candidates = append(candidates, ra.Name)
		}
	}
	slices.Sort(candidates)
	candidates = slices.Compact(candidates)
	names := []string{}
	for _, name := range candidates {
		if len(names) == n {
			break
		}
		repo, herr := h.lookupRepo(r.Context(), name)
		if herr != nil && herr.Status == http.StatusInternalServerError {
			return nil, herr
		}
		if repo != nil {
			names = append(names, name)
		}
	}
	return names, nil
}
