package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	mediaOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mediaOCIConfig   = "application/vnd.oci.image.config.v1+json"
	mediaOCILayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	acceptManifests  = mediaOCIManifest + ", " + mediaOCIIndex
)

// side is one registry under test with the repositories this run uses on it.
type side struct {
	name string
	c    *client
}

// order returns the side indices for round r: the first-served side swaps
// every round so neither always runs on a cache warmed by the other or on
// a machine still busy flushing the other's writes.
func order(r int) [2]int {
	if r%2 == 0 {
		return [2]int{0, 1}
	}
	return [2]int{1, 0}
}

// parallel runs fn for jobs 0..jobs-1 on conc goroutines; worker is the
// goroutine's index so callers can keep per-worker buffers. It stops
// handing out jobs after the first error and returns that error.
func parallel(ctx context.Context, conc, jobs int, fn func(ctx context.Context, worker, job int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for w := range min(conc, jobs) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j := int(next.Add(1) - 1)
				if j >= jobs || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, w, j); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// blobSet is the random data pushed and pulled by the blob workloads.
type blobSet struct {
	data    [][]byte
	digests []string
	bytes   int64
}

// makeBlobs generates n blobs of size bytes from a fixed-seed fast PRNG:
// incompressible, distinct, and cheap to produce on a 2-core machine.
func makeBlobs(n, size int, seed uint64) *blobSet {
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	bs := &blobSet{}
	for range n {
		b := make([]byte, size)
		_, _ = src.Read(b)
		sum := sha256.Sum256(b)
		bs.data = append(bs.data, b)
		bs.digests = append(bs.digests, "sha256:"+hex.EncodeToString(sum[:]))
		bs.bytes += int64(size)
	}
	return bs
}

// pushBlobs pushes blobs[lo:hi] to repo on conc streams and returns the
// wall time it took.
func pushBlobs(ctx context.Context, c *client, repo string, bs *blobSet, lo, hi, conc int) (time.Duration, error) {
	start := time.Now()
	err := parallel(ctx, conc, hi-lo, func(ctx context.Context, _, j int) error {
		return c.pushBlob(ctx, repo, bs.digests[lo+j], bs.data[lo+j])
	})
	return time.Since(start), err
}

// pullBlobs fetches blobs[lo:hi] on conc streams, hashing each as it
// arrives and checking it against its digest, and returns the wall time.
// bufs holds one copy buffer per stream so the loop allocates nothing big.
func pullBlobs(ctx context.Context, c *client, repo string, bs *blobSet, lo, hi, conc int, bufs [][]byte) (time.Duration, error) {
	hashers := make([]hashState, conc)
	for i := range hashers {
		hashers[i] = newHashState()
	}
	start := time.Now()
	err := parallel(ctx, conc, hi-lo, func(ctx context.Context, w, j int) error {
		d := bs.digests[lo+j]
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v2/"+repo+"/blobs/"+d), nil)
		if err != nil {
			return fmt.Errorf("build blob get: %w", err)
		}
		resp, err := c.do(ctx, repo, req)
		if err != nil {
			return err
		}
		defer drain(resp)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET blob %s: %s: %s", d, resp.Status, snippet(resp.Body))
		}
		h := hashers[w]
		h.h.Reset()
		n, err := io.CopyBuffer(h.h, resp.Body, bufs[w])
		if err != nil {
			return fmt.Errorf("read blob %s: %w", d, err)
		}
		if n != int64(len(bs.data[lo+j])) {
			return fmt.Errorf("blob %s: got %d bytes, want %d", d, n, len(bs.data[lo+j]))
		}
		if got := "sha256:" + hex.EncodeToString(h.h.Sum(h.sum[:0])); got != d {
			return fmt.Errorf("blob %s: content hashes to %s", d, got)
		}
		return nil
	})
	return time.Since(start), err
}

// image is one small pushed image: its config and layer blobs and a
// manifest template that can carry a distinct annotation per tag.
type image struct {
	config, layer             []byte
	configDigest, layerDigest string
	manifest                  []byte // the manifest with no tag annotation
}

