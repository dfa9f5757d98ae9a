package api

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
)

// eachDatabase runs fn on SQLite and on PostgreSQL (a fresh schema;
// BERTH_TEST_POSTGRES_DSN=skip leaves it out), with a DSN for newEnvOn.
func eachDatabase(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, "sqlite://"+t.TempDir()+"/db") })
	dsn := os.Getenv("BERTH_TEST_POSTGRES_DSN")
	if dsn == "skip" {
		return
	}
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	t.Run("postgres", func(t *testing.T) {
		admin, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.Close() })
		schema := "api_test_" + strings.ToLower(auth.RandomString(12, auth.UpperAlnum))
		if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
			t.Fatalf("PostgreSQL unreachable (BERTH_TEST_POSTGRES_DSN=skip to skip): %v", err)
		}
		t.Cleanup(func() { admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`) })
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		fn(t, u.String())
	})
}

// appToken makes an OAuth token for user through an application of an
// organization user belongs to.
func (e *env) appToken(user, org string, scopes ...string) string {
	e.t.Helper()
	if e.call(http.MethodGet, "/api/v1/organization/"+org, basic(user), nil).code == http.StatusNotFound {
		e.must(201, http.MethodPost, "/api/v1/organization/", basic(user), map[string]any{"name": org})
	}
	r := e.must(200, http.MethodPost, "/api/v1/organization/"+org+"/applications", basic(user), map[string]any{"name": "scripts"})
	clientID := r.obj()["client_id"].(string)
	r = e.must(200, http.MethodPost, "/api/v1/organization/"+org+"/applications/"+clientID+"/token", basic(user),
		map[string]any{"scopes": scopes})
	return r.obj()["access_token"].(string)
}

// F8, repro 3: alice's build of acme/secret showed its file_id to every
// reader, and bob, a stranger, built that file into his own repository and
// pulled the secret out of the image.
func TestUploadedFileIsBoundToItsUploader(t *testing.T) {
	eachDatabase(t, func(t *testing.T, dsn string) {
		e := newBuildEnvOn(t, newEnvOn(t, dsn, nil))
		e.setup() // alice/app: carol reads, dave writes; bob is a stranger
		for _, u := range []string{"bob", "carol", "dave"} {
			e.must(201, http.MethodPost, "/api/v1/repository", basic(u), map[string]any{"repository": "reuse", "visibility": "private", "description": ""})
		}
		const secret = "FROM scratch\nCOPY SECRET.txt /\n"
		fid := e.upload(basic("alice"), secret)

		// Nobody but alice may build it before its first build.
		for _, u := range []string{"bob", "carol", "dave"} {
			r := e.call(http.MethodPost, "/api/v1/repository/"+u+"/reuse/build/", basic(u), map[string]any{"file_id": fid})
			assertError(t, r, 400, "invalid_request")
			if r.obj()["detail"] != "No uploaded file with this file_id" {
				t.Errorf("%s building alice's unbuilt upload: %s", u, r.body)
			}
		}
		r := e.must(201, http.MethodPost, "/api/v1/repository/alice/app/build/", basic("alice"), map[string]any{"file_id": fid})
		id := r.obj()["id"].(string)
		sum := sha256.Sum256([]byte(secret))
		if r.obj()["display_name"] != hex.EncodeToString(sum[:])[:7] {
			t.Errorf("display_name = %v, want the first 7 hex digits of the upload's SHA-256", r.obj()["display_name"])
		}

		// Readers see neither the file ID nor anything that stands for it.
		for _, path := range []string{"/api/v1/repository/alice/app/build/" + id, "/api/v1/repository/alice/app/build/"} {
			r := e.must(200, http.MethodGet, path, basic("carol"), nil)
			if strings.Contains(string(r.body), fid) {
				t.Errorf("reader's %s shows the file ID: %s", path, r.body)
			}
		}
		if r := e.must(200, http.MethodGet, "/api/v1/repository/alice/app/build/"+id, basic("dave"), nil); r.obj()["resource_key"] != fid {
			t.Errorf("writer's view: resource_key = %v, want %s", r.obj()["resource_key"], fid)
		}

		// The stranger and the reader still cannot build it anywhere; a
		// writer of alice/app may, and alice may build it into a second
		// repository without moving its binding.
		for _, u := range []string{"bob", "carol"} {
			assertError(t, e.call(http.MethodPost, "/api/v1/repository/"+u+"/reuse/build/", basic(u), map[string]any{"file_id": fid}), 400, "invalid_request")
		}
		e.must(201, http.MethodPost, "/api/v1/repository/dave/reuse/build/", basic("dave"), map[string]any{"file_id": fid})
		e.must(201, http.MethodPost, "/api/v1/repository/alice/other/build/", basic("alice"), map[string]any{"file_id": fid})
		if f, err := e.store.GetBuildFile(context.Background(), fid); err != nil || f.RepoName != "app" {
			t.Errorf("file bound to %+v, %v; want alice/app", f, err)
		}
	})
}

// F9 and F17(a): robots and repo:read tokens could upload; uploads had no
// per-account bound.
func TestFiledropNeedsAWriter(t *testing.T) {
	e := newBuildEnv(t, nil)
	e.setup()
	robot := e.must(201, http.MethodPut, "/api/v1/user/robots/reader", basic("alice"), map[string]any{}).obj()["token"].(string)
	body := map[string]any{"mimeType": "application/x-tar"}
	assertError(t, e.call(http.MethodPost, "/api/v1/filedrop/", basicPw("alice+reader", robot), body), 403, "insufficient_scope")
	assertError(t, e.call(http.MethodPost, "/api/v1/filedrop/", bearer(e.appToken("alice", "acme", "repo:read", "user:admin")), body), 403, "insufficient_scope")
	for _, scope := range []string{"repo:write", "repo:create", "repo:admin"} {
		e.must(200, http.MethodPost, "/api/v1/filedrop/", bearer(e.appToken("alice", "acme", scope)), body)
	}
}

func TestFiledropRateLimitAndQuota(t *testing.T) {
	eachDatabase(t, func(t *testing.T, dsn string) {
		e := newBuildEnvOn(t, newEnvOn(t, dsn, map[string]any{"FILEDROP_RATE_LIMIT": 3, "FILEDROP_QUOTA_BYTES": 100}))
		e.setup()
		body := map[string]any{"mimeType": "application/x-tar"}
		e.upload(basic("alice"), strings.Repeat("a", 60))
		// The next upload may use what the day's quota has left, no more.
		r := e.must(200, http.MethodPost, "/api/v1/filedrop/", basic("alice"), body)
		if code, msg := e.put(r.obj()["url"].(string), strings.Repeat("b", 41)); code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "quota") {
			t.Fatalf("upload over the quota: %d %s", code, msg)
		}
		if rc, _, err := e.contexts.Open(context.Background(), r.obj()["file_id"].(string)); err == nil {
			rc.Close()
			t.Fatal("the upload over the quota was kept")
		}
		// The rate limit counts URLs: the third of the hour is the last.
		r = e.must(200, http.MethodPost, "/api/v1/filedrop/", basic("alice"), body)
		if code, msg := e.put(r.obj()["url"].(string), strings.Repeat("c", 40)); code != 200 {
			t.Fatalf("upload within the quota: %d %s", code, msg)
		}
		r = e.call(http.MethodPost, "/api/v1/filedrop/", basic("alice"), body)
		assertError(t, r, 429, "too_many_requests")
		if r.hdr.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		// Quota and rate are per account.
		e.upload(basic("dave"), strings.Repeat("d", 100))
		r = e.call(http.MethodPost, "/api/v1/filedrop/", basic("dave"), body)
		assertError(t, r, 429, "too_many_requests")
		if !strings.Contains(r.obj()["detail"].(string), "quota") {
			t.Errorf("dave's upload URL past his quota: %s", r.body)
		}
	})
}

// An upload's bytes are stored once: a second PUT to its URL, or a PUT to
// a URL whose file the store does not know, is refused.
func TestFiledropURLIsSingleUse(t *testing.T) {
	e := newBuildEnv(t, nil)
	e.setup()
	r := e.must(200, http.MethodPost, "/api/v1/filedrop/", basic("alice"), map[string]any{"mimeType": "x"})
	u := r.obj()["url"].(string)
	if code, _ := e.put(u, "FROM scratch\n"); code != 200 {
		t.Fatal(code)
	}
	if code, body := e.put(u, "FROM busybox\n"); code != 403 || !strings.Contains(body, "already used") {
		t.Fatalf("second PUT: %d %s", code, body)
	}
	f, err := e.store.GetBuildFile(context.Background(), r.obj()["file_id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte("FROM scratch\n")); f.Digest != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("stored %s, want the first upload", f.Digest)
	}
}
