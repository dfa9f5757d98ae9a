package registry

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	regauth "github.com/berth-dev/berth/registry/auth"
	"github.com/berth-dev/berth/registry/httprange"
	"github.com/berth-dev/berth/storage"
)

// copyBufs holds the buffers request bodies are copied through: large, so
// that hashing and writing run in big strides.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func newHash(alg string) (hash.Hash, error) {
	switch alg {
	case "sha256":
		return sha256.New(), nil
	case "sha512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("unsupported digest algorithm %q", alg)
}

// restoreHash rebuilds the running hash of an upload.
func restoreHash(u *store.Upload) (hash.Hash, error) {
	hs, err := newHash(u.Algorithm)
	if err != nil {
		return nil, err
	}
	if len(u.HashState) > 0 {
		if err := hs.(encoding.BinaryUnmarshaler).UnmarshalBinary(u.HashState); err != nil {
			return nil, fmt.Errorf("restore hash state: %w", err)
		}
	}
	return hs, nil
}

func (h *Handler) uploadURL(r *http.Request, name, id string) string {
	return h.externalURL(r) + "/v2/" + name + "/blobs/uploads/" + id
}

func (h *Handler) serveUpload(w http.ResponseWriter, r *http.Request, name, id string) *Error {
	if id == "" {
		if r.Method != http.MethodPost {
			return errMethodNotAllowed()
		}
		return h.startUpload(w, r, name)
	}
	switch r.Method {
	case http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete:
	default:
		return errMethodNotAllowed()
	}
	if _, err := uuid.Parse(id); err != nil {
		return errUploadUnknown()
	}
	who, repo, herr := h.accessUpload(r, name)
	if herr != nil {
		return herr
	}
	if repo == nil {
		return errUploadUnknown()
	}
	if r.Method == http.MethodPatch || (r.Method == http.MethodPut && r.ContentLength != 0) {
		release, herr := h.takeUploadSlot(who.Name())
		if herr != nil {
			return herr
		}
		defer release()
	}
	unlock := h.lockUpload(id)
	defer unlock()
	ctx := r.Context()
	u, err := h.store.GetUpload(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && u.RepoID != repo.ID) {
		return errUploadUnknown()
	}
	if err != nil {
		return errInternal(err)
	}
	switch r.Method {
	case http.MethodGet:
		h.writeUploadStatus(w, r, name, u, http.StatusNoContent)
		return nil
	case http.MethodDelete:
		if err := h.dropUpload(ctx, id); err != nil {
			return errInternal(err)
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodPatch:
		if herr := h.appendChunk(r, u, true, true); herr != nil {
			return herr
		}
		h.writeUploadStatus(w, r, name, u, http.StatusAccepted)
		return nil
	default: // PUT
		dgst, herr := parseDigest(r.URL.Query().Get("digest"))
		if herr != nil {
			return herr
		}
		if r.ContentLength != 0 {
			// A final chunk may carry a Content-Range, checked as on PATCH.
			// Its progress is not recorded: the blob is committed in this
			// request, and a failure leaves the session at its last PATCH.
			if herr := h.appendChunk(r, u, true, false); herr != nil {
				return herr
			}
		}
		if herr := h.finishUpload(ctx, repo, u, dgst, true); herr != nil {
			return herr
		}
		h.writeBlobCreated(w, r, name, dgst)
		return nil
	}
}

// accessUpload authorizes a request on an upload session by its method,
// as the challenge advertises (GET pull, PATCH/PUT push, DELETE delete).
// Cancelling is also allowed to whoever may push: the session is theirs.
func (h *Handler) accessUpload(r *http.Request, name string) (*auth.Principal, *store.Repository, *Error) {
	if r.Method == http.MethodDelete {
		if who, err := h.authz.Authorize(r, name, auth.Pull, auth.Push); err == nil {
			repo, herr := h.lookupRepo(r.Context(), name)
			return who, repo, herr
		}
	}
	who, err := h.authz.Authorize(r, name, regauth.ActionsFor(r.Method)...)
	if err != nil {
		return nil, nil, authError(err)
	}
	repo, herr := h.lookupRepo(r.Context(), name)
	return who, repo, herr
}

func (h *Handler) lockUpload(id string) func() {
	v, _ := h.uploadLocks.LoadOrStore(id, &sync.Mutex{})
	mu := v.(*sync.Mutex)
	mu.Lock()
	return func() {
		mu.Unlock()
		// Dropping the entry while another request waits on it would let a
		// third request take a fresh mutex; that is harmless because the
		// store's compare-and-set on the offset still rejects the loser.
		h.uploadLocks.CompareAndDelete(id, mu)
	}
}

func (h *Handler) writeUploadStatus(w http.ResponseWriter, r *http.Request, name string, u *store.Upload, status int) {
	hdr := w.Header()
	hdr.Set("Location", h.uploadURL(r, name, u.ID))
	hdr.Set("Docker-Upload-UUID", u.ID)
	if u.Offset > 0 {
		hdr.Set("Range", fmt.Sprintf("0-%d", u.Offset-1))
	} else {
		// Docker clients read "0-0" for an empty upload, and the spec's
		// wording allows it; the range end is inclusive either way.
		hdr.Set("Range", "0-0")
	}
	hdr.Set("Content-Length", "0")
	w.WriteHeader(status)
}

func (h *Handler) writeBlobCreated(w http.ResponseWriter, r *http.Request, name string, dgst digest.Digest) {
	hdr := w.Header()
	hdr.Set("Location", h.externalURL(r)+"/v2/"+name+"/blobs/"+dgst.String())
	hdr.Set("Docker-Content-Digest", dgst.String())
	hdr.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// startUpload handles POST /v2/<name>/blobs/uploads/: a mount, a monolithic
// upload (?digest=), or the start of a chunked or streamed session.
func (h *Handler) startUpload(w http.ResponseWriter, r *http.Request, name string) *Error {
	who, repo, herr := h.ensureRepoFor(r, name)
	if herr != nil {
		return herr
	}
	ctx := r.Context()
	q := r.URL.Query()
	if mount := q.Get("mount"); mount != "" {
		dgst, herr := parseDigest(mount)
		if herr != nil {
			return herr
		}
		if h.tryMount(r, repo, dgst, q.Get("from")) {
			h.writeBlobCreated(w, r, name, dgst)
			return nil
		}
		// Fall through: the client gets an upload session instead (202).
	}
	alg := "sha256"
	var dgst digest.Digest
	if d := q.Get("digest"); d != "" && q.Get("mount") == "" {
		if dgst, herr = parseDigest(d); herr != nil {
			return herr
		}
		alg = dgst.Algorithm().String()
	} else if a := q.Get("digest-algorithm"); a != "" {
		if _, err := newHash(a); err != nil {
			return errDigestUnsupported("digest algorithm not supported: %s", a)
		}
		alg = a
	}
	now := time.Now()
	u := &store.Upload{ID: uuid.NewString(), RepoID: repo.ID, Algorithm: alg, CreatedAt: now, UpdatedAt: now}
	if dgst != "" {
		// Monolithic: the body is the whole blob. Nothing can resume it, so
		// its session lives only in this request and is never recorded.
		release, herr := h.takeUploadSlot(who.Name())
		if herr != nil {
			return herr
		}
		defer release()
		herr = h.appendChunk(r, u, false, false)
		if herr == nil {
			herr = h.finishUpload(ctx, repo, u, dgst, false)
		}
		if herr != nil {
			if err := h.blobs.Abort(ctx, u.ID); err != nil {
				h.log.WarnContext(ctx, "upload abort failed", "upload", u.ID, "err", err)
			}
			return herr
		}
		h.writeBlobCreated(w, r, name, dgst)
		return nil
	}
	if err := h.store.CreateUpload(ctx, u); err != nil {
		return errInternal(err)
	}
	h.writeUploadStatus(w, r, name, u, http.StatusAccepted)
	return nil
}

// tryMount links dgst from repository `from` into repo when the blob is
// there and the caller may pull from it.
func (h *Handler) tryMount(r *http.Request, repo *store.Repository, dgst digest.Digest, from string) bool {
	if from == "" || from == repo.FullName() {
		return false
	}
	ctx := r.Context()
	if !h.mayPull(r, repo, from) {
		return false
	}
	src, herr := h.lookupRepo(ctx, from)
	if herr != nil || src == nil {
		return false
	}
	if _, err := h.store.GetRepoBlob(ctx, src.ID, dgst.String()); err != nil {
		return false
	}
	if err := h.store.LinkBlob(ctx, repo.ID, dgst.String()); err != nil {
		h.log.WarnContext(ctx, "blob mount failed", "digest", dgst, "err", err)
		return false
	}
	return true
}

// mayPull reports whether the caller of r, already authorized to push to
// repo, may read repository `from`. A bearer token usually covers only the
// repository being pushed, so when it does not name `from` the policy is
// asked directly for the token's principal.
func (h *Handler) mayPull(r *http.Request, repo *store.Repository, from string) bool {
	if _, err := h.authz.Authorize(r, from, auth.Pull); err == nil {
		return true
	}
	who, err := h.authz.Authorize(r, repo.FullName(), auth.Pull, auth.Push)
	if err != nil || who.IsAnonymous() || who.Scopes != nil {
		// A scope-limited principal may use only what its token carries.
		return false
	}
	ns, name, ok := strings.Cut(from, "/")
	if !ok {
		return false
	}
	ctx := r.Context()
	acct, err := h.store.GetAccountByName(ctx, who.Name())
	if err != nil {
		return false
	}
	granted, _, err := h.policy.RepositoryActions(ctx, &auth.Principal{Account: acct}, ns, name)
	return err == nil && auth.Covers(granted, auth.Pull)
}

// appendChunk streams the request body onto the upload, hashing as it goes,
// and, when persist, records the new offset in the store. With ranged, a
// Content-Range header must start at the current offset (416 otherwise).
func (h *Handler) appendChunk(r *http.Request, u *store.Upload, ranged, persist bool) *Error {
	ctx := r.Context()
	from := u.Offset
	want := int64(-1)
	if cr := r.Header.Get("Content-Range"); ranged && cr != "" {
		start, end, err := httprange.ParseContentRange(cr)
		if err != nil {
			return errRangeInvalid("invalid Content-Range")
		}
		if start != from {
			return errRangeInvalid("chunk starts at %d but the upload is at %d", start, from)
		}
		want = end - start + 1
		if r.ContentLength >= 0 && r.ContentLength != want {
			return errRangeInvalid("Content-Range and Content-Length disagree")
		}
	}
	hs, err := restoreHash(u)
	if err != nil {
		return errInternal(err)
	}
	wc, err := h.blobs.Append(ctx, u.ID, from)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		// The record survived but the staged bytes did not (a lost disk).
		return errUploadUnknown()
	case errors.Is(err, storage.ErrBadOffset):
		return errRangeInvalid("staged bytes end before the recorded offset")
	case err != nil:
		return errInternal(err)
	}
	bufp := copyBufs.Get().(*[]byte)
	n, copyErr := io.CopyBuffer(io.MultiWriter(wc, hs), onlyReader{r.Body}, *bufp)
	copyBufs.Put(bufp)
	// Only an offset that is recorded needs its bytes durable now; when this
	// request commits the upload, Commit makes them durable.
	closeErr := storage.CloseAppend(wc, persist)
	if closeErr != nil {
		return errInternal(closeErr)
	}
	// Whatever arrived is recorded, even when the client went away mid-body,
	// so that a resumed upload continues from there.
	if n > 0 {
		state, err := hs.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return errInternal(err)
		}
		u.Offset, u.HashState, u.UpdatedAt = from+n, state, time.Now()
		if persist {
			if err := h.store.AdvanceUpload(ctx, u, from); err != nil {
				if errors.Is(err, store.ErrStale) {
					return errRangeInvalid("upload advanced concurrently")
				}
				return errInternal(err)
			}
		}
	}
	if copyErr != nil {
		return newError(CodeBlobUploadInvalid, "reading request body: %v", copyErr)
	}
	if want >= 0 && n != want {
		return newError(CodeSizeInvalid, "chunk was %d bytes, Content-Range said %d", n, want)
	}
	if r.ContentLength >= 0 && n != r.ContentLength {
		return newError(CodeSizeInvalid, "body was %d bytes, Content-Length said %d", n, r.ContentLength)
	}
	return nil
}

