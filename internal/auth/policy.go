package auth

import (
	"context"
	"errors"
	"fmt"

	"github.com/berth-dev/berth/internal/store"
)

// Policy is the one place that decides what a principal may do on a
// repository. Every entry point (bearer tokens, Basic on /v2, the REST API)
// asks it, so permission rules change here and nowhere else.
type Policy struct {
	Store store.Store
}

// RepositoryActions returns the actions who may perform on namespace/name
// and the repository itself (nil when it does not exist yet). The returned
// slice is shared: do not modify its elements. An error is returned only
// when the store fails; "no access" is an empty grant.
//
// A grant of push on a repository that does not exist means the principal
// may create it by pushing; the caller creating it must still check that the
// namespace exists.
func (p *Policy) RepositoryActions(ctx context.Context, who *Principal, namespace, name string) ([]Action, *store.Repository, error) {
	acct := who.account()
	if acct != nil && !acct.Enabled {
		// Nothing about the repository is revealed to a disabled account.
		return nil, nil, nil
	}
	repo, err := p.Store.GetRepository(ctx, namespace, name)
	if errors.Is(err, store.ErrNotFound) {
		repo = nil
	} else if err != nil {
		return nil, nil, fmt.Errorf("look up repository %s/%s: %w", namespace, name, err)
	}
	return repositoryGrant(acct, namespace, repo), repo, nil
}

// repositoryGrant holds the rules, free of I/O so that they can be tested
// as a table. acct is nil for anonymous callers; repo is nil when the
// repository does not exist. The owners of a namespace are, for now, the user
// of the same name and every superuser; organizations, teams and robots will
// add their rules here.
func repositoryGrant(acct *store.Account, namespace string, repo *store.Repository) []Action {
	owner := acct != nil && acct.Enabled &&
		(acct.Superuser || acct.Kind == store.KindUser && acct.Name == namespace)
	switch {
	case acct != nil && !acct.Enabled:
		return nil
	case owner && repo == nil:
		// Whoever could create the repository may push to it, so that the
		// first push creates it. Delete waits until there is something.
		return grantPullPush
	case owner:
		return grantAll
	case repo == nil:
		// Anyone else learns nothing about a repository that is not there.
		return nil
	case repo.Visibility == store.Public:
		return grantPull
	}
	return nil
}

// CatalogAllowed reports whether who may list every repository
// (GET /v2/_catalog, scope registry:catalog:*): enabled superusers only.
func (p *Policy) CatalogAllowed(who *Principal) bool {
	acct := who.account()
	return acct != nil && acct.Enabled && acct.Superuser
}
