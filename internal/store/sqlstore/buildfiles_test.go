package sqlstore

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

func TestBuildFileOwnership(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice := mustUser(t, s, "alice")
		app := fixture(t, s, "alice", "app")
		expires := time.Now().Add(time.Hour).UTC().Round(0)

		// The URL is issued: a file without bytes, owned by alice.
		f := &store.BuildFile{ID: "f1", UploaderID: alice.ID, ExpiresAt: expires}
		if err := s.PutBuildFile(ctx, f); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetBuildFile(ctx, "f1")
		if err != nil || got.UploaderID != alice.ID || got.RepoID != 0 || got.Digest != "" || !got.ExpiresAt.Equal(expires) ||
			!got.CreatedAt.Equal(f.CreatedAt) {
			t.Fatalf("GetBuildFile(pending) = %+v, %v", got, err)
		}
		wantErr(t, "PutBuildFile(unknown uploader)", s.PutBuildFile(ctx, &store.BuildFile{ID: "f9", UploaderID: 9999}), store.ErrNotFound)

		// The bytes arrive once.
		if err := s.SetBuildFileContent(ctx, "f1", digestOf("ctx"), 3); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "SetBuildFileContent(again)", s.SetBuildFileContent(ctx, "f1", digestOf("other"), 5), store.ErrConflict)
		wantErr(t, "SetBuildFileContent(unknown)", s.SetBuildFileContent(ctx, "nope", digestOf("x"), 1), store.ErrNotFound)
		if got, _ := s.GetBuildFile(ctx, "f1"); got.Digest != digestOf("ctx") || got.Size != 3 {
			t.Fatalf("after SetBuildFileContent: %+v", got)
		}

		// The first repository that builds it is recorded, later ones are not.
		other := fixture(t, s, "alice", "other")
		if err := s.ClaimBuildFile(ctx, "f1", app.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.ClaimBuildFile(ctx, "f1", other.ID); err != nil {
			t.Fatal(err)
		}
		got, _ = s.GetBuildFile(ctx, "f1")
		if got.RepoID != app.ID || got.RepoNamespace != "alice" || got.RepoName != "app" {
			t.Fatalf("claimed file: %+v, want alice/app (%d)", got, app.ID)
		}
		wantErr(t, "ClaimBuildFile(unknown)", s.ClaimBuildFile(ctx, "nope", app.ID), store.ErrNotFound)

		// Usage counts the files issued since a time and their bytes.
		if err := s.PutBuildFile(ctx, &store.BuildFile{ID: "f2", UploaderID: alice.ID, ExpiresAt: expires}); err != nil {
			t.Fatal(err)
		}
		if n, b, err := s.BuildFileUsage(ctx, alice.ID, time.Now().Add(-time.Minute)); err != nil || n != 2 || b != 3 {
			t.Errorf("BuildFileUsage = %d files, %d bytes, %v; want 2, 3", n, b, err)
		}
		if n, b, err := s.BuildFileUsage(ctx, alice.ID, time.Now().Add(time.Minute)); err != nil || n != 0 || b != 0 {
			t.Errorf("BuildFileUsage(future) = %d, %d, %v; want 0, 0", n, b, err)
		}

		// Deleting the repository unbinds the file; deleting the uploader
		// forgets who uploaded it.
		if err := s.DeleteRepository(ctx, app.ID); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetBuildFile(ctx, "f1"); got.RepoID != 0 || got.RepoName != "" {
			t.Errorf("file of a deleted repository: %+v", got)
		}
		if err := s.DeleteAccount(ctx, alice.ID); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetBuildFile(ctx, "f1"); err != nil || got.UploaderID != 0 {
			t.Errorf("file of a deleted uploader: %+v, %v", got, err)
		}
	})
}

