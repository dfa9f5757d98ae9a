package auth

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/berth-dev/berth/internal/store"
)

func TestRepositoryGrant(t *testing.T) {
	alice := &store.Account{Kind: store.KindUser, Name: "alice", Enabled: true}
	bob := &store.Account{Kind: store.KindUser, Name: "bob", Enabled: true}
	root := &store.Account{Kind: store.KindUser, Name: "root", Enabled: true, Superuser: true}
	disabledAlice := &store.Account{Kind: store.KindUser, Name: "alice"}
	disabledRoot := &store.Account{Kind: store.KindUser, Name: "root", Superuser: true}
	org := &store.Account{Kind: store.KindOrganization, Name: "alice", Enabled: true}
	pub := &store.Repository{Namespace: "alice", Name: "app", Visibility: store.Public}
	priv := &store.Repository{Namespace: "alice", Name: "app", Visibility: store.Private}

	for _, tc := range []struct {
		name string
		acct *store.Account
		repo *store.Repository
		want []Action
	}{
		{"owner private", alice, priv, []Action{Pull, Push, Delete}},
		{"owner public", alice, pub, []Action{Pull, Push, Delete}},
		{"owner creates", alice, nil, []Action{Pull, Push}},
		{"superuser private", root, priv, []Action{Pull, Push, Delete}},
		{"superuser creates", root, nil, []Action{Pull, Push}},
		{"other user private", bob, priv, nil},
		{"other user public", bob, pub, []Action{Pull}},
		{"other user missing", bob, nil, nil},
		{"anonymous public", nil, pub, []Action{Pull}},
		{"anonymous private", nil, priv, nil},
		{"anonymous missing", nil, nil, nil},
		{"disabled owner", disabledAlice, priv, nil},
		{"disabled owner public", disabledAlice, pub, nil},
		{"disabled superuser", disabledRoot, priv, nil},
		{"account of another kind with the namespace's name", org, priv, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := repositoryGrant(tc.acct, "alice", tc.repo); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPolicyRepositoryActions(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore()
	repo := fs.addRepo("alice", "team/app", store.Public)
	p := &Policy{Store: fs}
	alice := &Principal{Account: &store.Account{Kind: store.KindUser, Name: "alice", Enabled: true}}

	got, r, err := p.RepositoryActions(ctx, nil, "alice", "team/app")
	if err != nil || !slices.Equal(got, []Action{Pull}) || r == nil || r.ID != repo.ID {
		t.Fatalf("anonymous public: %v %v %v", got, r, err)
	}
	got, r, err = p.RepositoryActions(ctx, alice, "alice", "new")
	if err != nil || !slices.Equal(got, []Action{Pull, Push}) || r != nil {
		t.Fatalf("owner, missing repo: %v %v %v", got, r, err)
	}
	fs.fail = errDBDown
	if _, _, err := p.RepositoryActions(ctx, alice, "alice", "team/app"); !errors.Is(err, errDBDown) {
		t.Fatalf("store failure: err = %v, want it wrapped", err)
	}
}

func TestIntersect(t *testing.T) {
	all := []Action{Pull, Push, Delete}
	for _, tc := range []struct {
		req, granted, want []Action
	}{
		{[]Action{Pull, Push}, all, []Action{Pull, Push}},
		{[]Action{Pull, Push}, []Action{Pull}, []Action{Pull}},
		{[]Action{Push}, []Action{Pull}, nil},
		{[]Action{All}, all, []Action{All}},
		{[]Action{All}, []Action{Pull, Push}, []Action{Pull, Push}},
		{[]Action{Delete}, []Action{All}, []Action{Delete}},
		{[]Action{Pull, Pull, Push, Pull}, all, []Action{Pull, Push}},
		{[]Action{Pull, All}, []Action{Pull}, []Action{Pull}},
		{nil, all, nil},
		{[]Action{Pull}, nil, nil},
	} {
		if got := Intersect(tc.req, tc.granted); !slices.Equal(got, tc.want) {
			t.Errorf("Intersect(%v, %v) = %v, want %v", tc.req, tc.granted, got, tc.want)
		}
	}
	if !Covers([]Action{Pull, Push, Delete}, All) || Covers([]Action{Pull, Push}, All) {
		t.Error("Covers(..., All) must need every action")
	}
}

func TestCatalogAllowed(t *testing.T) {
	p := &Policy{}
	for _, tc := range []struct {
		who  *Principal
		want bool
	}{
		{nil, false},
		{&Principal{}, false},
		{&Principal{Account: &store.Account{Name: "alice", Enabled: true}}, false},
		{&Principal{Account: &store.Account{Name: "root", Enabled: true, Superuser: true}}, true},
		{&Principal{Account: &store.Account{Name: "root", Superuser: true}}, false},
	} {
		if got := p.CatalogAllowed(tc.who); got != tc.want {
			t.Errorf("CatalogAllowed(%q) = %v", tc.who.Name(), got)
		}
	}
}
