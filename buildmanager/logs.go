package buildmanager

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/storage"
)

// Log entry types, as Quay spells them. Plain output lines have none.
const (
	LogPhase   = "phase"
	LogCommand = "command"
	LogError   = "error"
)

// LogEntry is one line of a build log: {"message", "type", "data"}.
type LogEntry struct {
	Message string `json:"message"`
	// Type is LogPhase, LogCommand, LogError or "" for output.
	Type string `json:"type,omitempty"`
	// Data always holds "datetime" (RFC 3339, UTC); phase entries add the
	// pull metadata the worker reported.
	Data map[string]any `json:"data"`
	// Index is the entry's position in the log (from 0), for resuming a
	// stream (SSE Last-Event-ID). It is not part of the JSON shape.
	Index int `json:"-"`
}

func newEntry(typ, message string, at time.Time) LogEntry {
	return LogEntry{Message: message, Type: typ, Data: map[string]any{"datetime": at.UTC().Format(time.RFC3339Nano)}}
}

// logTTL bounds how long a live log outlives a server that never archived it.
const logTTL = 7 * 24 * time.Hour

// Defaults of LogLimits. A CI log is typically tens to hundreds of KiB;
// 10 MiB is a hundred times that, and 100,000 lines lets a chatty build of
// short lines (~100 bytes, a compiler's) use the whole byte budget. 64 KiB
// keeps a minified-JSON or progress-bar line whole while no single line can
// take much of the budget. Past them the log is noise nobody reads, and
// each entry costs storage and every later reader.
const (
	DefaultLogMaxBytes     = 10 << 20
	DefaultLogMaxLines     = 100_000
	DefaultLogMaxLineBytes = 64 << 10
)

// LogLimits bound one build's log on the manager (zero fields: defaults).
// When the worker's output would pass MaxLines entries or MaxBytes message
// bytes, one marker entry says so and the rest of its output is dropped;
// the build goes on, and the manager's own entries (phases, failed
// attempts, the final error) are always kept. A message longer than
// MaxLineBytes is cut, with a note of how much was cut.
type LogLimits struct {
	MaxBytes     int64
	MaxLines     int
	MaxLineBytes int
}

func (l LogLimits) withDefaults() LogLimits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLogMaxBytes
	}
	if l.MaxLines <= 0 {
		l.MaxLines = DefaultLogMaxLines
	}
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = DefaultLogMaxLineBytes
	}
	return l
}

// cut shortens e's message to MaxLineBytes (on a character boundary) and
// says how much went.
func (l LogLimits) cut(e *LogEntry) {
	if len(e.Message) <= l.MaxLineBytes {
		return
	}
	i := l.MaxLineBytes
	for i > 0 && !utf8.RuneStart(e.Message[i]) {
		i--
	}
	e.Message = e.Message[:i] + " [line cut: " + strconv.Itoa(len(e.Message)-i) +
		" more bytes over the limit of " + strconv.Itoa(l.MaxLineBytes) + " bytes per line (BUILD_LOG_MAX_LINE_BYTES)]"
}

// overLimit returns the marker entry to store instead of a worker entry of
// size message bytes that would take a log of n entries and total bytes
// past a limit, or nil when the entry fits.
func (l LogLimits) overLimit(n int, total, size int64) *LogEntry {
	var e LogEntry
	switch {
	case n+1 > l.MaxLines:
		e = l.lineMarker()
	case total+size > l.MaxBytes:
		e = l.byteMarker()
	default:
		return nil
	}
	return &e
}

func (l LogLimits) lineMarker() LogEntry {
	return newEntry(LogError, "The build log reached its limit of "+strconv.Itoa(l.MaxLines)+
		" lines (BUILD_LOG_MAX_LINES): the rest of this build's output is dropped.", time.Now())
}

func (l LogLimits) byteMarker() LogEntry {
	return newEntry(LogError, "The build log reached its limit of "+strconv.FormatInt(l.MaxBytes, 10)+
		" bytes (BUILD_LOG_MAX_BYTES): the rest of this build's output is dropped.", time.Now())
}

