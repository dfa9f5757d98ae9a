package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// client speaks just enough of the OCI distribution API to benchmark a
// registry. One implementation serves both sides of the comparison, so any
// client overhead lands equally on both; the only branch is Docker token
// auth, which is engaged only when the registry's /v2/ asks for it.
type client struct {
	base *url.URL
	hc   *http.Client
	user string
	pass string

	// realm and service come from the Bearer challenge of GET /v2/; an
	// empty realm means the registry needs no auth.
	realm   string
	service string

	mu     sync.RWMutex
	tokens map[string]string // repository name -> bearer token
}

// newClient returns a client for the registry at baseURL with a transport
// sized for conc concurrent streams: enough idle connections that keep-alive
// never falls back to dialing, and no transparent gzip so bodies are
// measured as the server sends them.
func newClient(baseURL, user, pass string, conc int) (*client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("parse registry url %q: %w", baseURL, err)
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * conc,
		MaxIdleConnsPerHost: 4 * conc,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		WriteBufferSize:     256 << 10,
		ReadBufferSize:      256 << 10,
	}
	return &client{
		base:   u,
		hc:     &http.Client{Transport: tr},
		user:   user,
		pass:   pass,
		tokens: map[string]string{},
	}, nil
}

func (c *client) close() {
	c.hc.CloseIdleConnections()
}

// ping checks GET /v2/ and learns the auth challenge, if any.
func (c *client) ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v2/"), nil)
	if err != nil {
		return fmt.Errorf("build ping request: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("ping %s: %w", c.base, err)
	}
	drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized:
		return c.learnChallenge(resp)
	default:
		return fmt.Errorf("ping %s: unexpected status %s", c.base, resp.Status)
	}
}

func (c *client) learnChallenge(resp *http.Response) error {
	scheme, params := parseChallenge(resp.Header.Get("WWW-Authenticate"))
	if !strings.EqualFold(scheme, "bearer") || params["realm"] == "" {
		return fmt.Errorf("registry %s: unsupported auth challenge %q", c.base, resp.Header.Get("WWW-Authenticate"))
	}
	c.mu.Lock()
	c.realm, c.service = params["realm"], params["service"]
	c.mu.Unlock()
	return nil
}

func (c *client) url(path string) string {
	return c.base.String() + path
}

// resolve turns a Location header (absolute or relative) into a full URL.
func (c *client) resolve(loc string) (string, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("parse location %q: %w", loc, err)
	}
	return c.base.ResolveReference(u).String(), nil
}

// token fetches a bearer token for push and pull on repo and caches it.
func (c *client) token(ctx context.Context, repo string) (string, error) {
	c.mu.RLock()
	realm, service := c.realm, c.service
	c.mu.RUnlock()
	q := url.Values{}
	if service != "" {
		q.Set("service", service)
	}
	q.Set("scope", "repository:"+repo+":pull,push")
	sep := "?"
	if strings.Contains(realm, "?") {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm+sep+q.Encode(), nil)
	if err != nil {
		return "", fmt.Errorf("build token request: %w", err)
	}
	req.SetBasicAuth(c.user, c.pass)
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch token for %s: %w", repo, err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch token for %s: %s: %s", repo, resp.Status, snippet(resp.Body))
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", fmt.Errorf("decode token response for %s: %w", repo, err)
	}
	tok := body.Token
	if tok == "" {
		tok = body.AccessToken
	}
	if tok == "" {
		return "", fmt.Errorf("token response for %s has no token", repo)
	}
	c.mu.Lock()
	c.tokens[repo] = tok
	c.mu.Unlock()
	return tok, nil
}

func (c *client) cachedToken(repo string) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tokens[repo]
}

func (c *client) needsAuth() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.realm != ""
}

// do sends req, which acts on repo, with the repo's bearer token when the
// registry wants one. On 401 it follows the challenge, fetches a fresh token
// and retries once; a request with a body must be rewindable (GetBody set,
// as http.NewRequest does for *bytes.Reader). The caller closes the body.
func (c *client) do(ctx context.Context, repo string, req *http.Request) (*http.Response, error) {
	if c.needsAuth() {
		tok := c.cachedToken(repo)
		if tok == "" {
			var err error
			if tok, err = c.token(ctx, repo); err != nil {
				return nil, err
			}
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		return resp, nil
	}
	drain(resp)
	if err := c.learnChallenge(resp); err != nil {
		return nil, err
	}
	tok, err := c.token(ctx, repo)
	if err != nil {
		return nil, err
	}
	retry := req.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return nil, fmt.Errorf("%s %s: 401 on a request whose body cannot be replayed", req.Method, req.URL.Path)
		}
		if retry.Body, err = req.GetBody(); err != nil {
			return nil, fmt.Errorf("rewind body of %s %s: %w", req.Method, req.URL.Path, err)
		}
	}
	retry.Header.Set("Authorization", "Bearer "+tok)
	resp, err = c.hc.Do(retry)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	return resp, nil
}

