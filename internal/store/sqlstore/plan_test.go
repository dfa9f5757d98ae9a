package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// queryPlan returns the database's plan for query as one string.
func queryPlan(t *testing.T, s *Store, query string, args ...any) string {
	t.Helper()
	explain := "EXPLAIN QUERY PLAN "
	if s.Dialect() == "postgres" {
		explain = "EXPLAIN "
	}
	rows, err := s.r.Query(s.q(explain+query), args...)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var lines []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		// The detail is the last column of SQLite's plan, the only one of
		// PostgreSQL's.
		switch v := vals[len(vals)-1].(type) {
		case string:
			lines = append(lines, v)
		case []byte:
			lines = append(lines, string(v))
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

func TestQueriesUseIndexes(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		r := fixture(t, s, "ns", "big")
		bulkTags(t, s, r.ID, 10000)
		if s.Dialect() == "postgres" {
			if _, err := s.w.Exec(`ANALYZE`); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []struct {
			name, query string
			args        []any
		}{
			{"tags page", `SELECT name FROM tags WHERE repo_id = ? AND name > ? ORDER BY name LIMIT ?`, []any{r.ID, "t05000", int64(100)}},
			{"tag details page", `SELECT name, digest, updated_at FROM tags WHERE repo_id = ? AND name > ? ORDER BY name LIMIT ?`, []any{r.ID, "t05000", int64(100)}},
			{"referrers", `SELECT digest FROM manifests WHERE repo_id = ? AND subject = ? AND subject <> '' AND (? = '' OR artifact_type = ?) ORDER BY digest`, []any{r.ID, "sha256:x", "", ""}},
		} {
			plan := queryPlan(t, s, c.query, c.args...)
			t.Logf("%s:\n%s", c.name, plan)
			bad := []string{"SCAN ", "TEMP B-TREE"}
			if s.Dialect() == "postgres" {
				bad = []string{"Seq Scan", "Sort"}
			}
			for _, b := range bad {
				if strings.Contains(plan, b) {
					t.Errorf("%s: plan has %q:\n%s", c.name, b, plan)
				}
			}
			if !strings.Contains(strings.ToLower(plan), "index") && !strings.Contains(plan, "PRIMARY KEY") {
				t.Errorf("%s: plan uses no index:\n%s", c.name, plan)
			}
		}
	})
}

// A page of unfinished builds reads its rows in order from the partial
// index, neither scanning nor sorting the builds that ended.
func TestUnfinishedBuildsPageUsesIndex(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		r := fixture(t, s, "ns", "busy")
		ctx := context.Background()
		err := s.writeTx(ctx, func(tx *sql.Tx) error {
			for i := range 6000 {
				phase := "complete"
				if i%2 == 0 {
					phase = "waiting"
				}
				if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO builds (id, repo_id, phase, created_at) VALUES (?, ?, ?, ?)`),
					fmt.Sprintf("b%05d", i), r.ID, phase, int64(i+1)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.w.Exec(`ANALYZE`); err != nil {
			t.Fatal(err)
		}
		plan := queryPlan(t, s, unfinishedBuildsPage, int64(3000), "b02999", int64(100))
		t.Logf("unfinished builds page:\n%s", plan)
		if !strings.Contains(plan, "builds_unfinished_created") {
			t.Errorf("the page does not read builds_unfinished_created:\n%s", plan)
		}
		for _, bad := range []string{"TEMP B-TREE", "Sort"} {
			if strings.Contains(plan, bad) {
				t.Errorf("the page sorts (%q):\n%s", bad, plan)
			}
		}
	})
}

// Both databases must order names byte-wise whatever the server's default
// collation is.
func TestPostgresNameColumnsCollateC(t *testing.T) {
	for _, b := range backends() {
		if b.name != "postgres" {
			continue
		}
		s := openTest(t, b.newDSN(t))
		for _, col := range [][2]string{{"tags", "name"}, {"accounts", "name"}, {"repositories", "name"}, {"manifests", "digest"}} {
			var coll string
			err := s.r.QueryRow(`SELECT COALESCE(collation_name, '') FROM information_schema.columns
				WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2`, col[0], col[1]).Scan(&coll)
			if err != nil || coll != "C" {
				t.Errorf("%s.%s collation = %q, %v; want C", col[0], col[1], coll, err)
			}
		}
	}
}

func TestSQLiteSettings(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "s.db"))
	for _, c := range []struct {
		pragma string
		want   string
	}{
		{"journal_mode", "wal"},
		{"synchronous", "2"},
		{"foreign_keys", "1"},
		{"busy_timeout", "10000"},
	} {
		for _, pool := range []struct {
			name string
			db   *sql.DB
		}{{"write", s.w}, {"read", s.r}} {
			var got string
			if err := pool.db.QueryRow("PRAGMA " + c.pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("%s pool: PRAGMA %s = %s, want %s", pool.name, c.pragma, got, c.want)
			}
		}
	}
	// A relaxed write leaves the writer at synchronous=FULL again.
	if err := s.relaxedExec(context.Background(), `DELETE FROM uploads WHERE id = 'none'`); err != nil {
		t.Fatal(err)
	}
	var sync string
	if err := s.w.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != "2" {
		t.Errorf("writer after relaxedExec: PRAGMA synchronous = %s (%v), want 2", sync, err)
	}
	if _, err := s.r.Exec(`DELETE FROM accounts`); err == nil {
		t.Error("the read pool accepted a write")
	}
}

func TestOpenDSNForms(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	abs := filepath.Join(dir, "abs.db")
	t.Chdir(dir)
	for _, c := range []struct{ dsn, file string }{
		{"sqlite://" + abs, abs},
		{"sqlite://rel.db", filepath.Join(dir, "rel.db")},
		{"bare.db", filepath.Join(dir, "bare.db")},
	} {
		s, err := Open(ctx, c.dsn)
		if err != nil {
			t.Fatalf("Open(%q): %v", c.dsn, err)
		}
		if s.Dialect() != "sqlite" {
			t.Errorf("Open(%q).Dialect() = %s", c.dsn, s.Dialect())
		}
		s.Close()
		if _, err := os.Stat(c.file); err != nil {
			t.Errorf("Open(%q) did not create %s: %v", c.dsn, c.file, err)
		}
	}
	for _, dsn := range []string{"mysql://x/y", "", "sqlite://x.db?mode=ro"} {
		if s, err := Open(ctx, dsn); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", dsn)
		}
	}
	if _, err := Open(ctx, "postgres://nobody:secret@127.0.0.1:1/x?connect_timeout=2"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("unreachable postgres: err = %v (want an error without the password)", err)
	}
}
