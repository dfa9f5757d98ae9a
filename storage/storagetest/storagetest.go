// Package storagetest is the conformance suite for storage.Driver. Every
// driver's own tests call Run; a driver that passes it can back the registry.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/storage"
)

// Run checks newDriver's drivers against the storage.Driver contract. Each
// subtest gets a fresh, empty driver from newDriver.
func Run(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	tests := []struct {
		name string
		fn   func(t *testing.T, d storage.Driver)
	}{
		{"AppendChunksCommitRead", testAppendChunksCommitRead},
		{"LargeWrites", testLargeWrites},
		{"ResumeTruncates", testResumeTruncates},
		{"UnsyncedAppendThenCommit", testUnsyncedAppendThenCommit},
		{"StagedUploadsListing", testStagedUploadsListing},
		{"ResumeAtEnd", testResumeAtEnd},
		{"AppendBeyondStaged", testAppendBeyondStaged},
		{"AppendUnknownUpload", testAppendUnknownUpload},
		{"RestartAtZero", testRestartAtZero},
		{"CommitWrongSize", testCommitWrongSize},
		{"CommitUnknownUpload", testCommitUnknownUpload},
		{"CommitExisting", testCommitExisting},
		{"Abort", testAbort},
		{"ZeroByteBlob", testZeroByteBlob},
		{"Delete", testDelete},
		{"Walk", testWalk},
		{"WalkStopsOnError", testWalkStopsOnError},
		{"ConcurrentUploads", testConcurrentUploads},
		{"ConcurrentCommitSameDigest", testConcurrentCommitSameDigest},
		{"MissingBlob", testMissingBlob},
		{"InvalidUploadIDs", testInvalidUploadIDs},
		{"InvalidDigests", testInvalidDigests},
		{"CanceledContext", testCanceledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newDriver(t))
		})
	}
}

// Data returns n deterministic pseudo-random bytes; seed distinguishes blobs.
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	var word [8]byte
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(word[:], r.Uint64())
		copy(b[i:], word[:])
	}
	return b
}

// Digest returns the sha256 digest of b.
func Digest(b []byte) digest.Digest {
	sum := sha256.Sum256(b)
	return digest.NewDigestFromEncoded(digest.SHA256, fmt.Sprintf("%x", sum))
}

// Upload appends chunks to uploadID, one Append per chunk at the running
// offset, closing the writer each time as a PATCH handler would.
func Upload(t *testing.T, d storage.Driver, uploadID string, chunks ...[]byte) {
	t.Helper()
	var off int64
	for _, c := range chunks {
		appendAt(t, d, uploadID, off, c)
		off += int64(len(c))
	}
}

// Put uploads b in one chunk under uploadID and commits it, returning its digest.
func Put(t *testing.T, d storage.Driver, uploadID string, b []byte) digest.Digest {
	t.Helper()
	Upload(t, d, uploadID, b)
	dgst := Digest(b)
	if err := d.Commit(context.Background(), uploadID, dgst, int64(len(b))); err != nil {
		t.Fatalf("Commit(%s, %s): %v", uploadID, dgst, err)
	}
	return dgst
}

