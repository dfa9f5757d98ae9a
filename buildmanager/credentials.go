package buildmanager

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

// RegistryTokenUser is the username a worker presents, with the registry
// token from PolicyCredentials as the password.
const RegistryTokenUser = auth.RegistryTokenUser

// maxPullGrants bounds the repositories a build token names for pulling,
// keeping it well under the 16 KiB registries accept.
const maxPullGrants = 100

// PolicyCredentials returns a CredentialsFunc issuing a registry token in
// the requester's name, signed with key and living `lifetime` (the build's
// time limit plus setup): pull and push on the build's repository, and pull
// on the repositories (at most 100, in name order) that the pull robot, or
// else the requester, may read per policy. service is the token audience.
func PolicyCredentials(key ed25519.PrivateKey, lifetime time.Duration, policy *auth.Policy, service, registry string) CredentialsFunc {
	tokens := auth.NewTokenService(key, lifetime)
	return func(ctx context.Context, b *store.Build) (*workerpb.RegistryCredentials, error) {
		var who, reader *auth.Principal
		if b.Requester != "" {
			acct, err := policy.Store.GetAccountByName(ctx, b.Requester)
			if err != nil {
				return nil, fmt.Errorf("requester %s: %w", b.Requester, err)
			}
			who = &auth.Principal{Account: acct}
		}
		reader = who
		if b.Request.PullRobot != "" {
			robot, err := policy.Store.GetAccountByName(ctx, b.Request.PullRobot)
			if err != nil || robot.Kind != store.KindRobot {
				return nil, fmt.Errorf("pull robot %s: not found", b.Request.PullRobot)
			}
			reader = &auth.Principal{Account: robot}
		}
		full := b.Namespace + "/" + b.Repository
		access := []auth.ResourceActions{{Type: auth.TypeRepository, Name: full, Actions: []auth.Action{auth.Pull, auth.Push}}}
		repos, err := policy.Store.ListRepositories(ctx, "", -1)
		if err != nil {
			return nil, err
		}
		for i := range repos {
			r := &repos[i]
			if len(access) > maxPullGrants || r.ID == b.RepoID {
				continue
			}
			role, err := policy.RepositoryRole(ctx, reader, r)
			if err != nil {
				return nil, err
			}
			if auth.RoleAtLeast(role, store.RoleRead) {
				access = append(access, auth.ResourceActions{Type: auth.TypeRepository, Name: r.FullName(), Actions: []auth.Action{auth.Pull}})
			}
		}
		tok, err := tokens.Issue(who, service, access)
		if err != nil {
			return nil, err
		}
		return &workerpb.RegistryCredentials{Registry: registry, Username: RegistryTokenUser, Password: tok.Token}, nil
	}
}