func TestDeleteUnusedBuildFiles(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice := mustUser(t, s, "alice")
		app := fixture(t, s, "alice", "app")
		now := time.Now().UTC()
		put := func(id string, expires time.Time, content string, repoID int64) {
			t.Helper()
			f := &store.BuildFile{ID: id, UploaderID: alice.ID, ExpiresAt: expires, RepoID: repoID}
			if content != "" {
				f.Digest, f.Size = digestOf(content), int64(len(content))
			}
			if err := s.PutBuildFile(ctx, f); err != nil {
				t.Fatal(err)
			}
		}
		old := now.Add(-2 * time.Hour)
		put("expired-alone", old, "alone", 0)           // its bytes go
		put("expired-twin", old, "twin", 0)             // its bytes are another file's too
		put("kept-twin", now.Add(time.Hour), "twin", 0) // not expired
		put("expired-layer", old, "layer", 0)           // its bytes are a registry blob
		put("expired-log", old, "log", 0)               // its bytes are an archived log
		put("expired-never-put", old, "", 0)            // no bytes arrived
		put("used", old, "used", app.ID)                // a build used it
		if err := s.PutBlob(ctx, app.ID, store.Blob{Digest: digestOf("layer"), Size: 5}); err != nil {
			t.Fatal(err)
		}
		b := newBuild(app, "b1")
		if err := s.CreateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := s.SetBuildLogsArchive(ctx, "b1", digestOf("log")); err != nil {
			t.Fatal(err)
		}

		removed, unreferenced, err := s.DeleteUnusedBuildFiles(ctx, now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if removed != 5 || !slices.Equal(unreferenced, []string{digestOf("alone")}) {
			t.Fatalf("DeleteUnusedBuildFiles = %d, %v; want 5, [%s]", removed, unreferenced, digestOf("alone"))
		}
		for _, id := range []string{"kept-twin", "used"} {
			if _, err := s.GetBuildFile(ctx, id); err != nil {
				t.Errorf("%s was purged: %v", id, err)
			}
		}
		for _, id := range []string{"expired-alone", "expired-twin", "expired-layer", "expired-log", "expired-never-put"} {
			_, err := s.GetBuildFile(ctx, id)
			wantErr(t, "GetBuildFile("+id+")", err, store.ErrNotFound)
		}
		if removed, unreferenced, err := s.DeleteUnusedBuildFiles(ctx, now.Add(-time.Hour)); err != nil || removed != 0 || len(unreferenced) != 0 {
			t.Errorf("second purge = %d, %v, %v; want nothing", removed, unreferenced, err)
		}
	})
}

func TestLoginsEndWithTheAccount(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice, bob := mustUser(t, s, "alice"), mustUser(t, s, "bob")
		exp := time.Now().Add(time.Hour)
		for i, id := range []int64{alice.ID, alice.ID, bob.ID} {
			h := strings.Repeat(string(rune('a'+i)), 64)
			if err := s.CreateSession(ctx, &store.Session{IDHash: h, AccountID: id, ExpiresAt: exp, CredentialEpoch: 7}); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateAccessToken(ctx, &store.AccessToken{AccountID: id, TokenHash: h, CredentialEpoch: uint64(3 + i)}); err != nil {
				t.Fatal(err)
			}
		}
		if sess, err := s.GetSession(ctx, strings.Repeat("a", 64)); err != nil || sess.CredentialEpoch != 7 {
			t.Fatalf("GetSession = %+v, %v; want epoch 7", sess, err)
		}
		org := mustOrg(t, s, "acme", alice.ID)
		app := &store.OAuthApplication{OrgID: org.ID, ClientID: "CID", Name: "deployer"}
		if err := s.CreateOAuthApplication(ctx, app); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAccessToken(ctx, &store.AccessToken{ApplicationID: app.ID, AccountID: alice.ID, TokenHash: "z"}); err != nil {
			t.Fatal(err)
		}
		toks, err := s.ListAccessTokens(ctx, alice.ID)
		if err != nil || len(toks) != 3 || toks[0].CredentialEpoch != 3 || toks[1].CredentialEpoch != 4 || toks[0].ID >= toks[1].ID ||
			toks[0].ClientID != "" || toks[2].ClientID != "CID" || toks[2].ApplicationName != "deployer" || toks[2].ApplicationOrg != "acme" {
			t.Fatalf("ListAccessTokens = %+v, %v", toks, err)
		}
		if tok, err := s.GetAccessTokenByHash(ctx, strings.Repeat("b", 64)); err != nil || tok.CredentialEpoch != 4 {
			t.Fatalf("GetAccessTokenByHash = %+v, %v; want epoch 4", tok, err)
		}

		if err := s.DeleteLogins(ctx, alice.ID); err != nil {
			t.Fatal(err)
		}
		if n := count(t, s, "sessions", "account_id = ?", alice.ID) + count(t, s, "access_tokens", "account_id = ?", alice.ID); n != 0 {
			t.Errorf("%d sessions and tokens of alice left", n)
		}
		if n := count(t, s, "sessions", "account_id = ?", bob.ID) + count(t, s, "access_tokens", "account_id = ?", bob.ID); n != 2 {
			t.Errorf("bob has %d sessions and tokens, want 2", n)
		}
		if err := s.DeleteLogins(ctx, alice.ID); err != nil {
			t.Errorf("DeleteLogins without any: %v", err)
		}
	})
}

