// Package filesystem is the storage.Driver that keeps blobs in a local
// directory: the embedded default, and the production choice on a shared
// filesystem.
//
// Layout under the root:
//
//	blobs/<algorithm>/<first two hex digits>/<hex>   committed blobs
//	uploads/<upload ID>                               staged bytes
//
// Both trees live under one root so that Commit is a rename within a single
// filesystem, which is what makes it atomic. config.yaml names the driver
// LocalStorage (see FromParameters).
package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/storage"
)

// Permissions keep blobs of private repositories away from other local
// users; the registry process is the only reader.
const (
	dirPerm  = 0o700
	filePerm = 0o600
)

// bufSize is the size of each write the driver issues. Request bodies arrive
// in pieces of a few KiB; gathering them into 1 MiB writes keeps the syscall
// count per blob small without holding much memory per upload.
const bufSize = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Driver stores blobs under a root directory. It is safe for concurrent use.
type Driver struct {
	root    string
	blobs   string
	uploads string
	durable sync.Map // blob directories known to be created and synced
}

var (
	_ storage.Driver       = (*Driver)(nil)
	_ storage.StagedLister = (*Driver)(nil)
)

// New returns a driver rooted at root, creating the directory tree if needed.
func New(root string) (*Driver, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("filesystem: resolve root %q: %w", root, err)
	}
	d := &Driver{
		root:    abs,
		blobs:   filepath.Join(abs, "blobs"),
		uploads: filepath.Join(abs, "uploads"),
	}
	// Make the tree's own entries durable once, here, rather than on every
	// Commit. The root's parent is synced only when we created the root: it
	// may belong to someone else and not be readable.
	toSync := []string{abs}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		toSync = append(toSync, filepath.Dir(abs))
	}
	for _, dir := range []string{d.blobs, d.uploads} {
		if err := os.MkdirAll(dir, dirPerm); err != nil {
			return nil, fmt.Errorf("filesystem: create %s: %w", dir, err)
		}
	}
	// The sha256 fan-out directories are made up front: a new directory
	// costs a commit three fsyncs (its parents up to the root), which every
	// one of the first few hundred blobs of a new registry would pay.
	fanout := filepath.Join(d.blobs, string(digest.SHA256))
	for i := range 256 {
		dir := filepath.Join(fanout, fmt.Sprintf("%02x", i))
		if err := os.MkdirAll(dir, dirPerm); err != nil {
			return nil, fmt.Errorf("filesystem: create %s: %w", dir, err)
		}
		d.durable.Store(dir, struct{}{})
	}
	toSync = append(toSync, d.blobs, fanout)
	for _, dir := range toSync {
		if err := syncDir(dir); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *Driver) uploadPath(id string) (string, error) {
	if err := storage.ValidateUploadID(id); err != nil {
		return "", err
	}
	return filepath.Join(d.uploads, id), nil
}

// blobPath returns the blob's directory and file path. ValidateDigest
// guarantees the algorithm and hex contain no separators or dots.
func (d *Driver) blobPath(dgst digest.Digest) (dir, file string, err error) {
	if err := storage.ValidateDigest(dgst); err != nil {
		return "", "", err
	}
	hex := dgst.Encoded()
	dir = filepath.Join(d.blobs, string(dgst.Algorithm()), hex[:2])
	return dir, filepath.Join(dir, hex), nil
}

// Append opens the upload at offset, truncating whatever lies beyond it.
// The returned writer's Close flushes and fsyncs, so an offset the caller
// records after Close is one the file is guaranteed to reach after a crash;
// without that, a resume could find fewer bytes than it was promised.
func (d *Driver) Append(ctx context.Context, uploadID string, offset int64) (io.WriteCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	path, err := d.uploadPath(uploadID)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("%w: negative offset %d", storage.ErrBadOffset, offset)
	}
	f, created, err := openUpload(path, offset)
	if err != nil {
		return nil, notFound(err, "upload", uploadID)
	}
	if err := prepareAppend(f, offset); err != nil {
		f.Close()
		return nil, err
	}
	w := &writer{f: f, off: offset, kicked: offset}
	if created {
		// The new file's directory entry must be as durable as its bytes.
		w.syncDir = d.uploads
	}
	w.bp = bufPool.Get().(*[]byte)
	w.buf = (*w.bp)[:0]
	return w, nil
}

