package forge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	gitlab "gitlab.com/gitlab-org/api/client-go"
)

// GitLab is the Forge for GitLab.com and self-managed GitLab.
type GitLab struct {
	client *gitlab.Client
}

// NewGitLab builds a GitLab client. token is the trigger's own token ("" to
// use cfg.AccessToken); cfg.GitLabEndpoint (default https://gitlab.com) is
// the instance's root, /api/v4 is appended. httpClient may be nil.
func NewGitLab(cfg GitLabConfig, token string, httpClient *http.Client) (*GitLab, error) {
	tok, err := pickToken(token, cfg.AccessToken)
	if err != nil {
		return nil, err
	}
	opts := []gitlab.ClientOptionFunc{gitlab.WithCustomRetryMax(2)}
	if cfg.GitLabEndpoint != "" {
		opts = append(opts, gitlab.WithBaseURL(cfg.GitLabEndpoint))
	}
	if httpClient != nil {
		opts = append(opts, gitlab.WithHTTPClient(httpClient))
	}
	c, err := gitlab.NewClient(tok, opts...)
	if err != nil {
		return nil, fmt.Errorf("forge: GitLab client: %w", err)
	}
	return &GitLab{client: c}, nil
}

// CreateHook implements Forge: push and tag push events, the secret as the
// hook's token (sent back as X-Gitlab-Token), TLS verification on.
func (g *GitLab) CreateHook(ctx context.Context, repo, hookURL string, secret []byte) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("forge: refusing to create a GitLab webhook without a secret token")
	}
	hook, _, err := g.client.Projects.AddProjectHook(repo, &gitlab.AddProjectHookOptions{
		URL:                   gitlab.Ptr(hookURL),
		PushEvents:            gitlab.Ptr(true),
		TagPushEvents:         gitlab.Ptr(true),
		Token:                 gitlab.Ptr(string(secret)),
		EnableSSLVerification: gitlab.Ptr(true),
	}, gitlab.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("forge: GitLab add hook on %s: %w", repo, err)
	}
	return strconv.FormatInt(hook.ID, 10), nil
}

// DeleteHook implements Forge.
func (g *GitLab) DeleteHook(ctx context.Context, repo, hookID string) error {
	id, err := parseID("hook", hookID)
	if err != nil {
		return err
	}
	if _, err := g.client.Projects.DeleteProjectHook(repo, id, gitlab.WithContext(ctx)); err != nil {
		return fmt.Errorf("forge: GitLab delete hook %s on %s: %w", hookID, repo, err)
	}
	return nil
}

// AddDeployKey implements Forge with can_push: false.
func (g *GitLab) AddDeployKey(ctx context.Context, repo, title, publicKey string) (string, error) {
	key, _, err := g.client.DeployKeys.AddDeployKey(repo, &gitlab.AddDeployKeyOptions{
		Title:   gitlab.Ptr(title),
		Key:     gitlab.Ptr(publicKey),
		CanPush: gitlab.Ptr(false),
	}, gitlab.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("forge: GitLab add deploy key on %s: %w", repo, err)
	}
	return strconv.FormatInt(key.ID, 10), nil
}

// DeleteDeployKey implements Forge.
func (g *GitLab) DeleteDeployKey(ctx context.Context, repo, keyID string) error {
	id, err := parseID("deploy key", keyID)
	if err != nil {
		return err
	}
	if _, err := g.client.DeployKeys.DeleteDeployKey(repo, id, gitlab.WithContext(ctx)); err != nil {
		return fmt.Errorf("forge: GitLab delete deploy key %s on %s: %w", keyID, repo, err)
	}
	return nil
}

// gitlabState maps berth's states to GitLab's; GitLab has one failure state.
var gitlabState = map[State]gitlab.BuildStateValue{
	StatePending: gitlab.Pending,
	StateSuccess: gitlab.Success,
	StateFailure: gitlab.Failed,
	StateError:   gitlab.Failed,
}

// SetCommitStatus implements Forge.
func (g *GitLab) SetCommitStatus(ctx context.Context, repo, sha string, st Status) error {
	state, ok := gitlabState[st.State]
	if !ok {
		return fmt.Errorf("forge: unknown status state %q", st.State)
	}
	opt := &gitlab.SetCommitStatusOptions{State: state, Name: gitlab.Ptr(st.context())}
	if st.TargetURL != "" {
		opt.TargetURL = gitlab.Ptr(st.TargetURL)
	}
	if st.Description != "" {
		opt.Description = gitlab.Ptr(truncate(st.Description, 255))
	}
	if _, _, err := g.client.Commits.SetCommitStatus(repo, sha, opt, gitlab.WithContext(ctx)); err != nil {
		return fmt.Errorf("forge: GitLab status on %s@%s: %w", repo, sha, err)
	}
	return nil
}

// GetChangedFiles implements Forge with the repository compare API.
func (g *GitLab) GetChangedFiles(ctx context.Context, repo, before, after string) ([]string, error) {
	from := before
	if from == "" {
		from = after + "^"
	}
	cmp, _, err := g.client.Repositories.Compare(repo, &gitlab.CompareOptions{From: gitlab.Ptr(from), To: gitlab.Ptr(after)}, gitlab.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("forge: GitLab compare %s...%s on %s: %w", from, after, repo, err)
	}
	var files []string
	for _, d := range cmp.Diffs {
		files = append(files, d.NewPath)
		if d.OldPath != "" && d.OldPath != d.NewPath {
			files = append(files, d.OldPath)
		}
	}
	return files, nil
}

// DefaultBranch implements Forge.
func (g *GitLab) DefaultBranch(ctx context.Context, repo string) (string, error) {
	p, _, err := g.client.Projects.GetProject(repo, nil, gitlab.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("forge: GitLab get %s: %w", repo, err)
	}
	return p.DefaultBranch, nil
}