// TestMigrationBindsExistingFiles upgrades a database holding files,
// builds, sessions and tokens from before migration 6.
func TestMigrationBindsExistingFiles(t *testing.T) {
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	eachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		d, driver, rawDSN := sqliteDialect, "sqlite", dsn+"?_foreign_keys=1"
		if strings.HasPrefix(dsn, "postgres") {
			d, driver, rawDSN = postgresDialect, "pgx", dsn
		}
		db, err := sql.Open(driver, rawDSN)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		old := &Store{d: d, w: db, r: db}
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.ExecContext(ctx, old.q(q), args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		exec(`CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`)
		for _, m := range ms {
			if m.version >= 6 {
				break
			}
			exec(d.markers.Replace(m.sql))
			exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)`, m.version, m.name)
		}
		const (
			used   = "11111111-2222-4333-8444-555555555555"
			unused = "66666666-7777-4888-8999-aaaaaaaaaaaa"
			hour   = int64(time.Hour)
		)
		exec(`INSERT INTO accounts (id, kind, name, created_at) VALUES (1, 'user', 'alice', 0)`)
		exec(`INSERT INTO repositories (id, namespace_id, name, visibility, created_at) VALUES (10, 1, 'app', 'private', 0)`)
		exec(`INSERT INTO repositories (id, namespace_id, name, visibility, created_at) VALUES (11, 1, 'copy', 'private', 0)`)
		exec(`INSERT INTO build_files (id, digest, size, created_at) VALUES (?, 'sha256:u', 1, ?)`, used, 5*hour)
		exec(`INSERT INTO build_files (id, digest, size, created_at) VALUES (?, 'sha256:n', 1, ?)`, unused, 7*hour)
		// The file was first built in alice/app, then (by someone else) in alice/copy.
		exec(`INSERT INTO builds (id, repo_id, phase, request, created_at) VALUES ('b2', 11, 'complete', ?, 200)`,
			`{"file_id":"`+used+`","dockerfile_path":"/Dockerfile"}`)
		exec(`INSERT INTO builds (id, repo_id, phase, request, created_at) VALUES ('b1', 10, 'complete', ?, 100)`,
			`{"file_id":"`+used+`","context":"/"}`)
		exec(`INSERT INTO builds (id, repo_id, phase, request, created_at) VALUES ('b3', 10, 'complete', ?, 300)`,
			`{"archive_url":"https://example.com/x.tar"}`)
		exec(`INSERT INTO credential_epochs (subject, epoch, updated_at) VALUES ('alice', 4, 0)`)
		exec(`INSERT INTO sessions (id_hash, account_id, csrf_token, created_at, expires_at) VALUES ('s1', 1, 'c', 0, 1)`)
		exec(`INSERT INTO access_tokens (account_id, token_hash, created_at) VALUES (1, 't1', 0)`)
		db.Close()

		s := openTest(t, dsn)
		f, err := s.GetBuildFile(ctx, used)
		if err != nil || f.RepoID != 10 || f.RepoName != "app" || f.UploaderID != 0 || f.ExpiresAt.UnixNano() != 6*hour {
			t.Errorf("used file after migration: %+v, %v; want bound to alice/app, expiring at 6h", f, err)
		}
		f, err = s.GetBuildFile(ctx, unused)
		if err != nil || f.RepoID != 0 || f.ExpiresAt.UnixNano() != 8*hour {
			t.Errorf("unused file after migration: %+v, %v; want unbound, expiring at 8h", f, err)
		}
		if sess, err := s.GetSession(ctx, "s1"); err != nil || sess.CredentialEpoch != 4 {
			t.Errorf("session after migration: %+v, %v; want epoch 4", sess, err)
		}
		if tok, err := s.GetAccessTokenByHash(ctx, "t1"); err != nil || tok.CredentialEpoch != 4 {
			t.Errorf("token after migration: %+v, %v; want epoch 4", tok, err)
		}
	})
}
