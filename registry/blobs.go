package registry

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/registry/httprange"
	"github.com/berth-dev/berth/registry/reference"
	"github.com/berth-dev/berth/storage"
)

// parseDigest parses a digest from a path or query, answering DIGEST_INVALID
// (or UNSUPPORTED for a well-formed digest of an algorithm berth lacks).
func parseDigest(s string) (digest.Digest, *Error) {
	d, err := reference.ParseDigest(s)
	if errors.Is(err, reference.ErrDigestUnsupported) {
		return "", errDigestUnsupported("digest algorithm not supported: %s", s)
	}
	if err != nil {
		return "", errDigestInvalid("invalid digest %q", s)
	}
	return d, nil
}

func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request, name, ref string) *Error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodDelete:
	default:
		return errMethodNotAllowed()
	}
	dgst, herr := parseDigest(ref)
	if herr != nil {
		return herr
	}
	repo, herr := h.requireRepo(r, name)
	if herr != nil {
		return herr
	}
	ctx := r.Context()
	if r.Method == http.MethodDelete {
		err := h.store.UnlinkBlob(ctx, repo.ID, dgst.String())
		if errors.Is(err, store.ErrNotFound) {
			return errBlobUnknown(dgst.String())
		}
		if err != nil {
			return errInternal(err)
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	b, err := h.store.GetRepoBlob(ctx, repo.ID, dgst.String())
	if errors.Is(err, store.ErrNotFound) {
		return errBlobUnknown(dgst.String())
	}
	if err != nil {
		return errInternal(err)
	}
	return h.sendBlob(w, r, dgst, b.Size)
}

// sendBlob writes a blob's bytes (or the requested range). For files the
// copy goes through the kernel (sendfile) because the reader is an *os.File
// wrapped only in an io.LimitedReader.
func (h *Handler) sendBlob(w http.ResponseWriter, r *http.Request, dgst digest.Digest, size int64) *Error {
	hdr := w.Header()
	hdr.Set("Docker-Content-Digest", dgst.String())
	hdr.Set("Accept-Ranges", "bytes")
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Etag", `"`+dgst.String()+`"`)
	hdr.Set("Cache-Control", "max-age=31536000")
	start, end := int64(0), size-1
	status := http.StatusOK
	if rh := r.Header.Get("Range"); rh != "" {
		s, e, err := httprange.Parse(rh, size)
		switch {
		case err == nil:
			start, end, status = s, e, http.StatusPartialContent
			hdr.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s, e, size))
		case errors.Is(err, httprange.ErrUnsatisfiable):
			hdr.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			return errRangeNotSatisfiable()
		default:
			// A malformed or multi-range header is ignored: the whole blob is sent.
		}
	}
	n := end - start + 1
	hdr.Set("Content-Length", strconv.FormatInt(n, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return nil
	}
	f, _, err := h.blobs.Open(r.Context(), dgst)
	if errors.Is(err, storage.ErrNotFound) {
		hdr.Del("Content-Length")
		return errBlobUnknown(dgst.String())
	}
	if err != nil {
		hdr.Del("Content-Length")
		return errInternal(err)
	}
	defer f.Close()
	if start > 0 {
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			hdr.Del("Content-Length")
			return errInternal(err)
		}
	}
	w.WriteHeader(status)
	if _, err := io.Copy(w, &io.LimitedReader{R: f, N: n}); err != nil {
		h.log.DebugContext(r.Context(), "blob send interrupted", "digest", dgst, "err", err)
	}
	return nil
}
