package registry

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/registry/manifest"
	"github.com/berth-dev/berth/registry/reference"
)

func (h *Handler) serveManifest(w http.ResponseWriter, r *http.Request, name, ref string) *Error {
	tag, dgst, err := reference.ParseRef(ref)
	if err != nil {
		if errors.Is(err, reference.ErrDigestUnsupported) {
			return errDigestUnsupported("digest algorithm not supported")
		}
		if errors.Is(err, reference.ErrDigestInvalid) {
			return errDigestInvalid("invalid digest %q", ref)
		}
		if r.Method == http.MethodPut {
			return newError(CodeManifestInvalid, "invalid tag %q", ref)
		}
		return errManifestUnknown(ref)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return h.getManifest(w, r, name, tag, dgst)
	case http.MethodPut:
		return h.putManifest(w, r, name, tag, dgst)
	case http.MethodDelete:
		return h.deleteManifest(w, r, name, tag, dgst)
	}
	return errMethodNotAllowed()
}

// resolve finds the manifest for a tag or digest through the caches.
func (h *Handler) resolve(r *http.Request, repo *store.Repository, tag string, dgst digest.Digest) (*store.Manifest, *Error) {
	ctx := r.Context()
	ref := dgst.String()
	if tag != "" {
		ref = tag
		d, ok := h.tags.Get(tagKey{repo.ID, tag})
		if !ok {
			var err error
			d, err = h.store.ResolveTag(ctx, repo.ID, tag)
			if errors.Is(err, store.ErrNotFound) {
				return nil, errManifestUnknown(tag)
			}
			if err != nil {
				return nil, errInternal(err)
			}
			h.tags.Add(tagKey{repo.ID, tag}, d)
		}
		dgst = digest.Digest(d)
	}
	key := manifestKey{repo.ID, dgst.String()}
	if m, ok := h.manifests.Get(key); ok {
		return m, nil
	}
	m, err := h.store.GetManifest(ctx, repo.ID, dgst.String())
	if errors.Is(err, store.ErrNotFound) {
		return nil, errManifestUnknown(ref)
	}
	if err != nil {
		return nil, errInternal(err)
	}
	m.Refs = nil // not needed to serve; keep the cache small
	h.manifests.Add(key, m)
	return m, nil
}

func (h *Handler) getManifest(w http.ResponseWriter, r *http.Request, name, tag string, dgst digest.Digest) *Error {
	repo, herr := h.requireRepo(r, name)
	if herr != nil {
		return herr
	}
	m, herr := h.resolve(r, repo, tag, dgst)
	if herr != nil {
		return herr
	}
	hdr := w.Header()
	hdr.Set("Content-Type", m.MediaType)
	hdr.Set("Docker-Content-Digest", m.Digest)
	hdr.Set("Etag", `"`+m.Digest+`"`)
	hdr.Set("Content-Length", strconv.Itoa(len(m.Payload)))
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == `"`+m.Digest+`"` {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(m.Payload)
	}
	return nil
}

func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, name, tag string, dgst digest.Digest) *Error {
	repo, herr := h.ensureRepo(r, name)
	if herr != nil {
		return herr
	}
	ctx := r.Context()
	if r.ContentLength > manifest.MaxManifestSize {
		return errManifestTooLarge("manifest larger than %d bytes", manifest.MaxManifestSize)
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, manifest.MaxManifestSize+1))
	if err != nil {
		return newError(CodeManifestInvalid, "reading manifest: %v", err)
	}
	if len(payload) > manifest.MaxManifestSize {
		return errManifestTooLarge("manifest larger than %d bytes", manifest.MaxManifestSize)
	}
	alg := digest.SHA256
	if dgst != "" {
		alg = dgst.Algorithm()
	}
	actual := alg.FromBytes(payload)
	if dgst != "" && actual != dgst {
		return errDigestInvalid("manifest hashes to %s, not %s", actual, dgst)
	}
	parsed, err := manifest.Parse(r.Header.Get("Content-Type"), payload)
	if err != nil {
		var bad *manifest.BadDigestError
		switch {
		case errors.As(err, &bad):
			return errDigestInvalid("%v", err)
		case errors.Is(err, manifest.ErrTooLarge):
			return errManifestTooLarge("%v", err)
		default: // ErrInvalid, ErrUnsupported
			return newError(CodeManifestInvalid, "%v", err)
		}
	}
	m := &store.Manifest{
		RepoID:       repo.ID,
		Digest:       actual.String(),
		MediaType:    parsed.MediaType,
		ArtifactType: parsed.ArtifactType,
		Size:         int64(len(payload)),
		Payload:      payload,
		CreatedAt:    time.Now(),
	}
	if parsed.Subject != nil {
		m.Subject = parsed.Subject.Digest.String()
	}
	if len(parsed.Annotations) > 0 {
		a, _ := json.Marshal(parsed.Annotations)
		m.Annotations = string(a)
	}
	m.Refs = make([]store.Ref, len(parsed.Refs))
	for i, ref := range parsed.Refs {
		kind := store.RefBlob
		if ref.IsManifest {
			kind = store.RefManifest
		}
		m.Refs[i] = store.Ref{Digest: ref.Digest.String(), Size: ref.Size, Kind: kind}
	}
	err = h.store.PutManifest(ctx, m, tag)
	var missing *store.MissingRefError
	if errors.As(err, &missing) {
		msg := "manifest references a blob unknown to the repository"
		if missing.SizeMismatch {
			msg = "manifest declares a size that differs from the stored blob"
		}
		if missing.Ref.Kind == store.RefManifest {
			msg = "manifest references a manifest unknown to the repository"
		}
		e := newError(CodeManifestBlobUnknown, "%s", msg)
		e.Detail = map[string]string{"digest": missing.Ref.Digest}
		return e
	}
	if err != nil {
		return errInternal(err)
	}
	if tag != "" {
		h.tags.Add(tagKey{repo.ID, tag}, m.Digest)
	}
	hdr := w.Header()
	hdr.Set("Location", h.externalURL(r)+"/v2/"+name+"/manifests/"+m.Digest)
	hdr.Set("Docker-Content-Digest", m.Digest)
	if m.Subject != "" {
		hdr.Set("OCI-Subject", m.Subject)
	}
	hdr.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (h *Handler) deleteManifest(w http.ResponseWriter, r *http.Request, name, tag string, dgst digest.Digest) *Error {
	repo, herr := h.requireRepo(r, name)
	if herr != nil {
		return herr
	}
	ctx := r.Context()
	var err error
	if tag != "" {
		err = h.store.DeleteTag(ctx, repo.ID, tag)
		h.tags.Remove(tagKey{repo.ID, tag})
	} else {
		err = h.store.DeleteManifest(ctx, repo.ID, dgst.String())
		h.manifests.Remove(manifestKey{repo.ID, dgst.String()})
		// Tags that pointed at it are gone too; cached ones must not outlive it.
		h.tags.Purge()
	}
	if errors.Is(err, store.ErrNotFound) {
		ref := tag
		if ref == "" {
			ref = dgst.String()
		}
		return errManifestUnknown(ref)
	}
	if err != nil {
		return errInternal(err)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
