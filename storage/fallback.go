package storage

import (
	"context"
	"errors"
	"io"

	"github.com/opencontainers/go-digest"
)

// WithFallbackReads returns a driver that uploads to, deletes from and walks
// primary alone, and reads a blob primary lacks from fallback. It lets data
// move to a namespace of its own without a migration: what was written to the
// old place stays readable there, and nothing new goes to it.
func WithFallbackReads(primary, fallback Driver) Driver {
	return &fallbackReads{Driver: primary, fallback: fallback}
}

type fallbackReads struct {
	Driver
	fallback Driver
}

func (f *fallbackReads) Open(ctx context.Context, dgst digest.Digest) (io.ReadSeekCloser, int64, error) {
	rc, size, err := f.Driver.Open(ctx, dgst)
	if errors.Is(err, ErrNotFound) {
		return f.fallback.Open(ctx, dgst)
	}
	return rc, size, err
}

func (f *fallbackReads) Stat(ctx context.Context, dgst digest.Digest) (int64, error) {
	size, err := f.Driver.Stat(ctx, dgst)
	if errors.Is(err, ErrNotFound) {
		return f.fallback.Stat(ctx, dgst)
	}
	return size, err
}
