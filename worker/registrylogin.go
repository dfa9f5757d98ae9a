package worker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/dockerfile"
	"github.com/berth-dev/berth/worker/engine"
)

// maxBaseRepositories is the most repositories of berth's registry a
// Dockerfile's FROM lines may name (the manager's limit too).
const maxBaseRepositories = 32

// registryRepositories returns the repositories ("namespace/name") of the
// registry at host that the base image references name, each once, in
// order. Bases on other registries are pulled without berth's credentials
// and need no grant.
func registryRepositories(host string, bases []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, ref := range bases {
		name, _ := dockerfile.SplitRef(ref)
		first, repo, ok := strings.Cut(name, "/")
		if !ok || !strings.EqualFold(first, host) || seen[repo] {
			continue
		}
		seen[repo] = true
		out = append(out, repo)
	}
	if len(out) > maxBaseRepositories {
		return nil, engine.Errorf(engine.CodeDockerfile, "the Dockerfile's FROM lines name %d repositories of %s; at most %d are allowed",
			len(out), host, maxBaseRepositories)
	}
	return out, nil
}

// registryLogin holds the build's registry credentials. They are
// short-lived, so it asks the manager for fresh ones once a third of their
// life has passed: every credential it hands out is good for at least two
// thirds of a lifetime, long enough for a pull or a push begun with it.
type registryLogin struct {
	client  pb.BuildManagerClient
	token   string   // the job token
	bases   []string // base repositories to pull, as the manager is told
	timeout time.Duration
	logger  *slog.Logger
	now     func() time.Time // when credentials are due for refresh

	mu        sync.Mutex
	creds     *pb.RegistryCredentials
	refreshAt time.Time
	expiresAt time.Time
}

func newRegistryLogin(client pb.BuildManagerClient, token string, bases []string, timeout time.Duration, logger *slog.Logger) *registryLogin {
	return &registryLogin{client: client, token: token, bases: bases, timeout: timeout, logger: logger, now: time.Now}
}

// current returns credentials with most of their life ahead, fetching
// them when the held ones are older. When the manager cannot be reached
// the held ones serve while they have a minute left. The build ended
// (the manager refuses the job): an error matching ErrStopped.
func (l *registryLogin) current(ctx context.Context) (*pb.RegistryCredentials, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.creds != nil && now.Before(l.refreshAt) {
		return l.creds, nil
	}
	creds, err := l.fetch(ctx)
	if err != nil {
		if l.creds != nil && now.Before(l.expiresAt.Add(-time.Minute)) && !isFinal(err) {
			l.logger.Warn("registry credentials not refreshed; using the held ones", "err", err)
			return l.creds, nil
		}
		if isFinal(err) {
			return nil, fmt.Errorf("%w: registry credentials: %v", ErrStopped, err)
		}
		if status.Code(err) == codes.InvalidArgument {
			return nil, engine.Errorf(engine.CodeDockerfile, "the base images cannot be pulled with one registry login: %s", status.Convert(err).Message())
		}
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	life := time.Duration(creds.GetExpiresInSeconds()) * time.Second
	l.creds, l.refreshAt, l.expiresAt = creds, now.Add(life/3), now.Add(life)
	return creds, nil
}

// credentials is engine.Registry.Credentials.
func (l *registryLogin) credentials(ctx context.Context) (string, string, error) {
	c, err := l.current(ctx)
	if err != nil {
		return "", "", err
	}
	return c.GetUsername(), c.GetPassword(), nil
}

// fetch asks the manager, retrying while it is unavailable for at most
// the manager timeout.
func (l *registryLogin) fetch(ctx context.Context) (*pb.RegistryCredentials, error) {
	deadline := time.Now().Add(l.timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, l.timeout)
		creds, err := l.client.IssueRegistryCredentials(cctx, &pb.RegistryCredentialsRequest{JobToken: l.token, BaseRepositories: l.bases})
		cancel()
		if err == nil {
			return creds, nil
		}
		c := status.Code(err)
		if (c != codes.Unavailable && c != codes.DeadlineExceeded) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}
