package storage

import (
	"context"
	"errors"
	"time"
)

// AbortStagedBefore discards every staged upload of d last written before
// cutoff and returns how many it discarded. It is for stores whose uploads
// are written and committed in one go (the build manager's log archives
// and contexts): nothing resumes them, so one that old was cut off by a
// crash. A driver that cannot list its staging area discards none.
func AbortStagedBefore(ctx context.Context, d Driver, cutoff time.Time) (int, error) {
	lister, ok := d.(StagedLister)
	if !ok {
		return 0, nil
	}
	n := 0
	var errs []error
	err := lister.StagedUploads(ctx, func(id string, modified time.Time) error {
		if !modified.Before(cutoff) {
			return nil
		}
		if err := d.Abort(ctx, id); err != nil {
			errs = append(errs, err)
			return nil
		}
		n++
		return nil
	})
	return n, errors.Join(append(errs, err)...)
}