// liveLogStore keeps the logs of builds until they are archived: what
// workers and the manager append, read back by position, and wake-ups for
// watchers on any server sharing the store. It applies LogLimits.
//
// Two implementations pass one suite (logstore_test.go): redisLogs, for
// servers sharing a Redis, and fileLogs, for the embedded configuration,
// whose Redis lives in the server's heap.
type liveLogStore interface {
	// append stores entries made by the manager; they are kept past the
	// limits.
	append(ctx context.Context, id string, entries ...LogEntry) error
	// appendSeq stores worker entries with their sequence numbers,
	// skipping those at or below the highest one stored (a batch resent
	// after a lost acknowledgement), and returns that highest number.
	appendSeq(ctx context.Context, id string, seqs []int64, entries []LogEntry) (int64, error)
	// storedSeq is the highest worker sequence number stored.
	storedSeq(ctx context.Context, id string) (int64, error)
	// resetSeq forgets the worker sequence so that the next attempt's
	// worker, which counts from 1 again, is not deduplicated away.
	resetSeq(ctx context.Context, id string) error
	// length is the number of entries stored.
	length(ctx context.Context, id string) (int, error)
	// read calls fn with the entries from start in order, at most limit of
	// them (limit < 0: up to the end), holding few in memory at a time. It
	// stops at fn's first error and returns it.
	read(ctx context.Context, id string, start, limit int, fn func(LogEntry) error) error
	// watch registers a watcher woken when the log grows or ends; the
	// returned function removes it.
	watch(ctx context.Context, id string) (*watcher, func(), error)
	// publishEnd wakes the build's watchers for the last time.
	publishEnd(ctx context.Context, id string) error
	// drop deletes the log (once archived).
	drop(ctx context.Context, id string) error
	close() error
}

type watcher struct {
	wake chan struct{} // capacity 1: wake-ups coalesce
	mu   sync.Mutex
	end  bool
}

func newWatcher() *watcher { return &watcher{wake: make(chan struct{}, 1)} }

func (w *watcher) notify(end bool) {
	if end {
		w.mu.Lock()
		w.end = true
		w.mu.Unlock()
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) ended() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.end
}

// The archive of a build's log is gzip-compressed JSON lines: a header
// giving the number of entries, then one entry per line, so that a page
// from the middle is found by counting lines, and the length is known
// without reading the entries. Archives of earlier versions hold one JSON
// array; they are still read.
type archiveHeader struct {
	Version int `json:"berth_build_log"`
	Total   int `json:"total"`
}

const archiveVersion = 1

// archive moves the live log into blob storage, streaming it through.
func (m *Manager) archive(ctx context.Context, b *store.Build) error {
	ref, err := m.writeArchive(ctx, b.ID)
	if err != nil {
		return err
	}
	if err := m.st.SetBuildLogsArchive(ctx, b.ID, ref); err != nil {
		return err
	}
	b.LogsArchive = ref
	return m.logs.drop(ctx, b.ID)
}

// writeArchive writes the live log into blob storage and returns the
// digest naming it.
func (m *Manager) writeArchive(ctx context.Context, id string) (string, error) {
	total, err := m.logs.length(ctx, id)
	if err != nil {
		return "", err
	}
	pr, pw := io.Pipe()
	encoded := make(chan struct{})
	go func() {
		defer close(encoded)
		pw.CloseWithError(m.encodeArchive(ctx, id, total, pw))
	}()
	ref, _, err := putBlob(ctx, m.o.Blobs, "buildlog-"+id, pr, -1)
	// A failed upload leaves the encoder blocked on the pipe: free it.
	pr.CloseWithError(errors.New("archive upload ended"))
	<-encoded
	if err != nil {
		return "", fmt.Errorf("archive build log: %w", err)
	}
	return ref, nil
}

func (m *Manager) encodeArchive(ctx context.Context, id string, total int, w io.Writer) error {
	zw := gzip.NewWriter(w)
	bw := bufio.NewWriterSize(zw, 64<<10)
	header, err := json.Marshal(archiveHeader{Version: archiveVersion, Total: total})
	if err != nil {
		return err
	}
	bw.Write(header)
	bw.WriteByte('\n')
	n := 0
	err = m.logs.read(ctx, id, 0, total, func(e LogEntry) error {
		line, err := json.Marshal(e)
		if err != nil {
			return err
		}
		bw.Write(line)
		n++
		return bw.WriteByte('\n')
	})
	if err == nil && n != total {
		err = fmt.Errorf("the live log of build %s holds %d entries, not %d", id, n, total)
	}
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return zw.Close()
}

// archiveReader reads an archived log forward.
type archiveReader struct {
	rc    io.ReadCloser
	zr    *gzip.Reader
	br    *bufio.Reader
	total int
	// legacy decodes an archive of the JSON-array format.
	legacy *json.Decoder
}

// openArchive opens an archived log and reads its length.
func openArchive(ctx context.Context, d storage.Driver, ref string) (*archiveReader, error) {
	a, err := openArchiveStream(ctx, d, ref)
	if err != nil {
		return nil, err
	}
	first, err := a.br.Peek(1)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("read log archive %s: %w", ref, err)
	}
	if first[0] == '[' {
		return openLegacyArchive(ctx, d, ref, a)
	}
	line, err := a.line()
	var h archiveHeader
	if err == nil {
		err = json.Unmarshal(line, &h)
	}
	if err == nil && (h.Version != archiveVersion || h.Total < 0) {
		err = fmt.Errorf("unknown format version %d", h.Version)
	}
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("read log archive %s: %w", ref, err)
	}
	a.total = h.Total
	return a, nil
}

