package buildmanager

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/storage"
	"github.com/berth-dev/berth/storage/filesystem"
)

// F9: uploaded contexts were never deleted. An upload no build used goes
// once its URL expired plus the grace period, bytes included; one a build
// used, or whose bytes something else holds, stays.
func TestPurgeUnusedContexts(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		blobs, err := filesystem.New(e.blobDir)
		if err != nil {
			t.Fatal(err)
		}
		cs := &BlobContextStore{Blobs: blobs, Store: e.st}
		alice, repo := aliceApp(t, e.st)
		upload := func(id, content string, expires time.Time) digest.Digest {
			t.Helper()
			if err := e.st.PutBuildFile(ctx, &store.BuildFile{ID: id, UploaderID: alice.ID, ExpiresAt: expires}); err != nil {
				t.Fatal(err)
			}
			if _, err := cs.Put(ctx, id, strings.NewReader(content)); err != nil {
				t.Fatal(err)
			}
			return digest.FromString(content)
		}
		long := time.Now().Add(-2 * DefaultContextPurgeGrace)
		abandoned := upload("11111111-0000-4000-8000-000000000001", "FROM scratch\n# abandoned\n", long)
		built := upload("11111111-0000-4000-8000-000000000002", "FROM scratch\n# built\n", long)
		recent := upload("11111111-0000-4000-8000-000000000003", "FROM scratch\n# recent\n", time.Now())
		if err := e.st.ClaimBuildFile(ctx, "11111111-0000-4000-8000-000000000002", repo.ID); err != nil {
			t.Fatal(err)
		}

		n, err := cs.PurgeUnused(ctx, DefaultContextPurgeGrace)
		if err != nil || n != 1 {
			t.Fatalf("PurgeUnused = %d, %v; want 1", n, err)
		}
		if _, _, err := cs.Open(ctx, "11111111-0000-4000-8000-000000000001"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("abandoned upload after the purge: %v", err)
		}
		if _, err := blobs.Stat(ctx, abandoned); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("abandoned upload's bytes after the purge: %v", err)
		}
		for id, d := range map[string]digest.Digest{"11111111-0000-4000-8000-000000000002": built, "11111111-0000-4000-8000-000000000003": recent} {
			rc, _, err := cs.Open(ctx, id)
			if err != nil {
				t.Fatalf("%s (%s) after the purge: %v", id, d, err)
			}
			b, _ := io.ReadAll(rc)
			rc.Close()
			if digest.FromBytes(b) != d {
				t.Errorf("%s holds other bytes after the purge", id)
			}
		}
	})
}

// Put refuses a file whose upload URL was never issued, and a second
// upload to one URL.
func TestContextPutNeedsAnIssuedURL(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		blobs, err := filesystem.New(e.blobDir)
		if err != nil {
			t.Fatal(err)
		}
		cs := &BlobContextStore{Blobs: blobs, Store: e.st, MaxBytes: 16}
		const id = "22222222-0000-4000-8000-000000000001"
		if _, err := cs.Put(ctx, id, strings.NewReader("FROM scratch\n")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Put without an issued URL: %v", err)
		}
		if err := e.st.PutBuildFile(ctx, &store.BuildFile{ID: id, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := cs.Open(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Open before the upload: %v", err)
		}
		if _, err := cs.Put(ctx, id, strings.NewReader(strings.Repeat("x", 17))); !errors.Is(err, ErrContextTooLarge) {
			t.Fatalf("Put over MaxBytes: %v", err)
		}
		if _, err := cs.Put(ctx, id, strings.NewReader("FROM scratch\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.Put(ctx, id, strings.NewReader("FROM busybox\n")); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second Put: %v", err)
		}
	})
}

func TestContextLimitsFromConfig(t *testing.T) {
	l, err := ContextLimitsFromConfig(map[string]any{"BUILD_CONTEXT_MAX_BYTES": 100, "BUILD_CONTEXT_MAX_UNPACKED_BYTES": 1000,
		"BUILD_CONTEXT_MAX_COMPRESSION_RATIO": 20})
	if err != nil || l != (ContextLimits{MaxBytes: 100, MaxUnpackedBytes: 1000, MaxCompressionRatio: 20}) {
		t.Fatalf("ContextLimitsFromConfig = %+v, %v", l, err)
	}
	if l, err := ContextLimitsFromConfig(map[string]any{}); err != nil || l != (ContextLimits{}) {
		t.Fatalf("defaults = %+v, %v", l, err)
	}
	for _, bad := range []any{-1, "1GiB", 1.5} {
		if _, err := ContextLimitsFromConfig(map[string]any{"BUILD_CONTEXT_MAX_UNPACKED_BYTES": bad}); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
