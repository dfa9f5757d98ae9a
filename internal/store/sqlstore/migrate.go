package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Migrations are files named NNNN_description.sql, applied in version
// order. A migration, once released, is never edited: changes go in a new
// file with the next number.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int64
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %q is not named NNNN_description.sql", e.Name())
		}
		body, err := fs.ReadFile(migrationFiles, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %q and %q share a version", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// migrate applies the migrations the database lacks, each in its own
// transaction together with its schema_migrations row. Every transaction
// first takes the dialect's migration lock and then re-reads what is
// applied, so processes starting together apply each migration once.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("sqlstore: %w", err)
	}
	err = s.migrationTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    BIGINT PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at BIGINT NOT NULL
		)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlstore: create schema_migrations: %w", err)
	}
	for _, m := range ms {
		applied := false
		err := s.migrationTx(ctx, func(tx *sql.Tx) error {
			var one int
			err := tx.QueryRowContext(ctx, s.q(`SELECT 1 FROM schema_migrations WHERE version = ?`), m.version).Scan(&one)
			if err == nil {
				return nil
			}
			if err != sql.ErrNoRows {
				return err
			}
			if _, err := tx.ExecContext(ctx, s.d.markers.Replace(m.sql)); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
				m.version, m.name, nanos(now()))
			applied = err == nil
			return err
		})
		if err != nil {
			return fmt.Errorf("sqlstore: migration %s: %w", m.name, err)
		}
		if applied {
			slog.InfoContext(ctx, "applied database migration", "dialect", s.d.name, "version", m.version, "name", m.name)
		}
	}
	return nil
}

// migrationBusyWait bounds how long migrationTx keeps retrying a SQLite
// BEGIN that fails with SQLITE_BUSY.
const migrationBusyWait = 30 * time.Second

// migrationTx runs fn in a write transaction under the migration lock.
//
// SQLite does not call its busy handler in every contended case: while
// another process is switching a new file to WAL, BEGIN IMMEDIATE can fail
// with SQLITE_BUSY at once, busy_timeout notwithstanding. Only processes
// opening the same new database race like that, so the migration steps (and
// nothing on the hot path) retry busy failures with a short backoff.
func (s *Store) migrationTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	deadline := time.Now().Add(migrationBusyWait)
	for backoff := 5 * time.Millisecond; ; backoff = min(2*backoff, 250*time.Millisecond) {
		err := s.migrationTxOnce(ctx, fn)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
	}
}

func (s *Store) migrationTxOnce(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		if s.d.migrationLock != "" {
			if _, err := tx.ExecContext(ctx, s.d.migrationLock); err != nil {
				return fmt.Errorf("take migration lock: %w", err)
			}
		}
		return fn(tx)
	})
}
