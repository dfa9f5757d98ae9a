package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/store"
)

// refBatch bounds the digests checked per query, well under both
// databases' limits on bound parameters.
const refBatch = 500

const (
	insertManifestSQL = `INSERT INTO manifests
		(repo_id, digest, media_type, artifact_type, size, payload, subject, annotations, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (repo_id, digest) DO NOTHING`
	// Re-pushing a tag unchanged keeps its updated_at: it records when the
	// tag last moved.
	upsertTagSQL = `INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at
		WHERE tags.digest <> excluded.digest`
)

// PutManifest checks m.Refs, stores m unless the repository already holds
// its digest, and points tag at it, all in one transaction.
func (s *Store) PutManifest(ctx context.Context, m *store.Manifest, tag string) error {
	if m.CreatedAt.IsZero() {
		m.CreatedAt = now()
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if err := s.checkRefs(ctx, tx, m.RepoID, m.Refs); err != nil {
			return err
		}
		res, err := s.hotExec(ctx, tx, insertManifestSQL,
			m.RepoID, m.Digest, m.MediaType, m.ArtifactType, m.Size, m.Payload, m.Subject, m.Annotations, nanos(m.CreatedAt))
		if err != nil {
			return err
		}
		if inserted, err := res.RowsAffected(); err != nil {
			return err
		} else if inserted == 1 {
			if err := s.insertRefs(ctx, tx, m); err != nil {
				return err
			}
		}
		if tag == "" {
			return nil
		}
		_, err = s.hotExec(ctx, tx, upsertTagSQL, m.RepoID, tag, m.Digest, nanos(now()))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlstore: put manifest %s in repository %d: %w", m.Digest, m.RepoID, classify(err))
	}
	return nil
}

// The reference checks of PutManifest, with %s the IN list.
const (
	blobRefSizesSQL = `SELECT rb.digest, b.size FROM repository_blobs rb
		JOIN blobs b ON b.digest = rb.digest
		WHERE rb.repo_id = ? AND rb.digest IN (%s){{keyshare}}`
	manifestRefSizesSQL = `SELECT digest, size FROM manifests
		WHERE repo_id = ? AND digest IN (%s){{keyshare}}`
)

// preparedRefs is the largest reference list whose statements (the IN
// lists of the checks, the multi-row insert) are prepared ahead: an image
// manifest has a config and a few layers, and parsing that SQL anew on
// every push cost modernc's SQLite a fifth of a tag write.
const preparedRefs = 4

func init() {
	for n := 1; n <= preparedRefs; n++ {
		hotQueries = append(hotQueries, fmt.Sprintf(blobRefSizesSQL, inMarks(n)), fmt.Sprintf(manifestRefSizesSQL, inMarks(n)), insertRefsSQL(n))
	}
}

func inMarks(n int) string { return strings.Repeat("?, ", n-1) + "?" }

// insertRefsSQL inserts n manifest references in one statement.
func insertRefsSQL(n int) string {
	values := strings.Repeat("(?, ?, ?, ?, ?), ", n-1) + "(?, ?, ?, ?, ?)"
	return `INSERT INTO manifest_refs (repo_id, manifest_digest, ref_digest, size, kind)
		VALUES ` + values + ` ON CONFLICT (repo_id, manifest_digest, ref_digest) DO NOTHING`
}

// checkRefs returns a *store.MissingRefError for the first of refs that the
// repository lacks or holds with another size.
func (s *Store) checkRefs(ctx context.Context, tx *sql.Tx, repoID int64, refs []store.Ref) error {
	var blobs, manifests []string
	for _, r := range refs {
		if r.Kind == store.RefManifest {
			manifests = append(manifests, r.Digest)
		} else {
			blobs = append(blobs, r.Digest)
		}
	}
	blobSizes, err := s.refSizes(ctx, tx, blobRefSizesSQL, repoID, blobs)
	if err != nil {
		return err
	}
	manifestSizes, err := s.refSizes(ctx, tx, manifestRefSizesSQL, repoID, manifests)
	if err != nil {
		return err
	}
	for _, r := range refs {
		sizes := blobSizes
		if r.Kind == store.RefManifest {
			sizes = manifestSizes
		}
		size, ok := sizes[r.Digest]
		if !ok {
			return &store.MissingRefError{Ref: r}
		}
		if size != r.Size {
			return &store.MissingRefError{Ref: r, SizeMismatch: true}
		}
	}
	return nil
}

