package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

const (
	killBlobSize  = 64 << 20
	killChunkSize = 4 << 20
	// killAfter is how many bytes the server has acknowledged when it is
	// killed, in the middle of the next PATCH.
	killAfter = 8 * killChunkSize
)

// randomBlob returns n bytes of fast pseudo-random data (no two runs alike,
// so no registry can already hold it) and its digest.
func randomBlob(n int) ([]byte, string) {
	var seed [32]byte
	copy(seed[:], harness.RandomHex(16))
	r := mrand.NewChaCha8(seed)
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b, sha256Digest(b)
}

// uploadSession is one blob upload in progress.
type uploadSession struct {
	t          *testing.T
	cl         *regClient
	repository string
	location   string // absolute URL of the upload
}

func (u *uploadSession) scope() string { return pushScope(u.repository) }

// start POSTs a new upload.
func (u *uploadSession) start(ctx context.Context) {
	u.t.Helper()
	resp, err := u.cl.do(ctx, u.scope(), func() (*http.Request, error) {
		return http.NewRequest(http.MethodPost, u.cl.base+"/v2/"+u.repository+"/blobs/uploads/", nil)
	})
	if err != nil {
		u.t.Fatalf("starting the upload: %v", err)
	}
	expectStatus(u.t, resp, http.StatusAccepted, "POST blobs/uploads/")
	u.setLocation(resp)
}

func (u *uploadSession) setLocation(resp *http.Response) {
	u.t.Helper()
	loc, err := u.cl.resolve(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		u.t.Fatalf("%s %s gave no usable Location (%q): %v", resp.Request.Method, resp.Request.URL.Path, resp.Header.Get("Location"), err)
	}
	u.location = loc
}

// patch sends chunk as bytes [offset, offset+len) and checks the server now
// holds exactly offset+len bytes.
func (u *uploadSession) patch(ctx context.Context, offset int64, chunk []byte) {
	u.t.Helper()
	resp, err := u.cl.do(ctx, u.scope(), func() (*http.Request, error) {
		req, err := http.NewRequest(http.MethodPatch, u.location, bytes.NewReader(chunk))
		if err == nil {
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", offset, offset+int64(len(chunk))-1))
		}
		return req, err
	})
	if err != nil {
		u.t.Fatalf("PATCH at %d: %v", offset, err)
	}
	expectStatus(u.t, resp, http.StatusAccepted, fmt.Sprintf("PATCH bytes %d+%d", offset, len(chunk)))
	held, err := parseRangeEnd(resp.Header.Get("Range"))
	if err != nil {
		u.t.Fatalf("PATCH at %d: %v", offset, err)
	}
	if want := offset + int64(len(chunk)); held != want {
		u.t.Fatalf("after PATCH the server holds %d bytes, want %d", held, want)
	}
	u.setLocation(resp)
}

// status GETs the upload and returns how many bytes the server holds, or -1
// when the upload no longer exists.
func (u *uploadSession) status(ctx context.Context) int64 {
	u.t.Helper()
	resp, err := u.cl.do(ctx, u.scope(), func() (*http.Request, error) {
		return http.NewRequest(http.MethodGet, u.location, nil)
	})
	if err != nil {
		u.t.Fatalf("GET upload status: %v", err)
	}
	if resp.StatusCode == http.StatusNotFound {
		expectStatus(u.t, resp, http.StatusNotFound, "GET upload status")
		return -1
	}
	expectStatus(u.t, resp, http.StatusNoContent, "GET upload status")
	held, err := parseRangeEnd(resp.Header.Get("Range"))
	if err != nil {
		u.t.Fatalf("GET upload status: %v", err)
	}
	u.setLocation(resp)
	return held
}

