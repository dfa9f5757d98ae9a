package buildmanager

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"iter"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/berth-dev/berth/buildmanager/buildmanagertest"
	"github.com/berth-dev/berth/buildmanager/queue"
	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
	"github.com/berth-dev/berth/storage/filesystem"
)

// The SQL store is the one implementation of the stores the manager uses.
var (
	_ Store          = (*sqlstore.Store)(nil)
	_ BuildFileStore = (*sqlstore.Store)(nil)
)

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// env is one database and one Redis for a test.
type env struct {
	name    string
	st      store.Store
	rc      redis.UniversalClient
	prefix  string
	blobDir string
	// logDir keeps live logs in files, as serve does with the embedded
	// Redis ("": in Redis).
	logDir string
}

// envs returns SQLite + embedded Redis + live logs in files, and
// PostgreSQL + real Redis holding the live logs
// (BERTH_TEST_POSTGRES_DSN=skip / BERTH_TEST_REDIS=skip leave them out).
func eachEnv(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("sqlite-miniredis", func(t *testing.T) {
		st, err := sqlstore.Open(context.Background(), filepath.Join(t.TempDir(), "berth.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, &env{name: "sqlite", st: st, rc: buildmanagertest.Redis(t), prefix: "t-", blobDir: t.TempDir(), logDir: t.TempDir()})
	})
	if os.Getenv("BERTH_TEST_POSTGRES_DSN") == "skip" || os.Getenv("BERTH_TEST_REDIS") == "skip" {
		return
	}
	t.Run("postgres-redis", func(t *testing.T) {
		dsn := os.Getenv("BERTH_TEST_POSTGRES_DSN")
		if dsn == "" {
			dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
		}
		admin, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.Close() })
		schema := "bm_test_" + randHex(6)
		if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
			t.Fatalf("PostgreSQL unreachable (BERTH_TEST_POSTGRES_DSN=skip to skip): %v", err)
		}
		t.Cleanup(func() { admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`) })
		u, _ := url.Parse(dsn)
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		st, err := sqlstore.Open(context.Background(), u.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		rc, err := queue.RedisConfig{Host: "127.0.0.1:6379"}.Dial(context.Background())
		if err != nil {
			t.Fatalf("Redis unreachable (BERTH_TEST_REDIS=skip to skip): %v", err)
		}
		t.Cleanup(func() { rc.Close() })
		fn(t, &env{name: "postgres", st: st, rc: rc, prefix: "t" + randHex(6) + "-", blobDir: t.TempDir()})
	})
}

// behaviour scripts what a fake worker does.
type behaviour string

const (
	behaveOK        behaviour = "ok"
	behaveUserError behaviour = "user-error"
	behaveRetryable behaviour = "retryable-error"
	behaveDie       behaviour = "die"    // register, then exit without a result
	behaveSilent    behaviour = "silent" // register, then stop calling, without exiting
	behaveHang      behaviour = "hang"   // register and heartbeat until stopped
	behaveSlowLog   behaviour = "slow-log"
)

// newFakeExecutor returns an executor whose workers act out
// behave(build, attempt).
func newFakeExecutor(name string, behave func(string, int) behaviour) *buildmanagertest.Executor {
	return buildmanagertest.NewExecutor(name, behaving(behave))
}

// behaving is the script of a fake worker that acts out
// behave(build, attempt).
func behaving(behave func(string, int) behaviour) buildmanagertest.Script {
	return func(ctx context.Context, w *buildmanagertest.Worker) {
		b := behave(w.BuildID, w.Attempt)
		switch b {
		case behaveDie:
			return
		case behaveSilent:
			<-ctx.Done()
			return
		}
		w.Heartbeat(ctx)
		if b == behaveHang {
			<-ctx.Done()
			return
		}
		if w.Phase(ctx, workerpb.Phase_PHASE_UNPACKING, workerpb.Phase_PHASE_PULLING, workerpb.Phase_PHASE_BUILDING) != nil {
			return
		}
		_ = w.Log(ctx, workerpb.LogType_LOG_TYPE_COMMAND, "STEP 1/2: FROM busybox")
		_ = w.Log(ctx, workerpb.LogType_LOG_TYPE_UNSPECIFIED, "line a", "line b")
		if b == behaveSlowLog {
			for i := range 20 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(30 * time.Millisecond):
				}
				_ = w.Log(ctx, workerpb.LogType_LOG_TYPE_UNSPECIFIED, fmt.Sprintf("slow %d", i))
			}
		}
		switch b {
		case behaveUserError:
			_ = w.Log(ctx, workerpb.LogType_LOG_TYPE_UNSPECIFIED, "exit status 1")
			_ = w.Fail(ctx, &workerpb.BuildError{Code: "build-step", Message: "RUN false: exit status 1"})
		case behaveRetryable:
			_ = w.Fail(ctx, &workerpb.BuildError{Code: "push", Message: "registry unreachable", Retryable: true})
		default:
			if w.Phase(ctx, workerpb.Phase_PHASE_PUSHING) != nil {
				return
			}
			digests := map[string]string{}
			for _, tag := range w.Job.GetTags() {
				digests[tag] = "sha256:" + fmt.Sprintf("%064x", len(tag))
			}
			_ = w.Succeed(ctx, digests)
		}
	}
}

// harness is a running Manager over env e.
type harness struct {
	*Manager
	e      *env
	ex     *buildmanagertest.Executor
	repo   *store.Repository
	user   *store.Account
	cancel context.CancelFunc
	done   chan error
}

func testOptions(e *env, key ed25519.PrivateKey, ex ...Executor) Options {
	blobs, err := filesystem.New(e.blobDir)
	if err != nil {
		panic(err)
	}
	// The lease is 50 of the fake workers' 30 ms heartbeats: a worker that
	// stopped calling is found lost within the tests' time, and one that
	// heartbeats is never taken for lost by a stall under -race on a
	// loaded machine (600 ms was, once).
	return Options{
		Store: e.st, Blobs: blobs, Redis: e.rc, Prefix: e.prefix, LogDir: e.logDir, SigningKey: key,
		Executors: ex, AllowedWorkerCount: 1, RetryDelay: 50 * time.Millisecond,
		PollInterval: 50 * time.Millisecond, LeaseTimeout: 1500 * time.Millisecond,
		SetupTime: 5 * time.Second, TimeLimit: 30 * time.Second,
		Registry: RegistryTarget{Addr: "127.0.0.1:8080", Insecure: true},
		Logger:   slog.New(slog.DiscardHandler),
	}
}

var testKey = func() ed25519.PrivateKey {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	return k
}()

// start runs a Manager with one fake executor; tweak adjusts the options.
func start(t *testing.T, e *env, behave func(string, int) behaviour, tweak func(*Options)) *harness {
	t.Helper()
	ex := newFakeExecutor("fake", behave)
	o := testOptions(e, testKey, Executor{Executor: ex})
	if tweak != nil {
		tweak(&o)
	}
	h := startWith(t, e, o)
	h.ex = ex
	return h
}

func startWith(t *testing.T, e *env, o Options) *harness {
	t.Helper()
	ctx := context.Background()
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{Manager: m, e: e, done: make(chan error, 1)}
	h.user, h.repo = aliceApp(t, e.st)
	runCtx, cancel := context.WithCancel(ctx)
	h.cancel = cancel
	go func() { h.done <- m.Run(runCtx) }()
	t.Cleanup(h.stop)
	return h
}

// aliceApp returns the user alice and her repository alice/app, made on
// first use.
func aliceApp(t *testing.T, st store.Store) (*store.Account, *store.Repository) {
	t.Helper()
	ctx := context.Background()
	user, err := st.GetAccountByName(ctx, "alice")
	if err == nil {
		repo, err := st.GetRepository(ctx, "alice", "app")
		if err != nil {
			t.Fatal(err)
		}
		return user, repo
	}
	user = &store.Account{Kind: store.KindUser, Name: "alice", Enabled: true}
	if err := st.CreateAccount(ctx, user); err != nil {
		t.Fatal(err)
	}
	repo := &store.Repository{NamespaceID: user.ID, Name: "app"}
	if err := st.CreateRepository(ctx, repo); err != nil {
		t.Fatal(err)
	}
	return user, repo
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	<-h.done
}

func (h *harness) submit(t *testing.T) *store.Build {
	t.Helper()
	b, err := h.Submit(context.Background(), BuildRequest{
		Repository: h.repo, Requester: h.user, Tags: []string{"latest", "v1"},
		Request: store.BuildRequest{FileID: "f-" + randHex(4), DockerfilePath: "Dockerfile"},
	})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return b
}

// waitEnd waits until build id reaches a terminal phase.
func (h *harness) waitEnd(t *testing.T, id string, within time.Duration) *store.Build {
	t.Helper()
	return buildmanagertest.WaitBuild(t, h, id, within, "ended", func(b *store.Build) bool { return b.Phase.Terminal() })
}

func (h *harness) waitPhase(t *testing.T, id string, want store.BuildPhase, within time.Duration) {
	t.Helper()
	buildmanagertest.WaitBuild(t, h, id, within, string(want), func(b *store.Build) bool { return b.Phase == want })
}

func (h *harness) logsOf(t *testing.T, id string) []LogEntry {
	t.Helper()
	es, total := h.logsFrom(t, id, 0, -1)
	if total != len(es) {
		t.Fatalf("ReadLog total %d, %d entries", total, len(es))
	}
	return es
}

// logsFrom reads at most limit entries from start, and the log's length.
func (h *harness) logsFrom(t *testing.T, id string, start, limit int) ([]LogEntry, int) {
	t.Helper()
	var es []LogEntry
	var total int
	err := h.ReadLog(context.Background(), id, start, limit, func(n int, entries iter.Seq2[LogEntry, error]) error {
		total = n
		for e, err := range entries {
			if err != nil {
				return err
			}
			es = append(es, e)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return es, total
}

func phasesOf(es []LogEntry) []string {
	var out []string
	for _, e := range es {
		if e.Type == LogPhase {
			out = append(out, e.Message)
		}
	}
	return out
}

func always(b behaviour) func(string, int) behaviour {
	return func(string, int) behaviour { return b }
}

func generateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}
