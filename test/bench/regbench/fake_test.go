package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// fakeRegistry is a small in-memory OCI registry for tests. With a user
// set it demands Docker token auth the way berth does: /v2/ answers 401
// with a Bearer challenge whose realm is its own /token endpoint.
type fakeRegistry struct {
	user, pass string // empty user: no auth

	mu        sync.Mutex
	base      string // set once the server listens; used in the realm
	tokens    map[string]bool
	tokenGen  int
	uploadGen int
	scopes    []string
	blobs     map[string][]byte
	uploads   map[string]bool
	manifests map[string][]byte          // repo:tag -> manifest
	tags      map[string]map[string]bool // repo -> tag set
}

func newFakeRegistry(user, pass string) *fakeRegistry {
	return &fakeRegistry{
		user: user, pass: pass,
		tokens: map[string]bool{}, blobs: map[string][]byte{}, uploads: map[string]bool{},
		manifests: map[string][]byte{}, tags: map[string]map[string]bool{},
	}
}

// revokeTokens makes every issued token invalid, as an expiry would.
func (f *fakeRegistry) revokeTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = map[string]bool{}
}

func (f *fakeRegistry) tagCount(repo string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.tags[repo])
}

func (f *fakeRegistry) issuedScopes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.scopes)
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/health/instance":
		w.WriteHeader(http.StatusOK)
		return
	case r.URL.Path == "/token":
		f.serveToken(w, r)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/v2/") {
		http.NotFound(w, r)
		return
	}
	if f.user != "" && !f.authorized(r) {
		f.mu.Lock()
		realm := f.base + "/token"
		f.mu.Unlock()
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s",service="fake,registry"`, realm))
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, "/v2/")
	if rest == "" {
		w.WriteHeader(http.StatusOK)
		return
	}
	for _, route := range []struct {
		marker string
		fn     func(http.ResponseWriter, *http.Request, string, string)
	}{
		{"/blobs/uploads/", f.serveUpload},
		{"/blobs/", f.serveBlob},
		{"/manifests/", f.serveManifest},
		{"/tags/list", f.serveTags},
	} {
		if i := strings.Index(rest, route.marker); i > 0 {
			route.fn(w, r, rest[:i], rest[i+len(route.marker):])
			return
		}
	}
	http.NotFound(w, r)
}

func (f *fakeRegistry) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	defer f.mu.Unlock()
	return ok && f.tokens[tok]
}

func (f *fakeRegistry) serveToken(w http.ResponseWriter, r *http.Request) {
	u, p, ok := r.BasicAuth()
	if !ok || u != f.user || p != f.pass || r.URL.Query().Get("service") != "fake,registry" {
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	f.tokenGen++
	tok := "tok" + strconv.Itoa(f.tokenGen)
	f.tokens[tok] = true
	f.scopes = append(f.scopes, r.URL.Query().Get("scope"))
	f.mu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
}

func (f *fakeRegistry) serveUpload(w http.ResponseWriter, r *http.Request, repo, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && id == "":
		f.uploadGen++
		id = strconv.Itoa(f.uploadGen)
		f.uploads[id] = true
		w.Header().Set("Location", "/v2/"+repo+"/blobs/uploads/"+id+"?state=x")
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPut && f.uploads[id] && r.URL.Query().Get("state") == "x":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(body)
		d := "sha256:" + hex.EncodeToString(sum[:])
		if d != r.URL.Query().Get("digest") {
			http.Error(w, "digest mismatch", http.StatusBadRequest)
			return
		}
		delete(f.uploads, id)
		f.blobs[d] = body
		w.WriteHeader(http.StatusCreated)
	default:
		http.Error(w, "bad upload request", http.StatusBadRequest)
	}
}

func (f *fakeRegistry) serveBlob(w http.ResponseWriter, r *http.Request, _, digest string) {
	f.mu.Lock()
	b, ok := f.blobs[digest]
	f.mu.Unlock()
	if !ok || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write(b)
}

func (f *fakeRegistry) serveManifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	switch r.Method {
	case http.MethodPut:
		body, err := io.ReadAll(r.Body)
		if err != nil || r.Header.Get("Content-Type") != mediaOCIManifest {
			http.Error(w, "bad manifest", http.StatusBadRequest)
			return
		}
		var m struct {
			Config struct{ Digest string }   `json:"config"`
			Layers []struct{ Digest string } `json:"layers"`
		}
		if err := json.Unmarshal(body, &m); err != nil {
			http.Error(w, "manifest is not JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, d := range append([]string{m.Config.Digest}, layerDigests(m.Layers)...) {
			if _, ok := f.blobs[d]; !ok {
				http.Error(w, "unknown blob "+d, http.StatusBadRequest)
				return
			}
		}
		f.manifests[repo+":"+ref] = body
		if f.tags[repo] == nil {
			f.tags[repo] = map[string]bool{}
		}
		f.tags[repo][ref] = true
		w.WriteHeader(http.StatusCreated)
	case http.MethodGet:
		if !strings.Contains(r.Header.Get("Accept"), mediaOCIManifest) || !strings.Contains(r.Header.Get("Accept"), mediaOCIIndex) {
			http.Error(w, "missing Accept", http.StatusNotAcceptable)
			return
		}
		f.mu.Lock()
		b, ok := f.manifests[repo+":"+ref]
		f.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", mediaOCIManifest)
		_, _ = w.Write(b)
	default:
		http.Error(w, "method", http.StatusMethodNotAllowed)
	}
}

func layerDigests(ls []struct{ Digest string }) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Digest
	}
	return out
}

// serveTags lists tags in order, paginated by n and last with an absolute
// Link header (berth and distribution send relative ones; the client must
// take both).
func (f *fakeRegistry) serveTags(w http.ResponseWriter, r *http.Request, repo, _ string) {
	f.mu.Lock()
	var all []string
	for t := range f.tags[repo] {
		all = append(all, t)
	}
	base := f.base
	f.mu.Unlock()
	slices.Sort(all)
	q := r.URL.Query()
	if last := q.Get("last"); last != "" {
		i, _ := slices.BinarySearch(all, last)
		for i < len(all) && all[i] <= last {
			i++
		}
		all = all[i:]
	}
	if ns := q.Get("n"); ns != "" {
		n, err := strconv.Atoi(ns)
		if err != nil || n <= 0 {
			http.Error(w, "bad n", http.StatusBadRequest)
			return
		}
		if len(all) > n {
			all = all[:n]
			next := url.Values{"n": {ns}, "last": {all[n-1]}}
			w.Header().Set("Link", fmt.Sprintf(`<%s/v2/%s/tags/list?%s>; rel="next"`, base, repo, next.Encode()))
		}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"name": repo, "tags": all})
}