// onlyReader hides a body's other methods so io.CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }

// finishUpload verifies the digest and commits the blob. persisted says
// whether the session has a store record to remove.
func (h *Handler) finishUpload(ctx context.Context, repo *store.Repository, u *store.Upload, dgst digest.Digest, persisted bool) *Error {
	var got digest.Digest
	if dgst.Algorithm().String() == u.Algorithm {
		hs, err := restoreHash(u)
		if err != nil {
			return errInternal(err)
		}
		got = digest.NewDigest(dgst.Algorithm(), hs)
	} else {
		// The client hashed with another algorithm than the running hash:
		// read the staged bytes once more.
		rc, err := h.blobs.UploadReader(ctx, u.ID)
		if err != nil {
			return errInternal(err)
		}
		verifier := dgst.Algorithm().Hash()
		_, err = io.Copy(verifier, io.LimitReader(rc, u.Offset))
		rc.Close()
		if err != nil {
			return errInternal(err)
		}
		got = digest.NewDigest(dgst.Algorithm(), verifier)
	}
	if got != dgst {
		// The session is spent: its bytes can never match, so the client
		// starts over and nothing is kept.
		// A session left behind is purged with the abandoned uploads later.
		if persisted {
			if err := h.dropUpload(ctx, u.ID); err != nil {
				h.log.WarnContext(ctx, "dropping a spent upload failed", "upload", u.ID, "err", err)
			}
		}
		return errDigestInvalid("digest mismatch: content hashes to %s", got)
	}
	if err := h.blobs.Commit(ctx, u.ID, dgst, u.Offset); err != nil {
		return errInternal(err)
	}
	blob := store.Blob{Digest: dgst.String(), Size: u.Offset}
	var err error
	if persisted {
		err = h.store.CompleteUpload(ctx, u.ID, repo.ID, blob)
	} else {
		err = h.store.PutBlob(ctx, repo.ID, blob)
	}
	if err != nil {
		return errInternal(err)
	}
	return nil
}

// dropUpload forgets an upload session and its staged bytes.
func (h *Handler) dropUpload(ctx context.Context, id string) error {
	if err := h.store.DeleteUpload(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err := h.blobs.Abort(ctx, id); err != nil {
		h.log.WarnContext(ctx, "upload abort failed", "upload", id, "err", err)
	}
	return nil
}
