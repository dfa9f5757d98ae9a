package forge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Bitbucket is the Forge for Bitbucket Cloud (REST 2.0).
type Bitbucket struct {
	base  *url.URL
	token string
	http  *http.Client
}

// NewBitbucket builds a Bitbucket Cloud client. token is the trigger's own
// OAuth token ("" to use cfg.AccessToken), sent as a Bearer token;
// cfg.APIEndpoint defaults to https://api.bitbucket.org/2.0/. httpClient may
// be nil.
func NewBitbucket(cfg BitbucketConfig, token string, httpClient *http.Client) (*Bitbucket, error) {
	tok, err := pickToken(token, cfg.AccessToken)
	if err != nil {
		return nil, err
	}
	endpoint := cfg.APIEndpoint
	if endpoint == "" {
		endpoint = "https://api.bitbucket.org/2.0/"
	}
	if !strings.HasSuffix(endpoint, "/") {
		endpoint += "/"
	}
	base, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("forge: Bitbucket API_ENDPOINT %q: %w", cfg.APIEndpoint, err)
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Bitbucket{base: base, token: tok, http: httpClient}, nil
}

// bbRepoPath is repositories/<workspace>/<slug>/<rest…>, each segment escaped.
func bbRepoPath(repo string, rest ...string) (string, error) {
	ws, slug, err := splitRepo(repo)
	if err != nil {
		return "", err
	}
	parts := []string{"repositories", url.PathEscape(ws), url.PathEscape(slug)}
	for _, r := range rest {
		parts = append(parts, url.PathEscape(r))
	}
	return strings.Join(parts, "/"), nil
}

// do sends a request to a path relative to the API root (or an absolute
// pagination URL) and decodes a JSON answer into out when non-nil.
func (b *Bitbucket) do(ctx context.Context, method, ref string, body, out any) error {
	u, err := b.base.Parse(ref)
	if err != nil {
		return fmt.Errorf("forge: Bitbucket URL %q: %w", ref, err)
	}
	var rd io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("forge: Bitbucket encode: %w", err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("forge: Bitbucket request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return fmt.Errorf("forge: Bitbucket %s %s: %w", method, u.Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return &APIError{Method: method, Path: u.Path, StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(msg))}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("forge: Bitbucket %s %s: decode: %w", method, u.Path, err)
	}
	return nil
}

// APIError is a non-2xx answer from a forge API called with net/http.
type APIError struct {
	Method, Path string
	StatusCode   int
	Body         string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("forge: %s %s: HTTP %d: %s", e.Method, e.Path, e.StatusCode, e.Body)
}

// CreateHook implements Forge: a repo:push webhook with the secret Bitbucket
// uses for X-Hub-Signature.
func (b *Bitbucket) CreateHook(ctx context.Context, repo, hookURL string, secret []byte) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("forge: refusing to create a Bitbucket webhook without a secret")
	}
	p, err := bbRepoPath(repo, "hooks")
	if err != nil {
		return "", err
	}
	var out struct {
		UUID string `json:"uuid"`
	}
	err = b.do(ctx, http.MethodPost, p, map[string]any{
		"description": "berth build trigger",
		"url":         hookURL,
		"active":      true,
		"events":      []string{"repo:push"},
		"secret":      string(secret),
	}, &out)
	if err != nil {
		return "", err
	}
	if out.UUID == "" {
		return "", fmt.Errorf("forge: Bitbucket created a hook on %s without a uuid", repo)
	}
	return out.UUID, nil
}

// DeleteHook implements Forge.
func (b *Bitbucket) DeleteHook(ctx context.Context, repo, hookID string) error {
	p, err := bbRepoPath(repo, "hooks", hookID)
	if err != nil {
		return err
	}
	return b.do(ctx, http.MethodDelete, p, nil, nil)
}

// AddDeployKey implements Forge. Bitbucket Cloud's repository access keys
// are always read-only; there is no flag to set.
func (b *Bitbucket) AddDeployKey(ctx context.Context, repo, title, publicKey string) (string, error) {
	p, err := bbRepoPath(repo, "deploy-keys")
	if err != nil {
		return "", err
	}
	var out struct {
		ID json.Number `json:"id"`
	}
	if err := b.do(ctx, http.MethodPost, p, map[string]any{"key": publicKey, "label": title}, &out); err != nil {
		return "", err
	}
	if out.ID == "" {
		return "", fmt.Errorf("forge: Bitbucket added a deploy key on %s without an id", repo)
	}
	return out.ID.String(), nil
}

