package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/buildmanager/queue"
	"github.com/berth-dev/berth/executors"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/logctx"
	"github.com/berth-dev/berth/internal/slowbody"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
	"github.com/berth-dev/berth/registry"
	regauth "github.com/berth-dev/berth/registry/auth"
	"github.com/berth-dev/berth/storage"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/manage"
	"github.com/berth-dev/berth/triggers/webhook"
)

// commonFlags are shared by every command that opens berth's state.
type commonFlags struct {
	configPath string
	dataDir    string
	logLevel   string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.configPath, "config", "", "Quay-style config.yaml (optional)")
	fs.StringVar(&c.dataDir, "data-dir", "./data", "directory for the embedded database, blobs and keys")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
}

// load reads the configuration file, if any, and applies the flags.
func (c *commonFlags) load(log *slog.Logger) (*config.Config, error) {
	dataDir, err := filepath.Abs(c.dataDir)
	if err != nil {
		return nil, err
	}
	cfg := config.Defaults(dataDir)
	if c.configPath != "" {
		var unknown []string
		cfg, unknown, err = config.Load(c.configPath, dataDir)
		if err != nil {
			return nil, err
		}
		for _, k := range unknown {
			log.Warn("unknown config key ignored", "key", k)
		}
		// docs/config.md says what each key is waiting for.
		if keys := cfg.NotSupportedKeys(); len(keys) > 0 {
			log.Warn("config keys recognised but not supported yet, ignored", "keys", keys)
		}
	}
	return cfg, nil
}

func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var common commonFlags
	common.register(fs)
	listen := fs.String("listen", "", "address to listen on (default :8080)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate (PEM); serve HTTPS with --tls-key")
	tlsKey := fs.String("tls-key", "", "TLS private key (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(common.logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	cfg, err := common.load(log)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *tlsCert != "" || *tlsKey != "" {
		cfg.TLSCert, cfg.TLSKey = *tlsCert, *tlsKey
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	limits, err := readServeLimits(cfg.Raw)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	restrictDataDir(cfg.DataDir, log)
	if cfg.ServerHostname == "" {
		log.Warn("SERVER_HOSTNAME is not set: token realms, upload locations and filedrop URLs follow each request's Host header; set it for production")
	}

	// The listener comes up first so that /health/instance can say "not yet"
	// while migrations run; every other route waits for readiness.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var app atomic.Pointer[http.Handler]
	mux := http.NewServeMux()
	mux.HandleFunc("/health/instance", func(w http.ResponseWriter, r *http.Request) {
		if app.Load() == nil {
			http.Error(w, `{"status":"starting"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":{"services":{"registry_gunicorn":true,"database":true}},"status_code":200}`))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := app.Load()
		if h == nil {
			http.Error(w, "berth is starting", http.StatusServiceUnavailable)
			return
		}
		(*h).ServeHTTP(w, r)
	})
	srv := &http.Server{
		// Bodies are paced per read rather than by a ReadTimeout, which
		// would cut off a large push over a slow link.
		Handler:           slowbody.Handler(mux, limits.body),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() {
		if cfg.TLSCert != "" {
			serveErr <- srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()
	log.Info("listening", "addr", ln.Addr().String(), "tls", cfg.TLSCert != "")

	built, err := build(ctx, cfg, limits, log, ln.Addr())
	if err != nil {
		_ = srv.Close()
		return err
	}
	defer built.close()
	if limits.metricsListen != "" {
		metricsSrv, err := startMetricsServer(limits.metricsListen, built.metrics, log)
		if err != nil {
			_ = srv.Close()
			return err
		}
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			metricsSrv.stop(stopCtx)
		}()
	}
	bgCtx, stopBackground := context.WithCancel(context.Background())
	background := built.start(bgCtx, log)
	defer func() {
		// Background work (the build manager) stops after the listener, so
		// that running workers are stopped and their attempts recorded.
		stopBackground()
		background.Wait()
	}()
	handler := built.handler
	app.Store(&handler)
	log.Info("ready", "data_dir", cfg.DataDir, "database", built.store.Dialect())

	select {
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
	case <-ctx.Done():
		log.Info("shutting down")
		// Running builds stop at once (their attempts are recorded and
		// retried after the restart) while HTTP requests drain.
		stopBackground()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			log.Warn("shutdown incomplete", "err", err)
		}
	}
	return nil
}

// application is what serve runs: the HTTP handler, work that runs beside
// it, and what to release at the end (in reverse order).
type application struct {
	store   store.Store
	handler http.Handler
	// metrics serves the Prometheus metrics, unauthenticated: mounted on
	// the main listener behind superuserMetrics, or alone on
	// METRICS_LISTEN.
	metrics    http.Handler
	background []func(ctx context.Context) error
	closers    []func()
}

// start runs the background work until ctx ends.
func (a *application) start(ctx context.Context, log *slog.Logger) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, run := range a.background {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				log.Error("background service stopped", "err", err)
			}
		}()
	}
	return &wg
}

