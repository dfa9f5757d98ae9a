// Package worker is berth's build agent (`berth worker`): it registers with
// the build manager over gRPC, fetches and unpacks the build context, checks
// the Dockerfile, runs a build engine, streams the log and phases back, and
// ends with exactly one Finish carrying the pushed digests or a structured
// error. It never fails silently: whatever goes wrong after registering is
// reported with a code, a message and whether another attempt could help.
package worker

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/dockerfile"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/worker/buildcontext"
	"github.com/berth-dev/berth/worker/engine"
)

// Config is how a worker finds its manager and where it works.
type Config struct {
	// ManagerAddr is the build manager's gRPC address (host:port).
	ManagerAddr string
	// RegistrationToken is the short-lived token the executor gave.
	RegistrationToken string
	// Insecure dials the manager over plain-text gRPC.
	Insecure bool
	// CAPEM is a private CA for the manager's TLS certificate (nil: the
	// system roots).
	CAPEM []byte
	// WorkDir holds the source and the engine's scratch files; StorageRoot
	// the engine's image storage. Both belong to this build alone.
	WorkDir     string
	StorageRoot string
	// Engines by name; nil: one of each engine pb.EnginesEnv names,
	// or of each the binary carries when it is unset (engine.Make), given
	// the worker's environment.
	Engines map[string]engine.Engine
	// Egress is the outbound network policy for the job's source: its
	// archive_url and git servers (nil: public addresses only).
	Egress *egress.Policy
	// HTTPClient fetches archive_url sources (nil: Egress's client).
	HTTPClient *http.Client
	// Logger receives the worker's own diagnostics (nil: slog.Default()).
	Logger *slog.Logger
	// WorkerInfo describes the worker to the manager.
	WorkerInfo string
	// HeartbeatInterval (default 2 s) and ManagerTimeout (default 8 s):
	// the worker gives up when no heartbeat succeeded for ManagerTimeout,
	// which leaves time to stop the build and exit within 10 s.
	HeartbeatInterval time.Duration
	ManagerTimeout    time.Duration
}

// Errors Run returns when the job ended without a Finish.
var (
	// ErrStopped: the manager said to stop (the build was cancelled or
	// given to another worker).
	ErrStopped = errors.New("worker: the build manager stopped the build")
	// ErrManagerLost: no heartbeat succeeded for Config.ManagerTimeout.
	ErrManagerLost = errors.New("worker: lost the build manager")
)

func (c *Config) defaults() {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 2 * time.Second
	}
	if c.ManagerTimeout <= 0 {
		c.ManagerTimeout = 8 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.HTTPClient == nil {
		c.HTTPClient = c.Egress.HTTPClient()
	}
}

// makeEngines fills Engines when the caller left it nil.
func (c *Config) makeEngines() error {
	if c.Engines != nil {
		return nil
	}
	var names []string
	for n := range strings.SplitSeq(os.Getenv(pb.EnginesEnv), ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	all, err := engine.Make(engine.Options{Logger: c.Logger, Getenv: os.Getenv}, names)
	if errors.Is(err, engine.ErrUnknown) {
		return fmt.Errorf("worker: %s: %w", pb.EnginesEnv, err)
	}
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	c.Engines = all
	return nil
}

// Check is `berth worker --check`: the check of every engine the worker
// makes (Config.Engines) that has one (engine.Checker) that this machine can build as the engine must, run
// where a build would run, in scratch space dir.
func Check(ctx context.Context, cfg Config, dir string) error {
	cfg.defaults()
	if err := cfg.makeEngines(); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Engines)) {
		if c, ok := cfg.Engines[name].(engine.Checker); ok {
			if err := c.Check(ctx, dir); err != nil {
				return fmt.Errorf("worker check: %w", err)
			}
		}
	}
	return nil
}

