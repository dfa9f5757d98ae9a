package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/berth-dev/berth/internal/store"
)

// CreateRepository inserts r, filling ID and CreatedAt, and Visibility
// (private) when empty. ErrNotFound if the namespace account does not exist.
func (s *Store) CreateRepository(ctx context.Context, r *store.Repository) error {
	vis := r.Visibility
	if vis == "" {
		vis = store.Private
	}
	if vis != store.Public && vis != store.Private {
		return fmt.Errorf("sqlstore: create repository %q: invalid visibility %q", r.Name, vis)
	}
	// r changes only once the transaction has committed.
	nr := *r
	nr.Visibility = vis
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := s.insertRepository(ctx, tx, &nr)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlstore: create repository %q: %w", r.Name, classify(err))
	}
	*r = nr
	return nil
}

// insertRepository inserts r (Visibility already valid) in tx, filling ID,
// Namespace and CreatedAt, and returns the kind of the namespace account.
func (s *Store) insertRepository(ctx context.Context, tx *sql.Tx, r *store.Repository) (store.AccountKind, error) {
	var namespace, kind string
	err := tx.QueryRowContext(ctx, s.q(`SELECT name, kind FROM accounts WHERE id = ?`), r.NamespaceID).Scan(&namespace, &kind)
	if err != nil {
		return "", fmt.Errorf("namespace %d: %w", r.NamespaceID, notFoundIfNoRows(err))
	}
	created := now()
	err = tx.QueryRowContext(ctx, s.q(`INSERT INTO repositories
		(namespace_id, name, visibility, description, created_at)
		VALUES (?, ?, ?, ?, ?) RETURNING id`),
		r.NamespaceID, r.Name, string(r.Visibility), r.Description, nanos(created),
	).Scan(&r.ID)
	if err != nil {
		return "", err
	}
	r.Namespace, r.CreatedAt = namespace, created
	return store.AccountKind(kind), nil
}

const repositorySelect = `SELECT r.id, r.namespace_id, a.name, r.name, r.visibility, r.description, r.created_at
	FROM repositories r JOIN accounts a ON a.id = r.namespace_id `

func scanRepository(sc interface{ Scan(...any) error }) (store.Repository, error) {
	var (
		r       store.Repository
		vis     string
		created int64
	)
	err := sc.Scan(&r.ID, &r.NamespaceID, &r.Namespace, &r.Name, &vis, &r.Description, &created)
	r.Visibility, r.CreatedAt = store.Visibility(vis), fromNanos(created)
	return r, err
}

// GetRepository finds namespace/name.
func (s *Store) GetRepository(ctx context.Context, namespace, name string) (*store.Repository, error) {
	r, err := scanRepository(s.r.QueryRowContext(ctx, s.q(repositorySelect+`WHERE a.name = ? AND r.name = ?`), namespace, name))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get repository %s/%s: %w", namespace, name, notFoundIfNoRows(err))
	}
	return &r, nil
}

// ListRepositories returns repositories ordered byte-wise by full name
// after last, at most n (n <= 0: all). The order is that of the whole
// "namespace/name" string, as the /v2/_catalog API requires, which is not
// the order of (namespace, name) when a namespace holds bytes below '/'.
func (s *Store) ListRepositories(ctx context.Context, last string, n int) ([]store.Repository, error) {
	if n == 0 {
		n = -1
	}
	rows, err := s.r.QueryContext(ctx, s.q(repositorySelect+`WHERE a.name || '/' || r.name > ?
		ORDER BY a.name || '/' || r.name LIMIT ?`), last, limit(n))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list repositories: %w", err)
	}
	defer rows.Close()
	var out []store.Repository
	for rows.Next() {
		r, err := scanRepository(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: list repositories: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: list repositories: %w", err)
	}
	return out, nil
}

// DeleteRepository removes a repository with its manifests, tags, blob
// links and uploads. Blob bytes and blob rows stay for garbage collection.
func (s *Store) DeleteRepository(ctx context.Context, id int64) error {
	if err := s.execOne(ctx, `DELETE FROM repositories WHERE id = ?`, id); err != nil {
		return fmt.Errorf("sqlstore: delete repository %d: %w", id, err)
	}
	return nil
}
