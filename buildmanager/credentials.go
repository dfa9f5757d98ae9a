package buildmanager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

// RegistryTokenUser is the username a worker presents, with the registry
// token from BuildCredentials as the password.
const RegistryTokenUser = auth.RegistryTokenUser

// DefaultRegistryTokenLifetime is how long a build's registry token lives.
// Workers ask for a fresh one well before it ends (see the worker's
// registryLogin), so a short life costs a gRPC call every few minutes.
const DefaultRegistryTokenLifetime = 15 * time.Minute

// MaxBaseRepositories bounds the base repositories one credentials request
// may name, keeping the token well under the 16 KiB the registry accepts.
const MaxBaseRepositories = 32

// Credentials issues the registry credentials of a build's worker and
// revokes them when the attempt ends.
type Credentials interface {
	// Issue returns credentials for the running attempt of b: pull and
	// push on its repository, pull on those of bases ("namespace/name")
	// the build may read.
	Issue(ctx context.Context, b *store.Build, bases []string) (*workerpb.RegistryCredentials, error)
	// Revoke refuses every credential issued for the attempt from now on,
	// on every server of the database.
	Revoke(ctx context.Context, buildID string, attempt int) error
}

// BuildCredentials issues build registry tokens from the registry's own
// token service, so that the registry checks them against the same
// credential epochs: each token is scoped to its access claim (neither
// the catalog nor a cross-repository mount reaches beyond it), issued
// under the attempt's grant (auth.BuildGrant), which is revoked when the
// attempt ends, and short-lived.
type BuildCredentials struct {
	// Tokens is the registry's token service (its Revoker persisting to
	// the database).
	Tokens *auth.TokenService
	Policy *auth.Policy
	// Service is the tokens' audience; Registry is host[:port] as workers
	// reach berth's registry.
	Service, Registry string
	// Lifetime of a token (default DefaultRegistryTokenLifetime).
	Lifetime time.Duration
}

var _ Credentials = (*BuildCredentials)(nil)

func (c *BuildCredentials) lifetime() time.Duration {
	if c.Lifetime > 0 {
		return c.Lifetime
	}
	return DefaultRegistryTokenLifetime
}

// Issue signs a token in the requester's name: pull and push on the
// build's repository, and pull on each of bases that the pull robot, or
// else the requester, may read per the policy. Bases it may not read, or
// that do not exist, are left out; the pull then fails with the engine's
// missing base image error, which does not tell the two apart.
func (c *BuildCredentials) Issue(ctx context.Context, b *store.Build, bases []string) (*workerpb.RegistryCredentials, error) {
	if len(bases) > MaxBaseRepositories {
		return nil, &InvalidRequestError{Reason: fmt.Sprintf("%d base repositories, at most %d", len(bases), MaxBaseRepositories)}
	}
	var who *auth.Principal
	if b.Requester != "" {
		acct, err := c.Policy.Store.GetAccountByName(ctx, b.Requester)
		if err != nil {
			return nil, fmt.Errorf("requester %s: %w", b.Requester, err)
		}
		who = &auth.Principal{Account: acct}
	}
	reader := who
	if b.Request.PullRobot != "" {
		robot, err := c.Policy.Store.GetAccountByName(ctx, b.Request.PullRobot)
		if err != nil || robot.Kind != store.KindRobot {
			return nil, fmt.Errorf("pull robot %s: not found", b.Request.PullRobot)
		}
		reader = &auth.Principal{Account: robot}
	}
	own := b.Namespace + "/" + b.Repository
	access := []auth.ResourceActions{{Type: auth.TypeRepository, Name: own, Actions: []auth.Action{auth.Pull, auth.Push}}}
	granted := map[string]bool{own: true}
	for _, base := range bases {
		if granted[base] {
			continue
		}
		granted[base] = true
		ok, err := c.mayPull(ctx, reader, base)
		if err != nil {
			return nil, err
		}
		if ok {
			access = append(access, auth.ResourceActions{Type: auth.TypeRepository, Name: base, Actions: []auth.Action{auth.Pull}})
		}
	}
	tok, err := c.Tokens.IssueGrant(who, c.Service, access, auth.BuildGrant(b.ID, b.Attempts), c.lifetime())
	if err != nil {
		return nil, err
	}
	return &workerpb.RegistryCredentials{Registry: c.Registry, Username: RegistryTokenUser, Password: tok.Token,
		ExpiresInSeconds: int64(tok.ExpiresIn)}, nil
}

// mayPull reports whether reader may read the repository named base.
func (c *BuildCredentials) mayPull(ctx context.Context, reader *auth.Principal, base string) (bool, error) {
	ns, name, ok := auth.SplitRepository(base)
	if !ok {
		return false, nil
	}
	repo, err := c.Policy.Store.GetRepository(ctx, ns, name)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("base repository %s: %w", base, err)
	}
	role, err := c.Policy.RepositoryRole(ctx, reader, repo)
	if err != nil {
		return false, err
	}
	return auth.RoleAtLeast(role, store.RoleRead), nil
}

// Revoke raises the attempt's grant epoch. No token is issued under the
// grant afterwards, so its record is kept only until the last one issued
// has expired.
func (c *BuildCredentials) Revoke(ctx context.Context, buildID string, attempt int) error {
	return c.Tokens.Revoker.RevokeUntil(ctx, auth.BuildGrant(buildID, attempt), time.Now().Add(c.lifetime()))
}

// revokeCredentials ends the registry credentials of attempt `attempt` of
// build id. A failure is logged, not returned: the build's outcome stands,
// and the tokens expire on their own within their short lifetime.
func (m *Manager) revokeCredentials(ctx context.Context, id string, attempt int) {
	if m.o.Credentials == nil || attempt <= 0 {
		return
	}
	if err := m.o.Credentials.Revoke(context.WithoutCancel(ctx), id, attempt); err != nil {
		m.log.Error("revoking a build's registry credentials failed; they expire on their own", "build", id, "attempt", attempt, "err", err)
	}
}