// dial connects to the manager as cfg says.
func dial(cfg Config) (*grpc.ClientConn, error) {
	var creds credentials.TransportCredentials
	if cfg.Insecure {
		creds = insecure.NewCredentials()
	} else {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if len(cfg.CAPEM) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(cfg.CAPEM) {
				return nil, errors.New("worker: the manager CA holds no PEM certificate")
			}
			tc.RootCAs = pool
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(cfg.ManagerAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("worker: dial %s: %w", cfg.ManagerAddr, err)
	}
	return conn, nil
}

// Run registers with the manager and carries out the one job it gets. It
// returns nil once the job's result (success or failure) was delivered with
// Finish, ErrStopped or ErrManagerLost when the job ended without one, and
// another error when registering or delivering failed.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	if err := cfg.makeEngines(); err != nil {
		return err
	}
	if cfg.ManagerAddr == "" || cfg.RegistrationToken == "" {
		return errors.New("worker: the manager address and the registration token are required")
	}
	if cfg.WorkDir == "" || cfg.StorageRoot == "" {
		return errors.New("worker: the work directory and the storage root are required")
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return fmt.Errorf("worker: create work dir: %w", err)
	}
	conn, err := dial(cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := pb.NewBuildManagerClient(conn)
	job, err := register(ctx, client, cfg)
	if err != nil {
		return err
	}
	w := &jobRun{cfg: cfg, client: client, job: job, logger: cfg.Logger.With("build_id", job.GetBuildId())}
	return w.run(ctx)
}

