package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ClaimTriggerPayload records a payload hash unless the trigger received
// the same one at or after notBefore. The upsert only takes over a record
// older than that, so two servers claiming one payload at once cannot both
// win.
func (s *Store) ClaimTriggerPayload(ctx context.Context, triggerUUID, sha256Hex string, at, notBefore time.Time) (bool, error) {
	var claimed bool
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO trigger_payloads (trigger_uuid, sha256, received_at) VALUES (?, ?, ?)
			ON CONFLICT (trigger_uuid, sha256) DO UPDATE SET received_at = excluded.received_at
			WHERE trigger_payloads.received_at < ?`),
			triggerUUID, sha256Hex, nanos(at), nanos(notBefore))
		if err != nil {
			return classify(err)
		}
		n, err := res.RowsAffected()
		claimed = n == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("sqlstore: claim payload of trigger %s: %w", triggerUUID, err)
	}
	return claimed, nil
}

// PruneTriggerPayloads forgets a trigger's payloads received before before.
func (s *Store) PruneTriggerPayloads(ctx context.Context, triggerUUID string, before time.Time) (int, error) {
	var deleted int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM trigger_payloads WHERE trigger_uuid = ? AND received_at < ?`),
			triggerUUID, nanos(before))
		if err != nil {
			return err
		}
		deleted, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlstore: prune payloads of trigger %s: %w", triggerUUID, err)
	}
	return int(deleted), nil
}