func (a *application) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// restrictDataDir takes group and other access away from the data
// directory: it holds the database, keys and blobs, and `mkdir` or an
// installer may have made it 0755 before the first start. A directory
// berth may not change (owned by another user) is used as it is, with a
// warning.
func restrictDataDir(dir string, log *slog.Logger) {
	info, err := os.Stat(dir)
	if err == nil && info.Mode().Perm()&0o077 == 0 {
		return
	}
	if err == nil {
		err = os.Chmod(dir, info.Mode().Perm()&0o700)
	}
	if err != nil {
		log.Warn("data directory left readable by others", "dir", dir, "err", err)
		return
	}
	log.Info("data directory restricted to its owner", "dir", dir, "was", info.Mode().Perm().String())
}

// revocationSyncInterval is how often serve loads the credential epochs
// other servers on the same database raised: the longest a registry token
// or a cached login revoked there still works here.
const revocationSyncInterval = 2 * time.Second

// build opens the state and composes the HTTP application. listenAddr is
// the server's own listener, which local build workers use to reach the
// registry.
func build(ctx context.Context, cfg *config.Config, limits serveLimits, log *slog.Logger, listenAddr net.Addr) (_ *application, err error) {
	app := &application{}
	defer func() {
		if err != nil {
			app.close()
		}
	}()
	st, err := sqlstore.Open(ctx, cfg.DatabaseURI())
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	app.store = st
	app.closers = append(app.closers, func() { st.Close() })
	blobs, err := openStorage(ctx, cfg, "")
	if err != nil {
		return nil, err
	}
	// Build data (log archives, uploaded contexts) has a namespace of its
	// own, so that registry garbage collection can never take it for
	// unreferenced blobs; what was archived among the registry's blobs
	// before stays readable there.
	buildBlobs, err := openStorage(ctx, cfg, buildDataNamespace)
	if err != nil {
		return nil, err
	}
	buildData := storage.WithFallbackReads(buildBlobs, blobs)
	// Build data is written and committed in one go: staged bytes a day old
	// were cut off by a crash.
	app.background = append(app.background, func(ctx context.Context) error {
		purgeStagedBuildData(ctx, buildBlobs, log)
		return nil
	})
	if err := bootstrapAdmin(ctx, st, cfg, log); err != nil {
		return nil, err
	}
	key, err := auth.LoadOrCreateKey(cfg.TokenSigningKeyPath())
	if err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	secrets, err := api.LoadSecrets(cfg)
	if err != nil {
		return nil, err
	}
	external := cfg.ExternalURL
	policy := &auth.Policy{Store: st, SuperUsers: cfg.SuperUsers}
	authenticator := auth.NewAuthenticator(st)
	authenticator.Secrets = secrets
	authenticator.RobotsDisallowed = api.RobotsDisallowed(cfg)
	tokens := auth.NewTokenService(key, cfg.TokenLifetime)
	// Revocations live in the database: load them before serving, so a
	// restart does not revive a token revoked before it, and keep loading
	// what other servers on the same database revoke.
	tokens.Revoker.Store = st
	if err := tokens.Revoker.Sync(ctx); err != nil {
		return nil, err
	}
	authenticator.Revoker = tokens.Revoker
	app.background = append(app.background, func(ctx context.Context) error {
		tokens.Revoker.RunSync(ctx, revocationSyncInterval, log)
		return nil
	})
	authServer := regauth.NewServer(regauth.ServerOptions{
		Policy:        policy,
		Authenticator: authenticator,
		Tokens:        tokens,
		ExternalURL:   external,
		Service: func(r *http.Request) string {
			if cfg.ServerHostname != "" {
				return cfg.ServerHostname
			}
			return r.Host
		},
	})
	reg := registry.New(registry.Options{
		Store:       st,
		Blobs:       blobs,
		Authorizer:  authServer,
		Policy:      policy,
		Logger:      log,
		ExternalURL: external,

		MaxUploadsPerAccount: limits.uploadsPerAccount,
	})
	app.background = append(app.background, func(ctx context.Context) error {
		reg.RunUploadPurge(ctx, registry.DefaultUploadPurgeInterval, registry.DefaultUploadPurgeAge)
		return nil
	})
	outbound, err := outboundPolicy(cfg)
	if err != nil {
		return nil, err
	}
	restAPI := api.New(api.Options{
		Store:          st,
		Policy:         policy,
		Authenticator:  authenticator,
		Revoker:        tokens.Revoker,
		Secrets:        secrets,
		Config:         cfg,
		ExternalURL:    external,
		Logger:         log,
		InvalidateRepo: reg.InvalidateRepository,
		Egress:         outbound,
	})
	forges, err := triggers.ForgesFromConfig(cfg.Raw)
	if err != nil {
		return nil, err
	}
	contextLimits, err := buildmanager.ContextLimitsFromConfig(cfg.Raw)
	if err != nil {
		return nil, err
	}
	contexts := &buildmanager.BlobContextStore{Blobs: buildData, Store: st, MaxBytes: contextLimits.MaxBytes}
	app.background = append(app.background, func(ctx context.Context) error {
		contexts.RunPurge(ctx, buildmanager.DefaultContextPurgeInterval, buildmanager.DefaultContextPurgeGrace, log)
		return nil
	})
	filedropLimits, err := api.FiledropLimitsFromConfig(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := api.AccessTokenLifetime(cfg); err != nil {
		return nil, err
	}
	manager, err := buildManager(ctx, cfg, log, app, st, buildData, contexts, contextLimits, key, policy, tokens, listenAddr,
		manage.GitSource(st, secrets))
	if err != nil {
		return nil, err
	}
	// The upload-URL key only has to agree across servers sharing the
	// database, as the token signing key already does.
	filedropKey := sha256.Sum256(append([]byte("berth-filedrop\x00"), key.Seed()...))
	builds := api.RegisterBuilds(restAPI, api.BuildOptions{Manager: manager, Contexts: contexts, FiledropKey: filedropKey[:],
		Limits: filedropLimits})
	if _, err := api.RegisterTriggers(restAPI, api.TriggerOptions{Manager: manager, Builds: builds, Secrets: secrets, Forges: &forges}); err != nil {
		return nil, err
	}
	hooks := webhook.NewHandler(webhook.Options{Store: st, Manager: manager, Secrets: secrets, Forges: forges,
		ExternalURL: baseURL(cfg, listenAddr), Logger: log, ReplayWindow: limits.webhookReplayWindow})
	app.background = append(app.background, hooks.Run)
	mux := http.NewServeMux()
	mux.Handle("/webhooks/", hooks)
	mux.Handle(api.FiledropPath, builds.FiledropHandler())
	mux.Handle(api.PagePath, builds.PageHandler())
	mux.Handle("/api/", restAPI.Handler())
	mux.Handle("/v2/auth", authServer.TokenHandler())
	mux.Handle("/v2/", reg)
	mux.Handle("/v2", reg)
	app.metrics = promhttp.HandlerFor(manager.Metrics(), promhttp.HandlerOpts{})
	if limits.metricsListen == "" {
		mux.Handle("/metrics", superuserMetrics(app.metrics, authServer, policy, log))
	}
	// Logins are throttled per client address.
	app.handler = logctx.Middleware(auth.SourceHandler(mux))
	return app, nil
}

// buildManager assembles the build manager from BUILD_MANAGER: its queue
// (the embedded Redis-protocol server unless ORCHESTRATOR names a Redis),
// its executors, and how workers reach the registry.
func buildManager(ctx context.Context, cfg *config.Config, log *slog.Logger, app *application,
	st store.Store, blobs storage.Driver, contexts buildmanager.ContextStore, contextLimits buildmanager.ContextLimits,
	key ed25519.PrivateKey, policy *auth.Policy, tokens *auth.TokenService, listenAddr net.Addr,
	gitSource buildmanager.GitSourceFunc) (*buildmanager.Manager, error) {
	bc, err := buildmanager.ParseConfig(cfg.Raw["BUILD_MANAGER"])
	if err != nil {
		return nil, fmt.Errorf("BUILD_MANAGER: %w", err)
	}
	var rdb redis.UniversalClient
	var logDir string
	if bc.Redis == nil {
		embedded, err := queue.StartEmbedded()
		if err != nil {
			return nil, err
		}
		app.closers = append(app.closers, embedded.Close)
		rdb = embedded.Client()
		// The embedded Redis lives in this process's memory: live build
		// logs go to files instead, which also outlive a restart.
		logDir = filepath.Join(cfg.DataDir, "buildlogs")
	} else {
		client, err := bc.Redis.Dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("BUILD_MANAGER redis: %w", err)
		}
		rdb = client
	}
	app.closers = append(app.closers, func() { rdb.Close() })

	deps, err := executorDeps(cfg, bc, log)
	if err != nil {
		return nil, err
	}
	var execs []buildmanager.Executor
	for _, ec := range bc.Executors {
		ex, err := executors.New(ctx, ec.Kind, ec.Name, ec.Params, deps)
		if err != nil {
			return nil, fmt.Errorf("executor %s: %w", ec.Name, err)
		}
		if c, ok := ex.(executors.Closer); ok {
			app.closers = append(app.closers, func() {
				closeCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				_ = c.Close(closeCtx)
			})
		}
		execs = append(execs, buildmanager.Executor{Executor: ex, SetupTime: ec.SetupTime, MinimumRetryThreshold: ec.MinimumRetryThreshold, Engine: ec.Engine})
	}

	target := registryTarget(cfg, listenAddr)
	service := cfg.ServerHostname
	if service == "" {
		service = target.Addr
	}
	m, err := buildmanager.New(buildmanager.Options{
		Store:                 st,
		Blobs:                 blobs,
		Contexts:              contexts,
		Redis:                 rdb,
		LogDir:                logDir,
		LogLimits:             bc.LogLimits,
		Prefix:                bc.OrchestratorPrefix,
		Executors:             execs,
		SigningKey:            key,
		AllowedWorkerCount:    bc.AllowedWorkerCount,
		TimeLimit:             bc.TimeLimit,
		MaxQueuedPerNamespace: bc.MaxQueuedPerNamespace,
		WorkerListen:          bc.WorkerListen,
		MaxContextBytes:       contextLimits.MaxBytes,
		MaxUnpackedBytes:      contextLimits.MaxUnpackedBytes,
		MaxCompressionRatio:   contextLimits.MaxCompressionRatio,
		Registry:              target,
		Credentials:           &buildmanager.BuildCredentials{Tokens: tokens, Policy: policy, Service: service, Registry: target.Addr},
		GitSource:             gitSource,
		Logger:                log,
	})
	if err != nil {
		return nil, err
	}
	app.background = append(app.background, m.Run)
	return m, nil
}

