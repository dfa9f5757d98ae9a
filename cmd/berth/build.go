package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

const buildUsage = `usage: berth build [-t NAME[:TAG]]... [-f Dockerfile] [--build-arg K=V]... [--target STAGE]
                   [--no-cache] [--server URL] [--token T] DIR

Uploads DIR (honouring .dockerignore) to berth, builds it there, streams the log and
prints NAME:TAG@DIGEST for every tag. NAME is namespace/repository, optionally after
the registry's host (which then names the server). Credentials: --token, BERTH_TOKEN
(an OAuth access token), or podman's stored login for the server.
`

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// buildClient talks to one berth server.
type buildClient struct {
	server *url.URL
	auth   string // Authorization header value ("" for none)
	http   *http.Client
	stdout io.Writer
	stderr io.Writer
	// progress reports upload progress on a terminal (redrawn in place).
	progress bool
}

// runBuild is `berth build`.
func runBuild(ctx context.Context, args []string) error {
	fi, err := os.Stderr.Stat()
	tty := err == nil && fi.Mode()&os.ModeCharDevice != 0
	return buildMain(ctx, args, os.Stdout, os.Stderr, os.Getenv, tty)
}

func buildMain(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, tty bool) error {
	flags := flag.NewFlagSet("build", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() { fmt.Fprint(stderr, buildUsage); flags.PrintDefaults() }
	var tags, buildArgs listFlag
	flags.Var(&tags, "t", "image name and tag, namespace/repository[:tag] (repeatable)")
	flags.Var(&tags, "tag", "same as -t")
	dockerfile := flags.String("f", "", "the Dockerfile (default DIR/Dockerfile)")
	flags.StringVar(dockerfile, "file", "", "same as -f")
	flags.Var(&buildArgs, "build-arg", "a build argument K=V (repeatable)")
	target := flags.String("target", "", "the stage to build")
	noCache := flags.Bool("no-cache", false, "do not use cached layers")
	server := flags.String("server", getenv("BERTH_SERVER"), "berth's URL (default from NAME's host, else http://localhost:8080)")
	token := flags.String("token", getenv("BERTH_TOKEN"), "an OAuth access token (default $BERTH_TOKEN)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		flags.Usage()
		return errors.New("build: exactly one context directory is required")
	}
	dir := flags.Arg(0)
	ref, err := parseBuildTags(tags)
	if err != nil {
		return err
	}
	serverURL, err := buildServerURL(*server, ref.host)
	if err != nil {
		return err
	}
	if ref.host != "" && !strings.EqualFold(ref.host, serverURL.Host) {
		return fmt.Errorf("build: the image names registry %s but the server is %s", ref.host, serverURL.Host)
	}
	args2 := map[string]string{}
	for _, kv := range buildArgs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("build: --build-arg %q is not K=V", kv)
		}
		args2[k] = v
	}
	c := &buildClient{server: serverURL, http: &http.Client{}, stdout: stdout, stderr: stderr, progress: tty}
	switch {
	case *token != "":
		c.auth = "Bearer " + *token
	default:
		c.auth, err = podmanAuth(getenv, serverURL.Host)
		if err != nil {
			return err
		}
	}

	archive, dfPath, err := packContext(dir, *dockerfile)
	if err != nil {
		return err
	}
	defer os.Remove(archive.Name())
	defer archive.Close()
	fileID, err := c.upload(ctx, archive)
	if err != nil {
		return err
	}
	body := map[string]any{"file_id": fileID, "docker_tags": ref.tags, "dockerfile_path": dfPath, "context": "/"}
	if len(args2) > 0 {
		body["build_args"] = args2
	}
	if *target != "" {
		body["target"] = *target
	}
	if *noCache {
		body["no_cache"] = true
	}
	if err := c.ensureRepository(ctx, ref.repo); err != nil {
		return err
	}
	var view buildStatus
	repoPath := "/api/v1/repository/" + ref.repo + "/build/"
	if err := c.call(ctx, http.MethodPost, repoPath, body, &view); err != nil {
		return fmt.Errorf("build: start: %w", err)
	}
	fmt.Fprintf(stderr, "Build %s queued: %s\n", view.ID, c.server.JoinPath("repository", ref.repo, "build", view.ID))
	final, err := c.follow(ctx, repoPath+view.ID)
	if err != nil {
		return err
	}
	if final.Phase != "complete" {
		msg := final.Error
		if msg == "" {
			msg = "the build ended " + final.Phase
		}
		return fmt.Errorf("build %s %s: %s", final.ID, final.Phase, msg)
	}
	for _, tag := range final.Tags {
		fmt.Fprintf(stdout, "%s/%s:%s@%s\n", c.server.Host, ref.repo, tag, final.ManifestDigests[tag])
	}
	return nil
}