// refSizes runs query, whose %s is filled with an IN list, over digests in
// batches and returns the sizes found by digest.
func (s *Store) refSizes(ctx context.Context, tx *sql.Tx, query string, repoID int64, digests []string) (map[string]int64, error) {
	found := make(map[string]int64, len(digests))
	for len(digests) > 0 {
		batch := digests[:min(len(digests), refBatch)]
		digests = digests[len(batch):]
		args := make([]any, 0, len(batch)+1)
		args = append(args, repoID)
		for _, d := range batch {
			args = append(args, d)
		}
		var rows *sql.Rows
		var err error
		q := fmt.Sprintf(query, inMarks(len(batch)))
		if st, ok := s.hot[q]; ok {
			rows, err = tx.StmtContext(ctx, st).QueryContext(ctx, args...)
		} else {
			rows, err = tx.QueryContext(ctx, s.q(q), args...)
		}
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var d string
			var size int64
			if err := rows.Scan(&d, &size); err != nil {
				rows.Close()
				return nil, err
			}
			found[d] = size
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// insertRefs records m's references, once per digest, in multi-row
// inserts to save round trips.
func (s *Store) insertRefs(ctx context.Context, tx *sql.Tx, m *store.Manifest) error {
	refs := m.Refs
	for len(refs) > 0 {
		batch := refs[:min(len(refs), refBatch/5)]
		refs = refs[len(batch):]
		args := make([]any, 0, 5*len(batch))
		for _, r := range batch {
			kind := r.Kind
			if kind == "" {
				kind = store.RefBlob
			}
			args = append(args, m.RepoID, m.Digest, r.Digest, r.Size, string(kind))
		}
		q := insertRefsSQL(len(batch))
		var err error
		if st, ok := s.hot[q]; ok {
			_, err = tx.StmtContext(ctx, st).ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, s.q(q), args...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

const manifestColumns = `repo_id, digest, media_type, artifact_type, size, subject, annotations, created_at`

func scanManifest(sc interface{ Scan(...any) error }, extra ...any) (store.Manifest, error) {
	var (
		m       store.Manifest
		created int64
	)
	dest := append([]any{&m.RepoID, &m.Digest, &m.MediaType, &m.ArtifactType, &m.Size, &m.Subject, &m.Annotations, &created}, extra...)
	err := sc.Scan(dest...)
	m.CreatedAt = fromNanos(created)
	return m, err
}

// GetManifest returns a manifest with its payload and references.
func (s *Store) GetManifest(ctx context.Context, repoID int64, digest string) (*store.Manifest, error) {
	var m store.Manifest
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var payload []byte
		var err error
		m, err = scanManifest(tx.QueryRowContext(ctx, s.q(`SELECT `+manifestColumns+`, payload FROM manifests
			WHERE repo_id = ? AND digest = ?`), repoID, digest), &payload)
		if err != nil {
			return notFoundIfNoRows(err)
		}
		m.Payload = payload
		rows, err := tx.QueryContext(ctx, s.q(`SELECT ref_digest, size, kind FROM manifest_refs
			WHERE repo_id = ? AND manifest_digest = ? ORDER BY ref_digest`), repoID, digest)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r store.Ref
			var kind string
			if err := rows.Scan(&r.Digest, &r.Size, &kind); err != nil {
				return err
			}
			r.Kind = store.RefKind(kind)
			m.Refs = append(m.Refs, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get manifest %s in repository %d: %w", digest, repoID, err)
	}
	return &m, nil
}

// readTx runs fn in a transaction on the read pool, so that its queries see
// one snapshot.
func (s *Store) readTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// ResolveTag returns the digest tag points at.
func (s *Store) ResolveTag(ctx context.Context, repoID int64, tag string) (string, error) {
	var digest string
	err := s.r.QueryRowContext(ctx, s.q(`SELECT digest FROM tags WHERE repo_id = ? AND name = ?`), repoID, tag).Scan(&digest)
	if err != nil {
		return "", fmt.Errorf("sqlstore: resolve tag %q in repository %d: %w", tag, repoID, notFoundIfNoRows(err))
	}
	return digest, nil
}

// ListTags returns tag names in byte order after last, at most n (n < 0:
// all). The query walks the (repo_id, name) primary key from last on.
func (s *Store) ListTags(ctx context.Context, repoID int64, last string, n int) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT name FROM tags WHERE repo_id = ? AND name > ?
		ORDER BY name LIMIT ?`), repoID, last, limit(n))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list tags of repository %d: %w", repoID, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("sqlstore: list tags of repository %d: %w", repoID, err)
		}
		out = append(out, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: list tags of repository %d: %w", repoID, err)
	}
	return out, nil
}

// ListTagDetails is ListTags with each tag's digest and update time.
func (s *Store) ListTagDetails(ctx context.Context, repoID int64, last string, n int) ([]store.Tag, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT name, digest, updated_at FROM tags WHERE repo_id = ? AND name > ?
		ORDER BY name LIMIT ?`), repoID, last, limit(n))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list tags of repository %d: %w", repoID, err)
	}
	defer rows.Close()
	out := []store.Tag{}
	for rows.Next() {
		var t store.Tag
		var updated int64
		if err := rows.Scan(&t.Name, &t.Digest, &updated); err != nil {
			return nil, fmt.Errorf("sqlstore: list tags of repository %d: %w", repoID, err)
		}
		t.UpdatedAt = fromNanos(updated)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: list tags of repository %d: %w", repoID, err)
	}
	return out, nil
}

// DeleteTag removes one tag; the manifest stays.
func (s *Store) DeleteTag(ctx context.Context, repoID int64, tag string) error {
	if err := s.execOne(ctx, `DELETE FROM tags WHERE repo_id = ? AND name = ?`, repoID, tag); err != nil {
		return fmt.Errorf("sqlstore: delete tag %q in repository %d: %w", tag, repoID, err)
	}
	return nil
}

// DeleteManifest removes a manifest; the foreign keys cascade the delete to
// its tags and its reference rows.
func (s *Store) DeleteManifest(ctx context.Context, repoID int64, digest string) error {
	if err := s.execOne(ctx, `DELETE FROM manifests WHERE repo_id = ? AND digest = ?`, repoID, digest); err != nil {
		return fmt.Errorf("sqlstore: delete manifest %s in repository %d: %w", digest, repoID, err)
	}
	return nil
}

// ListReferrers returns the manifests whose subject is subject, only those
// of artifactType when it is not "", ordered by digest, without payloads.
func (s *Store) ListReferrers(ctx context.Context, repoID int64, subject, artifactType string) ([]store.Manifest, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT `+manifestColumns+` FROM manifests
		WHERE repo_id = ? AND subject = ? AND subject <> '' AND (? = '' OR artifact_type = ?)
		ORDER BY digest`), repoID, subject, artifactType, artifactType)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list referrers of %s in repository %d: %w", subject, repoID, err)
	}
	defer rows.Close()
	out := []store.Manifest{}
	for rows.Next() {
		m, err := scanManifest(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: list referrers of %s in repository %d: %w", subject, repoID, err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: list referrers of %s in repository %d: %w", subject, repoID, err)
	}
	return out, nil
}
