// Package manage owns a build trigger's operations: activation (config,
// deploy key, SSH host key, the forge's webhook and deploy key, sealed
// secrets), removal, the manual run, Quay's Dockerfile analyzer, and handing
// a prepared push to the build manager. The API's trigger handlers and the
// webhook handler (triggers/webhook) decode a request, call it, and map its
// errors; neither decides anything about triggers itself.
package manage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
)

// Store is what the service reads and writes of the metadata store.
type Store interface {
	CreateTrigger(ctx context.Context, t *store.Trigger) error
	GetTrigger(ctx context.Context, uuid string) (*store.Trigger, error)
	UpdateTrigger(ctx context.Context, t *store.Trigger) error
	DeleteTrigger(ctx context.Context, uuid string) error
	GetRepository(ctx context.Context, namespace, name string) (*store.Repository, error)
	GetAccountByID(ctx context.Context, id int64) (*store.Account, error)
}

// Submitter queues builds (the build manager).
type Submitter interface {
	Submit(ctx context.Context, req buildmanager.BuildRequest) (*store.Build, error)
}

// Options configure New. Store, Manager and Secrets are required.
type Options struct {
	Store   Store
	Manager Submitter
	// Secrets seals the triggers' secrets, deploy keys and tokens.
	Secrets *auth.Secrets
	// Forges reaches the configured forges' APIs.
	Forges triggers.Forges
	// Egress is the policy git reads (run now, analyze) go through; the
	// configured forges' git servers are added to it. nil: the default
	// policy.
	Egress *egress.Policy
	// ScanHostKey records a git server's SSH host key (default
	// triggers.ScanHostKey through the egress policy).
	ScanHostKey func(ctx context.Context, hostport string) (string, error)
	Logger      *slog.Logger
}

// Service carries out trigger operations. Create it with New.
type Service struct {
	o   Options
	log *slog.Logger
	// egress is Options.Egress plus the configured forges' git servers,
	// which an administrator named.
	egress *egress.Policy
}

// New checks o and returns the service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Manager == nil || o.Secrets == nil {
		return nil, errors.New("manage.New: Store, Manager and Secrets are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	eo := o.Egress.Options()
	eo.TrustedHosts = append(eo.TrustedHosts, o.Forges.GitHosts()...)
	policy, err := egress.New(eo)
	if err != nil {
		return nil, fmt.Errorf("manage: trigger egress policy: %w", err)
	}
	if o.ScanHostKey == nil {
		o.ScanHostKey = func(ctx context.Context, hostport string) (string, error) {
			return triggers.ScanHostKey(ctx, policy.DialContext, hostport)
		}
	}
	return &Service{o: o, log: o.Logger, egress: policy}, nil
}

// Errors the service returns for a request it cannot carry out; the
// RequestError that wraps them says why in the caller's words.
var (
	// ErrNotActive: the trigger is not activated (or is already, for
	// Activate).
	ErrNotActive = errors.New("manage: trigger is not active")
	// ErrDisabled: the trigger is disabled.
	ErrDisabled = errors.New("manage: trigger is disabled")
	// ErrRefNotFound: the ref to build does not exist in the trigger's
	// git repository.
	ErrRefNotFound = errors.New("manage: ref not found")
	// ErrRefusedGitServer: the git server's address is refused by the
	// egress policy.
	ErrRefusedGitServer = errors.New("manage: git server refused by the egress policy")
)

// RequestError is a request the trigger cannot carry out as asked: a bad
// config, an unknown service, a ref that does not exist, a forge that
// refused the activation. Message is for the caller (the API answers it
// with 400); Err, when set, is the cause, for errors.Is (ErrRefNotFound,
// triggers.ErrForgeNotConfigured, …).
type RequestError struct {
	Message string
	Err     error
}

func (e *RequestError) Error() string { return e.Message }

func (e *RequestError) Unwrap() error { return e.Err }

func requestError(msg string) error { return &RequestError{Message: msg} }

