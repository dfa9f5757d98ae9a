package worker

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/worker/engine"
)

// fakeEngine runs a function as its build.
type fakeEngine struct {
	build  func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error)
	called bool
	req    engine.Request
}

func (f *fakeEngine) Name() string { return "fake" }

func (f *fakeEngine) Build(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
	f.called = true
	f.req = req
	return f.build(ctx, req, sink)
}

// phases drives the phase callback as an engine does.
func phases(ctx context.Context, req engine.Request) error {
	for _, p := range []engine.Phase{engine.PhasePulling, engine.PhaseBuilding, engine.PhasePushing} {
		if err := req.OnPhase(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

func baseJob(src *pb.Job) *pb.Job {
	src.BuildId = "b-1"
	src.Registry = "registry.test:5000"
	src.Repository = "myorg/app"
	src.Tags = []string{"v1", "latest"}
	src.Engine = "fake"
	return src
}

func runWorker(t *testing.T, m *fakeManager, cfg Config, eng *fakeEngine) error {
	t.Helper()
	cfg.Engines = map[string]engine.Engine{"fake": eng}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return Run(ctx, cfg)
}

func TestRunSuccess(t *testing.T) {
	job := baseJob(&pb.Job{Source: &pb.Job_Upload{Upload: true}, Context: "/sub", DockerfilePath: "/sub/Dockerfile",
		BuildArgs: map[string]string{"TAG": "3"}})
	m := newFakeManager(t, job, tarGz(t, map[string]string{
		"sub/Dockerfile": "ARG TAG=1\nFROM registry.test:5000/lib/base:${TAG}\nRUN echo hi\n",
		"sub/file.txt":   "x",
	}))
	eng := &fakeEngine{build: func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		if err := phases(ctx, req); err != nil {
			return engine.Result{}, err
		}
		sink.Log(engine.LineCommand, "STEP 1/2: FROM registry.test:5000/lib/base:3")
		for i := range 600 {
			sink.Log(engine.LineOutput, fmt.Sprintf("line %d", i))
		}
		res := engine.Result{Digests: map[string]string{}}
		for _, tag := range req.Tags {
			res.Digests[tag] = "sha256:" + strings.Repeat("a", 64)
		}
		return res, nil
	}}
	if err := runWorker(t, m, m.config(t), eng); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := []string{"registry.test:5000/myorg/app:v1", "registry.test:5000/myorg/app:latest"}; !slices.Equal(eng.req.Tags, want) {
		t.Errorf("engine tags = %v, want %v", eng.req.Tags, want)
	}
	if !strings.HasSuffix(eng.req.ContextDir, "/src/sub") || !strings.HasSuffix(eng.req.DockerfilePath, "/src/sub/Dockerfile") {
		t.Errorf("engine context %s, Dockerfile %s", eng.req.ContextDir, eng.req.DockerfilePath)
	}
	if want := []string{"registry.test:5000/lib/base:3"}; !slices.Equal(eng.req.BaseImages, want) {
		t.Errorf("base images = %v, want %v", eng.req.BaseImages, want)
	}
	if eng.req.Registry.Username != "myorg+builder" || eng.req.Registry.Host != "registry.test:5000" {
		t.Errorf("engine registry = %+v", eng.req.Registry)
	}
	wantPhases := []pb.Phase{pb.Phase_PHASE_UNPACKING, pb.Phase_PHASE_PULLING, pb.Phase_PHASE_BUILDING, pb.Phase_PHASE_PUSHING}
	if !slices.Equal(m.phases, wantPhases) {
		t.Errorf("phases = %v, want %v", m.phases, wantPhases)
	}
	if !slices.IsSorted(m.phaseSeqs) || m.phaseSeqs[0] < 1 {
		t.Errorf("phase sequence numbers %v do not grow", m.phaseSeqs)
	}
	if m.pullMeta.GetBaseImage() != "registry.test:5000/lib/base" || m.pullMeta.GetBaseImageTag() != "3" || m.pullMeta.GetPullUsername() != "myorg+builder" {
		t.Errorf("pull metadata = %v", m.pullMeta)
	}
	succ := m.finish.GetSuccess()
	if succ == nil || len(succ.GetDigests()) != 2 || succ.GetDigests()["v1"] == "" || succ.GetDigests()["latest"] == "" {
		t.Fatalf("finish = %v, want digests for v1 and latest", m.finish)
	}
	logs := m.entries(t)
	if m.finish.GetLastLogSequence() != int64(len(logs)) || m.logsAtFinish != len(logs) {
		t.Errorf("finish says %d entries, %d stored before Finish, %d in all", m.finish.GetLastLogSequence(), m.logsAtFinish, len(logs))
	}
	if len(logs) < 600 {
		t.Errorf("%d log entries, want the engine's 600 lines and more", len(logs))
	}
	if m.batches >= len(logs)/2 {
		t.Errorf("%d batches for %d entries: lines are not batched", m.batches, len(logs))
	}
	var types []pb.LogType
	for _, e := range logs {
		if e.GetType() != pb.LogType_LOG_TYPE_UNSPECIFIED {
			types = append(types, e.GetType())
		}
	}
	// Phase entries are the manager's to write, on SetPhase.
	wantTypes := []pb.LogType{pb.LogType_LOG_TYPE_COMMAND}
	if !slices.Equal(types, wantTypes) {
		t.Errorf("typed entries = %v, want %v", types, wantTypes)
	}
}

func TestRunFailures(t *testing.T) {
	good := tarGz(t, map[string]string{"Dockerfile": "FROM registry.test:5000/lib/base\nRUN false\n"})
	escape := tarGz(t, map[string]string{"../escape": "x", "Dockerfile": "FROM x\n"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/Dockerfile" {
			_, _ = w.Write([]byte("FROM registry.test:5000/lib/base\n"))
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	buildStep := func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		if err := phases(ctx, req); err != nil {
			return engine.Result{}, err
		}
		sink.Log(engine.LineOutput, "step output")
		return engine.Result{}, engine.Errorf(engine.CodeBuildStep, "the build step \"RUN false\" failed with exit status 1")
	}
	infra := func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		return engine.Result{}, errors.New("storage is full")
	}
	slow := func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		<-ctx.Done()
		return engine.Result{}, ctx.Err()
	}
	cases := []struct {
		name       string
		job        *pb.Job
		upload     []byte
		build      func(context.Context, engine.Request, engine.LogSink) (engine.Result, error)
		code       string
		retryable  bool
		engineRuns bool
		message    string
	}{
		{"syntax error", &pb.Job{Source: &pb.Job_Upload{Upload: true}}, tarGz(t, map[string]string{"Dockerfile": "FROM a\nFRUM b\n"}), buildStep, engine.CodeDockerfile, false, false, "line 2"},
		{"missing Dockerfile", &pb.Job{Source: &pb.Job_Upload{Upload: true}, DockerfilePath: "/nope/Dockerfile"}, good, buildStep, engine.CodeDockerfile, false, false, "missing Dockerfile"},
		{"escaping archive", &pb.Job{Source: &pb.Job_Upload{Upload: true}}, escape, buildStep, engine.CodeContext, false, false, "outside the build context"},
		{"context too large", &pb.Job{Source: &pb.Job_Upload{Upload: true}, MaxContextBytes: 10}, good, buildStep, engine.CodeContext, false, false, "larger than the limit"},
		{"compression ratio", &pb.Job{Source: &pb.Job_Upload{Upload: true}, MaxCompressionRatio: 2},
			tarGz(t, map[string]string{"Dockerfile": "FROM a\n", "zeros": strings.Repeat("\x00", 17<<20)}), buildStep, engine.CodeContext, false, false, "compressed more than 2:1"},
		{"git source without ref or commit", &pb.Job{Source: &pb.Job_Git{Git: &pb.GitSource{Url: "https://git.test/x.git"}}}, nil, buildStep, engine.CodeGit, false, false, "neither a ref nor a commit"},
		{"archive url 404", &pb.Job{Source: &pb.Job_ArchiveUrl{ArchiveUrl: srv.URL + "/gone.tar"}}, nil, buildStep, engine.CodeContext, false, false, "404"},
		{"failing step", &pb.Job{Source: &pb.Job_ArchiveUrl{ArchiveUrl: srv.URL + "/Dockerfile"}}, nil, buildStep, engine.CodeBuildStep, false, true, "exit status 1"},
		{"infrastructure", &pb.Job{Source: &pb.Job_Upload{Upload: true}}, good, infra, "internal", true, true, "storage is full"},
		{"time limit", &pb.Job{Source: &pb.Job_Upload{Upload: true}, TimeoutSeconds: 1}, good, slow, engine.CodeTimeout, false, true, "time limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newFakeManager(t, baseJob(c.job), c.upload)
			eng := &fakeEngine{build: c.build}
			if err := runWorker(t, m, m.config(t), eng); err != nil {
				t.Fatalf("Run: %v", err)
			}
			be := m.finish.GetError()
			if be == nil {
				t.Fatalf("finish = %v, want an error", m.finish)
			}
			if be.GetCode() != c.code || be.GetRetryable() != c.retryable || !strings.Contains(be.GetMessage(), c.message) {
				t.Errorf("error = %v, want code %s retryable %v mentioning %q", be, c.code, c.retryable, c.message)
			}
			if eng.called != c.engineRuns {
				t.Errorf("engine called = %v, want %v", eng.called, c.engineRuns)
			}
			// The manager writes the error entry from the result; the
			// worker's own entries are all stored before Finish.
			logs := m.entries(t)
			for _, e := range logs {
				if e.GetType() == pb.LogType_LOG_TYPE_ERROR && e.GetMessage() == be.GetMessage() {
					t.Errorf("worker logged the error itself: %v", e)
				}
			}
			var lastSeq int64
			if len(logs) > 0 {
				lastSeq = logs[len(logs)-1].GetSequenceNumber()
			}
			if m.logsAtFinish != len(logs) || m.finish.GetLastLogSequence() != lastSeq {
				t.Errorf("log entries were not all stored before Finish")
			}
		})
	}
}