// executorDeps is what every executor gets from the server: its workers'
// environment (the outbound network policy, the sandbox's network
// exceptions) and how many may run at once.
func executorDeps(cfg *config.Config, bc *buildmanager.Config, log *slog.Logger) (executors.Deps, error) {
	outbound, err := outboundPolicy(cfg)
	if err != nil {
		return executors.Deps{}, err
	}
	env := outbound.Env()
	if err := buildNetworksEnv(cfg, env); err != nil {
		return executors.Deps{}, err
	}
	return executors.Deps{DataDir: cfg.DataDir, WorkerEnv: env, MaxWorkers: bc.AllowedWorkerCount, Logger: log}, nil
}

// baseURL is berth's address for links sent elsewhere (commit statuses):
// SERVER_HOSTNAME when set, else this machine's listener (no request is at
// hand to take a Host from).
func baseURL(cfg *config.Config, listenAddr net.Addr) string {
	return cfg.ExternalScheme() + "://" + registryTarget(cfg, listenAddr).Addr
}

// registryTarget is how a local worker reaches this server's registry:
// SERVER_HOSTNAME when set, else the listener on loopback.
func registryTarget(cfg *config.Config, listenAddr net.Addr) buildmanager.RegistryTarget {
	t := buildmanager.RegistryTarget{Insecure: cfg.TLSCert == ""}
	if cfg.ServerHostname != "" {
		t.Addr = cfg.ServerHostname
	} else if tcp, ok := listenAddr.(*net.TCPAddr); ok {
		t.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp.Port))
	} else {
		t.Addr = listenAddr.String()
	}
	if cfg.TLSCert != "" {
		// A self-signed certificate is its own CA.
		if pem, err := os.ReadFile(cfg.TLSCert); err == nil {
			t.CAPEM = string(pem)
		}
	}
	return t
}