// DisabledMessage is Quay's answer (400) to a delivery or a run of a
// disabled trigger.
const DisabledMessage = "This build trigger is currently disabled. Please re-enable to continue."

// SubmitStatus is the HTTP answer to a build the manager refused to queue,
// for the API's manual builds and trigger runs and for webhook deliveries
// alike: 429 when the queue limit is reached, 400 for an invalid request,
// with the message the caller sees. 0 for any other error, which is the
// server's failure.
func SubmitStatus(err error) (int, string) {
	var qe *buildmanager.QueueLimitError
	var ie *buildmanager.InvalidRequestError
	switch {
	case errors.As(err, &qe):
		return http.StatusTooManyRequests, "Maximum queued build rate exceeded."
	case errors.As(err, &ie):
		return http.StatusBadRequest, ie.Reason
	}
	return 0, ""
}

// Purposes the trigger's secrets are sealed under (auth.Secrets): each is
// bound to its trigger and column, so a ciphertext moved elsewhere does not
// open.
func SecretPurpose(uuid string) string     { return "trigger-secret:" + uuid }
func PrivateKeyPurpose(uuid string) string { return "trigger-private-key:" + uuid }
func AuthTokenPurpose(uuid string) string  { return "trigger-auth-token:" + uuid }

// Concurrency policies of a trigger (config key "concurrency").
const (
	// ConcurrencyParallel builds every push (the default).
	ConcurrencyParallel = "parallel"
	// ConcurrencySerial cancels a branch's queued builds that a newer push
	// of the same ref supersedes.
	ConcurrencySerial = "serial"
)

// ParseConfig reads the build part of a trigger's config and its
// concurrency policy.
func ParseConfig(raw json.RawMessage) (triggers.Config, string, error) {
	var cfg triggers.Config
	var extra struct {
		Concurrency string `json:"concurrency"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return cfg, "", fmt.Errorf("trigger config: %w", err)
		}
		if err := json.Unmarshal(raw, &extra); err != nil {
			return cfg, "", fmt.Errorf("trigger config: %w", err)
		}
	}
	if extra.Concurrency == "" {
		extra.Concurrency = ConcurrencyParallel
	}
	return cfg, extra.Concurrency, nil
}

// BuildSource is the trigger config's build_source: the forge's repository
// name ("owner/repo") or, for custom-git, the git URL.
func BuildSource(t *store.Trigger) string {
	var c struct {
		BuildSource string `json:"build_source"`
	}
	_ = json.Unmarshal(t.Config, &c)
	return c.BuildSource
}

// ForTrigger is the forge client a trigger acts with: its own sealed token
// when it has one. custom-git triggers have none: (nil, nil).
func (s *Service) ForTrigger(t *store.Trigger) (forge.Forge, error) {
	token := ""
	if len(t.SealedAuthToken) > 0 {
		b, err := s.o.Secrets.Open(t.SealedAuthToken, AuthTokenPurpose(t.UUID))
		if err != nil {
			return nil, fmt.Errorf("manage: trigger %s token: %w", t.UUID, err)
		}
		token = string(b)
	}
	return s.o.Forges.Client(t.Service, token)
}

// WebhookSecret is the secret an active trigger's deliveries authenticate
// with.
func (s *Service) WebhookSecret(t *store.Trigger) (string, error) {
	b, err := s.o.Secrets.Open(t.SealedSecret, SecretPurpose(t.UUID))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// RepositoryURL is the web page of a forge trigger's repository; "" for
// custom-git or without a build source.
func (s *Service) RepositoryURL(t *store.Trigger) string {
	src := BuildSource(t)
	host := s.o.Forges.WebHost(t.Service)
	if src == "" || host == "" {
		return ""
	}
	return "https://" + host + "/" + src
}

// GitURL is the URL builds of t with cfg clone (triggers.GitURL with the
// forge's configured host).
func (s *Service) GitURL(t *store.Trigger, cfg triggers.Config) string {
	return triggers.GitURL(t.Service, cfg, s.o.Forges.WebHost(t.Service))
}
