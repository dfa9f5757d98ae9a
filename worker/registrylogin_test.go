package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/worker/engine"
)

func TestRegistryRepositories(t *testing.T) {
	got, err := registryRepositories("registry.test:5000", []string{
		"registry.test:5000/lib/base:3",
		"docker.io/library/alpine:3",
		"busybox",
		"REGISTRY.test:5000/lib/base@sha256:" + strings.Repeat("a", 64),
		"registry.test:5000/acme/tools",
		"registry.test:5001/acme/other",
		"registry.test/acme/other",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"lib/base", "acme/tools"}; !slices.Equal(got, want) {
		t.Errorf("repositories = %q, want %q", got, want)
	}

	var many []string
	for i := range maxBaseRepositories + 1 {
		many = append(many, fmt.Sprintf("registry.test:5000/ns/r%d", i))
	}
	_, err = registryRepositories("registry.test:5000", many)
	if ue, ok := engine.AsUserError(err); !ok || ue.Code != engine.CodeDockerfile {
		t.Errorf("%d base repositories: %v, want a dockerfile user error", len(many), err)
	}
}

// credClient answers IssueRegistryCredentials from a script.
type credClient struct {
	pb.BuildManagerClient
	mu    sync.Mutex
	calls int
	// answer returns the n-th (from 1) answer.
	answer func(n int) (*pb.RegistryCredentials, error)
	bases  [][]string
}

func (c *credClient) IssueRegistryCredentials(_ context.Context, r *pb.RegistryCredentialsRequest, _ ...grpc.CallOption) (*pb.RegistryCredentials, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.bases = append(c.bases, r.GetBaseRepositories())
	return c.answer(c.calls)
}

func numbered(life int64) func(int) (*pb.RegistryCredentials, error) {
	return func(n int) (*pb.RegistryCredentials, error) {
		return &pb.RegistryCredentials{Username: "$berthbuild", Password: fmt.Sprintf("token-%d", n), ExpiresInSeconds: life}, nil
	}
}

// TestRegistryLoginRefresh: credentials are fetched again once a third of
// their life has passed, so none handed out has less than two thirds left;
// until then the held ones are reused.
func TestRegistryLoginRefresh(t *testing.T) {
	ctx := context.Background()
	client := &credClient{answer: numbered(900)}
	clock := time.Unix(1_000_000, 0)
	l := newRegistryLogin(client, "job", []string{"lib/base"}, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.now = func() time.Time { return clock }

	pw := func() string {
		t.Helper()
		_, p, err := l.credentials(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if got := pw(); got != "token-1" {
		t.Fatalf("first credentials %q", got)
	}
	clock = clock.Add(4 * time.Minute)
	if got := pw(); got != "token-1" {
		t.Errorf("after 4 of 15 minutes: %q, want the held token-1", got)
	}
	clock = clock.Add(time.Minute + time.Second)
	if got := pw(); got != "token-2" {
		t.Errorf("after 5 of 15 minutes: %q, want a fresh token-2", got)
	}
	if client.calls != 2 || !slices.Equal(client.bases[1], []string{"lib/base"}) {
		t.Errorf("%d requests, bases %q", client.calls, client.bases)
	}
}

// TestRegistryLoginFailures: a manager that cannot be reached leaves the
// held credentials in use while they have a minute left; one that says the
// build is over ends the job.
func TestRegistryLoginFailures(t *testing.T) {
	ctx := context.Background()
	unavailable := status.Error(codes.Unavailable, "manager restarting")
	client := &credClient{answer: func(n int) (*pb.RegistryCredentials, error) {
		if n == 1 {
			return numbered(900)(n)
		}
		return nil, unavailable
	}}
	clock := time.Unix(1_000_000, 0)
	l := newRegistryLogin(client, "job", nil, time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.now = func() time.Time { return clock }
	if _, err := l.current(ctx); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(10 * time.Minute)
	if c, err := l.current(ctx); err != nil || c.GetPassword() != "token-1" {
		t.Errorf("manager unavailable, 5 minutes left: %v, %v; want the held token-1", c, err)
	}
	clock = clock.Add(4*time.Minute + 30*time.Second)
	if _, err := l.current(ctx); err == nil || errors.Is(err, ErrStopped) {
		t.Errorf("manager unavailable, 30 s left: %v, want a retryable error", err)
	}

	ended := &credClient{answer: func(int) (*pb.RegistryCredentials, error) {
		return nil, status.Error(codes.FailedPrecondition, "the build is cancelled")
	}}
	l = newRegistryLogin(ended, "job", nil, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := l.current(ctx); !errors.Is(err, ErrStopped) {
		t.Errorf("build ended: %v, want ErrStopped", err)
	}
}

// TestRunAsksForBaseCredentials: the worker names the repositories of
// berth's registry that the Dockerfile's FROM lines use, and the engine
// gets its credentials through Registry.Login.
func TestRunAsksForBaseCredentials(t *testing.T) {
	job := baseJob(&pb.Job{Source: &pb.Job_Upload{Upload: true}})
	m := newFakeManager(t, job, tarGz(t, map[string]string{
		"Dockerfile": "FROM registry.test:5000/lib/base:3 AS one\nFROM docker.io/library/alpine\nCOPY --from=one / /\n" +
			"FROM registry.test:5000/acme/tools\n",
	}))
	m.creds = &pb.RegistryCredentials{Registry: job.GetRegistry(), Username: "$berthbuild", Password: "build-token", ExpiresInSeconds: 900}
	var user, pw string
	eng := &fakeEngine{build: func(ctx context.Context, req engine.Request, sink engine.LogSink) (engine.Result, error) {
		var err error
		if user, pw, err = req.Registry.Login(ctx); err != nil {
			return engine.Result{}, err
		}
		res := engine.Result{Digests: map[string]string{}}
		for _, tag := range req.Tags {
			res.Digests[tag] = "sha256:" + strings.Repeat("b", 64)
		}
		return res, phases(ctx, req)
	}}
	if err := runWorker(t, m, m.config(t), eng); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(m.credRequests) != 1 || !slices.Equal(m.credRequests[0], []string{"lib/base", "acme/tools"}) {
		t.Errorf("credential requests %q, want one for lib/base and acme/tools", m.credRequests)
	}
	if user != "$berthbuild" || pw != "build-token" {
		t.Errorf("engine logged in as %q/%q", user, pw)
	}
	if m.finish.GetSuccess() == nil {
		t.Errorf("finish = %v", m.finish)
	}
}

// FuzzRegistryRepositories: whatever the FROM lines say, the repositories
// asked for are distinct, non-empty paths that a reference on the job's
// registry named, and never more than the limit.
func FuzzRegistryRepositories(f *testing.F) {
	f.Add("registry.test:5000/lib/base:3\nbusybox\nREGISTRY.TEST:5000/lib/base@sha256:00\nregistry.test:5000/x")
	f.Add("registry.test:5000\nregistry.test:5000/\n/registry.test:5000/a\nregistry.test:5000//b:c")
	f.Fuzz(func(t *testing.T, refs string) {
		bases := strings.Split(refs, "\n")
		got, err := registryRepositories("registry.test:5000", bases)
		if err != nil {
			if _, ok := engine.AsUserError(err); !ok {
				t.Fatalf("error %v is not a user error", err)
			}
			return
		}
		if len(got) > maxBaseRepositories {
			t.Fatalf("%d repositories", len(got))
		}
		seen := map[string]bool{}
		for _, repo := range got {
			if seen[repo] {
				t.Fatalf("%q asked for twice", repo)
			}
			seen[repo] = true
			named := false
			for _, ref := range bases {
				if strings.HasPrefix(strings.ToLower(ref), "registry.test:5000/"+strings.ToLower(repo)) {
					named = true
				}
			}
			if !named {
				t.Fatalf("%q is named by no reference of %q", repo, bases)
			}
		}
	})
}
