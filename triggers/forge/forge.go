// Package forge talks to the forges' REST APIs for what a trigger needs
// beyond parsing webhooks: activation (webhook with a secret, read-only deploy
// key), deactivation, commit statuses, the default branch and, for Bitbucket,
// the files a push changed. One small interface, three implementations,
// each with a configurable endpoint so self-hosted forges and test servers
// work.
package forge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// State is a commit status state in berth's vocabulary (GitHub's); each
// forge maps it to its own.
type State string

// Commit status states.
const (
	StatePending State = "pending"
	StateSuccess State = "success"
	StateFailure State = "failure"
	StateError   State = "error"
)

func (s State) valid() bool {
	switch s {
	case StatePending, StateSuccess, StateFailure, StateError:
		return true
	}
	return false
}

// Status is a commit status: its state, the build's log page, a one-line
// description, and the context that names berth among the repository's
// checks (DefaultStatusContext when empty).
type Status struct {
	State       State
	TargetURL   string
	Description string
	Context     string
}

// DefaultStatusContext names berth's status on the commit.
const DefaultStatusContext = "berth/build"

func (s Status) context() string {
	if s.Context == "" {
		return DefaultStatusContext
	}
	return s.Context
}

// Forge is one forge's API as triggers use it. repo is the forge's name of
// the repository ("owner/repo", a GitLab path or numeric id, a Bitbucket
// "workspace/slug"); ids are returned and taken as strings whatever the
// forge's type.
type Forge interface {
	// CreateHook registers a push webhook (branches and tags) delivering to
	// url, signed with secret.
	CreateHook(ctx context.Context, repo, url string, secret []byte) (hookID string, err error)
	DeleteHook(ctx context.Context, repo, hookID string) error
	// AddDeployKey installs a read-only deploy key; berth never asks for
	// write access.
	AddDeployKey(ctx context.Context, repo, title, publicKey string) (keyID string, err error)
	DeleteDeployKey(ctx context.Context, repo, keyID string) error
	SetCommitStatus(ctx context.Context, repo, sha string, status Status) error
	// GetChangedFiles lists the paths changed from before to after; an
	// empty before means "after's own changes". A forge that cannot list
	// them all answers ErrIncompleteFileList.
	GetChangedFiles(ctx context.Context, repo, before, after string) ([]string, error)
	DefaultBranch(ctx context.Context, repo string) (string, error)
}

// ErrIncompleteFileList: the forge lists only part of a push's changed
// files, so path filters cannot be judged from it.
var ErrIncompleteFileList = errors.New("forge: the forge lists only part of the changed files")

// ErrBadRepo: repo is not in the form the forge needs.
var ErrBadRepo = errors.New("forge: bad repository name")

// splitRepo splits "owner/name".
func splitRepo(repo string) (owner, name string, err error) {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%w %q: want owner/name", ErrBadRepo, repo)
	}
	return owner, name, nil
}

// Config is one forge's parsed *_TRIGGER_CONFIG: how berth reaches its
// API, and where its web pages are.
type Config interface {
	// NewClient is the forge's API acting with token ("": the config's
	// ACCESS_TOKEN) over httpClient (nil: a default client).
	NewClient(token string, httpClient *http.Client) (Forge, error)
	// WebEndpoint is the forge's web address as configured
	// ("https://ghe.example.com:8443/"); "" when the config names none.
	WebEndpoint() string
}

// DecodeConfig reads a config of type C from its JSON.
func DecodeConfig[C Config](raw []byte) (Config, error) {
	var c C
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	return c, nil
}

// GitHubConfig is config.yaml's GITHUB_TRIGGER_CONFIG.
type GitHubConfig struct {
	GitHubEndpoint string `json:"GITHUB_ENDPOINT" yaml:"GITHUB_ENDPOINT"`
	APIEndpoint    string `json:"API_ENDPOINT" yaml:"API_ENDPOINT"`
	ClientID       string `json:"CLIENT_ID" yaml:"CLIENT_ID"`
	ClientSecret   string `json:"CLIENT_SECRET" yaml:"CLIENT_SECRET"`
	AccessToken    string `json:"ACCESS_TOKEN" yaml:"ACCESS_TOKEN"`
}

// GitLabConfig is config.yaml's GITLAB_TRIGGER_CONFIG.
type GitLabConfig struct {
	GitLabEndpoint string `json:"GITLAB_ENDPOINT" yaml:"GITLAB_ENDPOINT"`
	ClientID       string `json:"CLIENT_ID" yaml:"CLIENT_ID"`
	ClientSecret   string `json:"CLIENT_SECRET" yaml:"CLIENT_SECRET"`
	AccessToken    string `json:"ACCESS_TOKEN" yaml:"ACCESS_TOKEN"`
}

// BitbucketConfig is config.yaml's BITBUCKET_TRIGGER_CONFIG.
type BitbucketConfig struct {
	ConsumerKey    string `json:"CONSUMER_KEY" yaml:"CONSUMER_KEY"`
	ConsumerSecret string `json:"CONSUMER_SECRET" yaml:"CONSUMER_SECRET"`
	APIEndpoint    string `json:"API_ENDPOINT" yaml:"API_ENDPOINT"`
	AccessToken    string `json:"ACCESS_TOKEN" yaml:"ACCESS_TOKEN"`
}

// NewClient implements Config.
func (c GitHubConfig) NewClient(token string, hc *http.Client) (Forge, error) {
	f, err := NewGitHub(c, token, hc)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// WebEndpoint implements Config.
func (c GitHubConfig) WebEndpoint() string { return c.GitHubEndpoint }

// NewClient implements Config.
func (c GitLabConfig) NewClient(token string, hc *http.Client) (Forge, error) {
	f, err := NewGitLab(c, token, hc)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// WebEndpoint implements Config.
func (c GitLabConfig) WebEndpoint() string { return c.GitLabEndpoint }

// NewClient implements Config.
func (c BitbucketConfig) NewClient(token string, hc *http.Client) (Forge, error) {
	f, err := NewBitbucket(c, token, hc)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// WebEndpoint implements Config: Bitbucket's config names only its API, so
// its web host is the default one.
func (BitbucketConfig) WebEndpoint() string { return "" }

// pickToken prefers the trigger's own token (from the connecting user) over
// the configured service token.
func pickToken(perTrigger, configured string) (string, error) {
	if perTrigger != "" {
		return perTrigger, nil
	}
	if configured != "" {
		return configured, nil
	}
	return "", errors.New("forge: no access token: set ACCESS_TOKEN or connect an account")
}
