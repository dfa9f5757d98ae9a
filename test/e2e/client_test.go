package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// regClient speaks just enough of the distribution API, including the Docker
// token handshake, for tests that need to control every request: a 401 with a
// Bearer challenge is answered by fetching a token from the realm (with Basic
// credentials when the client has them) and retrying once.
type regClient struct {
	base     string // http://host:port
	user     string // empty for anonymous
	password string
	http     *http.Client

	mu     sync.Mutex
	tokens map[string]string // scope -> bearer token
}

func newRegClient(s *server, user, password string) *regClient {
	return &regClient{
		base:     "http://" + s.Addr,
		user:     user,
		password: password,
		http:     &http.Client{Timeout: 5 * time.Minute},
		tokens:   map[string]string{},
	}
}

// challenge is a parsed WWW-Authenticate header.
type challenge struct {
	scheme string            // "bearer" or "basic", lower case
	params map[string]string // realm, service, scope, ...
}

// parseChallenge parses `Scheme k="v",k2="v2"` (the one challenge registries
// send). Quoted values may contain commas and escaped quotes.
func parseChallenge(h string) (challenge, error) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	if scheme == "" {
		return challenge{}, fmt.Errorf("empty challenge")
	}
	c := challenge{scheme: strings.ToLower(scheme), params: map[string]string{}}
	rest = strings.TrimSpace(rest)
	for rest != "" {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			return challenge{}, fmt.Errorf("challenge %q: parameter without '='", h)
		}
		key = strings.ToLower(strings.TrimSpace(key))
		var val strings.Builder
		if strings.HasPrefix(after, `"`) {
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				val.WriteByte(after[i])
			}
			if i >= len(after) {
				return challenge{}, fmt.Errorf("challenge %q: unterminated quote", h)
			}
			after = after[i+1:]
		} else {
			v, tail, _ := strings.Cut(after, ",")
			val.WriteString(strings.TrimSpace(v))
			after = "," + tail
		}
		c.params[key] = val.String()
		after = strings.TrimSpace(after)
		after = strings.TrimPrefix(after, ",")
		rest = strings.TrimSpace(after)
	}
	return c, nil
}

// tokenResponse is the Docker token endpoint's answer; registries fill either
// field.
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
}

// fetchToken asks the challenge's realm for a token. A non-200 answer is
// returned as an *httpStatusError so callers can assert it.
func (c *regClient) fetchToken(ctx context.Context, ch challenge) (string, error) {
	u, err := url.Parse(ch.params["realm"])
	if err != nil || ch.params["realm"] == "" {
		return "", fmt.Errorf("bearer challenge without a usable realm: %q", ch.params["realm"])
	}
	q := u.Query()
	if v := ch.params["service"]; v != "" {
		q.Set("service", v)
	}
	if v := ch.params["scope"]; v != "" {
		q.Set("scope", v)
	}
	if c.user != "" {
		q.Set("account", c.user)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", &httpStatusError{code: resp.StatusCode, body: string(body), what: "token endpoint"}
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", fmt.Errorf("token response %q: %w", body, err)
	}
	if tr.Token == "" {
		tr.Token = tr.AccessToken
	}
	if tr.Token == "" {
		return "", fmt.Errorf("token response without a token: %s", body)
	}
	return tr.Token, nil
}

type httpStatusError struct {
	code int
	body string
	what string
}

func (e *httpStatusError) Error() string {
	return fmt.Sprintf("%s answered %d: %s", e.what, e.code, strings.TrimSpace(e.body))
}

// do sends a request built by mk (called again for the retry, since a body
// can be read only once), answering one auth challenge. scope is the token
// scope the request needs, e.g. "repository:ns/r:pull,push".
func (c *regClient) do(ctx context.Context, scope string, mk func() (*http.Request, error)) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		req, err := mk()
		if err != nil {
			return nil, err
		}
		req = req.WithContext(ctx)
		c.mu.Lock()
		tok := c.tokens[scope]
		c.mu.Unlock()
		switch {
		case tok != "":
			req.Header.Set("Authorization", "Bearer "+tok)
		case c.user != "" && attempt > 0:
			req.SetBasicAuth(c.user, c.password)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusUnauthorized || attempt > 0 {
			return resp, nil
		}
		ch, err := parseChallenge(resp.Header.Get("WWW-Authenticate"))
		if err != nil {
			return resp, nil
		}
		if ch.scheme != "bearer" {
			_ = resp.Body.Close()
			continue // retry with Basic credentials
		}
		// Ask for what this request's caller needs, which may be more than
		// the challenge names (a GET of an upload is challenged for pull, but
		// the token is cached for the PATCHes that follow).
		if scope != "" {
			ch.params["scope"] = scope
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		tok, err = c.fetchToken(ctx, ch)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.tokens[scope] = tok
		c.mu.Unlock()
	}
}

// forgetTokens drops cached tokens, e.g. after a restart that may have
// rotated the signing key.
func (c *regClient) forgetTokens() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokens = map[string]string{}
}

// resolve turns a Location header into an absolute URL.
func (c *regClient) resolve(loc string) (string, error) {
	base, err := url.Parse(c.base + "/")
	if err != nil {
		return "", err
	}
	u, err := base.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("bad Location %q: %w", loc, err)
	}
	return u.String(), nil
}

// parseRangeEnd reads an upload status Range header, "0-<last>", and returns
// the number of bytes the server holds (last+1). Some registries answer
// "bytes=0-<last>"; an empty upload may be "0-0" with zero length, which is
// why the caller also gets the raw header.
func parseRangeEnd(h string) (int64, error) {
	h = strings.TrimPrefix(strings.TrimSpace(h), "bytes=")
	start, end, ok := strings.Cut(h, "-")
	if !ok || start != "0" {
		return 0, fmt.Errorf("range %q: want 0-<n>", h)
	}
	last, err := strconv.ParseInt(end, 10, 64)
	if err != nil || last < 0 {
		return 0, fmt.Errorf("range %q: bad end", h)
	}
	return last + 1, nil
}

func pullScope(repository string) string { return "repository:" + repository + ":pull" }
func pushScope(repository string) string { return "repository:" + repository + ":pull,push" }

// expectStatus fails the test unless resp has the wanted status; the body is
// consumed and closed either way.
func expectStatus(t testing.TB, resp *http.Response, want int, what string) []byte {
	t.Helper()
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		t.Fatalf("%s: got %s, want %d; body: %s", what, resp.Status, want, body)
	}
	return body
}
