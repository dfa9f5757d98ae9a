// Package tenancy proves, against a real `bin/berth serve`, that berth's
// users, organizations, teams, robots, permissions and OAuth tokens behave as
// Red Hat Quay's do: a permission matrix walked through both /v2 and
// /api/v1, the seeds' curl examples replayed with their shapes asserted,
// podman driven as a robot and as an OAuth token, and bad input refused in
// Quay's error shape.
//
// TestMain (test/harness's Suite) starts one server for the whole package
// on a free loopback port, with a fresh data directory, a superuser from
// BERTH_ADMIN_USER/PASSWORD and a generated config.yaml. BERTH_E2E_DB
// picks the metadata database:
//
//	sqlite     (default) the embedded SQLite file in the data directory
//	postgres   a fresh database with a unique name, created in the local
//	           PostgreSQL (BERTH_E2E_PG_URL, default
//	           postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)
//	           and dropped at the end
//
// The tests skip, saying why, only when bin/berth has not been built (run
// `make build`); a missing tool or an unreachable PostgreSQL is a failure.
package tenancy

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/test/harness"
)

const (
	adminUser = "admin"
	// stopTimeout is how long the server may take to exit after SIGTERM.
	stopTimeout  = 10 * time.Second
	defaultPGURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

// server is the one berth process every test talks to.
type server struct{ *harness.Server }

var (
	suite = &harness.Suite{Name: "tenancy"}
	// srv is the shared server, once setup has started it.
	srv *server
	// tools runs podman and buildah for every test.
	tools *harness.Tools
	// dbKind is "sqlite" or "postgres", for test logs.
	dbKind string
	// sharedConfig is what every server of this database must agree on (the
	// secrets key and the token signing key), and dbURI the database itself:
	// a second server started with both joins the first.
	sharedConfig, dbURI string
)

func TestMain(m *testing.M) { os.Exit(suite.Main(m, setup)) }

// setup makes the metadata database BERTH_E2E_DB asks for, then starts the
// server on it with config.yaml (DB_URI when the database is PostgreSQL).
func setup(ctx context.Context) error {
	sharedConfig = fmt.Sprintf("DATABASE_SECRET_KEY: %q\nINSTANCE_SERVICE_KEY_LOCATION: %q\n",
		harness.RandomHex(32), filepath.Join(suite.Work, "token-signing.pem"))
	conf := "FEATURE_USER_INITIALIZE: true\n" + sharedConfig
	dbKind = os.Getenv("BERTH_E2E_DB")
	switch dbKind {
	case "", "sqlite":
		dbKind = "sqlite"
	case "postgres":
		uri, drop, err := createPostgresDB(ctx)
		if err != nil {
			return fmt.Errorf("BERTH_E2E_DB=postgres: %w", err)
		}
		suite.Cleanup(func() {
			if err := drop(); err != nil {
				fmt.Fprintf(os.Stderr, "tenancy: dropping the test database: %v\n", err)
			}
		})
		dbURI = uri
		conf += fmt.Sprintf("DB_URI: %q\n", uri)
	default:
		return fmt.Errorf("BERTH_E2E_DB=%q: want sqlite or postgres", dbKind)
	}
	err := suite.StartServer(ctx, harness.ServerOptions{Config: conf, User: adminUser, StopTimeout: stopTimeout})
	if err != nil {
		return err
	}
	srv = &server{suite.Server}
	if dbURI == "" {
		dbURI = "sqlite://" + filepath.Join(srv.DataDir, "berth.db")
	}
	suite.Cleanup(srv.removeBuildRoot)
	fmt.Fprintf(os.Stderr, "tenancy: metadata in %s\n", dbKind)
	tools, err = suite.NewTools()
	return err
}

// requireServer returns the shared server, skipping when bin/berth is
// missing.
func requireServer(t testing.TB) *server {
	t.Helper()
	suite.Require(t)
	return srv
}

// createPostgresDB creates a database with a unique name and returns its URI
// and a function that drops it (after the server has let go of it).
func createPostgresDB(ctx context.Context) (string, func() error, error) {
	base := os.Getenv("BERTH_E2E_PG_URL")
	if base == "" {
		base = defaultPGURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, fmt.Errorf("parsing %q: %w", base, err)
	}
	name := "berth_tenancy_" + harness.RandomHex(6)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	defer conn.Close(ctx)
	// The name is generated from hex digits, so quoting it is enough.
	if _, err := conn.Exec(cctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("creating database %s: %w", name, err)
	}
	u.Path = "/" + name
	drop := func() error {
		dctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(dctx, base)
		if err != nil {
			return err
		}
		defer c.Close(dctx)
		_, err = c.Exec(dctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		return err
	}
	return u.String(), drop, nil
}

// removeBuildRoot deletes the per-instance directory the local build
// executor made outside the data directory (it holds a copy of the berth
// binary), which would otherwise pile up with every run. The path comes from
// the server's "local executor ready" log line and is removed only when it
// is one of the executor's default per-instance locations.
func (s *server) removeBuildRoot() {
	data, err := os.ReadFile(s.LogPath)
	if err != nil {
		return
	}
	_, after, ok := strings.Cut(string(data), " build_root=")
	if !ok {
		return
	}
	root, _, _ := strings.Cut(after, " ")
	root = filepath.Clean(root)
	parent := filepath.Dir(root)
	if parent != "/var/lib/berth-builds" && !strings.HasPrefix(parent, "/var/tmp/berth-builds-") {
		return
	}
	if err := os.RemoveAll(root); err != nil {
		fmt.Fprintf(os.Stderr, "tenancy: removing the executor's build root %s: %v\n", root, err)
	}
}
