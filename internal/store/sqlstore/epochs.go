package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// BumpExpiringCredentialEpoch increments subject's credential epoch like
// BumpCredentialEpoch and records that the row may be deleted after
// keepUntil: the later of the old and new times, unless the row is kept for
// ever (keep_until NULL, as BumpCredentialEpoch leaves it).
func (s *Store) BumpExpiringCredentialEpoch(ctx context.Context, subject string, keepUntil time.Time) (uint64, error) {
	if subject == "" {
		return 0, fmt.Errorf("sqlstore: bump credential epoch: empty subject")
	}
	var epoch int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, s.q(`INSERT INTO credential_epochs (subject, epoch, updated_at, keep_until) VALUES (?, 1, ?, ?)
			ON CONFLICT (subject) DO UPDATE SET epoch = credential_epochs.epoch + 1, updated_at = excluded.updated_at,
				keep_until = CASE WHEN credential_epochs.keep_until IS NULL OR credential_epochs.keep_until > excluded.keep_until
					THEN credential_epochs.keep_until ELSE excluded.keep_until END
			RETURNING epoch`), subject, nanos(now()), nanos(keepUntil)).Scan(&epoch)
	})
	if err != nil {
		return 0, fmt.Errorf("sqlstore: bump credential epoch of %s: %w", subject, err)
	}
	return uint64(epoch), nil
}

// DeleteExpiredCredentialEpochs deletes the credential epochs whose
// keep_until is before now.
func (s *Store) DeleteExpiredCredentialEpochs(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM credential_epochs WHERE keep_until IS NOT NULL AND keep_until < ?`), nanos(now))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlstore: delete expired credential epochs: %w", err)
	}
	return n, nil
}