func TestRunStopsWhenTold(t *testing.T) {
	m := newFakeManager(t, baseJob(&pb.Job{Source: &pb.Job_Upload{Upload: true}}), tarGz(t, map[string]string{"Dockerfile": "FROM a\n"}))
	engineEnded := make(chan time.Time, 1)
	eng := &fakeEngine{build: func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		m.stop.Store(true)
		<-ctx.Done()
		engineEnded <- time.Now()
		return engine.Result{}, ctx.Err()
	}}
	cfg := m.config(t)
	cfg.HeartbeatInterval = 50 * time.Millisecond
	start := time.Now()
	err := runWorker(t, m, cfg, eng)
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("Run = %v, want ErrStopped", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stopping took %v", d)
	}
	select {
	case <-engineEnded:
	default:
		t.Error("the engine's context was not cancelled")
	}
	if m.finish != nil {
		t.Errorf("a stopped worker finished: %v", m.finish)
	}
}

func TestRunExitsWhenManagerLost(t *testing.T) {
	m := newFakeManager(t, baseJob(&pb.Job{Source: &pb.Job_Upload{Upload: true}}), tarGz(t, map[string]string{"Dockerfile": "FROM a\n"}))
	eng := &fakeEngine{build: func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		go m.server.Stop()
		<-ctx.Done()
		return engine.Result{}, ctx.Err()
	}}
	cfg := m.config(t)
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.ManagerTimeout = 500 * time.Millisecond
	start := time.Now()
	err := runWorker(t, m, cfg, eng)
	if !errors.Is(err, ErrManagerLost) {
		t.Fatalf("Run = %v, want ErrManagerLost", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("noticing the lost manager took %v", d)
	}
}

