package buildmanager

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
)

func TestPolicyCredentials(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	repos := map[string]*store.Repository{}
	for _, ns := range []string{"alice", "bob"} {
		a := &store.Account{Kind: store.KindUser, Name: ns, Enabled: true}
		if err := st.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
		for _, r := range []struct {
			name string
			vis  store.Visibility
		}{{"app", store.Private}, {"private", store.Private}, {"public", store.Public}} {
			repo := &store.Repository{NamespaceID: a.ID, Name: r.name, Visibility: r.vis}
			if err := st.CreateRepository(ctx, repo); err != nil {
				t.Fatal(err)
			}
			repos[ns+"/"+r.name] = repo
		}
	}
	app := repos["alice/app"]
	b := &store.Build{ID: "b1", RepoID: app.ID, Namespace: "alice", Repository: "app", Requester: "alice"}
	creds, err := PolicyCredentials(testKey, time.Hour, &auth.Policy{Store: st}, "berth.test", "berth.test:8080")(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if creds.GetUsername() != RegistryTokenUser || creds.GetRegistry() != "berth.test:8080" {
		t.Errorf("credentials %v", creds)
	}
	claims, err := auth.NewTokenService(testKey, 0).Verify(ctx, creds.GetPassword())
	if err != nil {
		t.Fatalf("token does not verify with the server's key: %v", err)
	}
	if claims.Subject != "alice" || claims.ExpiresAt.Sub(time.Now()) < 50*time.Minute {
		t.Errorf("subject %q expires %v", claims.Subject, claims.ExpiresAt)
	}
	checks := []struct {
		repo    string
		actions []auth.Action
		want    bool
	}{
		{"alice/app", []auth.Action{auth.Pull, auth.Push}, true},
		{"alice/private", []auth.Action{auth.Pull}, true},
		{"alice/private", []auth.Action{auth.Push}, false},
		{"bob/public", []auth.Action{auth.Pull}, true},
		{"bob/private", []auth.Action{auth.Pull}, false},
		{"bob/app", []auth.Action{auth.Pull}, false},
	}
	for _, c := range checks {
		if got := claims.Allows(auth.TypeRepository, c.repo, c.actions...); got != c.want {
			t.Errorf("%s %v: %v, want %v", c.repo, c.actions, got, c.want)
		}
	}
}