// buildRef is what the -t flags name: one repository, its tags, and the
// registry host when the names carry one.
type buildRef struct {
	host, repo string
	tags       []string
}

func parseBuildTags(names []string) (buildRef, error) {
	var ref buildRef
	if len(names) == 0 {
		return ref, errors.New("build: -t namespace/repository[:tag] is required")
	}
	for _, n := range names {
		if strings.Contains(n, "@") {
			return ref, fmt.Errorf("build: %q: a digest cannot be built", n)
		}
		name, tag := n, "latest"
		if i := strings.LastIndex(n, ":"); i > strings.LastIndex(n, "/") {
			name, tag = n[:i], n[i+1:]
		}
		parts := strings.Split(name, "/")
		host := ""
		if len(parts) == 3 {
			host, parts = parts[0], parts[1:]
		}
		if len(parts) != 2 || parts[0] == "" || parts[1] == "" || tag == "" {
			return ref, fmt.Errorf("build: %q is not [host/]namespace/repository[:tag]", n)
		}
		repo := parts[0] + "/" + parts[1]
		if ref.repo == "" {
			ref.host, ref.repo = host, repo
		} else if repo != ref.repo || host != ref.host {
			return ref, fmt.Errorf("build: every -t must name the same repository (%s and %s)", ref.repo, repo)
		}
		ref.tags = append(ref.tags, tag)
	}
	return ref, nil
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
		return nil, fmt.Errorf("build: --server %q is not an http(s) URL", server)
	}
	return u, nil
}

