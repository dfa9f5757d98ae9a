package main

import (
	"bytes"
	"context"
	"flag"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
)

func TestAdminTokenCreate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// The "running server": its store and authenticator stay open throughout.
	st, err := sqlstore.Open(ctx, "sqlite://"+filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.CreateAccount(ctx, &store.Account{Kind: store.KindUser, Name: "alice", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	authn := auth.NewAuthenticator(st)
	// A lookup that fails before the token exists must not hide it afterwards.
	if _, err := authn.AccessToken(ctx, "x"); err == nil {
		t.Fatal("unknown token accepted")
	}

	var out bytes.Buffer
	args := []string{"--data-dir", dir, "--user", "alice", "--scope", "repo:read", "--scope", "repo:write,user:read", "--log-level", "error"}
	if err := adminTokenCreate(ctx, args, &out); err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSuffix(out.String(), "\n")
	if !regexp.MustCompile(`^[A-Za-z0-9]{40}$`).MatchString(tok) {
		t.Fatalf("stdout %q is not just a token", out.String())
	}
	p, err := authn.AccessToken(ctx, tok)
	if err != nil || p.Name() != "alice" {
		t.Fatalf("the server does not accept the new token: %v", err)
	}
	if !p.HasScope(auth.ScopeRepoWrite) || !p.HasScope(auth.ScopeUserRead) || p.HasScope(auth.ScopeRepoAdmin) {
		t.Fatalf("scopes %v", p.Scopes)
	}
	// It expires after the default lifetime, and records alice's current
	// credential epoch, so that it works now and ends at her next revocation.
	stored, err := st.GetAccessTokenByHash(ctx, auth.HashToken(tok))
	if err != nil || stored.ExpiresAt == nil || stored.ExpiresAt.Sub(stored.CreatedAt).Round(time.Minute) != api.DefaultAccessTokenLifetime {
		t.Fatalf("stored token %+v, %v; want it to expire after %v", stored, err, api.DefaultAccessTokenLifetime)
	}
	if _, err := st.BumpCredentialEpoch(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := adminTokenCreate(ctx, args, &out); err != nil {
		t.Fatal(err)
	}
	if stored, err := st.GetAccessTokenByHash(ctx, auth.HashToken(strings.TrimSpace(out.String()))); err != nil || stored.CredentialEpoch != 1 {
		t.Fatalf("token made after a revocation: %+v, %v; want epoch 1", stored, err)
	}

	for _, bad := range [][]string{
		{"--data-dir", dir, "--scope", "repo:read"},
		{"--data-dir", dir, "--user", "alice"},
		{"--data-dir", dir, "--user", "alice", "--scope", "repo:everything"},
		{"--data-dir", dir, "--user", "nobody", "--scope", "repo:read"},
	} {
		out.Reset()
		if err := adminTokenCreate(ctx, append(bad, "--log-level", "error"), &out); err == nil || out.Len() != 0 {
			t.Errorf("%v: err %v, stdout %q", bad, err, out.String())
		}
	}
	if err := runAdmin(ctx, []string{"nope"}); err != flag.ErrHelp {
		t.Fatalf("unknown subcommand: %v", err)
	}
}