// finish PUTs the digest (no body) and checks the server agrees on it.
func (u *uploadSession) finish(ctx context.Context, digest string) {
	u.t.Helper()
	target, err := url.Parse(u.location)
	if err != nil {
		u.t.Fatal(err)
	}
	q := target.Query()
	q.Set("digest", digest)
	target.RawQuery = q.Encode()
	resp, err := u.cl.do(ctx, u.scope(), func() (*http.Request, error) {
		return http.NewRequest(http.MethodPut, target.String(), nil)
	})
	if err != nil {
		u.t.Fatalf("PUT ?digest=: %v", err)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode == http.StatusCreated && got != digest {
		u.t.Errorf("PUT answered Docker-Content-Digest %q, want %s", got, digest)
	}
	expectStatus(u.t, resp, http.StatusCreated, "PUT ?digest= (finalize)")
}

// blobStatus is the status of GET /v2/<repo>/blobs/<digest>; with a body it
// also returns the digest and size of what was served.
func blobStatus(ctx context.Context, t *testing.T, cl *regClient, repository, digest string) (int, string, int64) {
	t.Helper()
	resp, err := cl.do(ctx, pullScope(repository), func() (*http.Request, error) {
		return http.NewRequest(http.MethodGet, cl.base+"/v2/"+repository+"/blobs/"+digest, nil)
	})
	if err != nil {
		t.Fatalf("GET blob: %v", err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("reading blob: %v", err)
	}
	return resp.StatusCode, "sha256:" + hex.EncodeToString(h.Sum(nil)), n
}

// TestKillDuringChunkedUpload kills the registry with SIGKILL in the middle
// of a chunked upload, restarts it on the same data directory and port, and
// resumes the upload where the server says it stands. It runs its own server
// so the crash cannot disturb the other tests.
func TestKillDuringChunkedUpload(t *testing.T) {
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	o, err := serverOptions(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hs, err := harness.StartServer(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	srv := &server{hs}
	defer func() {
		if t.Failed() {
			t.Log(srv.Tail(80))
		}
		_ = srv.Kill()
	}()

	blob, digest := randomBlob(killBlobSize)
	cl := newRegClient(srv, tgt.user, tgt.password)
	up := &uploadSession{t: t, cl: cl, repository: repo("kill-upload")}
	up.start(ctx)
	var offset int64
	for offset < killAfter {
		up.patch(ctx, offset, blob[offset:offset+killChunkSize])
		offset += killChunkSize
	}

	// The next chunk goes through a pipe, so the test knows how much of it
	// the client has handed to the connection when the server dies.
	pr, pw := io.Pipe()
	patchDone := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodPatch, up.location, pr)
		if err != nil {
			patchDone <- err
			return
		}
		req.ContentLength = killChunkSize
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", offset, offset+killChunkSize-1))
		cl.mu.Lock()
		tok := cl.tokens[up.scope()]
		cl.mu.Unlock()
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		} else if tgt.hasAuth() {
			req.SetBasicAuth(tgt.user, tgt.password)
		}
		resp, err := cl.http.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			err = fmt.Errorf("the interrupted PATCH was answered %s: %s", resp.Status, body)
			if resp.StatusCode/100 != 2 {
				err = nil // refused before the kill: fine, the bytes never counted
			}
		}
		patchDone <- err
	}()
	sent := int64(killChunkSize / 2)
	// A server that stops reading would block the write forever.
	stuck := time.AfterFunc(30*time.Second, func() {
		_ = pr.CloseWithError(errors.New("the server did not read the PATCH body for 30s"))
	})
	_, err = pw.Write(blob[offset : offset+sent])
	stuck.Stop()
	if err != nil {
		t.Fatalf("writing the first half of the interrupted chunk: %v", err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = pw.CloseWithError(errors.New("server killed"))
	if err := <-patchDone; err != nil && !isTransportError(err) {
		t.Fatal(err)
	}
	t.Logf("killed the server after %d acknowledged bytes and %d more in flight", offset, sent)

	if err := srv.Start(ctx); err != nil {
		t.Fatalf("restarting on the same data dir: %v", err)
	}
	cl.forgetTokens()

	held := up.status(ctx)
	switch {
	case held < 0:
		t.Logf("the upload did not survive the restart; starting it again")
		up.start(ctx)
		held = 0
	case held < offset:
		t.Fatalf("after restart the server holds %d bytes, but it had acknowledged %d", held, offset)
	case held > offset+sent:
		t.Fatalf("after restart the server holds %d bytes, more than the %d ever sent", held, offset+sent)
	default:
		t.Logf("server kept %d bytes (%d acknowledged, %d of the interrupted chunk)", held, offset, held-offset)
	}

	// Nothing of the blob may be served before it is finalized.
	if code, _, _ := blobStatus(ctx, t, cl, up.repository, digest); code != http.StatusNotFound {
		t.Fatalf("GET of the unfinished blob answered %d, want 404", code)
	}

	for off := held; off < killBlobSize; {
		end := min(off+killChunkSize, int64(killBlobSize))
		up.patch(ctx, off, blob[off:end])
		off = end
	}
	up.finish(ctx, digest)

	code, got, n := blobStatus(ctx, t, cl, up.repository, digest)
	if code != http.StatusOK || got != digest || n != killBlobSize {
		t.Fatalf("GET blob after finalize: status %d, %d bytes, digest %s; want 200, %d bytes, %s",
			code, n, got, killBlobSize, digest)
	}
	if err := srv.Stop(); err != nil {
		t.Error(err)
	}
}

// isTransportError reports whether err is the connection failing (what a
// killed server looks like to a client) rather than an HTTP answer.
func isTransportError(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue)
}
