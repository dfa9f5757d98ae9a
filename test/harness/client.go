package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// Client calls berth's build API as one user (Basic auth).
type Client struct {
	Base           string // http://host:port
	User, Password string
	HTTP           *http.Client
}

// NewClient is a client for the server's superuser.
func NewClient(s *Server) *Client {
	return &Client{Base: "http://" + s.Addr, User: s.Opts.User, Password: s.Opts.Password, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// StatusError is an answer with an unexpected HTTP status.
type StatusError struct {
	Method, URL string
	Code        int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Code, strings.TrimSpace(e.Body))
}

// IsNotFound reports whether err is a 404 answer (an endpoint that does not
// exist yet, or a missing resource).
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// do sends a request with the user's credentials and decodes a JSON answer
// into out when the status is want.
func (c *Client) do(ctx context.Context, method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.User, c.Password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return &StatusError{Method: method, URL: path, Code: resp.StatusCode, Body: string(data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding %q: %w", method, path, data, err)
		}
	}
	return nil
}

// Filedrop asks for an upload URL and its file ID.
func (c *Client) Filedrop(ctx context.Context) (url, fileID string, err error) {
	var drop struct {
		URL    string `json:"url"`
		FileID string `json:"file_id"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/filedrop/", map[string]string{"mimeType": "application/gzip"}, http.StatusOK, &drop); err != nil {
		return "", "", err
	}
	if drop.URL == "" || drop.FileID == "" {
		return "", "", fmt.Errorf("filedrop answered without url or file_id: %+v", drop)
	}
	return drop.URL, drop.FileID, nil
}

// Upload gets a filedrop URL and PUTs data to it without credentials,
// returning the file ID.
func (c *Client) Upload(ctx context.Context, data []byte) (string, error) {
	url, fileID, err := c.Filedrop(ctx)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return "", fmt.Errorf("PUT filedrop URL: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return "", &StatusError{Method: http.MethodPut, URL: url, Code: resp.StatusCode, Body: string(body)}
	}
	return fileID, nil
}

// CreateRepo creates the private repository ns/name.
func (c *Client) CreateRepo(ctx context.Context, ns, name string) error {
	body := map[string]string{"namespace": ns, "repository": name, "visibility": "private", "description": ""}
	return c.do(ctx, http.MethodPost, "/api/v1/repository", body, http.StatusCreated, nil)
}

// SetVisibility makes repository repo ("ns/name") public or private.
func (c *Client) SetVisibility(ctx context.Context, repo, visibility string) error {
	return c.do(ctx, http.MethodPost, "/api/v1/repository/"+repo+"/changevisibility",
		map[string]string{"visibility": visibility}, http.StatusOK, nil)
}

// BuildRequest is the body of POST …/build/.
type BuildRequest struct {
	FileID         string            `json:"file_id,omitempty"`
	ArchiveURL     string            `json:"archive_url,omitempty"`
	DockerTags     []string          `json:"docker_tags,omitempty"`
	DockerfilePath string            `json:"dockerfile_path,omitempty"`
	BuildArgs      map[string]string `json:"build_args,omitempty"`
}

// Build is the part of a BuildView the tests read.
type Build struct {
	ID              string            `json:"id"`
	Phase           string            `json:"phase"`
	Tags            []string          `json:"tags"`
	Error           *string           `json:"error"`
	ManifestDigests map[string]string `json:"manifest_digests"`
}

func buildPath(repo string) string { return "/api/v1/repository/" + repo + "/build/" }

// RequestBuild starts a build of repo ("ns/name").
func (c *Client) RequestBuild(ctx context.Context, repo string, r BuildRequest) (*Build, error) {
	var b Build
	if err := c.do(ctx, http.MethodPost, buildPath(repo), r, http.StatusCreated, &b); err != nil {
		return nil, err
	}
	if b.ID == "" {
		return nil, errors.New("build created without an id")
	}
	return &b, nil
}

// GetBuild reads a build.
func (c *Client) GetBuild(ctx context.Context, repo, id string) (*Build, error) {
	var b Build
	if err := c.do(ctx, http.MethodGet, buildPath(repo)+id, nil, http.StatusOK, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// ListBuilds lists the repository's most recent builds (up to 100).
func (c *Client) ListBuilds(ctx context.Context, repo string) ([]Build, error) {
	var out struct {
		Builds []Build `json:"builds"`
	}
	if err := c.do(ctx, http.MethodGet, buildPath(repo)+"?limit=100", nil, http.StatusOK, &out); err != nil {
		return nil, err
	}
	return out.Builds, nil
}

// Cancel cancels a build (Quay answers 201).
func (c *Client) Cancel(ctx context.Context, repo, id string) error {
	return c.do(ctx, http.MethodDelete, buildPath(repo)+id, nil, http.StatusCreated, nil)
}

// LogEntry is one build log entry.
type LogEntry struct {
	Message string         `json:"message"`
	Type    string         `json:"type"`
	Data    map[string]any `json:"data"`
}

// Time is the entry's datetime (zero when missing or malformed).
func (e LogEntry) Time() time.Time {
	s, _ := e.Data["datetime"].(string)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Logs reads every log entry from start, a page at a time.
func (c *Client) Logs(ctx context.Context, repo, id string, start int) ([]LogEntry, error) {
	var all []LogEntry
	for {
		var out struct {
			Start int        `json:"start"`
			Total int        `json:"total"`
			Logs  []LogEntry `json:"logs"`
		}
		if err := c.do(ctx, http.MethodGet, buildPath(repo)+id+"/logs?start="+strconv.Itoa(start), nil, http.StatusOK, &out); err != nil {
			return nil, err
		}
		all = append(all, out.Logs...)
		if out.Start != start || out.Total < start+len(out.Logs) || len(out.Logs) == 0 && start < out.Total {
			return all, fmt.Errorf("logs answer start=%d total=%d with %d entries, asked from %d", out.Start, out.Total, len(out.Logs), start)
		}
		if start += len(out.Logs); start >= out.Total {
			return all, nil
		}
	}
}

// Wait polls the build every interval until stop says so (or it is
// terminal when stop is nil), calling seen with each new phase.
func (c *Client) Wait(ctx context.Context, repo, id string, interval time.Duration, stop func(*Build) bool, seen func(phase string)) (*Build, error) {
	if stop == nil {
		stop = func(b *Build) bool { return store.BuildPhase(b.Phase).TerminalView() }
	}
	last := ""
	for {
		b, err := c.GetBuild(ctx, repo, id)
		if err != nil {
			return nil, err
		}
		if b.Phase != last && seen != nil {
			seen(b.Phase)
		}
		last = b.Phase
		if stop(b) {
			return b, nil
		}
		if store.BuildPhase(b.Phase).TerminalView() {
			return b, fmt.Errorf("build %s ended in %s before the awaited state", id, b.Phase)
		}
		select {
		case <-ctx.Done():
			return b, fmt.Errorf("build %s still %s: %w", id, b.Phase, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// Event is one server-sent event with the time it was read.
type Event struct {
	ID       string
	Entry    LogEntry
	Received time.Time
}

// Stream opens the build's SSE log stream (from Last-Event-ID when
// lastID is not empty) and calls fn for each event until the server ends
// the stream (nil), ctx ends, or fn returns false.
func (c *Client) Stream(ctx context.Context, repo, id, lastID string, fn func(Event) bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+buildPath(repo)+id+"/logs/stream", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.User, c.Password)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	// No client timeout: the stream lasts as long as the build.
	resp, err := (&http.Client{Transport: c.HTTP.Transport}).Do(req)
	if err != nil {
		return fmt.Errorf("opening the log stream: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return &StatusError{Method: http.MethodGet, URL: req.URL.Path, Code: resp.StatusCode, Body: string(body)}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fmt.Errorf("log stream Content-Type %q, want text/event-stream", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var evID string
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if len(data) == 0 {
				continue // a keep-alive or an event without data
			}
			ev := Event{ID: evID, Received: time.Now()}
			if err := json.Unmarshal([]byte(strings.Join(data, "\n")), &ev.Entry); err != nil {
				return fmt.Errorf("event %s is not a log entry: %w: %q", evID, err, strings.Join(data, "\n"))
			}
			evID, data = "", nil
			if !fn(ev) {
				return nil
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id:"):
			evID = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("reading the log stream: %w", err)
	}
	return ctx.Err()
}