// buildDataNamespace is where, inside the configured storage, the build
// manager keeps its blobs: apart from the registry's.
const buildDataNamespace = "builds"

// openStorage opens the configured storage, or the part of it named
// namespace ("" for the registry's blobs).
func openStorage(ctx context.Context, cfg *config.Config, namespace string) (storage.Driver, error) {
	name, params, err := cfg.StorageDriver()
	if err != nil {
		return nil, err
	}
	return storage.Open(ctx, name, params, namespace)
}

// bootstrapAdmin creates the superuser named by BERTH_ADMIN_USER, once.
func bootstrapAdmin(ctx context.Context, st store.Store, cfg *config.Config, log *slog.Logger) error {
	name, password := os.Getenv("BERTH_ADMIN_USER"), os.Getenv("BERTH_ADMIN_PASSWORD")
	if name == "" {
		return nil
	}
	if password == "" {
		return errors.New("BERTH_ADMIN_USER is set but BERTH_ADMIN_PASSWORD is empty")
	}
	if _, err := st.GetAccountByName(ctx, name); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	hash, err := auth.HashPassword(password)
	if err != nil {
		return err
	}
	err = st.CreateAccount(ctx, &store.Account{Kind: store.KindUser, Name: name, PasswordHash: hash, Superuser: true, Enabled: true})
	if errors.Is(err, store.ErrConflict) {
		return nil // another instance created it at the same moment
	}
	if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	log.Info("superuser created", "user", name)
	return nil
}

// purgeStagedBuildData discards build-data uploads a crash left staged, at
// start and then every hour, until ctx ends.
func purgeStagedBuildData(ctx context.Context, d storage.Driver, log *slog.Logger) {
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		if n, err := storage.AbortStagedBefore(ctx, d, time.Now().Add(-24*time.Hour)); err != nil {
			log.WarnContext(ctx, "purging staged build data failed", "err", err)
		} else if n > 0 {
			log.InfoContext(ctx, "purged staged build data a crash left", "uploads", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
