package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
)

// benchBlobSize is large enough that per-request overhead is noise and the
// numbers are throughput (hashing, disk, copy), small enough for CI memory.
const benchBlobSize = 64 << 20

// BenchmarkBlobPush pushes a fresh random blob per iteration with POST then
// one PUT ?digest= carrying the body (the monolithic two-step upload). The
// client's own hashing happens with the timer stopped.
func BenchmarkBlobPush(b *testing.B) {
	s := requireServer(b)
	ctx := context.Background()
	cl := newRegClient(s, tgt.user, tgt.password)
	repository := repo("bench-push")
	blob, _ := randomBlob(benchBlobSize)
	b.SetBytes(benchBlobSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		copy(blob, fmt.Sprintf("%016d%s", i, randomHex(8))) // a new digest every time
		digest := sha256Digest(blob)
		b.StartTimer()
		pushBlob(ctx, b, cl, repository, blob, digest)
	}
}

// BenchmarkBlobPull GETs one blob repeatedly (a warm page cache on the
// server: this measures the serving path, not the disk).
func BenchmarkBlobPull(b *testing.B) {
	s := requireServer(b)
	ctx := context.Background()
	cl := newRegClient(s, tgt.user, tgt.password)
	repository := repo("bench-pull")
	blob, digest := randomBlob(benchBlobSize)
	pushBlob(ctx, b, cl, repository, blob, digest)
	b.SetBytes(benchBlobSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := cl.do(ctx, pullScope(repository), func() (*http.Request, error) {
			return http.NewRequest(http.MethodGet, cl.base+"/v2/"+repository+"/blobs/"+digest, nil)
		})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n != benchBlobSize {
			b.Fatalf("GET blob: %s, %d bytes, %v", resp.Status, n, err)
		}
	}
}

func pushBlob(ctx context.Context, b *testing.B, cl *regClient, repository string, blob []byte, digest string) {
	b.Helper()
	resp, err := cl.do(ctx, pushScope(repository), func() (*http.Request, error) {
		return http.NewRequest(http.MethodPost, cl.base+"/v2/"+repository+"/blobs/uploads/", nil)
	})
	if err != nil {
		b.Fatal(err)
	}
	expectStatus(b, resp, http.StatusAccepted, "POST blobs/uploads/")
	loc, err := cl.resolve(resp.Header.Get("Location"))
	if err != nil {
		b.Fatal(err)
	}
	u, err := url.Parse(loc)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set("digest", digest)
	u.RawQuery = q.Encode()
	resp, err = cl.do(ctx, pushScope(repository), func() (*http.Request, error) {
		req, err := http.NewRequest(http.MethodPut, u.String(), bytes.NewReader(blob))
		if err == nil {
			req.Header.Set("Content-Type", "application/octet-stream")
		}
		return req, err
	})
	if err != nil {
		b.Fatal(err)
	}
	expectStatus(b, resp, http.StatusCreated, "PUT ?digest=")
}
