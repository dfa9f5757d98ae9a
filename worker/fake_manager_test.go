package worker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
)

// fakeManager is an in-process build manager serving one job over a real
// loopback gRPC listener, recording what the worker reports.
type fakeManager struct {
	pb.UnimplementedBuildManagerServer

	token   string // registration token it accepts
	job     *pb.Job
	context []byte // served by FetchContext
	// creds are handed out by IssueRegistryCredentials (default: a robot
	// login for the job's registry, living 15 minutes).
	creds *pb.RegistryCredentials

	stop atomic.Bool // answer heartbeats with stop
	// breakLogs is how many log streams to break (after storing a batch,
	// before acknowledging it).
	breakLogs atomic.Int32
	// failFetch, when set, ends FetchContext with that code after the
	// first chunk.
	failFetch codes.Code

	mu           sync.Mutex
	phases       []pb.Phase
	phaseSeqs    []int64
	pullMeta     *pb.PullMetadata
	logs         map[int64]*pb.LogEntry
	batches      int
	heartbeats   int
	credRequests [][]string // base repositories of each credentials request
	finish       *pb.FinishRequest
	logsAtFinish int

	finished chan struct{}
	addr     string
	server   *grpc.Server
}

func newFakeManager(t *testing.T, job *pb.Job, ctxBytes []byte) *fakeManager {
	t.Helper()
	m := &fakeManager{token: "reg-token", job: job, context: ctxBytes, logs: map[int64]*pb.LogEntry{}, finished: make(chan struct{}),
		creds: &pb.RegistryCredentials{Registry: job.GetRegistry(), Username: "myorg+builder", Password: "pw", ExpiresInSeconds: 900}}
	if job.JobToken == "" {
		job.JobToken = "job-token"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = l.Addr().String()
	m.server = grpc.NewServer()
	pb.RegisterBuildManagerServer(m.server, m)
	go func() { _ = m.server.Serve(l) }()
	t.Cleanup(m.server.Stop)
	return m
}

func (m *fakeManager) config(t *testing.T) Config {
	dir := t.TempDir()
	return Config{ManagerAddr: m.addr, RegistrationToken: m.token, Insecure: true, WorkDir: dir + "/work", StorageRoot: dir + "/storage",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Egress: loopbackEgress}
}

func (m *fakeManager) checkToken(tok string) error {
	if tok != m.job.JobToken {
		return status.Error(codes.Unauthenticated, "bad job token")
	}
	return nil
}

func (m *fakeManager) Register(_ context.Context, r *pb.RegisterRequest) (*pb.Job, error) {
	if r.GetRegistrationToken() != m.token {
		return nil, status.Error(codes.Unauthenticated, "bad registration token")
	}
	return m.job, nil
}

func (m *fakeManager) Heartbeat(_ context.Context, r *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	if err := m.checkToken(r.GetJobToken()); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.heartbeats++
	m.mu.Unlock()
	return &pb.HeartbeatResponse{Stop: m.stop.Load()}, nil
}

func (m *fakeManager) SetPhase(_ context.Context, r *pb.SetPhaseRequest) (*pb.SetPhaseResponse, error) {
	if err := m.checkToken(r.GetJobToken()); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phases = append(m.phases, r.GetPhase())
	m.phaseSeqs = append(m.phaseSeqs, r.GetSequenceNumber())
	if r.GetPullMetadata() != nil {
		m.pullMeta = r.GetPullMetadata()
	}
	return &pb.SetPhaseResponse{Accepted: !m.stop.Load()}, nil
}

func (m *fakeManager) StreamLog(s grpc.BidiStreamingServer[pb.LogBatch, pb.LogAck]) error {
	for {
		b, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := m.checkToken(b.GetJobToken()); err != nil {
			return err
		}
		m.mu.Lock()
		m.batches++
		for _, e := range b.GetEntries() {
			m.logs[e.GetSequenceNumber()] = e
		}
		// The highest sequence stored with nothing missing below it.
		var high int64
		for m.logs[high+1] != nil {
			high++
		}
		batches := m.batches
		m.mu.Unlock()
		if batches%3 == 0 && m.breakLogs.Add(-1) >= 0 {
			return status.Error(codes.Unavailable, "log stream broken by the test")
		}
		if err := s.Send(&pb.LogAck{SequenceNumber: high}); err != nil {
			return err
		}
	}
}

func (m *fakeManager) FetchContext(r *pb.FetchContextRequest, s grpc.ServerStreamingServer[pb.ContextChunk]) error {
	if err := m.checkToken(r.GetJobToken()); err != nil {
		return err
	}
	for b := m.context; len(b) > 0; {
		n := min(len(b), 1000)
		if err := s.Send(&pb.ContextChunk{Data: b[:n]}); err != nil {
			return err
		}
		b = b[n:]
		if m.failFetch != codes.OK {
			return status.Error(m.failFetch, "storage read failed")
		}
	}
	return nil
}

func (m *fakeManager) IssueRegistryCredentials(_ context.Context, r *pb.RegistryCredentialsRequest) (*pb.RegistryCredentials, error) {
	if err := m.checkToken(r.GetJobToken()); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.credRequests = append(m.credRequests, r.GetBaseRepositories())
	return m.creds, nil
}

func (m *fakeManager) Finish(_ context.Context, r *pb.FinishRequest) (*pb.FinishResponse, error) {
	if err := m.checkToken(r.GetJobToken()); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.finish != nil {
		return nil, status.Error(codes.FailedPrecondition, "finished twice")
	}
	m.finish = r
	m.logsAtFinish = len(m.logs)
	close(m.finished)
	return &pb.FinishResponse{}, nil
}

// entries returns the stored log entries in sequence order, failing the
// test on a gap.
func (m *fakeManager) entries(t *testing.T) []*pb.LogEntry {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*pb.LogEntry, 0, len(m.logs))
	for i := int64(1); i <= int64(len(m.logs)); i++ {
		e, ok := m.logs[i]
		if !ok {
			t.Fatalf("log entry %d missing of %d", i, len(m.logs))
		}
		out = append(out, e)
	}
	return out
}

// tarGz builds a gzip-compressed tar of files.
func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