func appendAt(t *testing.T, d storage.Driver, uploadID string, off int64, b []byte) {
	t.Helper()
	w, err := d.Append(context.Background(), uploadID, off)
	if err != nil {
		t.Fatalf("Append(%s, %d): %v", uploadID, off, err)
	}
	// io.Copy from a reader without WriteTo exercises ReadFrom when the
	// driver has one, as copying an HTTP request body does.
	if n, err := io.Copy(w, onlyReader{bytes.NewReader(b)}); err != nil || n != int64(len(b)) {
		w.Close()
		t.Fatalf("writing %d bytes to %s at %d: wrote %d, %v", len(b), uploadID, off, n, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("closing writer of %s: %v", uploadID, err)
	}
}

// testUnsyncedAppendThenCommit closes appends with storage.CloseAppend
// without durability, as the registry does when the same request commits:
// a resumed upload still starts from the last recorded offset, and Commit
// serves exactly the bytes written.
func testUnsyncedAppendThenCommit(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	first, second := Data(7, 3<<20), Data(8, 5<<20+17)
	appendUnsynced := func(off int64, b []byte) {
		t.Helper()
		w, err := d.Append(ctx, "unsynced", off)
		if err != nil {
			t.Fatalf("Append at %d: %v", off, err)
		}
		if _, err := io.Copy(w, onlyReader{bytes.NewReader(b)}); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		if err := storage.CloseAppend(w, false); err != nil {
			t.Fatalf("CloseAppend: %v", err)
		}
	}
	appendAt(t, d, "unsynced", 0, first)
	// A final chunk whose commit then fails leaves bytes past the recorded
	// offset; the next Append at that offset must discard them.
	appendUnsynced(int64(len(first)), Data(9, 1<<20))
	appendUnsynced(int64(len(first)), second)
	want := append(append([]byte(nil), first...), second...)
	dgst := Digest(want)
	if err := d.Commit(ctx, "unsynced", dgst, int64(len(want))); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	CheckBlob(t, d, dgst, want)
}

// testStagedUploadsListing checks storage.StagedLister, for drivers that
// implement it: staged uploads are listed with a recent modification time,
// committed and aborted ones are not.
func testStagedUploadsListing(t *testing.T, d storage.Driver) {
	lister, ok := d.(storage.StagedLister)
	if !ok {
		t.Skip("the driver does not list its staging area")
	}
	ctx := context.Background()
	before := time.Now().Add(-time.Minute)
	Upload(t, d, "staged-a", Data(11, 100))
	Upload(t, d, "staged-b", Data(12, 200))
	Upload(t, d, "aborted", Data(13, 300))
	if err := d.Abort(ctx, "aborted"); err != nil {
		t.Fatal(err)
	}
	Put(t, d, "committed", Data(14, 400))
	got := map[string]time.Time{}
	if err := lister.StagedUploads(ctx, func(id string, modified time.Time) error {
		got[id] = modified
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("StagedUploads listed %v, want staged-a and staged-b", got)
	}
	for _, id := range []string{"staged-a", "staged-b"} {
		if m, ok := got[id]; !ok || m.Before(before) || m.After(time.Now().Add(time.Minute)) {
			t.Errorf("%s listed %v (%v), want a modification time of about now", id, m, ok)
		}
	}
	stop := errors.New("stop")
	calls := 0
	err := lister.StagedUploads(ctx, func(string, time.Time) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("StagedUploads went on after fn failed: %v after %d calls", err, calls)
	}
}

// onlyReader hides every method but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// CheckBlob asserts that dgst is committed with exactly the bytes want,
// through Stat, Open and a seek within the opened blob.
func CheckBlob(t *testing.T, d storage.Driver, dgst digest.Digest, want []byte) {
	t.Helper()
	ctx := context.Background()
	size, err := d.Stat(ctx, dgst)
	if err != nil {
		t.Fatalf("Stat(%s): %v", dgst, err)
	}
	if size != int64(len(want)) {
		t.Fatalf("Stat(%s) = %d, want %d", dgst, size, len(want))
	}
	rc, size, err := d.Open(ctx, dgst)
	if err != nil {
		t.Fatalf("Open(%s): %v", dgst, err)
	}
	defer rc.Close()
	if size != int64(len(want)) {
		t.Fatalf("Open(%s) size = %d, want %d", dgst, size, len(want))
	}
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s: %v", dgst, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("blob %s: read %d bytes that differ from the %d written", dgst, len(got), len(want))
	}
	if len(want) == 0 {
		return
	}
	mid := int64(len(want) / 2)
	if pos, err := rc.Seek(mid, io.SeekStart); err != nil || pos != mid {
		t.Fatalf("Seek(%d) on %s = %d, %v", mid, dgst, pos, err)
	}
	tail, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s after seek: %v", dgst, err)
	}
	if !bytes.Equal(tail, want[mid:]) {
		t.Fatalf("blob %s: bytes after seek to %d differ", dgst, mid)
	}
}

