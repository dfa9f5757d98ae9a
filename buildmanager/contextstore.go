package buildmanager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/storage"
)

// ErrContextTooLarge reports an upload over the context store's limit.
var ErrContextTooLarge = errors.New("build context too large")

// ContextStore keeps uploaded build contexts (a Dockerfile or an archive)
// until a worker fetches them.
//
// Contract: a file is recorded (store.BuildStore.PutBuildFile) when its
// upload URL is issued. Put stores the bytes of r as that file's content
// and returns their size: ErrContextTooLarge past the store's limit,
// store.ErrNotFound for a file never recorded, store.ErrConflict for one
// that has its content already; an error reading r is returned wrapped.
// Open returns the content (store.ErrNotFound for an unknown file or one
// whose bytes never arrived).
type ContextStore interface {
	Put(ctx context.Context, fileID string, r io.Reader) (int64, error)
	Open(ctx context.Context, fileID string) (io.ReadCloser, int64, error)
}

// BuildFileStore is what a BlobContextStore keeps of uploaded files in the
// metadata store: which blob holds each file's bytes.
type BuildFileStore interface {
	GetBuildFile(ctx context.Context, id string) (*store.BuildFile, error)
	SetBuildFileContent(ctx context.Context, id, digest string, size int64) error
	DeleteUnusedBuildFiles(ctx context.Context, expiredBefore time.Time) (removed int, unreferenced []string, err error)
}

// BlobContextStore keeps contexts in the registry's blob storage, named by
// digest, and the file ID → digest mapping in the metadata store, so that
// any server instance can serve a context another one received.
type BlobContextStore struct {
	Blobs storage.Driver
	Store BuildFileStore
	// MaxBytes bounds an upload (default DefaultMaxContextBytes).
	MaxBytes int64
}

// DefaultMaxContextBytes is the default limit on an uploaded context
// (512 MiB), as sent; workers apply the same default to a downloaded one.
const DefaultMaxContextBytes = 512 << 20

// Put stores an uploaded context.
func (c *BlobContextStore) Put(ctx context.Context, fileID string, r io.Reader) (int64, error) {
	if err := storage.ValidateUploadID("ctx-" + fileID); err != nil {
		return 0, fmt.Errorf("put build context %q: %w", fileID, err)
	}
	// Checking first spares storing bytes that cannot be kept; the
	// content's conditional write below still settles a race.
	f, err := c.Store.GetBuildFile(ctx, fileID)
	if err != nil {
		return 0, fmt.Errorf("put build context %s: %w", fileID, err)
	}
	if f.Digest != "" {
		return 0, fmt.Errorf("put build context %s: %w", fileID, store.ErrConflict)
	}
	limit := c.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxContextBytes
	}
	dgst, n, err := putBlob(ctx, c.Blobs, "ctx-"+fileID, r, limit)
	if errors.Is(err, errTooLarge) {
		return 0, fmt.Errorf("put build context %s: %w (limit %d bytes)", fileID, ErrContextTooLarge, limit)
	}
	if err != nil {
		return 0, fmt.Errorf("put build context %s: %w", fileID, err)
	}
	if err := c.Store.SetBuildFileContent(ctx, fileID, dgst, n); err != nil {
		return 0, fmt.Errorf("put build context %s: %w", fileID, err)
	}
	return n, nil
}

// Open returns an uploaded context.
func (c *BlobContextStore) Open(ctx context.Context, fileID string) (io.ReadCloser, int64, error) {
	f, err := c.Store.GetBuildFile(ctx, fileID)
	if err != nil {
		return nil, 0, fmt.Errorf("open build context %s: %w", fileID, err)
	}
	if f.Digest == "" {
		return nil, 0, fmt.Errorf("open build context %s: nothing was uploaded: %w", fileID, store.ErrNotFound)
	}
	rc, size, err := c.Blobs.Open(ctx, digest.Digest(f.Digest))
	if err != nil {
		return nil, 0, fmt.Errorf("open build context %s: %w", fileID, err)
	}
	return rc, size, nil
}

// Purging defaults: an upload no build used is kept for an hour after its
// URL expired, so that a build requested right after a slow upload still
// finds it; the purge runs every 10 minutes.
const (
	DefaultContextPurgeGrace    = time.Hour
	DefaultContextPurgeInterval = 10 * time.Minute
)

// PurgeUnused removes the uploads no build used whose URL expired more than
// grace ago, and the blobs holding their bytes when nothing else refers to
// those. It returns how many uploads it removed.
func (c *BlobContextStore) PurgeUnused(ctx context.Context, grace time.Duration) (int, error) {
	n, unreferenced, err := c.Store.DeleteUnusedBuildFiles(ctx, time.Now().Add(-grace))
	if err != nil {
		return 0, fmt.Errorf("purge build contexts: %w", err)
	}
	var errs []error
	for _, d := range unreferenced {
		if err := c.Blobs.Delete(ctx, digest.Digest(d)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("purge build contexts: %w", errors.Join(errs...))
	}
	return n, nil
}

// RunPurge purges unused uploads at start and then every interval, until
// ctx ends.
func (c *BlobContextStore) RunPurge(ctx context.Context, interval, grace time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := c.PurgeUnused(ctx, grace)
		switch {
		case err != nil && ctx.Err() == nil:
			log.ErrorContext(ctx, "purging unused build contexts failed", "err", err)
		case n > 0:
			log.InfoContext(ctx, "purged unused build contexts", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ContextLimits bound a build context, uploaded or downloaded. Zero fields
// leave the defaults (the context store's and the worker's).
type ContextLimits struct {
	// MaxBytes is the largest context as sent.
	MaxBytes int64
	// MaxUnpackedBytes is the most file content an archive may unpack to.
	MaxUnpackedBytes int64
	// MaxCompressionRatio is the most bytes an archive may unpack to per
	// byte of its compressed stream, checked as it unpacks.
	MaxCompressionRatio int64
}

// ContextLimitsFromConfig reads config BUILD_CONTEXT_MAX_BYTES,
// BUILD_CONTEXT_MAX_UNPACKED_BYTES and BUILD_CONTEXT_MAX_COMPRESSION_RATIO
// from the raw config file (0 or absent: the default).
func ContextLimitsFromConfig(raw map[string]any) (ContextLimits, error) {
	var l ContextLimits
	for key, dst := range map[string]*int64{
		"BUILD_CONTEXT_MAX_BYTES":             &l.MaxBytes,
		"BUILD_CONTEXT_MAX_UNPACKED_BYTES":    &l.MaxUnpackedBytes,
		"BUILD_CONTEXT_MAX_COMPRESSION_RATIO": &l.MaxCompressionRatio,
	} {
		n, err := config.NonNegativeInt(raw, key, 0)
		if err != nil {
			return ContextLimits{}, err
		}
		*dst = int64(n)
	}
	return l, nil
}
