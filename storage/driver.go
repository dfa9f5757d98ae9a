// Package storage holds blob bytes. The metadata store knows which blobs
// exist and who may see them; a Driver only keeps bytes, addressed by digest
// once committed and by upload ID while they are still arriving. Every
// driver passes the shared suite in storagetest and registers itself by
// name (Register) from its package's init.
package storage

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// Errors every driver reports (wrapped, so test with errors.Is). Callers map
// them to protocol errors: ErrNotFound to 404 BLOB_UNKNOWN/BLOB_UPLOAD_UNKNOWN,
// ErrInvalid to 400, ErrBadOffset to 416, ErrSizeMismatch to 400 SIZE_INVALID.
var (
	// ErrNotFound reports a blob or upload that the driver does not hold.
	ErrNotFound = errors.New("storage: not found")
	// ErrInvalid reports an upload ID or digest the driver refuses to use as
	// a name: wrong syntax, an unsupported algorithm, or an attempt to escape
	// the storage namespace (such as "../x").
	ErrInvalid = errors.New("storage: invalid upload ID or digest")
	// ErrBadOffset reports an Append offset that is negative or beyond the
	// bytes the upload holds, which would leave a hole.
	ErrBadOffset = errors.New("storage: offset beyond staged bytes")
	// ErrSizeMismatch reports a Commit whose size differs from the number of
	// staged bytes; nothing is committed and the upload is kept.
	ErrSizeMismatch = errors.New("storage: staged size does not match")
)

// Driver stores blob bytes.
//
// Contract, checked by storagetest.Run for every implementation:
//   - An upload is a staging area named by an ID the caller chooses (see
//     ValidateUploadID for the syntax; drivers reject others with ErrInvalid,
//     and digests failing ValidateDigest likewise). Append
//     writes at a given offset; anything the staging area held beyond that
//     offset (left by a crash mid-write) is discarded first, so a resumed
//     upload continues from the last offset the caller recorded.
//   - Commit makes the staged bytes visible under dgst atomically and
//     durably: once Commit returns nil the blob survives a crash or power
//     cut, and a reader never sees a partial blob. Committing a digest that
//     already exists succeeds and discards the staged bytes. The driver does
//     not hash: the caller has verified dgst as the bytes streamed in.
//   - Methods are safe for concurrent use; concurrent Append calls on one
//     upload are the caller's to prevent.
type Driver interface {
	// Append opens the upload for writing at offset (creating it when offset
	// is 0). The caller writes and then closes the writer; Close flushes.
	Append(ctx context.Context, uploadID string, offset int64) (io.WriteCloser, error)
	// UploadReader reads the staged bytes of an upload from the start (used
	// when the finalizing digest's algorithm differs from the running hash).
	UploadReader(ctx context.Context, uploadID string) (io.ReadCloser, error)
	// Commit moves the staged bytes of uploadID, which must be exactly size
	// bytes long, to blob dgst.
	Commit(ctx context.Context, uploadID string, dgst digest.Digest, size int64) error
	// Abort discards an upload's staged bytes. Aborting an unknown upload is not an error.
	Abort(ctx context.Context, uploadID string) error

	// Open returns a reader positioned at the start of the blob and its size.
	// Implementations backed by files return an *os.File so that HTTP
	// responses can use sendfile.
	Open(ctx context.Context, dgst digest.Digest) (io.ReadSeekCloser, int64, error)
	// Stat returns the size of a committed blob.
	Stat(ctx context.Context, dgst digest.Digest) (int64, error)
	// Delete removes a committed blob. Deleting an unknown blob is not an error.
	Delete(ctx context.Context, dgst digest.Digest) error
	// Walk calls fn for every committed blob, in no particular order, until
	// fn returns an error (which Walk returns).
	Walk(ctx context.Context, fn func(dgst digest.Digest, size int64) error) error
}

// UnsyncedCloser is implemented by Append writers that can close without
// making what was written durable. Close must make the bytes durable
// because the caller may record the new offset next; when nothing records
// it (the same request commits the upload, and Commit makes the bytes
// durable, or the upload is dropped), that flush is paid for nothing.
type UnsyncedCloser interface {
	// CloseUnsynced releases the writer like Close, but the bytes written
	// may not survive a crash until a later Commit. An offset reached this
	// way must not be recorded.
	CloseUnsynced() error
}

// CloseAppend closes an Append writer: durably, or, when durable is false
// and the writer supports it, without the flush (see UnsyncedCloser).
func CloseAppend(w io.WriteCloser, durable bool) error {
	if u, ok := w.(UnsyncedCloser); ok && !durable {
		return u.CloseUnsynced()
	}
	return w.Close()
}

// StagedLister is implemented by drivers that can list their staging
// area, so that the registry can remove staged bytes no upload session
// owns any more (left by a server that died mid-request).
type StagedLister interface {
	// StagedUploads calls fn for every staged upload with the time it was
	// last written, until fn returns an error (which it returns).
	StagedUploads(ctx context.Context, fn func(uploadID string, modified time.Time) error) error
}
