package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/berth-dev/berth/internal/store"
)

// PutBlob records that b's bytes are in storage and links b to repoID.
// Both steps are idempotent. ErrNotFound if the repository does not exist.
func (s *Store) PutBlob(ctx context.Context, repoID int64, b store.Blob) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error { return s.putBlob(ctx, tx, repoID, b) })
	if err != nil {
		return fmt.Errorf("sqlstore: put blob %s in repository %d: %w", b.Digest, repoID, classify(err))
	}
	return nil
}

// CompleteUpload records the blob and forgets the upload in one commit.
func (s *Store) CompleteUpload(ctx context.Context, uploadID string, repoID int64, b store.Blob) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if err := s.putBlob(ctx, tx, repoID, b); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`DELETE FROM uploads WHERE id = ?`), uploadID)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlstore: complete upload %s as %s in repository %d: %w", uploadID, b.Digest, repoID, classify(err))
	}
	return nil
}

func (s *Store) putBlob(ctx context.Context, tx *sql.Tx, repoID int64, b store.Blob) error {
	t := nanos(now())
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?)
		ON CONFLICT (digest) DO NOTHING`), b.Digest, b.Size, t)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, s.q(`INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES (?, ?, ?)
		ON CONFLICT (repo_id, digest) DO NOTHING`), repoID, b.Digest, t)
	return err
}

// GetBlob finds a blob by digest, whichever repositories it is linked to.
func (s *Store) GetBlob(ctx context.Context, digest string) (*store.Blob, error) {
	b := store.Blob{Digest: digest}
	err := s.r.QueryRowContext(ctx, s.q(`SELECT size FROM blobs WHERE digest = ?`), digest).Scan(&b.Size)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get blob %s: %w", digest, notFoundIfNoRows(err))
	}
	return &b, nil
}

// GetRepoBlob finds a blob linked to repoID.
func (s *Store) GetRepoBlob(ctx context.Context, repoID int64, digest string) (*store.Blob, error) {
	b := store.Blob{Digest: digest}
	err := s.r.QueryRowContext(ctx, s.q(`SELECT b.size FROM repository_blobs rb
		JOIN blobs b ON b.digest = rb.digest
		WHERE rb.repo_id = ? AND rb.digest = ?`), repoID, digest).Scan(&b.Size)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get blob %s in repository %d: %w", digest, repoID, notFoundIfNoRows(err))
	}
	return &b, nil
}

// LinkBlob links an already recorded blob to repoID; linking twice is not
// an error. The foreign keys report a missing blob or repository, which
// classify turns into ErrNotFound.
func (s *Store) LinkBlob(ctx context.Context, repoID int64, digest string) error {
	_, err := s.w.ExecContext(ctx, s.q(`INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES (?, ?, ?)
		ON CONFLICT (repo_id, digest) DO NOTHING`), repoID, digest, nanos(now()))
	if err != nil {
		return fmt.Errorf("sqlstore: link blob %s to repository %d: %w", digest, repoID, classify(err))
	}
	return nil
}

// UnlinkBlob removes only the link between repoID and the blob; the blob
// row and its bytes stay for garbage collection.
func (s *Store) UnlinkBlob(ctx context.Context, repoID int64, digest string) error {
	if err := s.execOne(ctx, `DELETE FROM repository_blobs WHERE repo_id = ? AND digest = ?`, repoID, digest); err != nil {
		return fmt.Errorf("sqlstore: unlink blob %s from repository %d: %w", digest, repoID, err)
	}
	return nil
}
