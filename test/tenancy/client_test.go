package tenancy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// httpClient is shared; every call sets its own credentials.
var httpClient = &http.Client{Timeout: 60 * time.Second}

// cred is how a principal authenticates: nothing, HTTP Basic, or an OAuth
// bearer token.
type cred struct {
	user, secret string // Basic when user is set
	bearer       string // Authorization: Bearer when set
}

var anonymous = cred{}

func basic(user, secret string) cred { return cred{user: user, secret: secret} }
func bearer(token string) cred       { return cred{bearer: token} }

func (c cred) isAnonymous() bool { return c.user == "" && c.bearer == "" }

func (c cred) apply(req *http.Request) {
	switch {
	case c.bearer != "":
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	case c.user != "":
		req.SetBasicAuth(c.user, c.secret)
	}
}

// response is one HTTP answer, read fully.
type response struct {
	method, path string
	status       int
	header       http.Header
	body         []byte
}

// comparable is the body with the request's own ID left out, for telling
// whether two answers say the same thing.
func (r response) comparable() string {
	var m map[string]any
	if json.Unmarshal(r.body, &m) != nil {
		return string(r.body)
	}
	delete(m, "request_id")
	b, err := json.Marshal(m)
	if err != nil {
		return string(r.body)
	}
	return string(b)
}

func (r response) String() string {
	b := string(r.body)
	if len(b) > 400 {
		b = b[:400] + "…"
	}
	return fmt.Sprintf("%s %s → %d %s", r.method, r.path, r.status, strings.TrimSpace(b))
}

// object decodes the body as a JSON object, failing the test otherwise.
func (r response) object(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("%s: body is not a JSON object: %v", r, err)
	}
	return m
}

// do sends one request. body is nil, a string (sent verbatim, so malformed
// JSON can be sent) or anything else (encoded as JSON).
func (s *server) do(t testing.TB, method, path string, c cred, body any, header map[string]string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	target := path
	if !strings.HasPrefix(path, "http") {
		target = s.URL(path)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c.apply(req)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{method: method, path: path, status: resp.StatusCode, header: resp.Header, body: data}
}

// api calls /api/v1 + path.
func (s *server) api(t testing.TB, method, path string, c cred, body any) response {
	t.Helper()
	return s.do(t, method, "/api/v1"+path, c, body, nil)
}

// mustAPI is api that fails the test unless the status is want.
func (s *server) mustAPI(t testing.TB, want int, method, path string, c cred, body any) response {
	t.Helper()
	r := s.api(t, method, path, c, body)
	if r.status != want {
		t.Fatalf("%s: want status %d", r, want)
	}
	return r
}

// quayErrorKeys are the keys of Quay's error body (seeds §2.3).
var quayErrorKeys = []string{"detail", "error_message", "error_type", "status", "title", "type"}

// assertQuayError checks status and that the body is Quay's error object
// with the given error_type (empty: any) and a matching status field.
func assertQuayError(t testing.TB, r response, status int, errorType string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: want status %d", r, status)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Errorf("%s: error body is not a JSON object: %v", r, err)
		return
	}
	// berth adds the request's ID (also in X-Request-ID) beside Quay's keys.
	if id, ok := m["request_id"]; ok {
		if s, _ := id.(string); s == "" || r.header.Get("X-Request-ID") != s {
			t.Errorf("%s: request_id %v is not the response's X-Request-ID %q", r, id, r.header.Get("X-Request-ID"))
		}
		delete(m, "request_id")
	}
	assertKeys(t, r.String(), m, quayErrorKeys...)
	if got, _ := m["status"].(float64); int(got) != status {
		t.Errorf("%s: body status %v, want %d", r, m["status"], status)
	}
	if errorType != "" && m["error_type"] != errorType {
		t.Errorf("%s: error_type %v, want %s", r, m["error_type"], errorType)
	}
	if typ, _ := m["type"].(string); !strings.HasSuffix(typ, "/api/v1/error/"+fmt.Sprint(m["error_type"])) {
		t.Errorf("%s: type %q does not end in /api/v1/error/%v", r, typ, m["error_type"])
	}
}

// assertKeys checks that m has exactly the keys want.
func assertKeys(t testing.TB, what string, m map[string]any, want ...string) {
	t.Helper()
	got := make([]string, 0, len(m))
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	w := slices.Clone(want)
	sort.Strings(w)
	if !slices.Equal(got, w) {
		t.Errorf("%s: keys %v, want %v", what, got, w)
	}
}

// assertHasKeys checks that m has at least the keys want.
func assertHasKeys(t testing.TB, what string, m map[string]any, want ...string) {
	t.Helper()
	for _, k := range want {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: key %q missing (have %v)", what, k, keysOf(m))
		}
	}
}

