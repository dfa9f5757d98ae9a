package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/dockerfile"
	"github.com/berth-dev/berth/gitsource"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/worker/buildcontext"
	"github.com/berth-dev/berth/worker/engine"
)

// fetchAndUnpack receives the job's source into a file under the work
// directory (the compressed-size limit applies while it arrives) and
// unpacks it into dest.
func (j *jobRun) fetchAndUnpack(ctx context.Context, dest string) error {
	if g := j.job.GetGit(); g != nil {
		j.log.Log(engine.LineOutput, "Fetching commit "+g.GetCommitSha()+" of "+g.GetRef())
		return gitsource.Fetch(ctx, j.cfg.Egress, dest, gitSource(g), func(line string) { j.log.Log(engine.LineOutput, line) })
	}
	lim := buildcontext.Limits{
		MaxCompressed:       j.job.GetMaxContextBytes(),
		MaxUnpacked:         j.job.GetMaxUnpackedBytes(),
		MaxEntries:          j.job.GetMaxEntries(),
		MaxCompressionRatio: j.job.GetMaxCompressionRatio(),
	}.OrDefault()
	upload := filepath.Join(j.cfg.WorkDir, "context.upload")
	f, err := os.OpenFile(upload, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create upload file: %w", err)
	}
	defer os.Remove(upload)
	var n int64
	switch src := j.job.GetSource().(type) {
	case *pb.Job_Upload:
		j.log.Log(engine.LineOutput, "Fetching the uploaded build context")
		n, err = j.fetchUpload(ctx, f, lim.MaxCompressed)
	case *pb.Job_ArchiveUrl:
		j.log.Log(engine.LineOutput, "Downloading the build context from "+src.ArchiveUrl)
		n, err = j.fetchURL(ctx, f, src.ArchiveUrl, lim.MaxCompressed)
	default:
		err = notRetryablef("the job has no source")
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write upload file: %w", cerr)
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("create source directory: %w", err)
	}
	kind, err := buildcontext.Unpack(ctx, upload, dest, lim)
	if err != nil {
		return err
	}
	if _, fromURL := j.job.GetSource().(*pb.Job_ArchiveUrl); fromURL && kind == buildcontext.KindDockerfile {
		if err := j.checkFetchedDockerfile(filepath.Join(dest, "Dockerfile")); err != nil {
			return err
		}
	}
	j.log.Log(engine.LineOutput, fmt.Sprintf("Unpacked the build context (%s, %d bytes)", kind, n))
	return nil
}

// checkFetchedDockerfile parses a text body downloaded from an archive URL
// before anything quotes it. The parser's messages quote the offending
// line, and the body may be any page the URL's server answered with (an
// API's JSON, an error page), so a body that does not parse is refused
// without a word of it.
func (j *jobRun) checkFetchedDockerfile(path string) error {
	content, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read Dockerfile: %w", err)
	}
	if _, err := dockerfile.Parse(content, j.job.GetBuildArgs(), j.job.GetTarget()); err != nil {
		return &engine.UserError{Code: engine.CodeDockerfile,
			Message: "the archive URL answered with text that is not a valid Dockerfile (its content is not shown; upload the file to see the parser's message)",
			Err:     errFetchedNotDockerfile}
	}
	return nil
}

// errFetchedNotDockerfile stands for the parser's error, which quotes the
// downloaded text and so stays out of the chain.
var errFetchedNotDockerfile = errors.New("downloaded text is not a Dockerfile")

// fetchUpload copies the FetchContext stream to w.
func (j *jobRun) fetchUpload(ctx context.Context, w io.Writer, max int64) (int64, error) {
	stream, err := j.client.FetchContext(ctx, &pb.FetchContextRequest{JobToken: j.job.GetJobToken()})
	if err != nil {
		return 0, fmt.Errorf("fetch context: %w", err)
	}
	n, err := buildcontext.CopyLimited(w, &chunkReader{stream: stream}, max)
	switch status.Code(err) {
	case codes.NotFound:
		// The upload expired or was deleted: no attempt will find it.
		return n, &engine.UserError{Code: engine.CodeContext, Message: "the uploaded build context no longer exists; upload it again", Err: err}
	case codes.FailedPrecondition:
		return n, notRetryablef("%v", err)
	}
	return n, err
}

// chunkReader reads a stream of ContextChunk as bytes.
type chunkReader struct {
	stream interface {
		Recv() (*pb.ContextChunk, error)
	}
	buf []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		c, err := r.stream.Recv()
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		if err != nil {
			return 0, fmt.Errorf("fetch context: %w", err)
		}
		r.buf = c.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// fetchURL downloads url to w. A URL that answers with a client error is
// the user's (a wrong or expired link); a server error or a broken
// connection may pass.
func (j *jobRun) fetchURL(ctx context.Context, w io.Writer, url string, max int64) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, engine.Errorf(engine.CodeContext, "the archive URL %q is not valid: %v", url, err)
	}
	client, err := j.httpClient()
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if errors.Is(err, egress.ErrRefused) {
		// Nothing was sent: the message is the same for every refused
		// address, port and path.
		return 0, &engine.UserError{Code: engine.CodeContext, Err: err,
			Message: "the archive URL, or a redirect from it, leads to an address berth does not fetch from: loopback, private and link-local addresses are refused unless an administrator allows their network (OUTBOUND_ALLOWED_NETWORKS)"}
	}
	if err != nil {
		return 0, fmt.Errorf("download the build context: %w", err)
	}
	defer resp.Body.Close()
	// The status line's reason phrase is the server's text: only the code
	// and its standard name are repeated.
	status := fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	switch {
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return 0, engine.Errorf(engine.CodeContext, "downloading the build context from %s failed: %s", url, status)
	case resp.StatusCode != http.StatusOK:
		return 0, fmt.Errorf("download the build context: %s", status)
	}
	if resp.ContentLength > max {
		return 0, engine.Errorf(engine.CodeContext, "the build context is larger than the limit of %d bytes", max)
	}
	return buildcontext.CopyLimited(w, resp.Body, max)
}

// httpClient returns the client for archive URLs: the configured one, or,
// when berth has a private CA (the URL is usually berth's own file drop),
// one that also trusts that CA.
func (j *jobRun) httpClient() (*http.Client, error) {
	pem := j.job.GetRegistryCaPem()
	t, ok := j.cfg.HTTPClient.Transport.(*http.Transport)
	if pem == "" || !ok {
		return j.cfg.HTTPClient, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM([]byte(pem)) {
		return nil, notRetryablef("the registry CA holds no PEM certificate")
	}
	t = t.Clone()
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	t.TLSClientConfig.RootCAs = pool
	c := *j.cfg.HTTPClient
	c.Transport = t
	return &c, nil
}

// gitSource is the job's git source as the gitsource library takes it.
func gitSource(g *pb.GitSource) gitsource.Source {
	return gitsource.Source{
		URL:        g.GetUrl(),
		CommitSHA:  g.GetCommitSha(),
		Ref:        g.GetRef(),
		PrivateKey: g.GetPrivateKey(),
		KnownHosts: g.GetKnownHosts(),
		Username:   g.GetUsername(),
		Password:   g.GetPassword(),
	}
}
