package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/storage"
	"github.com/berth-dev/berth/storage/filesystem"
	"github.com/berth-dev/berth/storage/storagetest"
)

func newFilesystem(t *testing.T) storage.Driver {
	t.Helper()
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A driver with fallback reads is a driver: it passes the shared suite with
// an empty fallback.
func TestFallbackReadsSuite(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Driver {
		return storage.WithFallbackReads(newFilesystem(t), newFilesystem(t))
	})
}

func TestFallbackReadsOldBlobsAndWritesOnlyPrimary(t *testing.T) {
	ctx := context.Background()
	primary, old := newFilesystem(t), newFilesystem(t)
	d := storage.WithFallbackReads(primary, old)

	oldBytes := storagetest.Data(1, 1000)
	oldDigest := storagetest.Put(t, old, "archived-before", oldBytes)
	storagetest.CheckBlob(t, d, oldDigest, oldBytes)

	newBytes := storagetest.Data(2, 1000)
	newDigest := storagetest.Put(t, d, "archived-after", newBytes)
	storagetest.CheckBlob(t, primary, newDigest, newBytes)
	if _, err := old.Stat(ctx, newDigest); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a new blob reached the fallback: Stat = %v", err)
	}

	var walked []digest.Digest
	if err := d.Walk(ctx, func(dgst digest.Digest, _ int64) error {
		walked = append(walked, dgst)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(walked) != 1 || walked[0] != newDigest {
		t.Errorf("Walk = %v, want only the primary's %s", walked, newDigest)
	}

	// Delete leaves the old place alone: its bytes may be a registry blob too.
	if err := d.Delete(ctx, oldDigest); err != nil {
		t.Fatalf("Delete of a fallback-only blob: %v", err)
	}
	storagetest.CheckBlob(t, old, oldDigest, oldBytes)

	missing := storagetest.Digest([]byte("never stored"))
	if _, _, err := d.Open(ctx, missing); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Open of a missing blob = %v, want ErrNotFound", err)
	}
}