func keysOf(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ---- /v2 with the Docker token handshake ----

// challengeParams parses `Bearer k="v",k2="v2"` (values hold no quotes in
// berth's challenges, but may hold commas).
func challengeParams(h string) (scheme string, params map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params = map[string]string{}
	for rest != "" {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		key = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(key), ","))
		var val string
		if strings.HasPrefix(after, `"`) {
			end := strings.Index(after[1:], `"`)
			if end < 0 {
				break
			}
			val, rest = after[1:1+end], after[2+end:]
		} else {
			val, rest, _ = strings.Cut(after, ",")
		}
		params[strings.ToLower(key)] = val
		rest = strings.TrimPrefix(strings.TrimSpace(rest), ",")
	}
	return strings.ToLower(scheme), params
}

// regClient talks to /v2 as one principal. A 401 with a Bearer challenge is
// answered by asking the realm for a token with the principal's Basic
// credentials (none for anonymous) and retrying once; tokens are cached per
// scope when cache is set.
type regClient struct {
	s     *server
	c     cred
	cache bool

	mu     sync.Mutex
	tokens map[string]string
}

func (s *server) registry(c cred, cache bool) *regClient {
	return &regClient{s: s, c: c, cache: cache, tokens: map[string]string{}}
}

// do sends method path (below /v2) and returns the final answer. When the
// token endpoint refuses the credentials its answer is returned instead.
func (rc *regClient) do(t testing.TB, method, path string, body []byte, header map[string]string) response {
	t.Helper()
	send := func(token string) response {
		h := map[string]string{}
		for k, v := range header {
			h[k] = v
		}
		c := anonymous
		if token != "" {
			c = bearer(token)
		}
		var b any
		if body != nil {
			b = body
		}
		return rc.s.do(t, method, path, c, b, h)
	}
	first := send("")
	if first.status != http.StatusUnauthorized {
		return first
	}
	scheme, params := challengeParams(first.header.Get("Www-Authenticate"))
	if scheme != "bearer" {
		t.Fatalf("%s: challenge %q is not Bearer", first, first.header.Get("Www-Authenticate"))
	}
	tok, tr := rc.token(t, params)
	if tok == "" {
		return tr
	}
	return send(tok)
}

// token returns a registry token for the challenge's scope, or "" and the
// token endpoint's refusal.
func (rc *regClient) token(t testing.TB, params map[string]string) (string, response) {
	t.Helper()
	scope := params["scope"]
	if rc.cache {
		rc.mu.Lock()
		tok, ok := rc.tokens[scope]
		rc.mu.Unlock()
		if ok {
			return tok, response{}
		}
	}
	u, err := url.Parse(params["realm"])
	if err != nil || params["realm"] == "" {
		t.Fatalf("bearer challenge without a usable realm: %v", params)
	}
	q := u.Query()
	q.Set("service", params["service"])
	if scope != "" {
		q.Set("scope", scope)
	}
	if rc.c.user != "" {
		q.Set("account", rc.c.user)
	}
	u.RawQuery = q.Encode()
	var c cred
	switch {
	case rc.c.user != "":
		c = rc.c
	case rc.c.bearer != "":
		// The registry takes OAuth tokens as Basic $oauthtoken:<token>.
		c = basic("$oauthtoken", rc.c.bearer)
	}
	r := rc.s.do(t, http.MethodGet, u.String(), c, nil, nil)
	if r.status != http.StatusOK {
		return "", r
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(r.body, &tr); err != nil {
		t.Fatalf("%s: token answer: %v", r, err)
	}
	tok := tr.Token
	if tok == "" {
		tok = tr.AccessToken
	}
	if tok == "" {
		t.Fatalf("%s: no token in the answer", r)
	}
	if rc.cache {
		rc.mu.Lock()
		rc.tokens[scope] = tok
		rc.mu.Unlock()
	}
	return tok, response{}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// pushImage uploads a one-layer OCI image to repository:tag through /v2
// (monolithic blob uploads, then the manifest) and returns the manifest
// digest. The layer's content is unique per call.
func (rc *regClient) pushImage(t testing.TB, repository, tag string) string {
	t.Helper()
	layer := []byte("berth tenancy layer " + harness.RandomHex(8))
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + digestOf(layer) + `"]}}`)
	for _, blob := range [][]byte{config, layer} {
		r := rc.do(t, http.MethodPost, "/v2/"+repository+"/blobs/uploads/?digest="+digestOf(blob), blob,
			map[string]string{"Content-Type": "application/octet-stream"})
		if r.status != http.StatusCreated {
			t.Fatalf("uploading a blob to %s: %s", repository, r)
		}
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{
			"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digestOf(config), "size": len(config),
		},
		"layers": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digestOf(layer), "size": len(layer),
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := rc.do(t, http.MethodPut, "/v2/"+repository+"/manifests/"+tag, manifest,
		map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
	if r.status != http.StatusCreated {
		t.Fatalf("putting the manifest of %s:%s: %s", repository, tag, r)
	}
	return digestOf(manifest)
}