func checkUpload(t *testing.T, d storage.Driver, uploadID string, want []byte) {
	t.Helper()
	rc, err := d.UploadReader(context.Background(), uploadID)
	if err != nil {
		t.Fatalf("UploadReader(%s): %v", uploadID, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading upload %s: %v", uploadID, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("upload %s holds %d bytes, want %d (or contents differ)", uploadID, len(got), len(want))
	}
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("%s: err = %v, want storage.ErrNotFound", what, err)
	}
}

func testAppendChunksCommitRead(t *testing.T, d storage.Driver) {
	chunks := [][]byte{Data(1, 1), Data(2, 100_000), Data(3, 3<<20+17), Data(4, 5)}
	Upload(t, d, "chunks", chunks...)
	all := bytes.Join(chunks, nil)
	checkUpload(t, d, "chunks", all)
	dgst := Digest(all)
	if err := d.Commit(context.Background(), "chunks", dgst, int64(len(all))); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	CheckBlob(t, d, dgst, all)
	_, err := d.UploadReader(context.Background(), "chunks")
	wantNotFound(t, "UploadReader after Commit", err)
}

// testLargeWrites mixes write sizes around typical buffer sizes within one
// Append, through Write rather than ReadFrom.
func testLargeWrites(t *testing.T, d storage.Driver) {
	data := Data(5, 5<<20+3)
	w, err := d.Append(context.Background(), "large", 0)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	sizes := []int{1, 4095, 32 << 10, 1 << 20, 2<<20 + 1, 7}
	rest := data
	for i := 0; len(rest) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(rest))
		if m, err := w.Write(rest[:n]); err != nil || m != n {
			t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
		}
		rest = rest[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	dgst := Digest(data)
	if err := d.Commit(context.Background(), "large", dgst, int64(len(data))); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	CheckBlob(t, d, dgst, data)
}

// testResumeTruncates models a crash after the caller recorded offset 600
// but before it recorded the next 400 bytes: the resumed Append at 600 must
// discard them, whatever they were.
func testResumeTruncates(t *testing.T, d storage.Driver) {
	first := Data(10, 1000)
	appendAt(t, d, "resume", 0, first)
	second := Data(11, 250)
	appendAt(t, d, "resume", 600, second)
	want := append(append([]byte{}, first[:600]...), second...)
	checkUpload(t, d, "resume", want)
	dgst := Digest(want)
	if err := d.Commit(context.Background(), "resume", dgst, int64(len(want))); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	CheckBlob(t, d, dgst, want)
}

func testResumeAtEnd(t *testing.T, d storage.Driver) {
	a, b := Data(12, 300), Data(13, 0)
	appendAt(t, d, "end", 0, a)
	appendAt(t, d, "end", 300, b)
	checkUpload(t, d, "end", a)
	// An Append that writes nothing must not lose what was there.
	w, err := d.Append(context.Background(), "end", 300)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkUpload(t, d, "end", a)
}

func testAppendBeyondStaged(t *testing.T, d storage.Driver) {
	appendAt(t, d, "gap", 0, Data(14, 10))
	for _, off := range []int64{11, 1 << 40, -1} {
		w, err := d.Append(context.Background(), "gap", off)
		if !errors.Is(err, storage.ErrBadOffset) {
			if err == nil {
				w.Close()
			}
			t.Fatalf("Append at %d of a 10-byte upload: err = %v, want storage.ErrBadOffset", off, err)
		}
	}
	checkUpload(t, d, "gap", Data(14, 10))
}

