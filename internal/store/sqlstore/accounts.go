package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/berth-dev/berth/internal/store"
)

const accountColumns = `id, kind, name, email, password_hash, superuser, enabled, owner_id, created_at`

// CreateAccount inserts a, filling ID and CreatedAt.
func (s *Store) CreateAccount(ctx context.Context, a *store.Account) error {
	if err := s.insertAccount(ctx, s.w, a); err != nil {
		return fmt.Errorf("sqlstore: create account %q: %w", a.Name, err)
	}
	return nil
}

// rowQuerier is what insertAccount needs: a pool or a transaction.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// insertAccount inserts a through db, filling ID and CreatedAt; errors are
// classified.
func (s *Store) insertAccount(ctx context.Context, db rowQuerier, a *store.Account) error {
	switch a.Kind {
	case store.KindUser, store.KindOrganization, store.KindRobot:
	default:
		return fmt.Errorf("invalid kind %q", a.Kind)
	}
	created := now()
	var owner sql.NullInt64
	if a.OwnerID != 0 {
		owner = sql.NullInt64{Int64: a.OwnerID, Valid: true}
	}
	var id int64
	err := db.QueryRowContext(ctx, s.q(`INSERT INTO accounts
		(kind, name, email, password_hash, superuser, enabled, owner_id, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		string(a.Kind), a.Name, a.Email, a.PasswordHash, a.Superuser, a.Enabled, owner, nanos(created),
	).Scan(&id)
	if err != nil {
		return classify(err)
	}
	a.ID, a.CreatedAt = id, created
	return nil
}

// GetAccountByName finds an account of any kind by its exact name.
func (s *Store) GetAccountByName(ctx context.Context, name string) (*store.Account, error) {
	a, err := s.scanAccount(s.r.QueryRowContext(ctx, s.q(`SELECT `+accountColumns+` FROM accounts WHERE name = ?`), name))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get account %q: %w", name, err)
	}
	return a, nil
}

// GetAccountByID finds an account by ID.
func (s *Store) GetAccountByID(ctx context.Context, id int64) (*store.Account, error) {
	a, err := s.scanAccount(s.r.QueryRowContext(ctx, s.q(`SELECT `+accountColumns+` FROM accounts WHERE id = ?`), id))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get account %d: %w", id, err)
	}
	return a, nil
}

func (s *Store) scanAccount(row interface{ Scan(...any) error }) (*store.Account, error) {
	var (
		a       store.Account
		kind    string
		owner   sql.NullInt64
		created int64
	)
	err := row.Scan(&a.ID, &kind, &a.Name, &a.Email, &a.PasswordHash, &a.Superuser, &a.Enabled, &owner, &created)
	if err != nil {
		return nil, notFoundIfNoRows(err)
	}
	a.Kind, a.OwnerID, a.CreatedAt = store.AccountKind(kind), owner.Int64, fromNanos(created)
	return &a, nil
}

// CountAccounts counts accounts of one kind.
func (s *Store) CountAccounts(ctx context.Context, kind store.AccountKind) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM accounts WHERE kind = ?`), string(kind)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sqlstore: count %s accounts: %w", kind, err)
	}
	return n, nil
}