// podmanAuth finds podman's (containers-auth.json) login for host, in the
// files podman reads: $REGISTRY_AUTH_FILE, then
// $XDG_RUNTIME_DIR/containers/auth.json, then
// ~/.config/containers/auth.json. No login is no header.
func podmanAuth(getenv func(string) string, host string) (string, error) {
	var files []string
	if f := getenv("REGISTRY_AUTH_FILE"); f != "" {
		files = append(files, f)
	}
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		files = append(files, filepath.Join(d, "containers", "auth.json"))
	}
	if h := getenv("HOME"); h != "" {
		files = append(files, filepath.Join(h, ".config", "containers", "auth.json"))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("build: read credentials: %w", err)
		}
		var doc struct {
			Auths map[string]struct {
				Auth string `json:"auth"`
			} `json:"auths"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return "", fmt.Errorf("build: credentials file %s: %w", f, err)
		}
		for key, a := range doc.Auths {
			k := key
			if i := strings.Index(k, "://"); i >= 0 {
				k = k[i+3:]
			}
			k, _, _ = strings.Cut(k, "/")
			if !strings.EqualFold(k, host) || a.Auth == "" {
				continue
			}
			if _, err := base64.StdEncoding.DecodeString(a.Auth); err != nil {
				return "", fmt.Errorf("build: credentials for %s in %s are not base64", host, f)
			}
			return "Basic " + a.Auth, nil
		}
	}
	return "", nil
}

// packContext writes dir as a gzipped tar to a temporary file, leaving out
// what .dockerignore (or <Dockerfile>.dockerignore) excludes but always
// keeping the Dockerfile. It returns the file, rewound, and the
// Dockerfile's path in the archive ("/" is the archive's root). A
// Dockerfile outside dir is added as /.berth.Dockerfile.
func packContext(dir, dockerfile string) (*os.File, string, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", err
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return nil, "", fmt.Errorf("build: %s is not a directory", dir)
	}
	df := filepath.Join(root, "Dockerfile")
	if dockerfile != "" {
		if df, err = filepath.Abs(dockerfile); err != nil {
			return nil, "", err
		}
	}
	if _, err := os.Stat(df); err != nil {
		return nil, "", fmt.Errorf("build: Dockerfile: %w", err)
	}
	dfRel, err := filepath.Rel(root, df)
	inside := err == nil && !strings.HasPrefix(dfRel, ".."+string(filepath.Separator)) && dfRel != ".."
	ignore := filepath.Join(root, ".dockerignore")
	if _, err := os.Stat(df + ".dockerignore"); err == nil {
		ignore = df + ".dockerignore"
	}
	var patterns []string
	if f, err := os.Open(ignore); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, "", fmt.Errorf("build: %s: %w", ignore, err)
		}
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, "", fmt.Errorf("build: .dockerignore: %w", err)
	}
	keep := map[string]bool{".dockerignore": true}
	if inside {
		keep[filepath.ToSlash(dfRel)] = true
	}

	out, err := os.CreateTemp("", "berth-context-*.tar.gz")
	if err != nil {
		return nil, "", err
	}
	fail := func(err error) (*os.File, string, error) {
		out.Close()
		os.Remove(out.Name())
		return nil, "", fmt.Errorf("build: pack context: %w", err)
	}
	zw := gzip.NewWriter(out)
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !keep[rel] {
			skip, err := pm.MatchesOrParentMatches(rel)
			if err != nil {
				return err
			}
			if skip {
				// A directory may still hold re-included (!) entries.
				if d.IsDir() && !pm.Exclusions() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		return addToTar(tw, p, rel, d)
	})
	if err == nil && !inside {
		err = addFileAs(tw, df, ".berth.Dockerfile")
		dfRel = ".berth.Dockerfile"
	}
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		_, err = out.Seek(0, io.SeekStart)
	}
	if err != nil {
		return fail(err)
	}
	return out, "/" + filepath.ToSlash(dfRel), nil
}

// addToTar adds one walked entry: directories, regular files and symlinks
// (sockets, devices and pipes are left out, as the server refuses them).
func addToTar(tw *tar.Writer, p, rel string, d fs.DirEntry) error {
	info, err := d.Info()
	if err != nil {
		return err
	}
	link := ""
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	case info.IsDir(), info.Mode().IsRegular():
	default:
		return nil
	}
	h, err := tar.FileInfoHeader(info, link)
	if err != nil {
		return err
	}
	h.Name = rel
	if info.IsDir() {
		h.Name += "/"
	}
	h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}

func addFileAs(tw *tar.Writer, p, name string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Now(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = tw.Write(b)
	return err
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
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return responseError(resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func (c *buildClient) authorize(req *http.Request) {
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
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
		return fmt.Errorf("build: create repository %s: %w", repo, err)
	}
	return nil
}

// statusError is an API answer with an error status.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.status, http.StatusText(e.status), e.msg)
}

// responseError turns an error answer into a statusError with the API's
// message.
func responseError(status int, body []byte) error {
	var e apiError
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Detail != "" {
		msg = e.Detail
	}
	if status == http.StatusUnauthorized {
		msg += " (pass --token, set BERTH_TOKEN, or podman login to the server)"
	}
	return &statusError{status: status, msg: msg}
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
		return "", fmt.Errorf("build: upload: %w", err)
	}
	pr := &progressReader{r: f, total: fi.Size(), w: c.stderr, live: c.progress}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, drop.URL, pr)
	if err != nil {
		return "", fmt.Errorf("build: upload: %w", err)
	}
	req.ContentLength = fi.Size()
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := c.http.Do(req)
	pr.finish()
	if err != nil {
		return "", fmt.Errorf("build: upload: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return "", fmt.Errorf("build: upload: %w", responseError(resp.StatusCode, b))
	}
	return drop.FileID, nil
}

// progressReader draws an upload progress bar.
type progressReader struct {
	r        io.Reader
	total, n int64
	w        io.Writer
	live     bool
	drawn    time.Time
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.live && time.Since(p.drawn) > 100*time.Millisecond {
		p.draw("\r")
		p.drawn = time.Now()
	}
	return n, err
}

func (p *progressReader) draw(prefix string) {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = float64(p.n) / float64(p.total)
	}
	bar := strings.Repeat("#", int(frac*width)) + strings.Repeat("-", width-int(frac*width))
	fmt.Fprintf(p.w, "%sUploading context [%s] %3d%% %s/%s", prefix, bar, int(frac*100), humanBytes(p.n), humanBytes(p.total))
}

func (p *progressReader) finish() {
	prefix := ""
	if p.live {
		prefix = "\r"
	}
	p.draw(prefix)
	fmt.Fprintln(p.w)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

// buildStatus is the part of Quay's BuildView the client reads.
type buildStatus struct {
	ID              string            `json:"id"`
	Phase           string            `json:"phase"`
	Tags            []string          `json:"tags"`
	Error           string            `json:"error"`
	ManifestDigests map[string]string `json:"manifest_digests"`
}

func terminalPhase(p string) bool {
	switch p {
	case "complete", "error", "internalerror", "cancelled", "expired":
		return true
	}
	return false
}

// follow prints the build's log as it arrives (server-sent events),
// reconnecting from the last entry seen when the stream drops, until the
// build ends; it returns the build's final state.
func (c *buildClient) follow(ctx context.Context, buildPath string) (*buildStatus, error) {
	last := -1
	failures := 0
	for {
		err := c.stream(ctx, buildPath+"/logs/stream", &last)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var st buildStatus
		if serr := c.call(ctx, http.MethodGet, buildPath+"/status", nil, &st); serr != nil {
			err = errors.Join(err, serr)
		} else if terminalPhase(st.Phase) {
			return &st, nil
		}
		if err != nil {
			failures++
			if failures > 10 {
				return nil, fmt.Errorf("build: following the log: %w", err)
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
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return responseError(resp.StatusCode, b)
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
		fmt.Fprintf(c.stderr, "==> %s\n", e.Message)
	case "error":
		fmt.Fprintf(c.stderr, "ERROR: %s\n", e.Message)
	default:
		fmt.Fprintln(c.stderr, e.Message)
	}
}
