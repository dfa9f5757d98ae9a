package sqlstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/store"
)

// The suite runs every case against SQLite in a temporary directory and
// against PostgreSQL, each case in a fresh schema of its own that is
// dropped afterwards, so parallel runs never collide.
const defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func postgresDSN() string {
	if dsn := os.Getenv("BERTH_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return defaultPostgresDSN
}

var (
	adminOnce sync.Once
	adminDB   *sql.DB
	adminErr  error
)

// postgresAdmin is a connection used only to create and drop schemas.
func postgresAdmin(tb testing.TB) *sql.DB {
	tb.Helper()
	adminOnce.Do(func() {
		adminDB, adminErr = sql.Open("pgx", postgresDSN())
		if adminErr == nil {
			adminErr = adminDB.Ping()
		}
	})
	if adminErr != nil {
		tb.Fatalf("PostgreSQL at %s is unreachable (set BERTH_TEST_POSTGRES_DSN=skip to run SQLite only): %v", redact(postgresDSN()), adminErr)
	}
	return adminDB
}

type backend struct {
	name string
	// newDSN makes an empty database and returns its DSN; cleanup is
	// registered on tb.
	newDSN func(tb testing.TB) string
}

func backends() []backend {
	bs := []backend{{name: "sqlite", newDSN: func(tb testing.TB) string {
		return filepath.Join(tb.TempDir(), "berth.db")
	}}}
	if postgresDSN() == "skip" {
		return bs
	}
	return append(bs, backend{name: "postgres", newDSN: func(tb testing.TB) string {
		db := postgresAdmin(tb)
		schema := "berth_test_" + randomHex(8)
		if _, err := db.Exec(`CREATE SCHEMA ` + schema); err != nil {
			tb.Fatalf("create schema: %v", err)
		}
		tb.Cleanup(func() {
			if _, err := db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
				tb.Errorf("drop schema %s: %v", schema, err)
			}
		})
		u, err := url.Parse(postgresDSN())
		if err != nil {
			tb.Fatalf("parse BERTH_TEST_POSTGRES_DSN: %v", err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}})
}

// eachBackend runs fn once per database with a fresh DSN.
func eachBackend(t *testing.T, fn func(t *testing.T, dsn string)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { fn(t, b.newDSN(t)) })
	}
}

// eachStore runs fn once per database with a freshly migrated store.
func eachStore(t *testing.T, fn func(t *testing.T, s *Store)) {
	eachBackend(t, func(t *testing.T, dsn string) { fn(t, openTest(t, dsn)) })
}

func openTest(tb testing.TB, dsn string) *Store {
	tb.Helper()
	s, err := Open(context.Background(), dsn)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// fixture creates a user and one repository in its namespace.
func fixture(tb testing.TB, s *Store, ns, name string) *store.Repository {
	tb.Helper()
	ctx := context.Background()
	a, err := s.GetAccountByName(ctx, ns)
	if err != nil {
		a = &store.Account{Kind: store.KindUser, Name: ns, Enabled: true}
		if err := s.CreateAccount(ctx, a); err != nil {
			tb.Fatalf("CreateAccount: %v", err)
		}
	}
	r := &store.Repository{NamespaceID: a.ID, Name: name}
	if err := s.CreateRepository(ctx, r); err != nil {
		tb.Fatalf("CreateRepository: %v", err)
	}
	return r
}

// putImage stores a blob and an image manifest referring to it, tagged tag.
func putImage(tb testing.TB, s *Store, repoID int64, content, tag string) *store.Manifest {
	tb.Helper()
	ctx := context.Background()
	layer := store.Blob{Digest: digestOf("layer " + content), Size: int64(len(content))}
	if err := s.PutBlob(ctx, repoID, layer); err != nil {
		tb.Fatalf("PutBlob: %v", err)
	}
	payload := []byte(fmt.Sprintf(`{"schemaVersion":2,"layers":[{"digest":%q}]}`, layer.Digest))
	m := &store.Manifest{
		RepoID:    repoID,
		Digest:    digestOf(string(payload)),
		MediaType: "application/vnd.oci.image.manifest.v1+json",
		Size:      int64(len(payload)),
		Payload:   payload,
		Refs:      []store.Ref{{Digest: layer.Digest, Size: layer.Size, Kind: store.RefBlob}},
	}
	if err := s.PutManifest(ctx, m, tag); err != nil {
		tb.Fatalf("PutManifest: %v", err)
	}
	return m
}

// count returns the rows of table matching where (with args).
func count(tb testing.TB, s *Store, table, where string, args ...any) int {
	tb.Helper()
	var n int
	if err := s.r.QueryRow(s.q(`SELECT COUNT(*) FROM `+table+` WHERE `+where), args...).Scan(&n); err != nil {
		tb.Fatalf("count %s: %v", table, err)
	}
	return n
}

// bulkTags stores n manifests, each tagged, in one transaction, far faster
// than n PutManifest calls; it prepares large repositories for benchmarks.
func bulkTags(tb testing.TB, s *Store, repoID int64, n int) {
	tb.Helper()
	ctx := context.Background()
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		for i := range n {
			payload := fmt.Sprintf(`{"schemaVersion":2,"bulk":%d}`, i)
			d := digestOf(payload)
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO manifests (repo_id, digest, media_type, size, payload, created_at)
				VALUES (?, ?, 'application/vnd.oci.image.manifest.v1+json', ?, ?, 0)`), repoID, d, len(payload), []byte(payload)); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?, ?, ?, 0)`),
				repoID, fmt.Sprintf("t%05d", i), d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("bulk tags: %v", err)
	}
}
