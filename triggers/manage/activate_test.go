package manage

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/test/gitserver"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
)

// refusingManager fails a test that queues a build: activation queues none.
type refusingManager struct{ t *testing.T }

func (m refusingManager) Submit(context.Context, buildmanager.BuildRequest) (*store.Build, error) {
	m.t.Error("activation queued a build")
	return nil, errors.New("no builds here")
}

// memStore keeps triggers in memory: activation reads and writes nothing
// else.
type memStore struct {
	mu       sync.Mutex
	triggers map[string]store.Trigger
}

func (m *memStore) CreateTrigger(_ context.Context, t *store.Trigger) error {
	return m.UpdateTrigger(context.Background(), t)
}

func (m *memStore) GetTrigger(_ context.Context, uuid string) (*store.Trigger, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.triggers[uuid]
	if !ok {
		return nil, store.ErrNotFound
	}
	return &t, nil
}

func (m *memStore) UpdateTrigger(_ context.Context, t *store.Trigger) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.triggers[t.UUID] = *t
	return nil
}

func (m *memStore) DeleteTrigger(_ context.Context, uuid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.triggers, uuid)
	return nil
}

func (m *memStore) GetRepository(context.Context, string, string) (*store.Repository, error) {
	return nil, store.ErrNotFound
}

func (m *memStore) GetAccountByID(context.Context, int64) (*store.Account, error) {
	return nil, store.ErrNotFound
}

// newBitbucketService is a service over an in-memory store whose Bitbucket
// API is the fake at apiURL. scan nil scans for real, through a policy
// that lets loopback through.
func newBitbucketService(t *testing.T, apiURL string, scan func(ctx context.Context, hostport string) (string, error)) *Service {
	t.Helper()
	sec, err := auth.NewSecrets([]byte("manage test key material"))
	if err != nil {
		t.Fatal(err)
	}
	policy, err := egress.New(egress.Options{AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Store: &memStore{triggers: map[string]store.Trigger{}}, Manager: refusingManager{t}, Secrets: sec, Egress: policy, ScanHostKey: scan,
		Forges: triggers.Forges{Configs: map[string]forge.Config{
			triggers.ServiceBitbucket: forge.BitbucketConfig{APIEndpoint: apiURL + "/2.0/", AccessToken: "tok"}}},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bitbucketActivation(cfg string) Activation {
	return Activation{Config: json.RawMessage(cfg), HookURL: func(id string) string { return "https://berth.example/webhooks/push/trigger/" + id }}
}

// A Bitbucket-compatible server whose git is not at bitbucket.org needs no
// clone_url: activation asks the repository API for its clone link first
// and records the host key of that link's SSH server, before the deploy
// key and webhook are installed.
func TestBitbucketActivationScansTheHostOfTheCloneLinkFromFakeAPI(t *testing.T) {
	srv, paths := fakeBitbucketAPI(t, `{"links": {"clone": [
		{"name": "https", "href": "https://git.corp.example/scm/analytical/engine.git"},
		{"name": "ssh", "href": "ssh://git@git.corp.example:7999/analytical/engine.git"}]}}`)
	var scanned []string
	s := newBitbucketService(t, srv.URL, func(_ context.Context, hostport string) (string, error) {
		scanned = append(scanned, hostport)
		return "[git.corp.example]:7999 ssh-ed25519 HOSTKEY", nil
	})
	tr, err := s.Create(context.Background(), 1, triggers.ServiceBitbucket, bitbucketActivation(`{"build_source": "analytical/engine"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(scanned, []string{"git.corp.example:7999"}) || tr.KnownHosts != "[git.corp.example]:7999 ssh-ed25519 HOSTKEY" {
		t.Errorf("host keys scanned %v, recorded %q: want the clone link's SSH server, not bitbucket.org", scanned, tr.KnownHosts)
	}
	want := []string{"GET /2.0/repositories/analytical/engine", "POST /2.0/repositories/analytical/engine/deploy-keys",
		"POST /2.0/repositories/analytical/engine/hooks"}
	if !slices.Equal(*paths, want) {
		t.Errorf("forge calls %v, want %v", *paths, want)
	}
	var cfg triggers.Config
	if err := json.Unmarshal(tr.Config, &cfg); err != nil {
		t.Fatal(err)
	}
	if got := s.GitURL(tr, cfg); got != "ssh://git@git.corp.example:7999/analytical/engine.git" {
		t.Errorf("builds clone %q, want the API's SSH link", got)
	}
}

// The same against a real SSH git server: the host key recorded is the
// one that server presents.
func TestBitbucketActivationRecordsTheRealSSHHostKeyOfTheCloneLinkFromFakeAPI(t *testing.T) {
	repo := gitserver.NewRepo(t)
	_, authorized := gitserver.NewSSHKey(t)
	base, knownHosts := gitserver.ServeSSH(t, repo.Root, authorized)
	srv, _ := fakeBitbucketAPI(t, `{"links": {"clone": [{"name": "ssh", "href": "`+base+`/repo.git"}]}}`)
	s := newBitbucketService(t, srv.URL, nil)
	tr, err := s.Create(context.Background(), 1, triggers.ServiceBitbucket, bitbucketActivation(`{"build_source": "analytical/engine"}`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(tr.KnownHosts) != strings.TrimSpace(knownHosts) {
		t.Errorf("recorded host key %q, want the SSH server's %q", tr.KnownHosts, knownHosts)
	}
}

// A clone link whose server the egress policy refuses stops the
// activation before anything is installed on the forge.
func TestBitbucketActivationRefusesACloneLinkOnAPrivateNetworkFromFakeAPI(t *testing.T) {
	srv, paths := fakeBitbucketAPI(t, `{"links": {"clone": [{"name": "ssh", "href": "ssh://git@10.1.2.3:7999/analytical/engine.git"}]}}`)
	s := newBitbucketService(t, srv.URL, nil)
	_, err := s.Create(context.Background(), 1, triggers.ServiceBitbucket, bitbucketActivation(`{"build_source": "analytical/engine"}`))
	var re *RequestError
	if !errors.As(err, &re) || !errors.Is(err, ErrRefusedGitServer) {
		t.Fatalf("Create = %v, want a RequestError for the refused git server", err)
	}
	if len(*paths) != 1 {
		t.Errorf("forge calls %v: only the repository should have been read", *paths)
	}
}