// makeImage builds a real (if tiny) image: a gzipped tar with one file and
// a config whose diff_id matches it, so the manifests pushed are ones any
// client could pull and run.
func makeImage() (*image, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	content := []byte("regbench\n")
	if err := tw.WriteHeader(&tar.Header{Name: "regbench.txt", Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(0, 0)}); err != nil {
		return nil, fmt.Errorf("write layer tar header: %w", err)
	}
	if _, err := tw.Write(content); err != nil {
		return nil, fmt.Errorf("write layer tar: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close layer tar: %w", err)
	}
	diffID := sha256.Sum256(raw.Bytes())
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	img := &image{layer: gz.Bytes()}
	img.config = []byte(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:` +
		hex.EncodeToString(diffID[:]) + `"]}}`)
	img.configDigest = digestOf(img.config)
	img.layerDigest = digestOf(img.layer)
	img.manifest = img.taggedManifest(nil, "")
	return img, nil
}

// taggedManifest appends to dst the image manifest, annotated with tag when
// tag is non-empty so every tag names a distinct manifest.
func (img *image) taggedManifest(dst []byte, tag string) []byte {
	dst = append(dst, `{"schemaVersion":2,"mediaType":"`+mediaOCIManifest+`","config":{"mediaType":"`+mediaOCIConfig+`","digest":"`...)
	dst = append(dst, img.configDigest...)
	dst = append(dst, `","size":`...)
	dst = strconv.AppendInt(dst, int64(len(img.config)), 10)
	dst = append(dst, `},"layers":[{"mediaType":"`+mediaOCILayer+`","digest":"`...)
	dst = append(dst, img.layerDigest...)
	dst = append(dst, `","size":`...)
	dst = strconv.AppendInt(dst, int64(len(img.layer)), 10)
	dst = append(dst, `}]`...)
	if tag != "" {
		dst = append(dst, `,"annotations":{"dev.berth.regbench.tag":"`...)
		dst = append(dst, tag...)
		dst = append(dst, `"}`...)
	}
	return append(dst, '}')
}

// pushImage uploads the image's blobs and its plain manifest under tag.
func pushImage(ctx context.Context, c *client, repo, tag string, img *image) error {
	if err := c.pushBlob(ctx, repo, img.configDigest, img.config); err != nil {
		return err
	}
	if err := c.pushBlob(ctx, repo, img.layerDigest, img.layer); err != nil {
		return err
	}
	return c.putManifest(ctx, repo, tag, mediaOCIManifest, img.manifest)
}

// getManifests issues count GETs of repo:tag at conc concurrency, writing
// each request's latency into lat (len(lat) == count), and returns the
// wall time. Each response must be 200 and exactly wantLen bytes.
func getManifests(ctx context.Context, c *client, repo, tag string, conc int, lat []time.Duration, wantLen int) (time.Duration, error) {
	u := c.url("/v2/" + repo + "/manifests/" + tag)
	start := time.Now()
	err := parallel(ctx, conc, len(lat), func(ctx context.Context, _, j int) error {
		t0 := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return fmt.Errorf("build manifest get: %w", err)
		}
		req.Header.Set("Accept", acceptManifests)
		resp, err := c.do(ctx, repo, req)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		lat[j] = time.Since(t0)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET manifest %s:%s: %s", repo, tag, resp.Status)
		}
		if err != nil {
			return fmt.Errorf("read manifest %s:%s: %w", repo, tag, err)
		}
		if n != int64(wantLen) {
			return fmt.Errorf("GET manifest %s:%s: %d bytes, want %d", repo, tag, n, wantLen)
		}
		return nil
	})
	return time.Since(start), err
}

// putTags writes tags [lo,hi) to repo on conc streams, each a distinct
// manifest of img, and returns the wall time. bufs are per-stream scratch.
func putTags(ctx context.Context, c *client, repo string, img *image, lo, hi, conc int, bufs [][]byte) (time.Duration, error) {
	start := time.Now()
	err := parallel(ctx, conc, hi-lo, func(ctx context.Context, w, j int) error {
		bufs[w] = img.taggedManifest(bufs[w][:0], tagName(lo+j))
		return c.putManifest(ctx, repo, tagName(lo+j), mediaOCIManifest, bufs[w])
	})
	return time.Since(start), err
}

func tagName(i int) string {
	return fmt.Sprintf("t%05d", i)
}

// listTags fetches the whole tag list in one request and checks its size.
func listTags(ctx context.Context, c *client, repo string, want int) (time.Duration, error) {
	start := time.Now()
	tags, _, err := c.getTags(ctx, repo, c.url("/v2/"+repo+"/tags/list"))
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if len(tags) != want {
		return 0, fmt.Errorf("tags/list of %s returned %d tags, want %d", repo, len(tags), want)
	}
	return d, nil
}

// walkTags pages through the tag list n at a time following Link headers
// and checks that the pages add up to want distinct, ordered tags.
func walkTags(ctx context.Context, c *client, repo string, n, want int) (time.Duration, error) {
	start := time.Now()
	next := c.url("/v2/" + repo + "/tags/list?n=" + strconv.Itoa(n))
	seen, pages, last := 0, 0, ""
	for next != "" {
		tags, nx, err := c.getTags(ctx, repo, next)
		if err != nil {
			return 0, err
		}
		pages++
		if len(tags) > n {
			return 0, fmt.Errorf("tags page of %s has %d tags, asked for %d", repo, len(tags), n)
		}
		for _, t := range tags {
			if t <= last {
				return 0, fmt.Errorf("tags walk of %s: %q after %q, pages out of order", repo, t, last)
			}
			last = t
		}
		seen += len(tags)
		if pages > want/n+2 {
			return 0, fmt.Errorf("tags walk of %s: more than %d pages", repo, pages-1)
		}
		next = nx
	}
	d := time.Since(start)
	if seen != want {
		return 0, fmt.Errorf("tags walk of %s saw %d tags in %d pages, want %d", repo, seen, pages, want)
	}
	return d, nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// percentile returns the p-th percentile (0..100) of ds by nearest rank;
// ds is sorted in place.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(math.Ceil(p/100*float64(len(ds)))) - 1
	return ds[max(0, min(rank, len(ds)-1))]
}

// median returns the median of ds (sorted in place).
func median(ds []time.Duration) time.Duration {
	return percentile(ds, 50)
}