func testAppendUnknownUpload(t *testing.T, d storage.Driver) {
	w, err := d.Append(context.Background(), "nosuch", 5)
	if err == nil {
		w.Close()
	}
	wantNotFound(t, "Append at 5 to an unknown upload", err)
	_, err = d.UploadReader(context.Background(), "nosuch")
	wantNotFound(t, "UploadReader of an unknown upload", err)
}

func testRestartAtZero(t *testing.T, d storage.Driver) {
	appendAt(t, d, "restart", 0, Data(15, 500))
	fresh := Data(16, 20)
	appendAt(t, d, "restart", 0, fresh)
	checkUpload(t, d, "restart", fresh)
}

func testCommitWrongSize(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	data := Data(20, 4096)
	Upload(t, d, "wrongsize", data)
	dgst := Digest(data)
	for _, size := range []int64{4095, 4097, 0, -1} {
		if err := d.Commit(ctx, "wrongsize", dgst, size); !errors.Is(err, storage.ErrSizeMismatch) {
			t.Fatalf("Commit with size %d of a 4096-byte upload: err = %v, want storage.ErrSizeMismatch", size, err)
		}
		_, err := d.Stat(ctx, dgst)
		wantNotFound(t, "Stat after a failed Commit", err)
	}
	// The staged bytes are kept, so the caller can still commit or abort.
	checkUpload(t, d, "wrongsize", data)
	if err := d.Commit(ctx, "wrongsize", dgst, int64(len(data))); err != nil {
		t.Fatalf("Commit with the right size after failed ones: %v", err)
	}
	CheckBlob(t, d, dgst, data)
}

func testCommitUnknownUpload(t *testing.T, d storage.Driver) {
	data := Data(21, 10)
	err := d.Commit(context.Background(), "ghost", Digest(data), 10)
	wantNotFound(t, "Commit of an unknown upload", err)
}

func testCommitExisting(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	data := Data(22, 70_000)
	dgst := Put(t, d, "first", data)
	Upload(t, d, "second", data)
	if err := d.Commit(ctx, "second", dgst, int64(len(data))); err != nil {
		t.Fatalf("Commit of an existing digest: %v", err)
	}
	_, err := d.UploadReader(ctx, "second")
	wantNotFound(t, "UploadReader after committing an existing digest", err)
	CheckBlob(t, d, dgst, data)
}

func testAbort(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	data := Data(23, 1000)
	Upload(t, d, "abort", data)
	if err := d.Abort(ctx, "abort"); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	_, err := d.UploadReader(ctx, "abort")
	wantNotFound(t, "UploadReader after Abort", err)
	wantNotFound(t, "Commit after Abort", d.Commit(ctx, "abort", Digest(data), int64(len(data))))
	if err := d.Abort(ctx, "abort"); err != nil {
		t.Fatalf("second Abort: %v", err)
	}
	if err := d.Abort(ctx, "never-started"); err != nil {
		t.Fatalf("Abort of an unknown upload: %v", err)
	}
	// The ID can be reused from scratch.
	appendAt(t, d, "abort", 0, data[:10])
	checkUpload(t, d, "abort", data[:10])
}

func testZeroByteBlob(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	w, err := d.Append(ctx, "empty", 0)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	dgst := Digest(nil)
	if err := d.Commit(ctx, "empty", dgst, 0); err != nil {
		t.Fatalf("Commit of 0 bytes: %v", err)
	}
	CheckBlob(t, d, dgst, nil)
	seen := walkAll(t, d)
	if size, ok := seen[dgst]; !ok || size != 0 {
		t.Fatalf("Walk: empty blob seen=%v size=%d", ok, size)
	}
}

func testDelete(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	keep := Put(t, d, "keep", Data(30, 100))
	gone := Put(t, d, "gone", Data(31, 100))
	if err := d.Delete(ctx, gone); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := d.Stat(ctx, gone)
	wantNotFound(t, "Stat after Delete", err)
	_, _, err = d.Open(ctx, gone)
	wantNotFound(t, "Open after Delete", err)
	if err := d.Delete(ctx, gone); err != nil {
		t.Fatalf("Delete of a deleted blob: %v", err)
	}
	CheckBlob(t, d, keep, Data(30, 100))
	// A deleted digest can be committed again.
	if got := Put(t, d, "again", Data(31, 100)); got != gone {
		t.Fatalf("digest changed: %s != %s", got, gone)
	}
	CheckBlob(t, d, gone, Data(31, 100))
}

