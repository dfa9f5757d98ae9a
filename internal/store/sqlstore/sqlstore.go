// Package sqlstore implements store.Store over database/sql, once, for both
// SQLite (modernc.org/sqlite, pure Go) and PostgreSQL (pgx).
//
// Queries are written with '?' placeholders and a few {{...}} markers that
// the dialect translates (see dialect.go); the schema is a list of embedded,
// versioned migrations applied by Open.
//
// SQLite runs in WAL mode with synchronous=FULL, so a committed write
// survives a power cut. It allows one writer at a time, so the store keeps
// a one-connection pool for writes (writers queue in Go instead of spinning
// on SQLITE_BUSY) and a separate read-only pool for reads, which WAL lets
// run beside the writer. Write transactions begin IMMEDIATE so that a
// transaction that reads before it writes never fails to upgrade its lock
// when another process shares the file. PostgreSQL uses one pool for both.
package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	// Registers the "pgx" database/sql driver.
	_ "github.com/jackc/pgx/v5/stdlib"
	// Registers the "sqlite" database/sql driver.
	_ "modernc.org/sqlite"

	"github.com/berth-dev/berth/internal/store"
)

// Store is the SQL implementation of store.Store.
type Store struct {
	d *dialect
	// w runs every write transaction; r serves reads. They are the same
	// pool on PostgreSQL.
	w, r *sql.DB
	// queries caches dialect-translated query text by original text.
	queries sync.Map
	// hot holds the write statements of PutManifest, prepared once on the
	// write pool: modernc.org/sqlite has no statement cache, and parsing
	// them on every push cost about a third of the CPU time of a tag write.
	hot map[string]*sql.Stmt
	// group batches concurrent write transactions into one commit; SQLite
	// only (PostgreSQL groups commits itself).
	group *groupCommitter
}

// hotQueries are prepared by prepareHot.
var hotQueries = []string{insertManifestSQL, upsertTagSQL}

// prepareHot prepares hotQueries. It must run outside any transaction: on
// SQLite, a transaction holds the write pool's only connection.
func (s *Store) prepareHot(ctx context.Context) error {
	s.hot = make(map[string]*sql.Stmt, len(hotQueries))
	for _, q := range hotQueries {
		st, err := s.w.PrepareContext(ctx, s.q(q))
		if err != nil {
			return fmt.Errorf("sqlstore: prepare: %w", err)
		}
		s.hot[q] = st
	}
	return nil
}

// hotExec runs one of hotQueries in tx. database/sql reuses the statement
// already prepared on tx's connection.
func (s *Store) hotExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	return tx.StmtContext(ctx, s.hot[query]).ExecContext(ctx, args...)
}

var _ store.Store = (*Store)(nil)

// Open connects to the database named by dsn and brings its schema up to
// date. dsn is a PostgreSQL URL (postgres://... or postgresql://...) or a
// SQLite file: sqlite:///abs/path.db, sqlite://rel/path.db or a bare path.
func Open(ctx context.Context, dsn string) (*Store, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn)
	case strings.HasPrefix(dsn, "sqlite://"):
		return OpenSQLite(ctx, strings.TrimPrefix(dsn, "sqlite://"))
	case strings.Contains(dsn, "://"):
		return nil, fmt.Errorf("sqlstore: unsupported database URL scheme in %q", redact(dsn))
	default:
		return OpenSQLite(ctx, dsn)
	}
}

// OpenSQLite opens (creating if needed) the SQLite database file at path
// and brings its schema up to date.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlstore: empty SQLite path")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlstore: SQLite path %q must not contain '?' or '#'", path)
	}
	if err := privateDatabaseFiles(path); err != nil {
		return nil, err
	}
	// The driver strips the query from a plain file name and applies these
	// keys itself on every new connection.
	common := "_busy_timeout=10000&_foreign_keys=1&_journal_mode=WAL&_synchronous=FULL&_pragma=wal_autocheckpoint(8192)"
	w, err := sql.Open("sqlite", path+"?"+common+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open sqlite %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{d: sqliteDialect, w: w, r: w}
	// Migrate before the read pool exists: the first connection creates
	// the file and switches it to WAL without racing other connections.
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", path+"?"+common+"&_query_only=1")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlstore: open sqlite %s: %w", path, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlstore: open sqlite %s: %w", path, err)
	}
	s.r = r
	if err := s.prepareHot(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.group = newGroupCommitter(w)
	return s, nil
}