// openUpload opens the upload file for writing, creating it only at offset
// 0, and reports whether it created it.
func openUpload(path string, offset int64) (f *os.File, created bool, err error) {
	if offset == 0 {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
		if err == nil {
			return f, true, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, false, err
		}
	}
	f, err = os.OpenFile(path, os.O_WRONLY, 0)
	return f, false, err
}

// prepareAppend cuts the file to offset and positions it there.
func prepareAppend(f *os.File, offset int64) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("filesystem: stat upload: %w", err)
	}
	if fi.Size() < offset {
		return fmt.Errorf("%w: offset %d, upload holds %d bytes", storage.ErrBadOffset, offset, fi.Size())
	}
	if fi.Size() > offset {
		if err := f.Truncate(offset); err != nil {
			return fmt.Errorf("filesystem: truncate upload: %w", err)
		}
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fmt.Errorf("filesystem: seek upload: %w", err)
	}
	return nil
}

// UploadReader returns the staged file itself.
func (d *Driver) UploadReader(ctx context.Context, uploadID string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	path, err := d.uploadPath(uploadID)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, notFound(err, "upload", uploadID)
	}
	return f, nil
}

// Commit fsyncs the staged file, renames it into the blob tree and fsyncs the
// blob's directory. The rename is the commit point: before it the digest
// names nothing, after it the complete file. The staging directory needs no
// fsync of its own: the journal commits the rename, which moves the file's
// entry out of it, no earlier than the file's creation there.
func (d *Driver) Commit(ctx context.Context, uploadID string, dgst digest.Digest, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	src, err := d.uploadPath(uploadID)
	if err != nil {
		return err
	}
	dir, dst, err := d.blobPath(dgst)
	if err != nil {
		return err
	}
	f, err := os.Open(src)
	if err != nil {
		return notFound(err, "upload", uploadID)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("filesystem: stat upload: %w", err)
	}
	if fi.Size() != size {
		return fmt.Errorf("%w: upload %s holds %d bytes, commit says %d", storage.ErrSizeMismatch, uploadID, fi.Size(), size)
	}

	if _, err := os.Lstat(dst); err == nil {
		// Same digest, same bytes: the blob we have is as good as the upload.
		return d.removeUpload(src)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filesystem: stat blob: %w", err)
	}

	if err := f.Sync(); err != nil {
		return fmt.Errorf("filesystem: sync upload: %w", err)
	}
	if err := d.ensureDir(dir); err != nil {
		return err
	}
	// A concurrent Commit of the same digest may rename first; replacing its
	// file with identical bytes is harmless, and readers holding the old file
	// open keep reading it.
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("filesystem: rename upload into place: %w", err)
	}
	return syncDir(dir)
}

// Abort removes the staged file.
func (d *Driver) Abort(ctx context.Context, uploadID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path, err := d.uploadPath(uploadID)
	if err != nil {
		return err
	}
	return d.removeUpload(path)
}

// StagedUploads lists the staging directory: every file named like an
// upload ID, with its modification time. A file removed while the listing
// runs is skipped.
func (d *Driver) StagedUploads(ctx context.Context, fn func(uploadID string, modified time.Time) error) error {
	entries, err := os.ReadDir(d.uploads)
	if err != nil {
		return fmt.Errorf("filesystem: list uploads: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !e.Type().IsRegular() || storage.ValidateUploadID(e.Name()) != nil {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("filesystem: list uploads: %w", err)
		}
		if err := fn(e.Name(), info.ModTime()); err != nil {
			return err
		}
	}
	return nil
}

