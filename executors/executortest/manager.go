// Package executortest is the contract suite every executors.Executor
// implementation runs (local now; Kubernetes and VM later), and the fake
// build manager it uses: a real gRPC server speaking workerpb, so the
// worker the executor starts is the real one, not a stub.
package executortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/buildmanager/workerpb"
)

// Manager is a fake build manager: it answers Register for the tokens it
// was told to expect with a job whose context is an upload it holds open
// (so a real worker stays busy until told otherwise), and Heartbeat with
// stop=false until Release is called for the job.
type Manager struct {
	workerpb.UnimplementedBuildManagerServer

	srv  *grpc.Server
	addr string

	mu         sync.Mutex
	jobs       map[string]*job // by registration token
	byJobToken map[string]*job
	unexpected []string // registration tokens nobody expected
	changed    chan struct{}
}

type job struct {
	buildID       string
	regToken      string
	jobToken      string
	registrations []Registration
	heartbeats    int
	released      chan struct{}
}

// Registration is one successful Register call.
type Registration struct {
	Token      string
	WorkerInfo string
	At         time.Time
}

// NewManager serves a Manager on listenAddr ("127.0.0.1:0" when empty)
// until the test ends.
func NewManager(t testing.TB, listenAddr string) *Manager {
	t.Helper()
	if listenAddr == "" {
		listenAddr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", listenAddr)
	if err != nil {
		t.Fatalf("executortest: listen: %v", err)
	}
	m := &Manager{
		srv:        grpc.NewServer(),
		addr:       lis.Addr().String(),
		jobs:       map[string]*job{},
		byJobToken: map[string]*job{},
		changed:    make(chan struct{}),
	}
	workerpb.RegisterBuildManagerServer(m.srv, m)
	go func() { _ = m.srv.Serve(lis) }()
	t.Cleanup(m.srv.Stop)
	return m
}

// Addr is the address the manager listens on.
func (m *Manager) Addr() string { return m.addr }

// Expect makes a fresh registration token for buildID that Register will
// accept, and returns it.
func (m *Manager) Expect(buildID string) string {
	tok := "reg-" + randomHex()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.jobs[tok] = &job{buildID: buildID, regToken: tok, jobToken: "job-" + randomHex(), released: make(chan struct{})}
	return tok
}

// Registrations returns the successful Register calls made with token.
func (m *Manager) Registrations(token string) []Registration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if j, ok := m.jobs[token]; ok {
		return append([]Registration(nil), j.registrations...)
	}
	return nil
}

// Heartbeats counts the heartbeats of the job registered with token.
func (m *Manager) Heartbeats(token string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if j, ok := m.jobs[token]; ok {
		return j.heartbeats
	}
	return 0
}

// Unexpected returns the tokens of rejected Register calls.
func (m *Manager) Unexpected() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.unexpected...)
}

// WaitRegistered waits until a worker registered with token, and returns
// its registration.
func (m *Manager) WaitRegistered(ctx context.Context, token string) (Registration, error) {
	for {
		m.mu.Lock()
		j := m.jobs[token]
		changed := m.changed
		var reg []Registration
		if j != nil {
			reg = j.registrations
		}
		m.mu.Unlock()
		if len(reg) > 0 {
			return reg[0], nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Registration{}, ctx.Err()
		}
	}
}

// Release tells the worker of token's job to end: heartbeats answer
// stop=true from now on and the held context upload fails.
func (m *Manager) Release(token string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if j, ok := m.jobs[token]; ok {
		select {
		case <-j.released:
		default:
			close(j.released)
		}
	}
}

// notify wakes waiters; callers hold m.mu.
func (m *Manager) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Register implements workerpb.BuildManagerServer.
func (m *Manager) Register(ctx context.Context, req *workerpb.RegisterRequest) (*workerpb.Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[req.GetRegistrationToken()]
	if !ok {
		m.unexpected = append(m.unexpected, req.GetRegistrationToken())
		m.notify()
		return nil, status.Error(codes.Unauthenticated, "unknown registration token")
	}
	j.registrations = append(j.registrations, Registration{Token: j.regToken, WorkerInfo: req.GetWorkerInfo(), At: time.Now()})
	m.byJobToken[j.jobToken] = j
	m.notify()
	return &workerpb.Job{
		JobToken:       j.jobToken,
		BuildId:        j.buildID,
		Source:         &workerpb.Job_Upload{Upload: true},
		DockerfilePath: "Dockerfile",
		Registry:       "127.0.0.1:1",
		Repository:     "executortest/worker",
		Tags:           []string{"latest"},
		Engine:         "buildah",
		TimeoutSeconds: 3600,
	}, nil
}

func (m *Manager) jobFor(token string) (*job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.byJobToken[token]
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "unknown job token")
	}
	return j, nil
}

// Heartbeat implements workerpb.BuildManagerServer.
func (m *Manager) Heartbeat(ctx context.Context, req *workerpb.HeartbeatRequest) (*workerpb.HeartbeatResponse, error) {
	j, err := m.jobFor(req.GetJobToken())
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	j.heartbeats++
	m.notify()
	m.mu.Unlock()
	select {
	case <-j.released:
		return &workerpb.HeartbeatResponse{Stop: true}, nil
	default:
		return &workerpb.HeartbeatResponse{}, nil
	}
}

// SetPhase implements workerpb.BuildManagerServer.
func (m *Manager) SetPhase(ctx context.Context, req *workerpb.SetPhaseRequest) (*workerpb.SetPhaseResponse, error) {
	if _, err := m.jobFor(req.GetJobToken()); err != nil {
		return nil, err
	}
	return &workerpb.SetPhaseResponse{Accepted: true}, nil
}

// StreamLog implements workerpb.BuildManagerServer: it acknowledges every
// batch and keeps nothing.
func (m *Manager) StreamLog(stream grpc.BidiStreamingServer[workerpb.LogBatch, workerpb.LogAck]) error {
	for {
		b, err := stream.Recv()
		if err != nil {
			return nil
		}
		if _, err := m.jobFor(b.GetJobToken()); err != nil {
			return err
		}
		var last int64
		for _, e := range b.GetEntries() {
			last = max(last, e.GetSequenceNumber())
		}
		if err := stream.Send(&workerpb.LogAck{SequenceNumber: last}); err != nil {
			return err
		}
	}
}

// FetchContext implements workerpb.BuildManagerServer: it holds the
// upload open until the job is released, then fails it.
func (m *Manager) FetchContext(req *workerpb.FetchContextRequest, stream grpc.ServerStreamingServer[workerpb.ContextChunk]) error {
	j, err := m.jobFor(req.GetJobToken())
	if err != nil {
		return err
	}
	select {
	case <-j.released:
		return status.Error(codes.FailedPrecondition, "executortest: build released")
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
}

// Finish implements workerpb.BuildManagerServer: it accepts any result.
func (m *Manager) Finish(ctx context.Context, req *workerpb.FinishRequest) (*workerpb.FinishResponse, error) {
	if _, err := m.jobFor(req.GetJobToken()); err != nil {
		return nil, err
	}
	return &workerpb.FinishResponse{}, nil
}

func randomHex() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
