package buildmanager

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/registry/storage"
)

// ErrContextTooLarge reports an upload over the context store's limit.
var ErrContextTooLarge = errors.New("build context too large")

// ContextStore keeps uploaded build contexts (a Dockerfile or an archive)
// until a worker fetches them.
//
// Contract: Put stores the bytes of r under fileID (ErrContextTooLarge past
// the store's limit, store.ErrConflict if fileID is taken) and returns their
// size; Open returns them (store.ErrNotFound for an unknown ID).
type ContextStore interface {
	Put(ctx context.Context, fileID string, r io.Reader) (int64, error)
	Open(ctx context.Context, fileID string) (io.ReadCloser, int64, error)
}

// BlobContextStore keeps contexts in the registry's blob storage, named by
// digest, and the file ID → digest mapping in the metadata store, so that
// any server instance can serve a context another one received.
type BlobContextStore struct {
	Blobs storage.Driver
	Store store.BuildStore
	// MaxBytes bounds an upload (default DefaultMaxContextBytes).
	MaxBytes int64
}

// DefaultMaxContextBytes is the default limit on an uploaded context (1 GiB).
const DefaultMaxContextBytes = 1 << 30

// Put stores an uploaded context.
func (c *BlobContextStore) Put(ctx context.Context, fileID string, r io.Reader) (int64, error) {
	if err := storage.ValidateUploadID("ctx-" + fileID); err != nil {
		return 0, fmt.Errorf("put build context %q: %w", fileID, err)
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
	if err := c.Store.PutBuildFile(ctx, &store.BuildFile{ID: fileID, Digest: dgst, Size: n}); err != nil {
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
	rc, size, err := c.Blobs.Open(ctx, digest.Digest(f.Digest))
	if err != nil {
		return nil, 0, fmt.Errorf("open build context %s: %w", fileID, err)
	}
	return rc, size, nil
}
