package forge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/go-github/v84/github"
)

// GitHub is the Forge for GitHub and GitHub Enterprise.
type GitHub struct {
	client *github.Client
}

// NewGitHub builds a GitHub client. token is the trigger's own token ("" to
// use cfg.AccessToken); cfg.APIEndpoint (default https://api.github.com/) is
// used as is, so GitHub Enterprise's https://host/api/v3/ and test servers
// both work. httpClient may be nil.
func NewGitHub(cfg GitHubConfig, token string, httpClient *http.Client) (*GitHub, error) {
	tok, err := pickToken(token, cfg.AccessToken)
	if err != nil {
		return nil, err
	}
	c := github.NewClient(httpClient).WithAuthToken(tok)
	if cfg.APIEndpoint != "" {
		base := cfg.APIEndpoint
		if !strings.HasSuffix(base, "/") {
			base += "/"
		}
		u, err := url.Parse(base)
		if err != nil {
			return nil, fmt.Errorf("forge: GitHub API_ENDPOINT %q: %w", cfg.APIEndpoint, err)
		}
		c.BaseURL = u
	}
	return &GitHub{client: c}, nil
}

func parseID(kind, id string) (int64, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("forge: %s id %q is not a number", kind, id)
	}
	return n, nil
}

// CreateHook implements Forge: a "web" hook on push, JSON, with the secret
// GitHub uses for X-Hub-Signature-256, TLS verification on.
func (g *GitHub) CreateHook(ctx context.Context, repo, hookURL string, secret []byte) (string, error) {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return "", err
	}
	if len(secret) == 0 {
		return "", errors.New("forge: refusing to create a GitHub webhook without a secret")
	}
	hook, _, err := g.client.Repositories.CreateHook(ctx, owner, name, &github.Hook{
		Name:   github.Ptr("web"),
		Active: github.Ptr(true),
		Events: []string{"push"},
		Config: &github.HookConfig{
			URL:         github.Ptr(hookURL),
			ContentType: github.Ptr("json"),
			Secret:      github.Ptr(string(secret)),
			InsecureSSL: github.Ptr("0"),
		},
	})
	if err != nil {
		return "", fmt.Errorf("forge: GitHub create hook on %s: %w", repo, err)
	}
	return strconv.FormatInt(hook.GetID(), 10), nil
}

// DeleteHook implements Forge.
func (g *GitHub) DeleteHook(ctx context.Context, repo, hookID string) error {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return err
	}
	id, err := parseID("hook", hookID)
	if err != nil {
		return err
	}
	if _, err := g.client.Repositories.DeleteHook(ctx, owner, name, id); err != nil {
		return fmt.Errorf("forge: GitHub delete hook %s on %s: %w", hookID, repo, err)
	}
	return nil
}

// AddDeployKey implements Forge with read_only: true (GitHub's default when
// omitted is read/write, which Quay relied on).
func (g *GitHub) AddDeployKey(ctx context.Context, repo, title, publicKey string) (string, error) {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return "", err
	}
	key, _, err := g.client.Repositories.CreateKey(ctx, owner, name, &github.Key{
		Title:    github.Ptr(title),
		Key:      github.Ptr(publicKey),
		ReadOnly: github.Ptr(true),
	})
	if err != nil {
		return "", fmt.Errorf("forge: GitHub add deploy key on %s: %w", repo, err)
	}
	return strconv.FormatInt(key.GetID(), 10), nil
}

// DeleteDeployKey implements Forge.
func (g *GitHub) DeleteDeployKey(ctx context.Context, repo, keyID string) error {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return err
	}
	id, err := parseID("deploy key", keyID)
	if err != nil {
		return err
	}
	if _, err := g.client.Repositories.DeleteKey(ctx, owner, name, id); err != nil {
		return fmt.Errorf("forge: GitHub delete deploy key %s on %s: %w", keyID, repo, err)
	}
	return nil
}

// SetCommitStatus implements Forge; GitHub's states are berth's.
func (g *GitHub) SetCommitStatus(ctx context.Context, repo, sha string, st Status) error {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return err
	}
	if !st.State.valid() {
		return fmt.Errorf("forge: unknown status state %q", st.State)
	}
	status := github.RepoStatus{
		State:   github.Ptr(string(st.State)),
		Context: github.Ptr(st.context()),
	}
	if st.TargetURL != "" {
		status.TargetURL = github.Ptr(st.TargetURL)
	}
	if st.Description != "" {
		status.Description = github.Ptr(truncate(st.Description, 140))
	}
	if _, _, err := g.client.Repositories.CreateStatus(ctx, owner, name, sha, status); err != nil {
		return fmt.Errorf("forge: GitHub status on %s@%s: %w", repo, sha, err)
	}
	return nil
}

// githubCompareFileLimit is the most files GitHub's compare API lists; a
// comparison that reaches it may have changed more.
const githubCompareFileLimit = 300

// GetChangedFiles implements Forge with the compare API. A comparison with
// githubCompareFileLimit files or more answers ErrIncompleteFileList rather
// than a list that may miss the files a path filter is looking for.
func (g *GitHub) GetChangedFiles(ctx context.Context, repo, before, after string) ([]string, error) {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return nil, err
	}
	base := before
	if base == "" {
		base = after + "^"
	}
	cmp, _, err := g.client.Repositories.CompareCommits(ctx, owner, name, base, after, nil)
	if err != nil {
		return nil, fmt.Errorf("forge: GitHub compare %s...%s on %s: %w", base, after, repo, err)
	}
	if len(cmp.Files) >= githubCompareFileLimit {
		return nil, fmt.Errorf("%w: GitHub compare %s...%s on %s lists %d files", ErrIncompleteFileList, base, after, repo, len(cmp.Files))
	}
	var files []string
	for _, f := range cmp.Files {
		files = append(files, f.GetFilename())
		if prev := f.GetPreviousFilename(); prev != "" {
			files = append(files, prev)
		}
	}
	return files, nil
}

// DefaultBranch implements Forge.
func (g *GitHub) DefaultBranch(ctx context.Context, repo string) (string, error) {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return "", err
	}
	r, _, err := g.client.Repositories.Get(ctx, owner, name)
	if err != nil {
		return "", fmt.Errorf("forge: GitHub get %s: %w", repo, err)
	}
	return r.GetDefaultBranch(), nil
}

// truncate cuts s to at most n runes (forges reject longer descriptions).
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
}