func openArchiveStream(ctx context.Context, d storage.Driver, ref string) (*archiveReader, error) {
	rc, _, err := d.Open(ctx, digest.Digest(ref))
	if err != nil {
		return nil, fmt.Errorf("open log archive %s: %w", ref, err)
	}
	zr, err := gzip.NewReader(rc)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("read log archive %s: %w", ref, err)
	}
	return &archiveReader{rc: rc, zr: zr, br: bufio.NewReaderSize(zr, 64<<10)}, nil
}

// openLegacyArchive counts the entries of a JSON-array archive in a first
// pass, then returns a at its first entry.
func openLegacyArchive(ctx context.Context, d storage.Driver, ref string, a *archiveReader) (*archiveReader, error) {
	counter, err := openArchiveStream(ctx, d, ref)
	if err != nil {
		a.Close()
		return nil, err
	}
	defer counter.Close()
	for _, r := range []*archiveReader{counter, a} {
		r.legacy = json.NewDecoder(r.br)
		if _, err := r.legacy.Token(); err != nil {
			a.Close()
			return nil, fmt.Errorf("read log archive %s: %w", ref, err)
		}
	}
	for counter.legacy.More() {
		if err := counter.legacy.Decode(&struct{}{}); err != nil {
			a.Close()
			return nil, fmt.Errorf("read log archive %s: %w", ref, err)
		}
		a.total++
	}
	return a, nil
}

// line returns the next line, without its newline. It is valid until the
// next call.
func (a *archiveReader) line() ([]byte, error) {
	b, err := a.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := bytes.Clone(b)
		for errors.Is(err, bufio.ErrBufferFull) {
			b, err = a.br.ReadSlice('\n')
			long = append(long, b...)
		}
		b = long
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b[:len(b)-1], nil
}

// skip passes over n entries.
func (a *archiveReader) skip(n int) error {
	for range n {
		if a.legacy != nil {
			if err := a.legacy.Decode(&struct{}{}); err != nil {
				return err
			}
			continue
		}
		for {
			_, err := a.br.ReadSlice('\n')
			if err == nil {
				break
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				return err
			}
		}
	}
	return nil
}

// next decodes the next entry.
func (a *archiveReader) next() (LogEntry, error) {
	var e LogEntry
	if a.legacy != nil {
		return e, a.legacy.Decode(&e)
	}
	line, err := a.line()
	if err != nil {
		return e, err
	}
	return e, json.Unmarshal(line, &e)
}

func (a *archiveReader) Close() error {
	return errors.Join(a.zr.Close(), a.rc.Close())
}

// errStopRead ends a store read early when the consumer stops.
var errStopRead = errors.New("read stopped")

// logSource is where a build's log is read from: its archive once it ended
// and was archived, the live store until then.
type logSource struct {
	total   int
	archive *archiveReader
}

func (s *logSource) close() {
	if s.archive != nil {
		s.archive.Close()
	}
}

