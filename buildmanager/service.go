package buildmanager

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/store"
)

// service implements the worker protocol (workerpb.BuildManagerServer).
type service struct {
	workerpb.UnimplementedBuildManagerServer
	m *Manager
}

// current returns the build a job token names if that attempt is still
// the build's running attempt; FAILED_PRECONDITION otherwise.
func (s *service) current(ctx context.Context, typ, token string) (*store.Build, error) {
	id, attempt, err := s.m.tokens.verify(typ, token)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	b, err := s.m.st.GetBuild(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Error(codes.FailedPrecondition, "the build no longer exists")
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if b.Attempts != attempt || !b.Phase.Running() {
		return b, status.Errorf(codes.FailedPrecondition, "the build is %s and no longer runs this attempt", b.Phase)
	}
	return b, nil
}

// renew extends the attempt's lease and wakes its supervisor.
func (s *service) renew(ctx context.Context, b *store.Build) error {
	err := s.m.st.RenewBuildLease(ctx, b.ID, b.Attempts, time.Now().Add(s.m.o.LeaseTimeout))
	if errors.Is(err, store.ErrStale) {
		return status.Error(codes.FailedPrecondition, "the build no longer runs this attempt")
	}
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	return nil
}

func (s *service) Register(ctx context.Context, req *workerpb.RegisterRequest) (*workerpb.Job, error) {
	b, err := s.current(ctx, typRegistration, req.GetRegistrationToken())
	if err != nil {
		return nil, err
	}
	if b.Phase != store.PhaseBuildScheduled {
		return nil, status.Error(codes.FailedPrecondition, "a worker already registered for this attempt")
	}
	if err := s.renew(ctx, b); err != nil {
		return nil, err
	}
	o := s.m.o
	token, err := s.m.tokens.issue(typJob, b.ID, b.Attempts, o.TimeLimit+o.SetupTime+time.Minute)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	r := b.Request
	job := &workerpb.Job{
		JobToken:            token,
		BuildId:             b.ID,
		Context:             r.Context,
		DockerfilePath:      r.DockerfilePath,
		Registry:            o.Registry.Addr,
		Repository:          b.Namespace + "/" + b.Repository,
		Tags:                b.Tags,
		RegistryInsecure:    o.Registry.Insecure,
		RegistryCaPem:       o.Registry.CAPEM,
		BuildArgs:           r.BuildArgs,
		Target:              r.Target,
		NoCache:             r.NoCache,
		Labels:              r.Labels,
		Engine:              s.engine(b),
		TimeoutSeconds:      int64(o.TimeLimit / time.Second),
		PullRobot:           r.PullRobot,
		MaxContextBytes:     o.MaxContextBytes,
		MaxUnpackedBytes:    o.MaxUnpackedBytes,
		MaxEntries:          o.MaxEntries,
		MaxCompressionRatio: o.MaxCompressionRatio,
	}
	if job.Context == "" && r.Subdirectory != "" {
		job.Context = r.Subdirectory
	}
	switch {
	case r.FileID != "":
		job.Source = &workerpb.Job_Upload{Upload: true}
	case r.ArchiveURL != "":
		job.Source = &workerpb.Job_ArchiveUrl{ArchiveUrl: r.ArchiveURL}
	case r.Git != nil:
		g := &workerpb.GitSource{Url: r.Git.URL, CommitSha: r.Git.CommitSHA, Ref: r.Git.Ref}
		if o.GitSource != nil {
			if g, err = o.GitSource(ctx, b); err != nil {
				return nil, status.Errorf(codes.Internal, "git source: %v", err)
			}
		}
		job.Source = &workerpb.Job_Git{Git: g}
	}
	s.m.log.Info("worker registered", "build", b.ID, "attempt", b.Attempts, "worker", req.GetWorkerInfo())
	return job, nil
}

// engine is the build engine of b's attempt: the build's own, else that
// of the executor that started the attempt, else the default.
func (s *service) engine(b *store.Build) string {
	if b.Request.Engine != "" {
		return b.Request.Engine
	}
	for _, e := range s.m.o.Executors {
		if e.Name() == b.ExecutorName && e.Engine != "" {
			return e.Engine
		}
	}
	return workerpb.DefaultEngine
}

func (s *service) IssueRegistryCredentials(ctx context.Context, req *workerpb.RegistryCredentialsRequest) (*workerpb.RegistryCredentials, error) {
	b, err := s.current(ctx, typJob, req.GetJobToken())
	if err != nil {
		return nil, err
	}
	if s.m.o.Credentials == nil {
		return nil, status.Error(codes.FailedPrecondition, "this server issues no registry credentials")
	}
	if n := len(req.GetBaseRepositories()); n > MaxBaseRepositories {
		return nil, status.Errorf(codes.InvalidArgument, "%d base repositories, at most %d", n, MaxBaseRepositories)
	}
	creds, err := s.m.o.Credentials.Issue(ctx, b, req.GetBaseRepositories())
	switch {
	case errors.Is(err, auth.ErrTokenTooLarge):
		return nil, status.Error(codes.InvalidArgument, "the base repositories' names are too long for one registry token")
	case err != nil:
		return nil, status.Errorf(codes.Internal, "registry credentials: %v", err)
	}
	// The token carries the grant's epoch as it was before this check: if
	// the attempt ends after it, its revocation comes later and refuses
	// the token; if it ended before, the token is not handed out.
	if _, err := s.current(ctx, typJob, req.GetJobToken()); err != nil {
		return nil, err
	}
	return creds, nil
}

func (s *service) Heartbeat(ctx context.Context, req *workerpb.HeartbeatRequest) (*workerpb.HeartbeatResponse, error) {
	b, err := s.current(ctx, typJob, req.GetJobToken())
	if status.Code(err) == codes.FailedPrecondition {
		return &workerpb.HeartbeatResponse{Stop: true}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.renew(ctx, b); status.Code(err) == codes.FailedPrecondition {
		return &workerpb.HeartbeatResponse{Stop: true}, nil
	} else if err != nil {
		return nil, err
	}
	return &workerpb.HeartbeatResponse{}, nil
}

// phaseSeqScript stores a phase sequence number only if it grows.
var phaseSeqScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
`)

var workerPhases = map[workerpb.Phase]store.BuildPhase{
	workerpb.Phase_PHASE_UNPACKING: store.PhaseUnpacking,
	workerpb.Phase_PHASE_PULLING:   store.PhasePulling,
	workerpb.Phase_PHASE_BUILDING:  store.PhaseBuilding,
	workerpb.Phase_PHASE_PUSHING:   store.PhasePushing,
}

func (s *service) SetPhase(ctx context.Context, req *workerpb.SetPhaseRequest) (*workerpb.SetPhaseResponse, error) {
	phase, ok := workerPhases[req.GetPhase()]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "unknown phase %v", req.GetPhase())
	}
	for {
		b, err := s.current(ctx, typJob, req.GetJobToken())
		if status.Code(err) == codes.FailedPrecondition {
			return &workerpb.SetPhaseResponse{Accepted: false}, nil
		}
		if err != nil {
			return nil, err
		}
		key := s.m.o.Prefix + "buildphase:{" + b.ID + "}:" + itoa(b.Attempts)
		fresh, err := phaseSeqScript.Run(ctx, s.m.o.Redis, []string{key}, req.GetSequenceNumber(), int((24 * time.Hour).Seconds())).Int()
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		if fresh == 0 {
			// A repeat or a late, out-of-order call: already handled.
			return &workerpb.SetPhaseResponse{Accepted: true}, nil
		}
		if b.Phase == phase {
			return &workerpb.SetPhaseResponse{Accepted: true}, s.renew(ctx, b)
		}
		b.Phase, b.LeaseExpiry = phase, time.Now().Add(s.m.o.LeaseTimeout)
		err = s.m.st.UpdateBuild(ctx, b)
		if errors.Is(err, store.ErrStale) {
			// A heartbeat does not bump the version; something else
			// changed the build. Let the sequence number through again.
			if err := s.m.o.Redis.Del(ctx, key).Err(); err != nil {
				return nil, status.Error(codes.Unavailable, err.Error())
			}
			continue
		}
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		e := newEntry(LogPhase, string(phase), time.Now())
		if pm := req.GetPullMetadata(); pm != nil {
			e.Data["registry_url"], e.Data["base_image"] = pm.GetRegistryUrl(), pm.GetBaseImage()
			e.Data["base_image_tag"], e.Data["pull_username"] = pm.GetBaseImageTag(), pm.GetPullUsername()
		}
		if err := s.m.logs.append(ctx, b.ID, e); err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		if phase == store.PhaseBuilding {
			s.m.publish(b, events.BuildStart, "")
		}
		return &workerpb.SetPhaseResponse{Accepted: true}, nil
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

var logTypes = map[workerpb.LogType]string{
	workerpb.LogType_LOG_TYPE_COMMAND: LogCommand,
	workerpb.LogType_LOG_TYPE_ERROR:   LogError,
	workerpb.LogType_LOG_TYPE_PHASE:   LogPhase,
}

func (s *service) StreamLog(stream grpc.BidiStreamingServer[workerpb.LogBatch, workerpb.LogAck]) error {
	ctx := stream.Context()
	for {
		batch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		b, err := s.current(ctx, typJob, batch.GetJobToken())
		if err != nil {
			return err
		}
		seqs := make([]int64, 0, len(batch.GetEntries()))
		entries := make([]LogEntry, 0, len(batch.GetEntries()))
		for _, e := range batch.GetEntries() {
			at := time.Now()
			if e.GetTimeUnixNano() > 0 {
				at = time.Unix(0, e.GetTimeUnixNano())
			}
			seqs = append(seqs, e.GetSequenceNumber())
			entries = append(entries, newEntry(logTypes[e.GetType()], e.GetMessage(), at))
		}
		stored, err := s.m.logs.appendSeq(ctx, b.ID, seqs, entries)
		if err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		// Log lines are a sign of life too.
		if err := s.renew(ctx, b); err != nil {
			return err
		}
		if err := stream.Send(&workerpb.LogAck{SequenceNumber: stored}); err != nil {
			return err
		}
	}
}

// contextChunk is the size of FetchContext messages.
const contextChunk = 256 << 10

func (s *service) FetchContext(req *workerpb.FetchContextRequest, stream grpc.ServerStreamingServer[workerpb.ContextChunk]) error {
	ctx := stream.Context()
	b, err := s.current(ctx, typJob, req.GetJobToken())
	if err != nil {
		return err
	}
	if b.Request.FileID == "" {
		return status.Error(codes.FailedPrecondition, "the build has no uploaded context")
	}
	rc, _, err := s.m.o.Contexts.Open(ctx, b.Request.FileID)
	if errors.Is(err, store.ErrNotFound) {
		return status.Error(codes.NotFound, "the uploaded build context no longer exists")
	}
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	defer rc.Close()
	buf := make([]byte, contextChunk)
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			if serr := stream.Send(&workerpb.ContextChunk{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
	}
}

// logWait bounds how long Finish waits for the worker's last log lines.
const logWait = 5 * time.Second

// awaitLogs waits up to logWait until the build's stored log reaches the
// worker's last sequence number, so every line the worker sent is stored
// before the phase ends. A worker that hangs up stops the wait: the build is
// then ended as one whose worker is gone.
func (s *service) awaitLogs(ctx context.Context, buildID string, want int64) error {
	if want <= 0 {
		return nil
	}
	deadline := time.Now().Add(logWait)
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		got, err := s.m.logs.storedSeq(ctx, buildID)
		if err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Error(codes.Unavailable, err.Error())
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			s.m.log.Warn("worker finished before its last log lines arrived", "build", buildID, "stored", got, "sent", want)
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-poll.C:
		}
	}
}

func (s *service) Finish(ctx context.Context, req *workerpb.FinishRequest) (*workerpb.FinishResponse, error) {
	b, err := s.current(ctx, typJob, req.GetJobToken())
	if err != nil {
		return nil, err
	}
	if err := s.awaitLogs(ctx, b.ID, req.GetLastLogSequence()); err != nil {
		return nil, err
	}
	switch r := req.GetResult().(type) {
	case *workerpb.FinishRequest_Success:
		err = s.m.end(ctx, b, store.PhaseComplete, "", r.Success.GetDigests())
	case *workerpb.FinishRequest_Error:
		e := r.Error
		msg := e.GetMessage()
		if msg == "" {
			msg = "the build failed (" + e.GetCode() + ")"
		}
		if e.GetRetryable() {
			err = s.m.failAttempt(ctx, b.ID, b.Attempts, msg)
			if errors.Is(err, errRetry) {
				err = nil
			}
		} else {
			err = s.m.end(ctx, b, store.PhaseError, msg, nil)
		}
	default:
		return nil, status.Error(codes.InvalidArgument, "finish without a result")
	}
	if errors.Is(err, store.ErrStale) {
		return nil, status.Error(codes.FailedPrecondition, "the build changed while finishing (cancelled?)")
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &workerpb.FinishResponse{}, nil
}
