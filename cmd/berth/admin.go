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

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
)

const adminUsage = `usage: berth admin token create --user U --scope S [--scope S]... [--data-dir D] [--config F]

Creates an OAuth access token for user U with the given scopes (repo:read,
repo:write, repo:admin, repo:create, user:read, user:admin, org:admin,
super:user) and prints only the token on stdout. Safe while the server runs:
the running server accepts the token at once.
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
	token := auth.RandomString(auth.AccessTokenLen, auth.MixedAlnum)
	t := &store.AccessToken{AccountID: acct.ID, TokenHash: auth.HashToken(token), Scopes: auth.ScopeStrings(parsed)}
	if err := st.CreateAccessToken(ctx, t); err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	log.Info("access token created", "user", acct.Name, "scopes", strings.Join(auth.ScopeStrings(parsed), ","))
	_, err = fmt.Fprintln(out, token)
	return err
}