// privateDatabaseFiles creates the database file, when missing, readable by
// its owner only, and takes group and other access away from the files of
// a database created before (or copied in) with a looser mode. It holds
// password hashes and sealed secrets. SQLite gives the -wal and -shm files
// it creates the main file's mode, so they stay private whatever the
// process's umask.
func privateDatabaseFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqlstore: create sqlite %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sqlstore: create sqlite %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		info, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil && info.Mode().Perm()&0o077 != 0 {
			err = os.Chmod(p, info.Mode().Perm()&0o700)
		}
		if err != nil {
			return fmt.Errorf("sqlstore: restrict sqlite file %s: %w", p, err)
		}
	}
	return nil
}

func openPostgres(ctx context.Context, dsn string) (*Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open postgres %s: %w", redact(dsn), err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlstore: connect postgres %s: %w", redact(dsn), err)
	}
	s := &Store{d: postgresDialect, w: db, r: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.prepareHot(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// redact hides a password in a URL DSN so it can appear in errors.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Close releases both connection pools.
func (s *Store) Close() error {
	if s.group != nil {
		s.group.close()
	}
	var err error
	for _, st := range s.hot {
		err = errors.Join(err, st.Close())
	}
	err = errors.Join(err, s.w.Close())
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

// Dialect is "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.d.name }

// q returns query translated for the store's dialect.
func (s *Store) q(query string) string {
	if v, ok := s.queries.Load(query); ok {
		return v.(string)
	}
	p := s.d.prepare(query)
	s.queries.Store(query, p)
	return p
}

// writeTx runs fn in a write transaction and commits it if fn succeeds.
// fn must not use the store's own methods: on SQLite the write pool has a
// single connection, which fn's transaction holds.
func (s *Store) writeTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.group != nil {
		return s.group.do(ctx, fn)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// relaxedExec runs one write statement whose loss in a power cut the caller
// accepts, without waiting for the log to reach the disk. The commit stays
// atomic and ordered: a crash of the process loses nothing (the log is in
// the OS), the next durable commit makes it durable too, and a power cut
// keeps it or loses it whole. On SQLite the single writer connection drops
// to synchronous=NORMAL (crash-safe in WAL mode) for the statement; on
// PostgreSQL the transaction sets synchronous_commit off.
func (s *Store) relaxedExec(ctx context.Context, query string, args ...any) error {
	if s.d == postgresDialect {
		return s.writeTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, query, args...)
			return err
		})
	}
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
		return err
	}
	_, execErr := conn.ExecContext(ctx, query, args...)
	if _, err := conn.ExecContext(context.Background(), "PRAGMA synchronous = FULL"); err != nil {
		// A writer left at NORMAL would weaken every later commit: drop
		// the connection; the pool opens a new one with FULL.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		return errors.Join(execErr, fmt.Errorf("restore synchronous=FULL: %w", err))
	}
	return execErr
}

// execOne runs a single-statement write outside an explicit transaction
// and returns store.ErrNotFound when it changed no row.
func (s *Store) execOne(ctx context.Context, query string, args ...any) error {
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(query), args...)
		if err != nil {
			return classify(err)
		}
		return mustAffect(res)
	})
}

// classify wraps err with store.ErrConflict or store.ErrNotFound when the
// database reports a unique or foreign key violation.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case isUniqueViolation(err):
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	case isForeignKeyViolation(err):
		return fmt.Errorf("%w: referenced row missing: %w", store.ErrNotFound, err)
	}
	return err
}

// notFoundIfNoRows turns sql.ErrNoRows into store.ErrNotFound.
func notFoundIfNoRows(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// mustAffect returns store.ErrNotFound when res changed no row.
func mustAffect(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// now is the creation time of new rows, truncated to what BIGINT nanoseconds
// and the round trip keep.
func now() time.Time { return time.Now().UTC().Round(0) }

// limit turns a page size into a LIMIT value: negative means no limit.
func limit(n int) int64 {
	if n < 0 {
		return 1<<63 - 1
	}
	return int64(n)
}