func TestRunRegistrationRejected(t *testing.T) {
	m := newFakeManager(t, baseJob(&pb.Job{}), nil)
	cfg := m.config(t)
	cfg.RegistrationToken = "wrong"
	err := runWorker(t, m, cfg, &fakeEngine{})
	if err == nil || !strings.Contains(err.Error(), "register") {
		t.Fatalf("Run = %v, want a registration error", err)
	}
}

func TestRunArchiveURLWithCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("FROM registry.test:5000/lib/base\n"))
	}))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	job := baseJob(&pb.Job{Source: &pb.Job_ArchiveUrl{ArchiveUrl: srv.URL + "/filedrop/abc"}, RegistryCaPem: string(ca)})
	m := newFakeManager(t, job, nil)
	eng := &fakeEngine{build: func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		res := engine.Result{Digests: map[string]string{}}
		for _, tag := range req.Tags {
			res.Digests[tag] = "sha256:" + strings.Repeat("b", 64)
		}
		return res, nil
	}}
	if err := runWorker(t, m, m.config(t), eng); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if m.finish.GetSuccess() == nil {
		t.Fatalf("finish = %v, want success", m.finish)
	}
	if string(eng.req.Registry.CAPEM) != string(ca) {
		t.Error("the registry CA did not reach the engine")
	}
}

