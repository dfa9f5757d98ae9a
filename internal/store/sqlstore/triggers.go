package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/berth-dev/berth/internal/store"
)

const triggerSelect = `SELECT t.uuid, t.repo_id, ns.name, r.name, t.service, t.config, t.sealed_secret,
	t.sealed_private_key, t.public_key, t.sealed_auth_token, t.known_hosts, t.pull_robot, t.enabled,
	t.disabled_reason, t.disabled_at, t.successive_failures, t.successive_internal_errors, t.hook_id,
	t.deploy_key_id, COALESCE(t.connected_user_id, 0), COALESCE(cu.name, ''), t.created_at
	FROM triggers t
	JOIN repositories r ON r.id = t.repo_id
	JOIN accounts ns ON ns.id = r.namespace_id
	LEFT JOIN accounts cu ON cu.id = t.connected_user_id `

func scanTrigger(sc interface{ Scan(...any) error }) (store.Trigger, error) {
	var (
		t                 store.Trigger
		config            string
		disabled, created int64
	)
	err := sc.Scan(&t.UUID, &t.RepoID, &t.Namespace, &t.Repository, &t.Service, &config, &t.SealedSecret,
		&t.SealedPrivateKey, &t.PublicKey, &t.SealedAuthToken, &t.KnownHosts, &t.PullRobot, &t.Enabled,
		&t.DisabledReason, &disabled, &t.SuccessiveFailures, &t.SuccessiveInternalErrors, &t.HookID,
		&t.DeployKeyID, &t.ConnectedUserID, &t.ConnectedUser, &created)
	if err != nil {
		return t, err
	}
	t.Config = json.RawMessage(config)
	t.DisabledAt, t.CreatedAt = fromZeroNanos(disabled), fromNanos(created)
	return t, nil
}

// triggerConfig checks and normalizes the config column: a JSON object.
func triggerConfig(raw json.RawMessage) (string, error) {
	if len(raw) == 0 {
		return "{}", nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return "", fmt.Errorf("trigger config is not a JSON object")
	}
	return string(raw), nil
}

// nullBytes stores an empty secret as NULL.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// CreateTrigger inserts t and reads it back with its names filled.
func (s *Store) CreateTrigger(ctx context.Context, t *store.Trigger) error {
	if t.UUID == "" {
		return fmt.Errorf("sqlstore: create trigger: empty UUID")
	}
	config, err := triggerConfig(t.Config)
	if err != nil {
		return fmt.Errorf("sqlstore: create trigger %s: %w", t.UUID, err)
	}
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO triggers (uuid, repo_id, service, config, sealed_secret,
			sealed_private_key, public_key, sealed_auth_token, known_hosts, pull_robot, enabled, disabled_reason,
			disabled_at, hook_id, deploy_key_id, connected_user_id, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			t.UUID, t.RepoID, t.Service, config, nullBytes(t.SealedSecret), nullBytes(t.SealedPrivateKey),
			t.PublicKey, nullBytes(t.SealedAuthToken), t.KnownHosts, t.PullRobot, t.Enabled, t.DisabledReason,
			zeroNanos(t.DisabledAt), t.HookID, t.DeployKeyID, nullID(t.ConnectedUserID), nanos(now()))
		if err != nil {
			return err
		}
		got, err := scanTrigger(tx.QueryRowContext(ctx, s.q(triggerSelect+`WHERE t.uuid = ?`), t.UUID))
		if err != nil {
			return err
		}
		*t = got
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlstore: create trigger %s: %w", t.UUID, classify(err))
	}
	return nil
}

// GetTrigger finds a trigger by UUID.
func (s *Store) GetTrigger(ctx context.Context, uuid string) (*store.Trigger, error) {
	t, err := scanTrigger(s.r.QueryRowContext(ctx, s.q(triggerSelect+`WHERE t.uuid = ?`), uuid))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get trigger %s: %w", uuid, notFoundIfNoRows(err))
	}
	return &t, nil
}

