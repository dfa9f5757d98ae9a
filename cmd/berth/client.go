package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// serverFlags are the flags that say how to reach berth and as whom.
type serverFlags struct {
	server    string
	token     string
	tlsVerify bool
	caFile    string
}

func (s *serverFlags) register(flags *flag.FlagSet, getenv func(string) string) {
	flags.StringVar(&s.server, "server", getenv("BERTH_SERVER"), "berth's URL (default from NAME's host, else http://localhost:8080; https is used when the server speaks TLS)")
	flags.StringVar(&s.token, "token", getenv("BERTH_TOKEN"), "an OAuth access token (default $BERTH_TOKEN)")
	flags.BoolVar(&s.tlsVerify, "tls-verify", true, "verify the server's TLS certificate")
	flags.StringVar(&s.caFile, "ca-file", "", "a PEM file of CA certificates to trust besides the system's")
}

// client makes the client for repo (namespace/name), whose names carried
// the registry host nameHost ("" for none). Without a token it uses the
// login podman, skopeo or docker stored for the server.
func (s *serverFlags) client(getenv func(string) string, nameHost, repo string, stdout, stderr io.Writer) (*buildClient, error) {
	serverURL, err := buildServerURL(s.server, nameHost)
	if err != nil {
		return nil, err
	}
	if nameHost != "" && !strings.EqualFold(nameHost, serverURL.Host) {
		return nil, fmt.Errorf("the image names registry %s but the server is %s", nameHost, serverURL.Host)
	}
	tlsConfig := &tls.Config{InsecureSkipVerify: !s.tlsVerify}
	if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return nil, fmt.Errorf("reading --ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", s.caFile)
		}
		tlsConfig.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	c := &buildClient{server: serverURL, http: &http.Client{Transport: transport}, stdout: stdout, stderr: stderr, log: stderr}
	if s.token != "" {
		c.auth, c.authSource = "Bearer "+s.token, "the token (--token or BERTH_TOKEN)"
		return c, nil
	}
	login, err := findLogin(authFiles(getenv, os.Getuid()), serverURL.Host, repo)
	if err != nil {
		return nil, err
	}
	if login != nil {
		c.auth, c.authSource = login.header, "the login stored in "+login.file
	}
	return c, nil
}

// buildServerURL is --server, or the names' registry host (https unless it
// is this machine), or the default local server.
func buildServerURL(server, host string) (*url.URL, error) {
	switch {
	case server != "":
	case host == "":
		server = "http://localhost:8080"
	case strings.HasPrefix(host, "localhost") || strings.HasPrefix(host, "127."):
		server = "http://" + host
	default:
		server = "https://" + host
	}
	u, err := url.Parse(strings.TrimSuffix(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q is not an http(s) URL", server)
	}
	return u, nil
}

// buildClient talks to one berth server.
type buildClient struct {
	server *url.URL
	auth   string // Authorization header value ("" for none)
	// authSource names where auth came from, for the message when the
	// server refuses it.
	authSource string
	http       *http.Client
	stdout     io.Writer
	stderr     io.Writer
	// log is where the build's log goes.
	log io.Writer
	// progress reports upload progress on a terminal (redrawn in place).
	progress bool
}

// connect checks, before any credential is sent, whether a server named by
// an http URL speaks TLS on that port, and switches to https when it does.
func (c *buildClient) connect(ctx context.Context) error {
	if c.server.Scheme != "http" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server.String()+"/", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach berth at %s: %w", c.server, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusBadRequest && speaksTLS(b) {
		c.server.Scheme = "https"
		fmt.Fprintf(c.stderr, "%s speaks TLS: using %s\n", c.server.Host, c.server)
	}
	return nil
}

// speaksTLS recognizes the answer of a TLS port to plain HTTP (Go's and
// nginx's wording).
func speaksTLS(body []byte) bool {
	return bytes.Contains(body, []byte("HTTP request to an HTTPS server")) ||
		bytes.Contains(body, []byte("plain HTTP request was sent to HTTPS port"))
}

// do sends req with the client's credentials, saying which server could
// not be reached and what helps with a certificate it does not trust.
func (c *buildClient) do(req *http.Request) (*http.Response, error) {
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := c.http.Do(req)
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var verify *tls.CertificateVerificationError
	switch {
	case err == nil || req.Context().Err() != nil:
		return resp, err
	case errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &verify):
		return nil, fmt.Errorf("%w (pass --ca-file with the CA that signed the server's certificate, or --tls-verify=false)", err)
	}
	return nil, fmt.Errorf("cannot reach berth at %s: %w", c.server, err)
}