func (d *Driver) removeUpload(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filesystem: remove upload: %w", err)
	}
	return nil
}

// Open returns the blob's *os.File, which net/http serves with sendfile.
func (d *Driver) Open(ctx context.Context, dgst digest.Digest) (io.ReadSeekCloser, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	_, path, err := d.blobPath(dgst)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, notFound(err, "blob", string(dgst))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("filesystem: stat blob: %w", err)
	}
	return f, fi.Size(), nil
}

// Stat returns the blob's size.
func (d *Driver) Stat(ctx context.Context, dgst digest.Digest) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	_, path, err := d.blobPath(dgst)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, notFound(err, "blob", string(dgst))
	}
	return fi.Size(), nil
}

// Delete removes the blob's file. It does not fsync the directory: if a
// crash undoes the removal the blob simply reappears and the next garbage
// collection deletes it again. Empty fan-out directories are left in place;
// there are at most 256 per algorithm and a later Commit would recreate them.
func (d *Driver) Delete(ctx context.Context, dgst digest.Digest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, path, err := d.blobPath(dgst)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filesystem: remove blob: %w", err)
	}
	return nil
}

// Walk visits the blob tree, skipping anything whose path does not spell a
// valid digest (stray files an operator left behind are not blobs). A blob
// deleted while Walk runs is skipped rather than reported.
func (d *Driver) Walk(ctx context.Context, fn func(dgst digest.Digest, size int64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	algs, err := os.ReadDir(d.blobs)
	if err != nil {
		return fmt.Errorf("filesystem: read blob tree: %w", err)
	}
	for _, alg := range algs {
		if !alg.IsDir() {
			continue
		}
		algDir := filepath.Join(d.blobs, alg.Name())
		prefixes, err := os.ReadDir(algDir)
		if err != nil {
			return fmt.Errorf("filesystem: read blob tree: %w", err)
		}
		for _, prefix := range prefixes {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !prefix.IsDir() {
				continue
			}
			if err := walkPrefix(filepath.Join(algDir, prefix.Name()), alg.Name(), prefix.Name(), fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func walkPrefix(dir, alg, prefix string, fn func(digest.Digest, int64) error) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("filesystem: read blob tree: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		dgst := digest.NewDigestFromEncoded(digest.Algorithm(alg), name)
		if !e.Type().IsRegular() || len(name) < 2 || name[:2] != prefix || storage.ValidateDigest(dgst) != nil {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("filesystem: stat blob: %w", err)
		}
		if err := fn(dgst, info.Size()); err != nil {
			return err
		}
	}
	return nil
}

// notFound maps a missing file to storage.ErrNotFound and wraps anything else.
func notFound(err error, kind, name string) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s %s", storage.ErrNotFound, kind, name)
	}
	return fmt.Errorf("filesystem: open %s %s: %w", kind, name, err)
}

// ensureDir creates a blob fan-out directory and makes its entry durable by
// fsyncing the directories from its parent up: each may have gained an
// entry, ours or a concurrent caller's that has not synced yet, and a
// rename into a directory whose own entry is lost would be lost with it.
// The walk stops below the first ancestor already known durable, whose
// entry no longer changes. Directories made durable are remembered, so
// steady-state commits sync only the blob's own directory.
func (d *Driver) ensureDir(dir string) error {
	if _, ok := d.durable.Load(dir); ok {
		return nil
	}
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return fmt.Errorf("filesystem: create blob directory: %w", err)
	}
	var synced []string
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if err := syncDir(p); err != nil {
			return err
		}
		synced = append(synced, p)
		if _, ok := d.durable.Load(p); ok || p == d.root || p == filepath.Dir(p) {
			break
		}
	}
	for _, p := range append(synced, dir) {
		d.durable.Store(p, struct{}{})
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("filesystem: open dir for sync: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("filesystem: sync dir %s: %w", dir, err)
	}
	return nil
}