// ListTriggers returns repoID's triggers, oldest first.
func (s *Store) ListTriggers(ctx context.Context, repoID int64) ([]store.Trigger, error) {
	rows, err := s.r.QueryContext(ctx, s.q(triggerSelect+`WHERE t.repo_id = ? ORDER BY t.created_at, t.uuid`), repoID)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list triggers: %w", err)
	}
	defer rows.Close()
	var out []store.Trigger
	for rows.Next() {
		t, err := scanTrigger(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: list triggers: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: list triggers: %w", err)
	}
	return out, nil
}

// UpdateTrigger writes t's mutable fields (not the counters).
func (s *Store) UpdateTrigger(ctx context.Context, t *store.Trigger) error {
	config, err := triggerConfig(t.Config)
	if err != nil {
		return fmt.Errorf("sqlstore: update trigger %s: %w", t.UUID, err)
	}
	err = s.execOne(ctx, `UPDATE triggers SET service = ?, config = ?, sealed_secret = ?, sealed_private_key = ?,
		public_key = ?, sealed_auth_token = ?, known_hosts = ?, pull_robot = ?, enabled = ?, disabled_reason = ?,
		disabled_at = ?, hook_id = ?, deploy_key_id = ?, connected_user_id = ?
		WHERE uuid = ?`,
		t.Service, config, nullBytes(t.SealedSecret), nullBytes(t.SealedPrivateKey), t.PublicKey,
		nullBytes(t.SealedAuthToken), t.KnownHosts, t.PullRobot, t.Enabled, t.DisabledReason,
		zeroNanos(t.DisabledAt), t.HookID, t.DeployKeyID, nullID(t.ConnectedUserID), t.UUID)
	if err != nil {
		return fmt.Errorf("sqlstore: update trigger %s: %w", t.UUID, err)
	}
	return nil
}

// DeleteTrigger removes a trigger and its deliveries.
func (s *Store) DeleteTrigger(ctx context.Context, uuid string) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		// Explicit, so that it does not depend on SQLite's foreign_keys.
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM trigger_deliveries WHERE trigger_uuid = ?`), uuid); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM triggers WHERE uuid = ?`), uuid)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("sqlstore: delete trigger %s: %w", uuid, err)
	}
	return nil
}

// RecordTriggerBuild counts a build's end on its trigger and disables the
// trigger at a threshold. Each statement is a single-row UPDATE, so
// concurrent ends on PostgreSQL serialize on the row lock.
func (s *Store) RecordTriggerBuild(ctx context.Context, uuid string, phase store.BuildPhase, failureThreshold, internalThreshold int) (*store.Trigger, error) {
	var (
		counter, reason string
		threshold       int
	)
	switch phase {
	case store.PhaseComplete:
	case store.PhaseError:
		counter, reason, threshold = "successive_failures", store.DisabledByFailures, failureThreshold
	case store.PhaseInternalError:
		counter, reason, threshold = "successive_internal_errors", store.DisabledByInternalFailures, internalThreshold
	default:
		return s.GetTrigger(ctx, uuid)
	}
	var out store.Trigger
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var res sql.Result
		var err error
		if counter == "" {
			res, err = tx.ExecContext(ctx, s.q(`UPDATE triggers SET successive_failures = 0,
				successive_internal_errors = 0 WHERE uuid = ?`), uuid)
		} else {
			res, err = tx.ExecContext(ctx, s.q(`UPDATE triggers SET `+counter+` = `+counter+` + 1 WHERE uuid = ?`), uuid)
		}
		if err != nil {
			return err
		}
		if err := mustAffect(res); err != nil {
			return err
		}
		if counter != "" && threshold > 0 {
			_, err = tx.ExecContext(ctx, s.q(`UPDATE triggers SET enabled = ?, disabled_reason = ?, disabled_at = ?
				WHERE uuid = ? AND enabled = ? AND `+counter+` >= ?`), false, reason, nanos(now()), uuid, true, threshold)
			if err != nil {
				return err
			}
		}
		out, err = scanTrigger(tx.QueryRowContext(ctx, s.q(triggerSelect+`WHERE t.uuid = ?`), uuid))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: record build of trigger %s: %w", uuid, notFoundIfNoRows(err))
	}
	return &out, nil
}