// DeleteDeployKey implements Forge.
func (b *Bitbucket) DeleteDeployKey(ctx context.Context, repo, keyID string) error {
	p, err := bbRepoPath(repo, "deploy-keys", keyID)
	if err != nil {
		return err
	}
	return b.do(ctx, http.MethodDelete, p, nil, nil)
}

var bitbucketState = map[State]string{
	StatePending: "INPROGRESS",
	StateSuccess: "SUCCESSFUL",
	StateFailure: "FAILED",
	StateError:   "FAILED",
}

// SetCommitStatus implements Forge with a build status keyed by the
// context, so later states replace the pending one.
func (b *Bitbucket) SetCommitStatus(ctx context.Context, repo, sha string, st Status) error {
	state, ok := bitbucketState[st.State]
	if !ok {
		return fmt.Errorf("forge: unknown status state %q", st.State)
	}
	if st.TargetURL == "" {
		return errors.New("forge: Bitbucket build statuses need a target URL")
	}
	p, err := bbRepoPath(repo, "commit", sha, "statuses", "build")
	if err != nil {
		return err
	}
	return b.do(ctx, http.MethodPost, p, map[string]any{
		"key":         st.context(),
		"name":        st.context(),
		"state":       state,
		"url":         st.TargetURL,
		"description": truncate(st.Description, 255),
	}, nil)
}

// GetChangedFiles implements Forge with the diffstat API, following its
// pages. Bitbucket's spec "a..b" is the change from b to a.
func (b *Bitbucket) GetChangedFiles(ctx context.Context, repo, before, after string) ([]string, error) {
	spec := after
	if before != "" {
		spec = after + ".." + before
	}
	next, err := bbRepoPath(repo, "diffstat", spec)
	if err != nil {
		return nil, err
	}
	next += "?pagelen=500"
	var files []string
	seen := map[string]bool{}
	for pages := 0; next != "" && pages < 100; pages++ {
		var page struct {
			Values []struct {
				Old *struct {
					Path string `json:"path"`
				} `json:"old"`
				New *struct {
					Path string `json:"path"`
				} `json:"new"`
			} `json:"values"`
			Next string `json:"next"`
		}
		if err := b.do(ctx, http.MethodGet, next, nil, &page); err != nil {
			return nil, err
		}
		for _, v := range page.Values {
			for _, side := range []*struct {
				Path string `json:"path"`
			}{v.New, v.Old} {
				if side != nil && side.Path != "" && !seen[side.Path] {
					seen[side.Path] = true
					files = append(files, side.Path)
				}
			}
		}
		next = page.Next
	}
	return files, nil
}

// DefaultBranch implements Forge (the repository's mainbranch).
func (b *Bitbucket) DefaultBranch(ctx context.Context, repo string) (string, error) {
	p, err := bbRepoPath(repo)
	if err != nil {
		return "", err
	}
	var out struct {
		MainBranch *struct {
			Name string `json:"name"`
		} `json:"mainbranch"`
	}
	if err := b.do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return "", err
	}
	if out.MainBranch == nil || out.MainBranch.Name == "" {
		return "", fmt.Errorf("forge: Bitbucket repository %s has no main branch", repo)
	}
	return out.MainBranch.Name, nil
}

// CloneLinks are the URLs a repository is cloned from, as its forge's API
// names them; either may be empty.
type CloneLinks struct {
	HTTPS, SSH string
}

// CloneLinks reads the repository's links.clone. Builds must
// clone from these rather than from bitbucket.org: the configured
// API_ENDPOINT may be a Bitbucket-compatible server or proxy with git
// somewhere else.
func (b *Bitbucket) CloneLinks(ctx context.Context, repo string) (CloneLinks, error) {
	p, err := bbRepoPath(repo)
	if err != nil {
		return CloneLinks{}, err
	}
	var out struct {
		Links struct {
			Clone []struct {
				Name string `json:"name"`
				Href string `json:"href"`
			} `json:"clone"`
		} `json:"links"`
	}
	if err := b.do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return CloneLinks{}, err
	}
	var links CloneLinks
	for _, l := range out.Links.Clone {
		switch l.Name {
		case "https":
			links.HTTPS = l.Href
		case "ssh":
			links.SSH = l.Href
		}
	}
	if links.HTTPS == "" && links.SSH == "" {
		return CloneLinks{}, fmt.Errorf("forge: Bitbucket repository %s has no https or ssh clone link", repo)
	}
	return links, nil
}
