package registry_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/sqlstore"
	"github.com/berth-dev/berth/registry"
	regauth "github.com/berth-dev/berth/registry/auth"
	"github.com/berth-dev/berth/storage/filesystem"
)

// uploadsUndeletable is the SQL store with DeleteUpload failing.
type uploadsUndeletable struct{ *sqlstore.Store }

var errDeleteRefused = errors.New("delete refused")

func (uploadsUndeletable) DeleteUpload(context.Context, string) error { return errDeleteRefused }

// A digest mismatch spends the upload session; when forgetting it fails,
// the client still gets DIGEST_INVALID and the failure is logged rather than
// lost.
func TestSpentUploadDropFailureIsLogged(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sql, err := sqlstore.Open(ctx, "sqlite://"+filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sql.Close() })
	st := uploadsUndeletable{sql}
	blobs, err := filesystem.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	hash, err := auth.HashPassword("dave-pw")
	if err != nil {
		t.Fatal(err)
	}
	dave := &store.Account{Kind: store.KindUser, Name: "dave", PasswordHash: hash, Enabled: true}
	if err := st.CreateAccount(ctx, dave); err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	tokens := auth.NewTokenService(key, 5*time.Minute)
	tok, err := tokens.Issue(&auth.Principal{Account: dave}, "svc", []auth.ResourceActions{
		{Type: auth.TypeRepository, Name: "dave/app", Actions: []auth.Action{auth.Pull, auth.Push}},
	})
	if err != nil {
		t.Fatal(err)
	}
	policy := &auth.Policy{Store: st}
	authz := regauth.NewServer(regauth.ServerOptions{
		Policy: policy, Authenticator: auth.NewAuthenticator(st), Tokens: tokens,
	})
	var logs lockedBuffer
	var base string
	srv := httptest.NewServer(registry.New(registry.Options{
		Store: st, Blobs: blobs, Authorizer: authz, Policy: policy,
		ExternalURL: func(*http.Request) string { return base },
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	}))
	t.Cleanup(srv.Close)
	base = srv.URL

	do := func(method, url string, body []byte) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	start := do("POST", srv.URL+"/v2/dave/app/blobs/uploads/", nil)
	if start.StatusCode != http.StatusAccepted {
		t.Fatalf("starting an upload answered %d, want 202", start.StatusCode)
	}
	loc := start.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = srv.URL + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	wrong := digest.FromString("not the content")
	put := do("PUT", loc+sep+"digest="+wrong.String(), []byte("the content"))
	body, _ := io.ReadAll(put.Body)
	if put.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "DIGEST_INVALID") {
		t.Fatalf("PUT with a wrong digest answered %d %s, want 400 DIGEST_INVALID", put.StatusCode, body)
	}
	out := logs.String()
	if !strings.Contains(out, "dropping a spent upload failed") || !strings.Contains(out, errDeleteRefused.Error()) {
		t.Errorf("the failed drop was not logged with its error; log:\n%s", out)
	}
}