// AddTriggerDelivery inserts d unless its (trigger, id) is known.
func (s *Store) AddTriggerDelivery(ctx context.Context, d *store.TriggerDelivery) (bool, error) {
	if d.ID == "" || d.TriggerUUID == "" {
		return false, fmt.Errorf("sqlstore: add trigger delivery: empty id or trigger")
	}
	if d.ReceivedAt.IsZero() {
		d.ReceivedAt = now()
	}
	var added bool
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO trigger_deliveries (trigger_uuid, id, received_at, event,
			status, reason, build_id) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (trigger_uuid, id) DO NOTHING`),
			d.TriggerUUID, d.ID, nanos(d.ReceivedAt), d.Event, string(d.Status), d.Reason, d.BuildID)
		if err != nil {
			return classify(err)
		}
		n, err := res.RowsAffected()
		added = n == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("sqlstore: add delivery %s of trigger %s: %w", d.ID, d.TriggerUUID, err)
	}
	return added, nil
}

// FinishTriggerDelivery records what became of a delivery.
func (s *Store) FinishTriggerDelivery(ctx context.Context, triggerUUID, id string, status store.DeliveryStatus, reason, buildID string) error {
	err := s.execOne(ctx, `UPDATE trigger_deliveries SET status = ?, reason = ?, build_id = ?
		WHERE trigger_uuid = ? AND id = ?`, string(status), reason, buildID, triggerUUID, id)
	if err != nil {
		return fmt.Errorf("sqlstore: finish delivery %s of trigger %s: %w", id, triggerUUID, err)
	}
	return nil
}

// ListTriggerDeliveries returns a trigger's deliveries, newest first.
func (s *Store) ListTriggerDeliveries(ctx context.Context, triggerUUID string, n int) ([]store.TriggerDelivery, error) {
	if n <= 0 {
		n = -1
	}
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT id, received_at, event, status, reason, build_id
		FROM trigger_deliveries WHERE trigger_uuid = ? ORDER BY received_at DESC, id DESC LIMIT ?`), triggerUUID, limit(n))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list deliveries of trigger %s: %w", triggerUUID, err)
	}
	defer rows.Close()
	var out []store.TriggerDelivery
	for rows.Next() {
		d := store.TriggerDelivery{TriggerUUID: triggerUUID}
		var received int64
		var status string
		if err := rows.Scan(&d.ID, &received, &d.Event, &status, &d.Reason, &d.BuildID); err != nil {
			return nil, fmt.Errorf("sqlstore: list deliveries of trigger %s: %w", triggerUUID, err)
		}
		d.ReceivedAt, d.Status = fromNanos(received), store.DeliveryStatus(status)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: list deliveries of trigger %s: %w", triggerUUID, err)
	}
	return out, nil
}

// PruneTriggerDeliveries keeps a trigger's newest `keep` deliveries.
func (s *Store) PruneTriggerDeliveries(ctx context.Context, triggerUUID string, keep int) (int, error) {
	var deleted int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM trigger_deliveries WHERE trigger_uuid = ? AND id NOT IN
			(SELECT id FROM trigger_deliveries WHERE trigger_uuid = ? ORDER BY received_at DESC, id DESC LIMIT ?)`),
			triggerUUID, triggerUUID, max(keep, 0))
		if err != nil {
			return err
		}
		deleted, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlstore: prune deliveries of trigger %s: %w", triggerUUID, err)
	}
	return int(deleted), nil
}
