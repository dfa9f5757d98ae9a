package registry_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
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

// env is a registry over a real SQLite store and filesystem driver, with two
// users: alice and bob, each owning their namespace.
type env struct {
	t       *testing.T
	srv     *httptest.Server
	st      store.Store
	dataDir string
	tokens  *auth.TokenService
	h       *registry.Handler
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dataDir: dir}
	e.start()
	for _, name := range []string{"alice", "bob"} {
		addUser(t, e.st, name)
	}
	return e
}

// openStore opens the SQLite store in dir until the test ends.
func openStore(t *testing.T, dir string) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.Open(context.Background(), "sqlite://"+filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// addUser creates the user name with the password name-pw.
func addUser(t *testing.T, st store.Store, name string) *store.Account {
	t.Helper()
	hash, err := auth.HashPassword(name + "-pw")
	if err != nil {
		t.Fatal(err)
	}
	a := &store.Account{Kind: store.KindUser, Name: name, PasswordHash: hash, Enabled: true}
	if err := st.CreateAccount(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return a
}

// server is the /v2 handler and its token endpoint over a store and the
// blobs in a directory, served until the test ends.
type server struct {
	srv    *httptest.Server
	h      *registry.Handler
	tokens *auth.TokenService
}

// serve starts a server over st and blobDir; logger nil means slog's
// default.
func serve(t *testing.T, st store.Store, blobDir string, logger *slog.Logger) *server {
	t.Helper()
	blobs, err := filesystem.New(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	policy := &auth.Policy{Store: st}
	s := &server{tokens: auth.NewTokenService(key, 5*time.Minute)}
	authz := regauth.NewServer(regauth.ServerOptions{
		Policy:        policy,
		Authenticator: auth.NewAuthenticator(st),
		Tokens:        s.tokens,
	})
	var base string
	s.h = registry.New(registry.Options{
		Store: st, Blobs: blobs, Authorizer: authz, Policy: policy, Logger: logger,
		ExternalURL: func(*http.Request) string { return base },
	})
	mux := http.NewServeMux()
	mux.Handle("/v2/auth", authz.TokenHandler())
	mux.Handle("/v2/", s.h)
	s.srv = httptest.NewServer(mux)
	base = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// pushToken is a bearer token for pull and push on repo, as podman pushes
// with.
func (s *server) pushToken(t *testing.T, who *store.Account, repo string) string {
	t.Helper()
	tok, err := s.tokens.Issue(&auth.Principal{Account: who}, "svc", []auth.ResourceActions{
		{Type: auth.TypeRepository, Name: repo, Actions: []auth.Action{auth.Pull, auth.Push}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// start (re)creates the handler over the data directory, as a server
// restart would.
func (e *env) start() {
	t := e.t
	st := openStore(t, e.dataDir)
	s := serve(t, st, filepath.Join(e.dataDir, "blobs"), nil)
	e.st, e.srv, e.h, e.tokens = st, s.srv, s.h, s.tokens
}

func (e *env) stop() {
	e.srv.Close()
	e.st.Close()
}

// do sends a request with Basic credentials of user ("" for anonymous).
func (e *env) do(method, path, user string, body []byte, hdr ...string) *http.Response {
	e.t.Helper()
	url := path
	if !strings.HasPrefix(path, "http") {
		url = e.srv.URL + path
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body == nil {
		req.Body = http.NoBody
	}
	if user != "" {
		req.SetBasicAuth(user, user+"-pw")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func expect(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
	if code != "" && !strings.Contains(string(body), `"code":"`+code+`"`) {
		t.Fatalf("%s %s: body %s lacks code %s", resp.Request.Method, resp.Request.URL.Path, body, code)
	}
}

func (e *env) pushBlob(user, repo string, data []byte) digest.Digest {
	e.t.Helper()
	d := digest.FromBytes(data)
	expect(e.t, e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), user, data), 201, "")
	return d
}

func imageManifest(config, layer digest.Digest, configSize, layerSize int) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		config, configSize, layer, layerSize))
}

func TestBlobDeleteUnlinksOnlyThatRepository(t *testing.T) {
	e := newEnv(t)
	data := []byte("shared layer bytes")
	d := e.pushBlob("alice", "alice/one", data)
	// Mount into a second repository of alice's.
	expect(t, e.do("POST", "/v2/alice/two/blobs/uploads/?mount="+d.String()+"&from=alice/one", "alice", nil), 201, "")
	expect(t, e.do("DELETE", "/v2/alice/one/blobs/"+d.String(), "alice", nil), 202, "")
	expect(t, e.do("HEAD", "/v2/alice/one/blobs/"+d.String(), "alice", nil), 404, "")
	resp := e.do("GET", "/v2/alice/two/blobs/"+d.String(), "alice", nil)
	expect(t, resp, 200, "")
	got, _ := io.ReadAll(resp.Body)
	if !bytes.Equal(got, data) {
		t.Fatalf("other repository lost the blob: %q", got)
	}
}

func TestMountFromUnreadableRepositoryFallsBackToUpload(t *testing.T) {
	e := newEnv(t)
	d := e.pushBlob("alice", "alice/private", []byte("alice's secret layer"))
	resp := e.do("POST", "/v2/bob/mine/blobs/uploads/?mount="+d.String()+"&from=alice/private", "bob", nil)
	expect(t, resp, 202, "")
	if resp.Header.Get("Location") == "" {
		t.Fatal("fallback upload has no Location")
	}
	expect(t, e.do("GET", "/v2/bob/mine/blobs/"+d.String(), "bob", nil), 404, "BLOB_UNKNOWN")
}

func TestUploadSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	resp := e.do("POST", "/v2/alice/big/blobs/uploads/", "alice", nil)
	expect(t, resp, 202, "")
	loc := resp.Header.Get("Location")
	half := len(data) / 2
	resp = e.do("PATCH", loc, "alice", data[:half], "Content-Range", fmt.Sprintf("0-%d", half-1), "Content-Type", "application/octet-stream")
	expect(t, resp, 202, "")
	path := loc[strings.Index(loc, "/v2/"):]

	e.stop()
	e.start()
	resp = e.do("GET", path, "alice", nil)
	expect(t, resp, 204, "")
	if got, want := resp.Header.Get("Range"), fmt.Sprintf("0-%d", half-1); got != want {
		t.Fatalf("Range after restart = %q, want %q", got, want)
	}
	// An out-of-order chunk is refused and changes nothing.
	expect(t, e.do("PATCH", path, "alice", data[half+10:], "Content-Range", fmt.Sprintf("%d-%d", half+10, len(data)-1)), 416, "BLOB_UPLOAD_INVALID")
	d := digest.FromBytes(data)
	expect(t, e.do("PUT", path+"?digest="+d.String(), "alice", data[half:], "Content-Range", fmt.Sprintf("%d-%d", half, len(data)-1)), 201, "")
	resp = e.do("GET", "/v2/alice/big/blobs/"+d.String(), "alice", nil)
	expect(t, resp, 200, "")
	got, _ := io.ReadAll(resp.Body)
	if digest.FromBytes(got) != d {
		t.Fatal("blob read back differs")
	}
}

func TestDigestMismatchStoresNothing(t *testing.T) {
	e := newEnv(t)
	wrong := digest.FromString("something else")
	expect(t, e.do("POST", "/v2/alice/r/blobs/uploads/?digest="+wrong.String(), "alice", []byte("actual bytes")), 400, "DIGEST_INVALID")
	expect(t, e.do("HEAD", "/v2/alice/r/blobs/"+wrong.String(), "alice", nil), 404, "")
	if _, err := e.st.GetBlob(context.Background(), digest.FromString("actual bytes").String()); err == nil {
		t.Fatal("a blob was recorded for a failed upload")
	}
	entries, _ := os.ReadDir(filepath.Join(e.dataDir, "blobs", "uploads"))
	if len(entries) != 0 {
		t.Fatalf("staged bytes left behind: %d entries", len(entries))
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	cfg := e.pushBlob("alice", "alice/app", []byte("{}"))
	layer := e.pushBlob("alice", "alice/app", []byte("layer"))
	good := imageManifest(cfg, layer, 2, 5)
	oci := "application/vnd.oci.image.manifest.v1+json"
	cases := []struct {
		name, method, path string
		body               []byte
		ctype              string
		status             int
		code               string
	}{
		{"uppercase name", "GET", "/v2/alice/App/tags/list", nil, "", 400, "NAME_INVALID"},
		{"invalid tag", "PUT", "/v2/alice/app/manifests/-bad", good, oci, 400, "MANIFEST_INVALID"},
		{"malformed manifest", "PUT", "/v2/alice/app/manifests/v1", []byte("{not json"), oci, 400, "MANIFEST_INVALID"},
		{"unknown media type", "PUT", "/v2/alice/app/manifests/v1", good, "application/x-unknown", 400, "MANIFEST_INVALID"},
		{"missing blob", "PUT", "/v2/alice/app/manifests/v1", imageManifest(cfg, digest.FromString("nope"), 2, 4), oci, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"wrong size", "PUT", "/v2/alice/app/manifests/v1", imageManifest(cfg, layer, 2, 6), oci, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"digest mismatch", "PUT", "/v2/alice/app/manifests/" + digest.FromString("x").String(), good, oci, 400, "DIGEST_INVALID"},
		{"oversized", "PUT", "/v2/alice/app/manifests/big", bytes.Repeat([]byte(" "), 4<<20+1), oci, 413, ""},
		{"bad digest", "GET", "/v2/alice/app/blobs/sha256:totallywrong", nil, "", 400, "DIGEST_INVALID"},
		{"unknown algorithm", "GET", "/v2/alice/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", nil, "", 400, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expect(t, e.do(c.method, c.path, "alice", c.body, "Content-Type", c.ctype), c.status, c.code)
		})
	}
	// Traversal in a name never reaches another repository: a dot segment is
	// redirected to the cleaned path (whose auth then applies), an encoded
	// one is no route at all.
	for _, raw := range []string{"/v2/alice/../bob/app/tags/list", "/v2/alice/%2e%2e/bob/tags/list", "/v2/alice/app%2f..%2fx/tags/list"} {
		req, _ := http.NewRequest("GET", e.srv.URL, nil)
		req.URL.Opaque = raw
		req.SetBasicAuth("alice", "alice-pw")
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMovedPermanently && resp.StatusCode != http.StatusTemporaryRedirect && resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s: status %d", raw, resp.StatusCode)
		}
	}
	// Nothing of the refused pushes is stored, and the server still serves.
	expect(t, e.do("GET", "/v2/alice/app/manifests/v1", "alice", nil), 404, "MANIFEST_UNKNOWN")
	expect(t, e.do("PUT", "/v2/alice/app/manifests/v1", "alice", good, "Content-Type", oci), 201, "")
}

func TestAuthRules(t *testing.T) {
	e := newEnv(t)
	e.pushBlob("alice", "alice/app", []byte("x"))
	// Anonymous: challenged, with the scope the request needs.
	resp := e.do("GET", "/v2/alice/app/tags/list", "", nil)
	expect(t, resp, 401, "UNAUTHORIZED")
	if ch := resp.Header.Get("WWW-Authenticate"); !strings.Contains(ch, `scope="repository:alice/app:pull"`) || !strings.Contains(ch, "/v2/auth") {
		t.Fatalf("challenge %q", ch)
	}
	// Another user: denied on read and push, never told whether it exists.
	expect(t, e.do("GET", "/v2/alice/app/tags/list", "bob", nil), 403, "")
	expect(t, e.do("GET", "/v2/alice/nothing/tags/list", "bob", nil), 403, "")
	expect(t, e.do("POST", "/v2/alice/app/blobs/uploads/", "bob", nil), 403, "")
	// Pushing into another namespace cannot create a repository there.
	expect(t, e.do("POST", "/v2/carol/app/blobs/uploads/", "alice", nil), 403, "")
	// Wrong password: 401, not 500.
	req, _ := http.NewRequest("GET", e.srv.URL+"/v2/alice/app/tags/list", nil)
	req.SetBasicAuth("alice", "wrong")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 401 {
		t.Fatalf("wrong password: %d", r2.StatusCode)
	}
	// The owner reads a repository that does not exist: NAME_UNKNOWN.
	expect(t, e.do("GET", "/v2/alice/nothing/tags/list", "alice", nil), 404, "NAME_UNKNOWN")
}

func TestTagPaginationAndReferrers(t *testing.T) {
	e := newEnv(t)
	cfg := e.pushBlob("alice", "alice/app", []byte("{}"))
	layer := e.pushBlob("alice", "alice/app", []byte("layer"))
	m := imageManifest(cfg, layer, 2, 5)
	md := digest.FromBytes(m)
	for _, tag := range []string{"b", "a", "c", "A"} {
		expect(t, e.do("PUT", "/v2/alice/app/manifests/"+tag, "alice", m, "Content-Type", "application/vnd.oci.image.manifest.v1+json"), 201, "")
	}
	resp := e.do("GET", "/v2/alice/app/tags/list?n=2", "alice", nil)
	expect(t, resp, 200, "")
	var page struct{ Tags []string }
	json.NewDecoder(resp.Body).Decode(&page)
	if strings.Join(page.Tags, ",") != "A,a" || !strings.Contains(resp.Header.Get("Link"), "last=a") {
		t.Fatalf("page 1: %v link %q", page.Tags, resp.Header.Get("Link"))
	}
	resp = e.do("GET", "/v2/alice/app/tags/list?n=2&last=a", "alice", nil)
	json.NewDecoder(resp.Body).Decode(&page)
	if strings.Join(page.Tags, ",") != "b,c" {
		t.Fatalf("page 2: %v", page.Tags)
	}

	sig := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},`+
		`"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d},"annotations":{"k":"v"}}`, md, len(m)))
	e.pushBlob("alice", "alice/app", []byte("{}"))
	resp = e.do("PUT", "/v2/alice/app/manifests/"+digest.FromBytes(sig).String(), "alice", sig, "Content-Type", "application/vnd.oci.image.manifest.v1+json")
	expect(t, resp, 201, "")
	if resp.Header.Get("OCI-Subject") != md.String() {
		t.Fatalf("OCI-Subject %q", resp.Header.Get("OCI-Subject"))
	}
	for filter, want := range map[string]int{"": 1, "?artifactType=application/vnd.example.sig": 1, "?artifactType=other": 0} {
		resp = e.do("GET", "/v2/alice/app/referrers/"+md.String()+filter, "alice", nil)
		expect(t, resp, 200, "")
		var idx struct {
			Manifests []struct {
				ArtifactType string
				Annotations  map[string]string
			}
		}
		json.NewDecoder(resp.Body).Decode(&idx)
		if len(idx.Manifests) != want {
			t.Fatalf("referrers%s: %d, want %d", filter, len(idx.Manifests), want)
		}
		if want == 1 && (idx.Manifests[0].ArtifactType != "application/vnd.example.sig" || idx.Manifests[0].Annotations["k"] != "v") {
			t.Fatalf("referrer descriptor %+v", idx.Manifests[0])
		}
		if (filter != "") != (resp.Header.Get("OCI-Filters-Applied") == "artifactType") {
			t.Fatalf("OCI-Filters-Applied %q for %q", resp.Header.Get("OCI-Filters-Applied"), filter)
		}
	}
}

// A build worker logs in with a registry token as its password: it may do
// exactly what the token grants, on /v2 directly and through /v2/auth.
func TestRegistryTokenAsPassword(t *testing.T) {
	e := newEnv(t)
	alice, err := e.st.GetAccountByName(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := e.tokens.Issue(&auth.Principal{Account: alice}, "svc", []auth.ResourceActions{
		{Type: auth.TypeRepository, Name: "alice/app", Actions: []auth.Action{auth.Pull, auth.Push}},
	})
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path string, body []byte) *http.Response {
		req, _ := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
		req.SetBasicAuth(auth.RegistryTokenUser, tok.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	d := digest.FromString("layer")
	expect(t, do("POST", "/v2/alice/app/blobs/uploads/?digest="+d.String(), []byte("layer")), 201, "")
	// alice herself could push here, but the token does not say so.
	expect(t, do("POST", "/v2/alice/other/blobs/uploads/", nil), 403, "DENIED")

	resp := do("GET", "/v2/auth?service=svc&scope=repository:alice/app:pull,push&scope=repository:alice/other:pull,push", nil)
	expect(t, resp, 200, "")
	var body struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&body)
	c, err := e.tokens.Verify(context.Background(), body.Token)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Allows(auth.TypeRepository, "alice/app", auth.Push) || c.Allows(auth.TypeRepository, "alice/other", auth.Pull) {
		t.Fatalf("token exchanged for %+v", c.Access)
	}
	// A forged or expired password is refused, never a 500.
	req, _ := http.NewRequest("GET", e.srv.URL+"/v2/auth?scope=repository:alice/app:pull", nil)
	req.SetBasicAuth(auth.RegistryTokenUser, tok.Token+"x")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 401 {
		t.Fatalf("forged token: %d", r2.StatusCode)
	}
}

// A token issued to an OAuth-scoped principal can mount only from what the
// token itself names, even where the account could read the source.
func TestScopedTokenCannotMountBeyondItsClaim(t *testing.T) {
	e := newEnv(t)
	d := e.pushBlob("alice", "alice/one", []byte("alice's layer"))
	alice, err := e.st.GetAccountByName(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, scoped := range []bool{false, true} {
		who := &auth.Principal{Account: alice}
		if scoped {
			who.Scopes = []auth.OAuthScope{auth.ScopeRepoWrite}
		}
		tok, err := e.tokens.Issue(who, "svc", []auth.ResourceActions{
			{Type: auth.TypeRepository, Name: "alice/two", Actions: []auth.Action{auth.Pull, auth.Push}},
		})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", e.srv.URL+"/v2/alice/two/blobs/uploads/?mount="+d.String()+"&from=alice/one", nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := 201
		if scoped {
			want = 202
		}
		if resp.StatusCode != want {
			t.Fatalf("scoped=%v: mount answered %d, want %d", scoped, resp.StatusCode, want)
		}
		if !scoped {
			// Unlink again so the scoped round starts from the same state.
			expect(t, e.do("DELETE", "/v2/alice/two/blobs/"+d.String(), "alice", nil), 202, "")
		}
	}
}

// TestPurgeAbandonedUploads: a session nobody touched for the purge age
// loses its row and staged bytes (its URL answers BLOB_UPLOAD_UNKNOWN), as
// do staged bytes no session owns; a session in use is kept.
func TestPurgeAbandonedUploads(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	open := func() string {
		resp := e.do("POST", "/v2/alice/up/blobs/uploads/", "alice", nil)
		expect(t, resp, 202, "")
		loc := resp.Header.Get("Location")
		return loc[strings.Index(loc, "/v2/"):]
	}
	abandoned := open()
	expect(t, e.do("PATCH", abandoned, "alice", []byte("half a layer"), "Content-Range", "0-11"), 202, "")
	uploads := filepath.Join(e.dataDir, "blobs", "uploads")
	// A monolithic upload's staged file whose server died mid-request: no
	// session row owns it.
	orphan := filepath.Join(uploads, "0b1c2d3e-4f50-4617-8899-aabbccddeeff")
	if err := os.WriteFile(orphan, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(orphan, old, old); err != nil {
		t.Fatal(err)
	}
	// The purge's cutoff falls halfway between the abandoned session's last
	// touch and the new session's start, however long the requests take on
	// a loaded machine.
	lastTouched := time.Now()
	time.Sleep(50 * time.Millisecond)
	cutoff := lastTouched.Add(time.Since(lastTouched) / 2)
	inUse := open()
	expect(t, e.do("PATCH", inUse, "alice", []byte("fresh"), "Content-Range", "0-4"), 202, "")

	n, err := e.h.PurgeUploads(ctx, time.Since(cutoff))
	if err != nil || n != 2 {
		t.Fatalf("PurgeUploads = %d, %v; want the abandoned session and the orphan", n, err)
	}
	expect(t, e.do("GET", abandoned, "alice", nil), 404, "BLOB_UPLOAD_UNKNOWN")
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphaned staged bytes survived the purge: %v", err)
	}
	entries, _ := os.ReadDir(uploads)
	if len(entries) != 1 {
		t.Errorf("staging area after the purge holds %d files, want the one in use", len(entries))
	}
	resp := e.do("GET", inUse, "alice", nil)
	expect(t, resp, 204, "")
	if got := resp.Header.Get("Range"); got != "0-4" {
		t.Errorf("session in use after the purge: Range %q", got)
	}
}