// expect sends the request and checks the status, draining and closing
// the body so the connection is reused; it returns the response headers.
func (c *client) expect(ctx context.Context, repo string, req *http.Request, want int) (http.Header, error) {
	resp, err := c.do(ctx, repo, req)
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: want %d, got %s: %s", req.Method, req.URL.Path, want, resp.Status, snippet(resp.Body))
	}
	return resp.Header, nil
}

// pushBlob uploads body monolithically: POST to open an upload session, then
// a single PUT of the whole body with ?digest= to close it. Every registry
// supports this two-step form, so both sides get the same request shape.
func (c *client) pushBlob(ctx context.Context, repo, digest string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v2/"+repo+"/blobs/uploads/"), nil)
	if err != nil {
		return fmt.Errorf("build upload request: %w", err)
	}
	h, err := c.expect(ctx, repo, req, http.StatusAccepted)
	if err != nil {
		return fmt.Errorf("open upload: %w", err)
	}
	loc := h.Get("Location")
	if loc == "" {
		return errors.New("open upload: no Location header")
	}
	put, err := c.resolve(loc)
	if err != nil {
		return err
	}
	if strings.Contains(put, "?") {
		put += "&digest=" + url.QueryEscape(digest)
	} else {
		put += "?digest=" + url.QueryEscape(digest)
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, put, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build blob put: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if _, err := c.expect(ctx, repo, req, http.StatusCreated); err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	return nil
}

// putManifest stores a manifest under ref (a tag or digest).
func (c *client) putManifest(ctx context.Context, repo, ref, mediaType string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url("/v2/"+repo+"/manifests/"+ref), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build manifest put: %w", err)
	}
	req.Header.Set("Content-Type", mediaType)
	if _, err := c.expect(ctx, repo, req, http.StatusCreated); err != nil {
		return fmt.Errorf("put manifest %s:%s: %w", repo, ref, err)
	}
	return nil
}

// getTags fetches one tags/list page (the next page's URL comes from the
// Link header, empty when this is the last page) and returns its tags.
func (c *client) getTags(ctx context.Context, repo, pageURL string) (tags []string, next string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pageURL, nil)
	if err != nil {
		return nil, "", fmt.Errorf("build tags request: %w", err)
	}
	resp, err := c.do(ctx, repo, req)
	if err != nil {
		return nil, "", err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s: %s: %s", req.URL, resp.Status, snippet(resp.Body))
	}
	var body struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, "", fmt.Errorf("decode tags of %s: %w", repo, err)
	}
	if link := nextLink(resp.Header.Values("Link")); link != "" {
		if next, err = c.resolve(link); err != nil {
			return nil, "", err
		}
	}
	return body.Tags, next, nil
}

// parseChallenge splits a WWW-Authenticate value such as
// `Bearer realm="https://r/token",service="r",scope="a,b"` into its scheme
// and parameters. Quoted values may hold commas and escaped quotes.
func parseChallenge(h string) (scheme string, params map[string]string) {
	params = map[string]string{}
	h = strings.TrimSpace(h)
	sp := strings.IndexByte(h, ' ')
	if sp < 0 {
		return h, params
	}
	scheme, rest := h[:sp], h[sp+1:]
	for {
		rest = strings.TrimLeft(rest, " ,")
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return scheme, params
		}
		key := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = rest[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			val, rest = b.String(), rest[min(i+1, len(rest)):]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			val, rest = strings.TrimSpace(rest[:end]), rest[end:]
		}
		params[key] = val
	}
}

// nextLink returns the target of the rel="next" entry among Link header
// values (`<url>; rel="next"`), or "" when there is none.
func nextLink(values []string) string {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if !strings.HasPrefix(part, "<") {
				continue
			}
			end := strings.IndexByte(part, '>')
			if end < 0 {
				continue
			}
			for _, attr := range strings.Split(part[end+1:], ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(attr), "=")
				if ok && strings.EqualFold(k, "rel") && strings.Trim(v, `"`) == "next" {
					return part[1:end]
				}
			}
		}
	}
	return ""
}

// drain reads what is left of the body (bounded) and closes it so the
// keep-alive connection goes back to the pool.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
}

func snippet(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 512))
	return strings.TrimSpace(string(b))
}