func walkAll(t *testing.T, d storage.Driver) map[digest.Digest]int64 {
	t.Helper()
	seen := map[digest.Digest]int64{}
	err := d.Walk(context.Background(), func(dgst digest.Digest, size int64) error {
		if _, dup := seen[dgst]; dup {
			return fmt.Errorf("driver Walk reported %s twice", dgst)
		}
		seen[dgst] = size
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return seen
}

func testWalk(t *testing.T, d storage.Driver) {
	if got := walkAll(t, d); len(got) != 0 {
		t.Fatalf("Walk of an empty driver reported %v", got)
	}
	want := map[digest.Digest]int64{}
	for i := range 20 {
		data := Data(uint64(40+i), 10*i+1)
		want[Put(t, d, fmt.Sprintf("walk-%d", i), data)] = int64(len(data))
	}
	// Uploads in progress are not blobs.
	Upload(t, d, "pending", Data(99, 10))
	got := walkAll(t, d)
	if len(got) != len(want) {
		t.Fatalf("Walk reported %d blobs, want %d", len(got), len(want))
	}
	for dgst, size := range want {
		if got[dgst] != size {
			t.Fatalf("Walk: %s size %d, want %d (present: %v)", dgst, got[dgst], size, got[dgst] != 0)
		}
	}
}

func testWalkStopsOnError(t *testing.T, d storage.Driver) {
	for i := range 3 {
		Put(t, d, fmt.Sprintf("stop-%d", i), Data(uint64(70+i), 8))
	}
	stop := errors.New("stop here")
	calls := 0
	err := d.Walk(context.Background(), func(digest.Digest, int64) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Walk returned %v, want the callback's error", err)
	}
	if calls != 1 {
		t.Fatalf("Walk called fn %d times after it failed, want 1", calls)
	}
}

func testConcurrentUploads(t *testing.T, d storage.Driver) {
	const n = 8
	data := make([][]byte, n)
	for i := range data {
		data[i] = Data(uint64(100+i), 200_000+i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- uploadAndCommit(d, fmt.Sprintf("conc-%d", i), data[i], 3)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		CheckBlob(t, d, Digest(data[i]), data[i])
	}
}

func testConcurrentCommitSameDigest(t *testing.T, d storage.Driver) {
	const n = 8
	data := Data(200, 300_000)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- uploadAndCommit(d, fmt.Sprintf("same-%d", i), data, 2)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	CheckBlob(t, d, Digest(data), data)
	if got := walkAll(t, d); len(got) != 1 {
		t.Fatalf("Walk reported %d blobs after committing one digest %d times", len(got), n)
	}
	for i := range n {
		_, err := d.UploadReader(context.Background(), fmt.Sprintf("same-%d", i))
		wantNotFound(t, "UploadReader after concurrent commits", err)
	}
}

// uploadAndCommit is Upload and Commit without testing.T, for goroutines.
func uploadAndCommit(d storage.Driver, id string, data []byte, chunks int) error {
	ctx := context.Background()
	step := len(data)/chunks + 1
	for off := 0; off < len(data); off += step {
		w, err := d.Append(ctx, id, int64(off))
		if err != nil {
			return fmt.Errorf("%s: Append at %d: %w", id, off, err)
		}
		end := min(off+step, len(data))
		if _, err := w.Write(data[off:end]); err != nil {
			w.Close()
			return fmt.Errorf("%s: Write: %w", id, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("%s: Close: %w", id, err)
		}
	}
	if err := d.Commit(ctx, id, Digest(data), int64(len(data))); err != nil {
		return fmt.Errorf("%s: Commit: %w", id, err)
	}
	return nil
}

func testMissingBlob(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	dgst := Digest([]byte("never stored"))
	_, _, err := d.Open(ctx, dgst)
	wantNotFound(t, "Open of a missing blob", err)
	_, err = d.Stat(ctx, dgst)
	wantNotFound(t, "Stat of a missing blob", err)
	if err := d.Delete(ctx, dgst); err != nil {
		t.Fatalf("Delete of a missing blob: %v", err)
	}
}

// InvalidUploadIDs are IDs every driver must refuse, most of them attempts
// to name something outside the upload area.
var InvalidUploadIDs = []string{
	"", ".", "..", "../../etc", "../blobs", "a/b", "/abs", `..\..\x`, "a\x00b",
	"with space", "dot.ted", strings.Repeat("x", storage.MaxUploadIDLen+1),
}

// InvalidDigests are digests every driver must refuse.
var InvalidDigests = []digest.Digest{
	"", "sha256", "sha256:", "sha256:../../etc/passwd",
	digest.Digest("sha256:../" + strings.Repeat("a", 61)),
	digest.Digest("sha256:" + strings.Repeat("A", 64)),
	digest.Digest("sha256:" + strings.Repeat("a", 63)),
	digest.Digest("md5:" + strings.Repeat("a", 32)),
	digest.Digest("../sha256:" + strings.Repeat("a", 64)),
}

func testInvalidUploadIDs(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	dgst := Digest(nil)
	for _, id := range InvalidUploadIDs {
		w, err := d.Append(ctx, id, 0)
		if err == nil {
			w.Close()
		}
		wantInvalid(t, fmt.Sprintf("Append(%q)", id), err)
		_, err = d.UploadReader(ctx, id)
		wantInvalid(t, fmt.Sprintf("UploadReader(%q)", id), err)
		wantInvalid(t, fmt.Sprintf("Commit(%q)", id), d.Commit(ctx, id, dgst, 0))
		wantInvalid(t, fmt.Sprintf("Abort(%q)", id), d.Abort(ctx, id))
	}
	if got := walkAll(t, d); len(got) != 0 {
		t.Fatalf("invalid IDs produced blobs: %v", got)
	}
}

func testInvalidDigests(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	Upload(t, d, "valid", Data(300, 16))
	for _, dgst := range InvalidDigests {
		wantInvalid(t, fmt.Sprintf("Commit(%q)", dgst), d.Commit(ctx, "valid", dgst, 16))
		_, _, err := d.Open(ctx, dgst)
		wantInvalid(t, fmt.Sprintf("Open(%q)", dgst), err)
		_, err = d.Stat(ctx, dgst)
		wantInvalid(t, fmt.Sprintf("Stat(%q)", dgst), err)
		wantInvalid(t, fmt.Sprintf("Delete(%q)", dgst), d.Delete(ctx, dgst))
	}
	checkUpload(t, d, "valid", Data(300, 16))
}

func wantInvalid(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("%s: err = %v, want storage.ErrInvalid", what, err)
	}
}

func testCanceledContext(t *testing.T, d storage.Driver) {
	data := Data(400, 100)
	dgst := Put(t, d, "live", data)
	Upload(t, d, "pending", data)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	checks := map[string]error{}
	if w, err := d.Append(ctx, "pending", 0); err != nil {
		checks["Append"] = err
	} else {
		w.Close()
		checks["Append"] = nil
	}
	checks["Commit"] = d.Commit(ctx, "pending", dgst, int64(len(data)))
	_, _, checks["Open"] = d.Open(ctx, dgst)
	checks["Walk"] = d.Walk(ctx, func(digest.Digest, int64) error { return nil })
	for name, err := range checks {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: err = %v, want context.Canceled", name, err)
		}
	}
	// Nothing was changed by the canceled calls.
	checkUpload(t, d, "pending", data)
	CheckBlob(t, d, dgst, data)
}
