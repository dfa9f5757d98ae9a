package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
)

// fakeStore implements the store methods auth calls: the policy's and the
// authenticator's.
type fakeStore struct {
	mu       sync.Mutex
	accounts map[string]*store.Account
	repos    map[string]*store.Repository
	fail     error // returned by every call when set
	// repoRoles maps {repoID, accountID} to the roles EffectiveRepoRoles returns.
	repoRoles map[[2]int64][]store.Role
	// teamRoles maps {orgID, accountID} to the roles OrgTeamRoles returns.
	teamRoles    map[[2]int64][]store.TeamRole
	robots       map[int64]*store.RobotInfo
	tokens       map[string]*store.AccessToken // by hash
	touched      atomic.Int64
	accountCalls atomic.Int64
	repoCalls    atomic.Int64
}

var (
	_ PolicyStore = (*fakeStore)(nil)
	_ LoginStore  = (*fakeStore)(nil)

	// The SQL store is the one implementation of every store auth uses.
	_ PolicyStore = (*sqlstore.Store)(nil)
	_ LoginStore  = (*sqlstore.Store)(nil)
	_ EpochStore  = (*sqlstore.Store)(nil)
)

func newFakeStore() *fakeStore {
	return &fakeStore{accounts: map[string]*store.Account{}, repos: map[string]*store.Repository{},
		repoRoles: map[[2]int64][]store.Role{}, teamRoles: map[[2]int64][]store.TeamRole{},
		robots: map[int64]*store.RobotInfo{}, tokens: map[string]*store.AccessToken{}}
}

func (f *fakeStore) addUser(t testing.TB, name, password string, mod func(*store.Account)) *store.Account {
	t.Helper()
	f.mu.Lock()
	a := &store.Account{ID: int64(len(f.accounts) + 1), Kind: store.KindUser, Name: name, Enabled: true}
	f.mu.Unlock()
	if password != "" {
		a.PasswordHash = testHash(t, password)
	}
	if mod != nil {
		mod(a)
	}
	f.mu.Lock()
	f.accounts[name] = a
	f.mu.Unlock()
	return a
}

func (f *fakeStore) addRepo(ns, name string, vis store.Visibility) *store.Repository {
	r := &store.Repository{ID: int64(len(f.repos) + 1), Namespace: ns, Name: name, Visibility: vis}
	if a, ok := f.accounts[ns]; ok {
		r.NamespaceID = a.ID
	}
	f.mu.Lock()
	f.repos[ns+"/"+name] = r
	f.mu.Unlock()
	return r
}

func (f *fakeStore) GetAccountByName(ctx context.Context, name string) (*store.Account, error) {
	f.accountCalls.Add(1)
	if f.fail != nil {
		return nil, f.fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[name]
	if !ok {
		return nil, fmt.Errorf("account %s: %w", name, store.ErrNotFound)
	}
	c := *a
	return &c, nil
}

func (f *fakeStore) GetRepository(ctx context.Context, ns, name string) (*store.Repository, error) {
	f.repoCalls.Add(1)
	if f.fail != nil {
		return nil, f.fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.repos[ns+"/"+name]
	if !ok {
		return nil, fmt.Errorf("repository %s/%s: %w", ns, name, store.ErrNotFound)
	}
	c := *r
	return &c, nil
}

func (f *fakeStore) GetAccountByID(ctx context.Context, id int64) (*store.Account, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.accounts {
		if a.ID == id {
			c := *a
			return &c, nil
		}
	}
	return nil, fmt.Errorf("account %d: %w", id, store.ErrNotFound)
}

func (f *fakeStore) EffectiveRepoRoles(ctx context.Context, repoID, accountID int64) ([]store.Role, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.repoRoles[[2]int64{repoID, accountID}], nil
}

func (f *fakeStore) OrgTeamRoles(ctx context.Context, orgID, accountID int64) ([]store.TeamRole, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.teamRoles[[2]int64{orgID, accountID}], nil
}

func (f *fakeStore) GetRobotInfo(ctx context.Context, id int64) (*store.RobotInfo, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ri, ok := f.robots[id]
	if !ok {
		return nil, fmt.Errorf("robot %d: %w", id, store.ErrNotFound)
	}
	c := *ri
	return &c, nil
}

func (f *fakeStore) TouchRobot(ctx context.Context, id int64, at time.Time) error {
	f.touched.Add(1)
	return nil
}

func (f *fakeStore) GetAccessTokenByHash(ctx context.Context, hash string) (*store.AccessToken, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tokens[hash]
	if !ok {
		return nil, fmt.Errorf("token: %w", store.ErrNotFound)
	}
	c := *t
	return &c, nil
}

var errDBDown = errors.New("database down")

// testHash memoises bcrypt hashes: each costs tens of milliseconds.
var (
	hashMu sync.Mutex
	hashes = map[string]string{}
)

func testHash(t testing.TB, pw string) string {
	t.Helper()
	hashMu.Lock()
	defer hashMu.Unlock()
	if h, ok := hashes[pw]; ok {
		return h
	}
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	hashes[pw] = h
	return h
}
