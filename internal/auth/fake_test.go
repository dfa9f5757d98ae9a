package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/internal/store"
)

// fakeStore implements the few Store methods auth calls; any other method
// panics through the nil embedded interface.
type fakeStore struct {
	store.Store
	mu           sync.Mutex
	accounts     map[string]*store.Account
	repos        map[string]*store.Repository
	fail         error // returned by every call when set
	accountCalls atomic.Int64
	repoCalls    atomic.Int64
}

func newFakeStore() *fakeStore {
	return &fakeStore{accounts: map[string]*store.Account{}, repos: map[string]*store.Repository{}}
}

func (f *fakeStore) addUser(t testing.TB, name, password string, mod func(*store.Account)) *store.Account {
	t.Helper()
	a := &store.Account{ID: int64(len(f.accounts) + 1), Kind: store.KindUser, Name: name, Enabled: true}
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
