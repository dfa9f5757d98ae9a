package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// CreateUpload records a new upload session, filling CreatedAt and
// UpdatedAt. ErrConflict if the ID is taken, ErrNotFound if the repository
// does not exist.
func (s *Store) CreateUpload(ctx context.Context, u *store.Upload) error {
	t := now()
	// A new session holds no bytes: losing it in a power cut costs the
	// client a restarted upload (its next request answers UPLOAD_UNKNOWN),
	// so its commit does not wait for the disk. On ext4 that wait would be
	// behind the writeback of every blob being uploaded at the same time.
	err := s.relaxedExec(ctx, s.q(`INSERT INTO uploads
		(id, repo_id, byte_offset, algorithm, hash_state, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`),
		u.ID, u.RepoID, u.Offset, u.Algorithm, u.HashState, nanos(t), nanos(t))
	if err != nil {
		return fmt.Errorf("sqlstore: create upload %s: %w", u.ID, classify(err))
	}
	u.CreatedAt, u.UpdatedAt = t, t
	return nil
}

const uploadColumns = `id, repo_id, byte_offset, algorithm, hash_state, created_at, updated_at`

func scanUpload(sc interface{ Scan(...any) error }) (store.Upload, error) {
	var (
		u                store.Upload
		created, updated int64
	)
	err := sc.Scan(&u.ID, &u.RepoID, &u.Offset, &u.Algorithm, &u.HashState, &created, &updated)
	u.CreatedAt, u.UpdatedAt = fromNanos(created), fromNanos(updated)
	return u, err
}

// GetUpload finds an upload session by ID.
func (s *Store) GetUpload(ctx context.Context, id string) (*store.Upload, error) {
	u, err := scanUpload(s.r.QueryRowContext(ctx, s.q(`SELECT `+uploadColumns+` FROM uploads WHERE id = ?`), id))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get upload %s: %w", id, notFoundIfNoRows(err))
	}
	return &u, nil
}

// AdvanceUpload sets the upload's offset, algorithm and hash state from u if
// the stored offset is still from, and fills u.UpdatedAt.
func (s *Store) AdvanceUpload(ctx context.Context, u *store.Upload, from int64) error {
	t := now()
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE uploads SET byte_offset = ?, algorithm = ?, hash_state = ?, updated_at = ?
			WHERE id = ? AND byte_offset = ?`), u.Offset, u.Algorithm, u.HashState, nanos(t), u.ID, from)
		if err != nil {
			return err
		}
		if mustAffect(res) == nil {
			return nil
		}
		var one int
		err = tx.QueryRowContext(ctx, s.q(`SELECT 1 FROM uploads WHERE id = ?`), u.ID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		return store.ErrStale
	})
	if err != nil {
		return fmt.Errorf("sqlstore: advance upload %s from offset %d: %w", u.ID, from, err)
	}
	u.UpdatedAt = t
	return nil
}

// DeleteUpload forgets an upload session.
func (s *Store) DeleteUpload(ctx context.Context, id string) error {
	if err := s.execOne(ctx, `DELETE FROM uploads WHERE id = ?`, id); err != nil {
		return fmt.Errorf("sqlstore: delete upload %s: %w", id, err)
	}
	return nil
}

// ListUploadsBefore returns the uploads last updated before t, oldest first.
func (s *Store) ListUploadsBefore(ctx context.Context, t time.Time) ([]store.Upload, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT `+uploadColumns+` FROM uploads
		WHERE updated_at < ? ORDER BY updated_at, id`), nanos(t))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list uploads before %s: %w", t, err)
	}
	defer rows.Close()
	var out []store.Upload
	for rows.Next() {
		u, err := scanUpload(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: list uploads: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: list uploads: %w", err)
	}
	return out, nil
}