func (m *Manager) openLog(ctx context.Context, id string) (*logSource, error) {
	for try := 0; ; try++ {
		b, err := m.st.GetBuild(ctx, id)
		if err != nil {
			return nil, err
		}
		if b.LogsArchive != "" {
			a, err := openArchive(ctx, m.o.Blobs, b.LogsArchive)
			if err != nil {
				return nil, err
			}
			return &logSource{total: a.total, archive: a}, nil
		}
		n, err := m.logs.length(ctx, id)
		if err != nil {
			return nil, err
		}
		// An empty live log of an ended build may have just been archived.
		if n > 0 || !b.Phase.Terminal() || try == 2 {
			return &logSource{total: n}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LogLength is the number of entries in the build's log.
func (m *Manager) LogLength(ctx context.Context, id string) (int, error) {
	src, err := m.openLog(ctx, id)
	if err != nil {
		return 0, err
	}
	src.close()
	return src.total, nil
}

// ReadLog calls page once, with the length of the build's log and its
// entries from start, at most limit of them (limit < 0: to the end of the
// log as long as page was told). They come from the live log while the
// build runs and from the archive once it ended, a few at a time: nothing
// holds the whole log in memory. entries may be ranged over once, during
// page; it yields an error and stops if the log cannot be read.
func (m *Manager) ReadLog(ctx context.Context, id string, start, limit int, page func(total int, entries iter.Seq2[LogEntry, error]) error) error {
	start = max(start, 0)
	src, err := m.openLog(ctx, id)
	if err != nil {
		return err
	}
	defer src.close()
	count := max(src.total-start, 0)
	if limit >= 0 {
		count = min(count, limit)
	}
	return page(src.total, func(yield func(LogEntry, error) bool) {
		if count == 0 {
			return
		}
		if src.archive != nil {
			yieldArchive(src.archive, start, count, yield)
			return
		}
		read, stopped := 0, false
		err := m.logs.read(ctx, id, start, count, func(e LogEntry) error {
			if !yield(e, nil) {
				stopped = true
				return errStopRead
			}
			read++
			return nil
		})
		switch {
		case stopped:
			return
		case err != nil:
			yield(LogEntry{}, err)
			return
		case read == count:
			return
		}
		// The build ended and its log was archived while being read: go on
		// from the archive.
		b, err := m.st.GetBuild(ctx, id)
		if err == nil && b.LogsArchive == "" {
			err = fmt.Errorf("the live log of build %s ended after %d of %d entries", id, start+read, src.total)
		}
		if err != nil {
			yield(LogEntry{}, err)
			return
		}
		a, err := openArchive(ctx, m.o.Blobs, b.LogsArchive)
		if err != nil {
			yield(LogEntry{}, err)
			return
		}
		defer a.Close()
		yieldArchive(a, start+read, count-read, yield)
	})
}

func yieldArchive(a *archiveReader, start, count int, yield func(LogEntry, error) bool) {
	if err := a.skip(start); err != nil {
		yield(LogEntry{}, fmt.Errorf("read log archive: %w", err))
		return
	}
	for i := range count {
		e, err := a.next()
		if err != nil {
			yield(LogEntry{}, fmt.Errorf("read log archive: %w", err))
			return
		}
		e.Index = start + i
		if !yield(e, nil) {
			return
		}
	}
}

// Subscribe streams the build's log from index from: the entries already
// stored, then each new one as it arrives, on any server instance. The
// channel closes once the build ended and every entry was sent, or when
// cancel is called or ctx ends.
func (m *Manager) Subscribe(ctx context.Context, id string, from int) (<-chan LogEntry, func(), error) {
	if _, err := m.st.GetBuild(ctx, id); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w, remove, err := m.logs.watch(ctx, id)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	out := make(chan LogEntry, 64)
	go func() {
		defer close(out)
		defer remove()
		next := max(from, 0)
		send := func(e LogEntry) error {
			select {
			case out <- e:
				next = e.Index + 1
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		checkEnd := true
		for {
			if err := m.logs.read(ctx, id, next, -1, send); err != nil {
				if ctx.Err() != nil {
					return
				}
				m.log.Warn("reading build log for a watcher failed", "build", id, "err", err)
			}
			if checkEnd || w.ended() {
				b, err := m.st.GetBuild(ctx, id)
				if err == nil && b.Phase.Terminal() {
					err := m.ReadLog(ctx, id, next, -1, func(_ int, entries iter.Seq2[LogEntry, error]) error {
						for e, err := range entries {
							if err != nil {
								return err
							}
							if err := send(e); err != nil {
								return err
							}
						}
						return nil
					})
					if err != nil && ctx.Err() == nil {
						m.log.Warn("reading the end of a build log for a watcher failed", "build", id, "err", err)
					}
					return
				}
			}
			checkEnd = false
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			case <-tick.C:
				// A missed end announcement (Redis reconnect) is caught here.
				checkEnd = true
			}
		}
	}()
	return out, cancel, nil
}

// errTooLarge reports a blob over the limit given to putBlob.
var errTooLarge = errors.New("too large")

// putBlob streams r into blob storage under its SHA-256 digest. limit < 0
// means none; past limit, nothing is kept and errTooLarge is returned.
func putBlob(ctx context.Context, d storage.Driver, uploadID string, r io.Reader, limit int64) (string, int64, error) {
	w, err := d.Append(ctx, uploadID, 0)
	if err != nil {
		return "", 0, fmt.Errorf("stage blob: %w", err)
	}
	h := sha256.New()
	src := r
	if limit >= 0 {
		src = io.LimitReader(r, limit+1)
	}
	n, err := io.Copy(io.MultiWriter(w, h), src)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil && limit >= 0 && n > limit {
		err = fmt.Errorf("%w: over %d bytes", errTooLarge, limit)
	}
	if err != nil {
		_ = d.Abort(context.WithoutCancel(ctx), uploadID)
		return "", 0, fmt.Errorf("write blob: %w", err)
	}
	dgst := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := d.Commit(ctx, uploadID, digest.Digest(dgst), n); err != nil {
		_ = d.Abort(context.WithoutCancel(ctx), uploadID)
		return "", 0, fmt.Errorf("commit blob: %w", err)
	}
	return dgst, n, nil
}
