package filesystem

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// writer gathers small writes into bufSize-byte writes to the upload file.
// It implements io.ReaderFrom so that io.Copy from a request body reads
// straight into the buffer instead of through io.Copy's own 32 KiB one.
// It deliberately does not hand ReadFrom to *os.File: for a reader that is
// not a file or socket, that falls back to 32 KiB writes.
type writer struct {
	f   *os.File
	bp  *[]byte // pooled buffer, returned on Close
	buf []byte  // (*bp)[:n], the bytes not yet written
	err error   // first write error; the writer is unusable after it
	// syncDir, when set, is fsynced on Close because Append created the file.
	syncDir string
	// off is the file offset the next write lands at; kicked is the offset
	// up to which writeback has been started.
	off, kicked int64
}

// writebackStride is how many written bytes start the kernel's writeback of
// them: the disk then works while more of the body arrives, and the fsync in
// Close (and in Commit) waits only for the tail instead of the whole blob.
const writebackStride = 8 << 20

var errClosed = errors.New("filesystem: write to closed upload")

func (w *writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		// A write at least as large as the buffer goes straight to the file
		// once what is buffered has been flushed; copying it would only cost.
		if len(w.buf) == 0 && len(p) >= cap(w.buf) {
			n, err := w.f.Write(p)
			written += n
			w.wrote(n)
			if err != nil {
				w.err = fmt.Errorf("filesystem: write upload: %w", err)
				return written, w.err
			}
			return written, nil
		}
		n := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+n]
		p = p[n:]
		written += n
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	var total int64
	for {
		n, err := r.Read(w.buf[len(w.buf):cap(w.buf)])
		w.buf = w.buf[:len(w.buf)+n]
		total += int64(n)
		if len(w.buf) == cap(w.buf) {
			if ferr := w.flush(); ferr != nil {
				return total, ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (w *writer) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	n, err := w.f.Write(w.buf)
	w.wrote(n)
	if err != nil {
		w.err = fmt.Errorf("filesystem: write upload: %w", err)
		return w.err
	}
	w.buf = w.buf[:0]
	return nil
}

// wrote advances the offset by n and, every writebackStride bytes, asks the
// kernel to start writing the new bytes out without waiting for them. A
// failure only loses the overlap, so it is ignored; Close's fsync decides.
func (w *writer) wrote(n int) {
	w.off += int64(n)
	if w.off-w.kicked >= writebackStride {
		_ = unix.SyncFileRange(int(w.f.Fd()), w.kicked, w.off-w.kicked, unix.SYNC_FILE_RANGE_WRITE)
		w.kicked = w.off
	}
}

// Close flushes, fsyncs and closes the file. The fsync is what lets the
// caller record the new offset: see Driver.Append.
func (w *writer) Close() error { return w.close(true) }

// CloseUnsynced flushes and closes the file without an fsync, for a caller
// that commits next (Commit fsyncs the file before the rename) or records
// nothing: see storage.UnsyncedCloser. The writeback started along the way
// keeps going, so Commit's fsync waits only for the tail.
func (w *writer) CloseUnsynced() error { return w.close(false) }

func (w *writer) close(durable bool) error {
	if w.bp == nil {
		return errClosed
	}
	err := w.flush()
	if err == nil && durable {
		if serr := w.f.Sync(); serr != nil {
			err = fmt.Errorf("filesystem: sync upload: %w", serr)
		}
	}
	if cerr := w.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("filesystem: close upload: %w", cerr)
	}
	if err == nil && durable && w.syncDir != "" {
		err = syncDir(w.syncDir)
	}
	bufPool.Put(w.bp)
	w.bp, w.buf = nil, nil
	w.err = errClosed
	return err
}
