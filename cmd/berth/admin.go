package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
)

const adminUsage = `usage: berth admin token create --user U --scope S [--scope S]... [--data-dir D] [--config F]

Creates an OAuth access token for user U with the given scopes (repo:read,
repo:write, repo:admin, repo:create, user:read, user:admin, org:admin,
super:user) and prints only the token on stdout. Safe while the server runs:
the running server accepts the token at once. It expires after
ACCESS_TOKEN_LIFETIME_S (default 90 days), or when U's password changes.
`

// runAdmin dispatches "berth admin ...".
func runAdmin(ctx context.Context, args []string) error {
	if len(args) >= 2 && args[0] == "token" && args[1] == "create" {
		return adminTokenCreate(ctx, args[2:], os.Stdout)
	}
	fmt.Fprint(os.Stderr, adminUsage)
	return flag.ErrHelp
}

// scopeFlags collects repeated --scope flags.
type scopeFlags []string

func (s *scopeFlags) String() string     { return strings.Join(*s, ",") }
func (s *scopeFlags) Set(v string) error { *s = append(*s, v); return nil }

// adminTokenCreate creates the token and writes it, alone, to out.
func adminTokenCreate(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("admin token create", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), adminUsage); fs.PrintDefaults() }
	var common commonFlags
	common.register(fs)
	user := fs.String("user", "", "the user the token acts for")
	var scopes scopeFlags
	fs.Var(&scopes, "scope", "an OAuth scope (repeat for several)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *user == "" {
		return errors.New("admin token create: --user is required")
	}
	parsed, err := auth.ParseOAuthScopes(scopes)
	if err != nil {
		return fmt.Errorf("admin token create: --scope: %w", err)
	}
	log, err := newLogger(common.logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	cfg, err := common.load(log)
	if err != nil {
		return err
	}
	st, err := sqlstore.Open(ctx, cfg.DatabaseURI())
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer st.Close()

	acct, err := st.GetAccountByName(ctx, *user)
	if errors.Is(err, store.ErrNotFound) || err == nil && acct.Kind != store.KindUser {
		return fmt.Errorf("admin token create: no user %q", *user)
	}
	if err != nil {
		return fmt.Errorf("look up user: %w", err)
	}
	if !acct.Enabled {
		return fmt.Errorf("admin token create: user %q is disabled", *user)
	}
	lifetime, err := api.AccessTokenLifetime(cfg)
	if err != nil {
		return err
	}
	epoch, err := credentialEpoch(ctx, st, acct.Name)
	if err != nil {
		return err
	}
	token := auth.RandomString(auth.AccessTokenLen, auth.MixedAlnum)
	t := &store.AccessToken{AccountID: acct.ID, TokenHash: auth.HashToken(token), Scopes: auth.ScopeStrings(parsed),
		CredentialEpoch: epoch}
	if lifetime > 0 {
		expires := time.Now().Add(lifetime)
		t.ExpiresAt = &expires
	}
	if err := st.CreateAccessToken(ctx, t); err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	log.Info("access token created", "user", acct.Name, "scopes", strings.Join(auth.ScopeStrings(parsed), ","))
	_, err = fmt.Fprintln(out, token)
	return err
}

// credentialEpoch reads subject's credential epoch from the database, which
// a token records so that a later password change ends it.
func credentialEpoch(ctx context.Context, st store.Store, subject string) (uint64, error) {
	epochs, err := st.CredentialEpochsSince(ctx, time.Time{})
	if err != nil {
		return 0, fmt.Errorf("read credential epochs: %w", err)
	}
	for _, e := range epochs {
		if e.Subject == subject {
			return e.Epoch, nil
		}
	}
	return 0, nil
}