// apiError is Quay's error body.
type apiError struct {
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// call sends a JSON request to the API and decodes the answer into out.
func (c *buildClient) call(ctx context.Context, method, p string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server.String()+p, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return c.responseError(resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// statusError is an API answer with an error status.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s (%d %s)", e.msg, e.status, http.StatusText(e.status))
}

// responseError turns an error answer into a statusError with the API's
// message; a refused credential says which one.
func (c *buildClient) responseError(status int, body []byte) error {
	var e apiError
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Detail != "" {
		msg = e.Detail
	}
	if status == http.StatusUnauthorized {
		switch {
		case c.authSource == "":
			msg = "the server wants credentials: pass --token, set BERTH_TOKEN, or podman login " + c.server.Host
		case strings.HasPrefix(c.auth, "Bearer "):
			msg = "the server refused " + c.authSource + ": it is unknown, expired or revoked"
		default:
			msg = "the server refused " + c.authSource + " (" + msg + "); podman login " + c.server.Host + " again"
		}
	}
	return &statusError{status: status, msg: msg}
}

// ensureRepository creates the target repository, private, when it does not
// exist yet: a build, like a push, may be the first thing a repository sees.
func (c *buildClient) ensureRepository(ctx context.Context, repo string) error {
	err := c.call(ctx, http.MethodGet, "/api/v1/repository/"+repo, nil, nil)
	var se *statusError
	if err == nil || !errors.As(err, &se) || se.status != http.StatusNotFound {
		return err
	}
	ns, name, _ := strings.Cut(repo, "/")
	body := map[string]any{"namespace": ns, "repository": name, "visibility": "private", "description": ""}
	if err := c.call(ctx, http.MethodPost, "/api/v1/repository", body, nil); err != nil {
		return fmt.Errorf("cannot create repository %s: %w", repo, err)
	}
	return nil
}

// upload puts the archive through a filedrop URL and returns its file ID.
func (c *buildClient) upload(ctx context.Context, f *os.File) (string, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	var drop struct {
		URL    string `json:"url"`
		FileID string `json:"file_id"`
	}
	if err := c.call(ctx, http.MethodPost, "/api/v1/filedrop/", map[string]string{"mimeType": "application/gzip"}, &drop); err != nil {
		return "", fmt.Errorf("cannot upload the context: %w", err)
	}
	pr := &progressReader{r: f, total: fi.Size(), w: c.stderr, live: c.progress}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, drop.URL, pr)
	if err != nil {
		return "", fmt.Errorf("cannot upload the context: %w", err)
	}
	req.ContentLength = fi.Size()
	req.Header.Set("Content-Type", "application/gzip")
	// The pre-signed URL is the credential: none is sent with it.
	resp, err := c.http.Do(req)
	pr.finish()
	if err != nil {
		return "", fmt.Errorf("cannot upload the context: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return "", fmt.Errorf("cannot upload the context: %w", c.responseError(resp.StatusCode, b))
	}
	return drop.FileID, nil
}

// buildStatus is the part of Quay's BuildView the client reads.
type buildStatus struct {
	ID              string            `json:"id"`
	Phase           string            `json:"phase"`
	Tags            []string          `json:"tags"`
	Error           string            `json:"error"`
	ManifestDigests map[string]string `json:"manifest_digests"`
}

// buildPath is the API path of a build.
func buildPath(repo, id string) string {
	return "/api/v1/repository/" + repo + "/build/" + url.PathEscape(id)
}

// pageURL is the build's page.
func (c *buildClient) pageURL(repo, id string) string {
	return c.server.JoinPath("repository", repo, "build", id).String()
}

// cancel asks the server to cancel a build.
func (c *buildClient) cancel(ctx context.Context, repo, id string) error {
	return c.call(ctx, http.MethodDelete, buildPath(repo, id), nil, nil)
}

// follow prints the build's log as it arrives (server-sent events),
// reconnecting from the last entry seen when the stream drops, until the
// build ends; it returns the build's final state.
func (c *buildClient) follow(ctx context.Context, repo, id string) (*buildStatus, error) {
	p := buildPath(repo, id)
	last := -1
	failures := 0
	for {
		err := c.stream(ctx, p+"/logs/stream", &last)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var st buildStatus
		if serr := c.call(ctx, http.MethodGet, p+"/status", nil, &st); serr != nil {
			var se *statusError
			if errors.As(serr, &se) && (se.status == http.StatusNotFound || se.status == http.StatusUnauthorized || se.status == http.StatusForbidden) {
				return nil, fmt.Errorf("cannot read build %s of %s: %w", id, repo, serr)
			}
			err = errors.Join(err, serr)
		} else if store.BuildPhase(st.Phase).TerminalView() {
			return &st, nil
		}
		if err != nil {
			failures++
			if failures > 10 {
				return nil, fmt.Errorf("lost the build's log: %w", err)
			}
			fmt.Fprintf(c.stderr, "(log stream interrupted: %v; reconnecting)\n", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(min(failures+1, 5)) * time.Second / 2):
		}
	}
}

// stream reads one SSE connection, printing entries after *last and
// advancing it.
func (c *buildClient) stream(ctx context.Context, p string, last *int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server.String()+p, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *last >= 0 {
		req.Header.Set("Last-Event-ID", strconv.Itoa(*last))
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return c.responseError(resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	id, data := -1, ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id:"):
			id, _ = strconv.Atoi(strings.TrimSpace(line[3:]))
		case strings.HasPrefix(line, "data:"):
			data = strings.TrimPrefix(line[5:], " ")
		case line == "" && data != "":
			if id > *last {
				c.printEntry(data)
				*last = id
			}
			id, data = -1, ""
		}
	}
	return sc.Err()
}

// printEntry prints one log entry: phases and errors stand out, build
// output is printed as it is.
func (c *buildClient) printEntry(data string) {
	var e struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	}
	if json.Unmarshal([]byte(data), &e) != nil {
		return
	}
	switch e.Type {
	case "phase":
		fmt.Fprintf(c.log, "==> %s\n", e.Message)
	case "error":
		fmt.Fprintf(c.log, "ERROR: %s\n", e.Message)
	default:
		fmt.Fprintln(c.log, e.Message)
	}
}
