package storage_test

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/storage"
	"github.com/berth-dev/berth/storage/filesystem"
)

// Staged uploads older than the cutoff go; newer ones (an upload being
// written right now) stay.
func TestAbortStagedBefore(t *testing.T) {
	ctx := context.Background()
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"0f3c1a6e-0000-4000-8000-000000000001", "0f3c1a6e-0000-4000-8000-000000000002"} {
		w, err := d.Append(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("partial")); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := storage.AbortStagedBefore(ctx, d, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("with a cutoff an hour ago: %d aborted, %v; want none", n, err)
	}
	if n, err := storage.AbortStagedBefore(ctx, d, time.Now().Add(time.Second)); err != nil || n != 2 {
		t.Fatalf("with a cutoff after both: %d aborted, %v; want 2", n, err)
	}
	left := 0
	_ = d.StagedUploads(ctx, func(string, time.Time) error { left++; return nil })
	if left != 0 {
		t.Errorf("%d staged uploads left", left)
	}
}
