package registry_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
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

// lockedBuffer is a log sink for concurrent requests.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Concurrent pushes that create one repository log its creation once: only
// the request that created it says so.
func TestRepositoryCreatedOnPushLoggedOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlstore.Open(ctx, "sqlite://"+filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := filesystem.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	hash, err := auth.HashPassword("carol-pw")
	if err != nil {
		t.Fatal(err)
	}
	carol := &store.Account{Kind: store.KindUser, Name: "carol", PasswordHash: hash, Enabled: true}
	if err := st.CreateAccount(ctx, carol); err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	tokens := auth.NewTokenService(key, 5*time.Minute)
	// A bearer token, as podman pushes with, keeps authentication cheap so
	// that the pushes race for the creation.
	tok, err := tokens.Issue(&auth.Principal{Account: carol}, "svc", []auth.ResourceActions{
		{Type: auth.TypeRepository, Name: "carol/fresh", Actions: []auth.Action{auth.Pull, auth.Push}},
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
	h := registry.New(registry.Options{
		Store: st, Blobs: blobs, Authorizer: authz, Policy: policy,
		ExternalURL: func(*http.Request) string { return base },
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	base = srv.URL

	const pushes = 16
	var wg sync.WaitGroup
	statuses := make(chan int, pushes)
	for i := range pushes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := []byte(strings.Repeat("x", i+1))
			req, _ := http.NewRequest("POST", srv.URL+"/v2/carol/fresh/blobs/uploads/?digest="+digest.FromBytes(data).String(), bytes.NewReader(data))
			req.Header.Set("Authorization", "Bearer "+tok.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusCreated {
			t.Errorf("push answered %d, want 201", s)
		}
	}
	if n := strings.Count(logs.String(), "repository created on push"); n != 1 {
		t.Errorf("creation logged %d times, want once:\n%s", n, logs.String())
	}
}
