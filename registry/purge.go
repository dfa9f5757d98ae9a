package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/storage"
)

// Upload purging defaults: abandoned sessions (a client that went away
// mid-push) hold staged bytes and a row until they are purged. A week is
// long past any real resume, as in the distribution registry.
const (
	DefaultUploadPurgeAge      = 7 * 24 * time.Hour
	DefaultUploadPurgeInterval = time.Hour
)

// PurgeUploads ends every upload session not touched for olderThan: its
// row and its staged bytes. With a driver that lists its staging area
// (storage.StagedLister) it also removes staged bytes that no session owns
// and that are as old, left by a monolithic upload whose server died
// mid-request. It returns how many uploads it removed.
func (h *Handler) PurgeUploads(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	stale, err := h.store.ListUploadsBefore(ctx, cutoff)
	if err != nil {
		return 0, fmt.Errorf("registry: purge uploads: %w", err)
	}
	n := 0
	var errs []error
	for _, u := range stale {
		if err := h.dropUpload(ctx, u.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	lister, ok := h.blobs.(storage.StagedLister)
	if !ok {
		return n, errors.Join(errs...)
	}
	err = lister.StagedUploads(ctx, func(id string, modified time.Time) error {
		if !modified.Before(cutoff) {
			return nil
		}
		// A session still on record was touched after the cutoff (the
		// listing above would have dropped it otherwise): keep its bytes.
		if _, err := h.store.GetUpload(ctx, id); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := h.blobs.Abort(ctx, id); err != nil {
			errs = append(errs, err)
			return nil
		}
		n++
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("registry: purge uploads: %w", errors.Join(errs...))
	}
	return n, nil
}

// RunUploadPurge purges uploads older than olderThan at start and then
// every interval, until ctx ends.
func (h *Handler) RunUploadPurge(ctx context.Context, interval, olderThan time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := h.PurgeUploads(ctx, olderThan)
		switch {
		case err != nil && ctx.Err() == nil:
			h.log.WarnContext(ctx, "purging abandoned uploads failed", "purged", n, "err", err)
		case n > 0:
			h.log.InfoContext(ctx, "purged abandoned uploads", "purged", n, "older_than", olderThan)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