// register calls Register, retrying while the manager is unreachable (it
// may still be starting) for at most ManagerTimeout.
func register(ctx context.Context, client pb.BuildManagerClient, cfg Config) (*pb.Job, error) {
	deadline := time.Now().Add(cfg.ManagerTimeout)
	info := cfg.WorkerInfo
	if info == "" {
		host, _ := os.Hostname()
		info = fmt.Sprintf("berth worker on %s, uid %d", host, os.Getuid())
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, cfg.ManagerTimeout)
		job, err := client.Register(rctx, &pb.RegisterRequest{RegistrationToken: cfg.RegistrationToken, WorkerInfo: info})
		cancel()
		if err == nil {
			return job, nil
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("worker: register: %w", err)
		}
		cfg.Logger.Warn("manager unavailable; retrying registration", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// jobRun is one registered job.
type jobRun struct {
	cfg    Config
	client pb.BuildManagerClient
	job    *pb.Job
	logger *slog.Logger
	log    *logStream

	phaseMu  sync.Mutex
	phaseSeq int64
}

func (j *jobRun) run(ctx context.Context) error {
	token := j.job.GetJobToken()
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLog()
	j.log = newLogStream(j.client, token, j.logger)
	go j.log.run(logCtx)

	jobCtx, cancelJob := context.WithCancelCause(ctx)
	defer cancelJob(nil)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		j.heartbeat(jobCtx, cancelJob)
	}()

	result, buildErr := j.build(jobCtx)

	cause := context.Cause(jobCtx)
	if cause == nil && errors.Is(buildErr, ErrStopped) {
		// SetPhase was refused: the build is over for this worker.
		cause = buildErr
	}
	cancelJob(nil)
	<-hbDone
	if errors.Is(cause, ErrStopped) || errors.Is(cause, ErrManagerLost) {
		j.logger.Warn("job ended without a result", "cause", cause)
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, _ = j.log.close(closeCtx)
		cancel()
		return cause
	}
	req := &pb.FinishRequest{JobToken: token}
	if buildErr == nil {
		req.Result = &pb.FinishRequest_Success{Success: &pb.Success{Digests: result}}
		j.logger.Info("build complete", "digests", result)
	} else {
		be := classify(ctx, buildErr)
		j.logger.Warn("build failed", "code", be.Code, "retryable", be.Retryable, "err", buildErr)
		// The manager writes the error entry from this result (it also ends
		// builds whose worker is gone), so the worker does not add one.
		req.Result = &pb.FinishRequest_Error{Error: be}
	}
	// Every entry is stored before the result: the manager shows the whole
	// log before the terminal phase.
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	last, err := j.log.close(closeCtx)
	cancel()
	if err != nil {
		j.logger.Warn("log not fully acknowledged before finishing", "err", err)
	}
	req.LastLogSequence = last
	return j.finish(context.WithoutCancel(ctx), req)
}

// finish delivers the result, retrying while the manager is unreachable.
func (j *jobRun) finish(ctx context.Context, req *pb.FinishRequest) error {
	deadline := time.Now().Add(j.cfg.ManagerTimeout)
	for {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := j.client.Finish(fctx, req)
		cancel()
		if err == nil {
			return nil
		}
		c := status.Code(err)
		if (c != codes.Unavailable && c != codes.DeadlineExceeded) || time.Now().After(deadline) {
			return fmt.Errorf("worker: finish: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("worker: finish: %w (last try: %w)", ctx.Err(), err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// heartbeat renews the lease until ctx ends, ending the job when the
// manager says stop or cannot be reached for ManagerTimeout.
func (j *jobRun) heartbeat(ctx context.Context, cancelJob context.CancelCauseFunc) {
	t := time.NewTicker(j.cfg.HeartbeatInterval)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A hanging call must not stretch the time to notice a lost
		// manager beyond ManagerTimeout.
		left := j.cfg.ManagerTimeout - time.Since(lastOK)
		if left <= 0 {
			cancelJob(ErrManagerLost)
			return
		}
		hctx, cancel := context.WithTimeout(ctx, min(left, 5*time.Second))
		resp, err := j.client.Heartbeat(hctx, &pb.HeartbeatRequest{JobToken: j.job.GetJobToken()})
		cancel()
		switch {
		case err == nil && resp.GetStop():
			cancelJob(ErrStopped)
			return
		case err == nil:
			lastOK = time.Now()
		case ctx.Err() != nil:
			return
		case isFinal(err):
			// The manager no longer knows the job (its token expired or the
			// build ended): nobody will take a result.
			cancelJob(fmt.Errorf("%w: %v", ErrStopped, err))
			return
		default:
			j.logger.Warn("heartbeat failed", "err", err)
			if time.Since(lastOK) >= j.cfg.ManagerTimeout {
				cancelJob(ErrManagerLost)
				return
			}
		}
	}
}

// isFinal reports whether a gRPC error means the manager will never
// accept this job's calls again.
func isFinal(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.FailedPrecondition, codes.NotFound, codes.PermissionDenied:
		return true
	}
	return false
}

// setPhase reports a phase, ending the job when the manager refuses it.
func (j *jobRun) setPhase(ctx context.Context, p pb.Phase, meta *pb.PullMetadata) error {
	j.phaseMu.Lock()
	j.phaseSeq++
	seq := j.phaseSeq
	j.phaseMu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, j.cfg.ManagerTimeout)
	defer cancel()
	resp, err := j.client.SetPhase(pctx, &pb.SetPhaseRequest{JobToken: j.job.GetJobToken(), SequenceNumber: seq, Phase: p, PullMetadata: meta})
	if err != nil {
		if isFinal(err) {
			return fmt.Errorf("%w: %v", ErrStopped, err)
		}
		return fmt.Errorf("set phase %s: %w", p, err)
	}
	if !resp.GetAccepted() {
		return ErrStopped
	}
	return nil
}

// build does the job's work and returns the digests per tag.
func (j *jobRun) build(ctx context.Context) (map[string]string, error) {
	job := j.job
	if t := job.GetTimeoutSeconds(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, time.Duration(t)*time.Second,
			engine.Errorf(engine.CodeTimeout, "the build exceeded its time limit of %s", time.Duration(t)*time.Second))
		defer cancel()
	}
	if err := j.setPhase(ctx, pb.Phase_PHASE_UNPACKING, nil); err != nil {
		return nil, err
	}
	src := filepath.Join(j.cfg.WorkDir, "src")
	if err := j.fetchAndUnpack(ctx, src); err != nil {
		return nil, withCause(ctx, err)
	}
	contextDir, dfPath, err := buildcontext.Resolve(src, job.GetContext(), job.GetDockerfilePath())
	if err != nil {
		return nil, err
	}
	content, err := os.ReadFile(dfPath)
	if err != nil {
		return nil, fmt.Errorf("read Dockerfile: %w", err)
	}
	info, err := dockerfile.Parse(content, job.GetBuildArgs(), job.GetTarget())
	if err != nil {
		return nil, err
	}
	name := cmp.Or(job.GetEngine(), pb.DefaultEngine)
	eng, ok := j.cfg.Engines[name]
	if !ok {
		return nil, notRetryablef("this worker has no %q build engine", name)
	}
	tags := make([]string, 0, len(job.GetTags()))
	short := map[string]string{}
	for _, t := range job.GetTags() {
		full := job.GetRegistry() + "/" + job.GetRepository() + ":" + t
		tags = append(tags, full)
		short[full] = t
	}
	if len(tags) == 0 {
		return nil, notRetryablef("the job names no tags")
	}
	bases, err := registryRepositories(job.GetRegistry(), info.BaseImages)
	if err != nil {
		return nil, err
	}
	login := newRegistryLogin(j.client, job.GetJobToken(), bases, j.cfg.ManagerTimeout, j.logger)
	creds, err := login.current(ctx)
	if err != nil {
		return nil, withCause(ctx, err)
	}
	req := engine.Request{
		ContextDir:     contextDir,
		DockerfilePath: dfPath,
		Tags:           tags,
		BuildArgs:      job.GetBuildArgs(),
		Target:         job.GetTarget(),
		NoCache:        job.GetNoCache(),
		Labels:         job.GetLabels(),
		Registry: engine.Registry{
			Host:        job.GetRegistry(),
			Username:    creds.GetUsername(),
			Password:    creds.GetPassword(),
			Insecure:    job.GetRegistryInsecure(),
			CAPEM:       []byte(job.GetRegistryCaPem()),
			PullRobot:   job.GetPullRobot(),
			Credentials: login.credentials,
		},
		StorageRoot: j.cfg.StorageRoot,
		RunRoot:     filepath.Join(j.cfg.WorkDir, "runroot"),
		WorkDir:     filepath.Join(j.cfg.WorkDir, "engine"),
		BaseImages:  info.BaseImages,
		OnPhase: func(ctx context.Context, p engine.Phase) error {
			var pp pb.Phase
			var meta *pb.PullMetadata
			switch p {
			case engine.PhasePulling:
				pp = pb.Phase_PHASE_PULLING
				meta = &pb.PullMetadata{RegistryUrl: job.GetRegistry(), PullUsername: creds.GetUsername()}
				if len(info.BaseImages) > 0 {
					meta.BaseImage, meta.BaseImageTag = dockerfile.SplitRef(info.BaseImages[0])
				}
			case engine.PhaseBuilding:
				pp = pb.Phase_PHASE_BUILDING
			case engine.PhasePushing:
				pp = pb.Phase_PHASE_PUSHING
			default:
				return nil
			}
			// The manager writes the phase entry into the log itself.
			return j.setPhase(ctx, pp, meta)
		},
	}
	if err := os.MkdirAll(req.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("create engine work dir: %w", err)
	}
	res, err := eng.Build(ctx, req, j.log)
	if err != nil {
		return nil, withCause(ctx, err)
	}
	digests := map[string]string{}
	for full, d := range res.Digests {
		if t, ok := short[full]; ok {
			digests[t] = d
		}
	}
	for _, t := range job.GetTags() {
		if digests[t] == "" {
			return nil, fmt.Errorf("the engine reported no digest for tag %s", t)
		}
	}
	return digests, nil
}

// withCause replaces a cancellation error with the reason the worker
// cancelled (a time limit, a stop from the manager).
func withCause(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) && !errors.Is(c, context.DeadlineExceeded) {
		return c
	}
	return err
}

// notRetryable is a failure that is not the user's but would fail the same
// way on another attempt (a job this worker cannot run); its reason is what
// the build shows.
type notRetryable struct{ reason string }

func (e *notRetryable) Error() string { return "not retryable: " + e.reason }

func notRetryablef(format string, args ...any) error {
	return &notRetryable{reason: fmt.Sprintf(format, args...)}
}

// classify turns a failure into the structured error Finish carries.
func classify(parent context.Context, err error) *pb.BuildError {
	if ue, ok := engine.AsUserError(err); ok {
		return &pb.BuildError{Code: ue.Code, Message: ue.Message, Retryable: false}
	}
	var nr *notRetryable
	if errors.As(err, &nr) {
		return &pb.BuildError{Code: "internal", Message: nr.reason, Retryable: false}
	}
	if parent.Err() != nil {
		return &pb.BuildError{Code: "internal", Message: "the worker was interrupted", Retryable: true}
	}
	return &pb.BuildError{Code: "internal", Message: "the build failed for a reason outside it (another attempt may succeed): " + err.Error(), Retryable: true}
}