// A worker told to stop by its executor (SIGTERM) still reports, as a
// failure worth another attempt.
func TestRunInterrupted(t *testing.T) {
	m := newFakeManager(t, baseJob(&pb.Job{Source: &pb.Job_Upload{Upload: true}}), tarGz(t, map[string]string{"Dockerfile": "FROM a\n"}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	eng := &fakeEngine{build: func(bctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		cancel()
		<-bctx.Done()
		return engine.Result{}, bctx.Err()
	}}
	cfg := m.config(t)
	cfg.Engines = map[string]engine.Engine{"fake": eng}
	if err := Run(ctx, cfg); err != nil {
		t.Fatalf("Run: %v", err)
	}
	be := m.finish.GetError()
	if be == nil || !be.GetRetryable() || be.GetCode() != "internal" {
		t.Fatalf("finish = %v, want a retryable internal error", m.finish)
	}
}

// Broken log streams are reopened and what was not acknowledged is sent
// again: the manager ends up with every entry, in order, with no gap.
func TestRunLogStreamReconnects(t *testing.T) {
	m := newFakeManager(t, baseJob(&pb.Job{Source: &pb.Job_Upload{Upload: true}}), tarGz(t, map[string]string{"Dockerfile": "FROM a\n"}))
	m.breakLogs.Store(3)
	eng := &fakeEngine{build: func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		for i := range 2000 {
			sink.Log(engine.LineOutput, fmt.Sprintf("line %d", i))
			if i%100 == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
		return engine.Result{Digests: map[string]string{req.Tags[0]: "sha256:1", req.Tags[1]: "sha256:2"}}, nil
	}}
	if err := runWorker(t, m, m.config(t), eng); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if m.breakLogs.Load() > 0 {
		t.Fatalf("the test broke fewer streams than planned")
	}
	logs := m.entries(t) // fails on a gap
	n := 0
	for _, e := range logs {
		if strings.HasPrefix(e.GetMessage(), "line ") {
			if want := fmt.Sprintf("line %d", n); e.GetMessage() != want {
				t.Fatalf("entry %d = %q, want %q", e.GetSequenceNumber(), e.GetMessage(), want)
			}
			n++
		}
	}
	if n != 2000 || m.finish.GetLastLogSequence() != int64(len(logs)) || m.logsAtFinish != len(logs) {
		t.Errorf("%d engine lines of 2000; finish says %d, %d stored before Finish, %d in all", n, m.finish.GetLastLogSequence(), m.logsAtFinish, len(logs))
	}
}

func TestRunFetchFails(t *testing.T) {
	for _, c := range []struct {
		code      codes.Code
		retryable bool
		message   string
	}{
		{codes.Internal, true, "storage read failed"},
		{codes.NotFound, false, "no longer exists"},
	} {
		t.Run(c.code.String(), func(t *testing.T) {
			m := newFakeManager(t, baseJob(&pb.Job{Source: &pb.Job_Upload{Upload: true}}), bytes.Repeat([]byte("x"), 5000))
			m.failFetch = c.code
			eng := &fakeEngine{}
			if err := runWorker(t, m, m.config(t), eng); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if be := m.finish.GetError(); be == nil || be.GetRetryable() != c.retryable || !strings.Contains(be.GetMessage(), c.message) {
				t.Fatalf("finish = %v, want retryable %v mentioning %q", m.finish, c.retryable, c.message)
			}
			if eng.called {
				t.Error("the engine ran without a context")
			}
		})
	}
}

// A refused phase change means the build is over for this worker: it
// stops without a result.
func TestRunPhaseRefused(t *testing.T) {
	m := newFakeManager(t, baseJob(&pb.Job{Source: &pb.Job_Upload{Upload: true}}), tarGz(t, map[string]string{"Dockerfile": "FROM a\n"}))
	eng := &fakeEngine{build: func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		m.stop.Store(true) // SetPhase now answers accepted=false
		return engine.Result{}, phases(ctx, req)
	}}
	err := runWorker(t, m, m.config(t), eng)
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("Run = %v, want ErrStopped", err)
	}
	if m.finish != nil {
		t.Errorf("finished after a refused phase: %v", m.finish)
	}
}
