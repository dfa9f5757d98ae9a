package filesystem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/storage"
	"github.com/berth-dev/berth/storage/storagetest"
)

func newDriver(t *testing.T) *Driver {
	t.Helper()
	d, err := New(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Driver { return newDriver(t) })
}

// files lists the regular files under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return out
}

func TestLayout(t *testing.T) {
	d := newDriver(t)
	data := storagetest.Data(1, 1234)
	dgst := storagetest.Put(t, d, "layout", data)
	hex := dgst.Encoded()
	want := filepath.Join(d.root, "blobs", "sha256", hex[:2], hex)
	got, err := os.ReadFile(want)
	if err != nil {
		t.Fatalf("blob not at %s: %v", want, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("file at %s holds other bytes", want)
	}
	if fi, _ := os.Stat(want); fi.Mode().Perm() != filePerm {
		t.Fatalf("blob mode %v, want %v", fi.Mode().Perm(), os.FileMode(filePerm))
	}
}

func TestOpenReturnsFile(t *testing.T) {
	d := newDriver(t)
	dgst := storagetest.Put(t, d, "sendfile", storagetest.Data(2, 10))
	rc, _, err := d.Open(context.Background(), dgst)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	if _, ok := rc.(*os.File); !ok {
		t.Fatalf("Open returned %T, want *os.File so net/http can sendfile", rc)
	}
}

func TestFailedCommitLeavesNothing(t *testing.T) {
	d := newDriver(t)
	data := storagetest.Data(3, 5000)
	storagetest.Upload(t, d, "failing", data)
	dgst := storagetest.Digest(data)
	err := d.Commit(context.Background(), "failing", dgst, 4999)
	if !errors.Is(err, storage.ErrSizeMismatch) {
		t.Fatalf("Commit with wrong size: %v", err)
	}
	if got := files(t, d.blobs); len(got) != 0 {
		t.Fatalf("blob tree after failed commit holds %v", got)
	}
	if got := files(t, d.uploads); len(got) != 1 || got[0] != "failing" {
		t.Fatalf("uploads after failed commit: %v, want the staged file kept", got)
	}
}

func TestUploadDirCleaned(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	data := storagetest.Data(4, 100)
	storagetest.Put(t, d, "committed", data)
	storagetest.Put(t, d, "duplicate", data)
	storagetest.Upload(t, d, "aborted", data)
	if err := d.Abort(ctx, "aborted"); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if got := files(t, d.uploads); len(got) != 0 {
		t.Fatalf("uploads dir holds %v after commit, duplicate commit and abort", got)
	}
	if got := files(t, d.blobs); len(got) != 1 {
		t.Fatalf("blob tree holds %v, want one blob", got)
	}
}

// TestCrashLeftovers models a crash mid-PATCH: the file holds more bytes
// than the caller recorded, and the resume must discard them.
func TestCrashLeftovers(t *testing.T) {
	d := newDriver(t)
	recorded := storagetest.Data(5, 4096)
	storagetest.Upload(t, d, "crashed", recorded)
	garbage := storagetest.Data(6, 777)
	f, err := os.OpenFile(filepath.Join(d.uploads, "crashed"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(garbage); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rest := storagetest.Data(7, 10)
	w, err := d.Append(context.Background(), "crashed", int64(len(recorded)))
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if _, err := w.Write(rest); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, recorded...), rest...)
	got, err := os.ReadFile(filepath.Join(d.uploads, "crashed"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("upload holds %d bytes, want %d: leftovers were not discarded", len(got), len(want))
	}
}

func TestInvalidNamesTouchNothingOutside(t *testing.T) {
	parent := t.TempDir()
	d, err := New(filepath.Join(parent, "root"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range storagetest.InvalidUploadIDs {
		if w, err := d.Append(ctx, id, 0); err == nil {
			w.Close()
			t.Errorf("Append(%q) succeeded", id)
		}
	}
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "root" {
		t.Fatalf("files appeared beside the root: %v", entries)
	}
	if got := files(t, filepath.Join(parent, "root")); len(got) != 0 {
		t.Fatalf("invalid IDs created %v", got)
	}
}

func TestWalkSkipsStrays(t *testing.T) {
	d := newDriver(t)
	dgst := storagetest.Put(t, d, "real", storagetest.Data(8, 50))
	hex := dgst.Encoded()
	strays := []string{
		filepath.Join(d.blobs, "README"),
		filepath.Join(d.blobs, "sha256", "notes.txt"),
		filepath.Join(d.blobs, "sha256", hex[:2], "junk"),
		filepath.Join(d.blobs, "sha256", hex[:2], hex+".tmp"),
		// A valid-looking name in the wrong fan-out directory.
		filepath.Join(d.blobs, "sha256", "zz", hex),
		filepath.Join(d.blobs, "md5", "ab", "ab"+hex[:30]),
	}
	for _, p := range strays {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var seen []digest.Digest
	err := d.Walk(context.Background(), func(g digest.Digest, _ int64) error {
		seen = append(seen, g)
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	if len(seen) != 1 || seen[0] != dgst {
		t.Fatalf("Walk reported %v, want only %s", seen, dgst)
	}
}

func TestNewReopensExistingRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	d1, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	data := storagetest.Data(9, 300)
	dgst := storagetest.Put(t, d1, "persist", data)
	storagetest.Upload(t, d1, "inflight", data[:100])
	d2, err := New(root)
	if err != nil {
		t.Fatalf("New on an existing root: %v", err)
	}
	storagetest.CheckBlob(t, d2, dgst, data)
	rc, err := d2.UploadReader(context.Background(), "inflight")
	if err != nil {
		t.Fatalf("upload lost across New: %v", err)
	}
	defer rc.Close()
	if got, _ := io.ReadAll(rc); !bytes.Equal(got, data[:100]) {
		t.Fatal("upload bytes changed across New")
	}
}

func TestWriterAfterClose(t *testing.T) {
	d := newDriver(t)
	w, err := d.Append(context.Background(), "closed", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("late")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	if err := w.Close(); err == nil {
		t.Fatal("second Close succeeded")
	}
}

// BenchmarkFilesystemAppendCommit measures a 16 MiB monolithic push as the
// registry performs it: the body is copied from a plain io.Reader (as a
// request body is), closed (flush and fsync), then committed.
func BenchmarkFilesystemAppendCommit(b *testing.B) {
	const size = 16 << 20
	d, err := New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	data := storagetest.Data(1, size)
	ctx := context.Background()
	b.SetBytes(size)
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("bench-%d", i)
		// The driver does not hash, so any well-formed digest will do and
		// each iteration gets its own, taking the rename path every time.
		dgst := digest.NewDigestFromEncoded(digest.SHA256, fmt.Sprintf("%064x", i))
		w, err := d.Append(ctx, id, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(w, struct{ io.Reader }{bytes.NewReader(data)}); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		if err := d.Commit(ctx, id, dgst, size); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := d.Delete(ctx, dgst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
