package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/internal/store"
)

// countingStore counts the per-repository lookups the policy makes.
type countingStore struct {
	store.Store
	lookups atomic.Int64
}

func (c *countingStore) GetRepository(ctx context.Context, ns, name string) (*store.Repository, error) {
	c.lookups.Add(1)
	return c.Store.GetRepository(ctx, ns, name)
}

func (c *countingStore) EffectiveRepoRoles(ctx context.Context, repoID, accountID int64) ([]store.Role, error) {
	c.lookups.Add(1)
	return c.Store.EffectiveRepoRoles(ctx, repoID, accountID)
}

// F17(e): an anonymous catalog scan looked every repository up again to
// ask the policy about it. The policy now gets the listed row, and decides
// an anonymous caller on visibility alone: no query per repository.
func TestAnonymousCatalogCostsNoQueryPerRepository(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sql := openStore(t, dir)
	st := &countingStore{Store: sql}
	alice := addUser(t, st, "alice")
	var public []string
	for i := range 40 {
		r := &store.Repository{NamespaceID: alice.ID, Name: fmt.Sprintf("r%02d", i), Visibility: store.Private}
		if i%8 == 0 {
			r.Visibility = store.Public
			public = append(public, "alice/"+r.Name)
		}
		if err := st.CreateRepository(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	srv := serve(t, st, filepath.Join(dir, "blobs"), nil).srv

	catalog := func(set func(*http.Request)) []string {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/v2/_catalog?n=100", nil)
		set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Repositories []string }
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&body) != nil {
			t.Fatalf("catalog: %d", resp.StatusCode)
		}
		return body.Repositories
	}
	resp, err := http.Get(srv.URL + "/v2/auth?service=test")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.Token == "" {
		t.Fatalf("anonymous token: %d, %v", resp.StatusCode, err)
	}
	resp.Body.Close()

	st.lookups.Store(0)
	got := catalog(func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.Token) })
	if fmt.Sprint(got) != fmt.Sprint(public) {
		t.Fatalf("anonymous catalog %v, want the public %v", got, public)
	}
	if n := st.lookups.Load(); n != 0 {
		t.Fatalf("the anonymous catalog of 40 repositories made %d repository lookups", n)
	}
	// The owner still sees every repository.
	if got := catalog(func(r *http.Request) { r.SetBasicAuth("alice", "alice-pw") }); len(got) != 40 {
		t.Fatalf("alice's catalog has %d repositories, want 40", len(got))
	}
}
