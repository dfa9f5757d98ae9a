package buildmanager

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// fileLogs keeps live logs in files under a directory of the server's: the
// embedded configuration, where Redis lives in the server's memory and a
// build printing gigabytes would take the server down with it. Only one
// process uses a directory, so watchers are woken in process.
//
// A build's log is two files: <id>.log holds one JSON entry per line, and
// <id>.idx one fixed-size record per entry (see record), so that entry N is
// found without reading those before it and the counters survive a
// restart. Entries are written before their records, so a reader never
// sees a record whose entry is not there; after a crash, load cuts both
// files back to the last whole record.
type fileLogs struct {
	dir    string
	limits LogLimits

	mu       sync.Mutex
	builds   map[string]*fileLog
	watchers map[string]map[*watcher]struct{}
}

// fileLog is the state of one build's log, loaded on first use.
type fileLog struct {
	mu      sync.Mutex
	n       int   // entries
	size    int64 // bytes of the .log file
	bytes   int64 // message bytes, for MaxBytes
	seq     int64 // highest worker sequence number stored
	capped  bool  // a limit was reached: worker output is dropped
	dropped bool  // drop removed the files: look the state up again
}

// record is an entry's index record: where its line ends in the .log file
// and the log's counters after it.
type record struct {
	End   int64
	Bytes int64
	Seq   int64
	Flags int64
}

const (
	recordSize   = 32
	recordCapped = 1 << 0
)

func (r record) append(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(r.End))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Bytes))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Seq))
	return binary.LittleEndian.AppendUint64(b, uint64(r.Flags))
}

func parseRecord(b []byte) record {
	return record{
		End:   int64(binary.LittleEndian.Uint64(b[0:])),
		Bytes: int64(binary.LittleEndian.Uint64(b[8:])),
		Seq:   int64(binary.LittleEndian.Uint64(b[16:])),
		Flags: int64(binary.LittleEndian.Uint64(b[24:])),
	}
}

// newFileLogs opens (creating) dir and removes the logs nobody wrote for
// logTTL: builds whose server never archived them.
func newFileLogs(dir string, limits LogLimits) (*fileLogs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("build log directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("build log directory: %w", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("build log directory: %w", err)
	}
	for _, de := range des {
		if info, err := de.Info(); err == nil && time.Since(info.ModTime()) > logTTL {
			_ = os.Remove(filepath.Join(dir, de.Name()))
		}
	}
	return &fileLogs{dir: dir, limits: limits.withDefaults(), builds: map[string]*fileLog{},
		watchers: map[string]map[*watcher]struct{}{}}, nil
}

// path names a build's file. Build IDs are UUIDs; anything that could
// leave the directory is refused.
func (s *fileLogs) path(id, ext string) (string, error) {
	if id == "" || strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
	}) >= 0 {
		return "", fmt.Errorf("build log: invalid build ID %q", id)
	}
	return filepath.Join(s.dir, id+ext), nil
}

// state returns the build's loaded state; nil when create is false and the
// build has no log.
func (s *fileLogs) state(id string, create bool) (*fileLog, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fl := s.builds[id]; fl != nil {
		return fl, nil
	}
	fl, found, err := s.load(id)
	if err != nil {
		return nil, err
	}
	if !found && !create {
		return nil, nil
	}
	s.builds[id] = fl
	return fl, nil
}

// load reads a build's counters from its last whole record and cuts off
// what a crash left half written.
func (s *fileLogs) load(id string) (*fileLog, bool, error) {
	logPath, err := s.path(id, ".log")
	if err != nil {
		return nil, false, err
	}
	idxPath, _ := s.path(id, ".idx")
	idx, err := os.OpenFile(idxPath, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return &fileLog{}, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("load build log: %w", err)
	}
	defer idx.Close()
	info, err := idx.Stat()
	if err != nil {
		return nil, false, fmt.Errorf("load build log: %w", err)
	}
	fl := &fileLog{n: int(info.Size() / recordSize)}
	if fl.n > 0 {
		var b [recordSize]byte
		if _, err := idx.ReadAt(b[:], int64(fl.n-1)*recordSize); err != nil {
			return nil, false, fmt.Errorf("load build log: %w", err)
		}
		r := parseRecord(b[:])
		fl.size, fl.bytes, fl.seq, fl.capped = r.End, r.Bytes, r.Seq, r.Flags&recordCapped != 0
	}
	if err := idx.Truncate(int64(fl.n) * recordSize); err != nil {
		return nil, false, fmt.Errorf("load build log: %w", err)
	}
	if err := os.Truncate(logPath, fl.size); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("load build log: %w", err)
	}
	return fl, true, nil
}

func (s *fileLogs) append(ctx context.Context, id string, entries ...LogEntry) error {
	_, err := s.add(id, nil, entries)
	return err
}

func (s *fileLogs) appendSeq(ctx context.Context, id string, seqs []int64, entries []LogEntry) (int64, error) {
	return s.add(id, seqs, entries)
}

// add stores entries: worker entries when seqs is given (deduplicated and
// limited), the manager's otherwise. It returns the highest worker
// sequence number stored.
func (s *fileLogs) add(id string, seqs []int64, entries []LogEntry) (int64, error) {
	for {
		fl, err := s.state(id, true)
		if err != nil {
			return 0, err
		}
		fl.mu.Lock()
		if fl.dropped {
			fl.mu.Unlock()
			continue
		}
		seq, pushed, err := s.write(id, fl, seqs, entries)
		fl.mu.Unlock()
		if err != nil {
			// The files are the truth: load them again.
			s.mu.Lock()
			if s.builds[id] == fl {
				delete(s.builds, id)
			}
			s.mu.Unlock()
			return 0, fmt.Errorf("append build log: %w", err)
		}
		if pushed {
			s.notify(id, false)
		}
		return seq, nil
	}
}

// write appends to the files of fl, which the caller holds.
func (s *fileLogs) write(id string, fl *fileLog, seqs []int64, entries []LogEntry) (int64, bool, error) {
	var data, recs []byte
	n, size, total, seq, capped := fl.n, fl.size, fl.bytes, fl.seq, fl.capped
	push := func(e LogEntry) error {
		line, err := json.Marshal(e)
		if err != nil {
			return err
		}
		data = append(append(data, line...), '\n')
		n++
		total += int64(len(e.Message))
		r := record{End: size + int64(len(data)), Bytes: total, Seq: seq}
		if capped {
			r.Flags |= recordCapped
		}
		recs = r.append(recs)
		return nil
	}
	for i, e := range entries {
		s.limits.cut(&e)
		if seqs != nil {
			if seqs[i] <= seq {
				continue
			}
			seq = seqs[i]
			if capped {
				continue
			}
			if marker := s.limits.overLimit(n, total, int64(len(e.Message))); marker != nil {
				capped = true
				if err := push(*marker); err != nil {
					return 0, false, err
				}
				continue
			}
		}
		if err := push(e); err != nil {
			return 0, false, err
		}
	}
	if n > fl.n {
		logPath, err := s.path(id, ".log")
		if err != nil {
			return 0, false, err
		}
		idxPath, _ := s.path(id, ".idx")
		if err := writeAt(logPath, data, size); err != nil {
			return 0, false, err
		}
		if err := writeAt(idxPath, recs, int64(fl.n)*recordSize); err != nil {
			return 0, false, err
		}
	}
	pushed := n > fl.n
	fl.n, fl.size, fl.bytes, fl.seq, fl.capped = n, size+int64(len(data)), total, seq, capped
	return seq, pushed, nil
}

func writeAt(path string, b []byte, off int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if off == 0 {
		// A file left by a log dropped meanwhile starts over.
		if err := f.Truncate(0); err != nil {
			f.Close()
			return err
		}
	}
	_, err = f.WriteAt(b, off)
	return errors.Join(err, f.Close())
}

func (s *fileLogs) storedSeq(ctx context.Context, id string) (int64, error) {
	fl, err := s.state(id, false)
	if err != nil || fl == nil {
		return 0, err
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.seq, nil
}

// resetSeq forgets the sequence in memory; the manager's entry that
// always follows (the attempt's build-scheduled phase) records it.
func (s *fileLogs) resetSeq(ctx context.Context, id string) error {
	fl, err := s.state(id, false)
	if err != nil || fl == nil {
		return err
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.seq = 0
	return nil
}

func (s *fileLogs) length(ctx context.Context, id string) (int, error) {
	fl, err := s.state(id, false)
	if err != nil || fl == nil {
		return 0, err
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.n, nil
}

func (s *fileLogs) read(ctx context.Context, id string, start, limit int, fn func(LogEntry) error) error {
	fl, err := s.state(id, false)
	if err != nil || fl == nil {
		return err
	}
	fl.mu.Lock()
	n := fl.n
	fl.mu.Unlock()
	end := n
	if limit >= 0 {
		end = min(n, start+limit)
	}
	if start >= end {
		return nil
	}
	logPath, _ := s.path(id, ".log")
	idxPath, _ := s.path(id, ".idx")
	var from int64
	if start > 0 {
		idx, err := os.Open(idxPath)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // dropped meanwhile
		}
		if err != nil {
			return fmt.Errorf("read build log: %w", err)
		}
		var b [recordSize]byte
		_, err = idx.ReadAt(b[:], int64(start-1)*recordSize)
		idx.Close()
		if err != nil {
			return fmt.Errorf("read build log: %w", err)
		}
		from = parseRecord(b[:]).End
	}
	f, err := os.Open(logPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read build log: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(io.NewSectionReader(f, from, 1<<62))
	for i := start; i < end; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		var e LogEntry
		if err := dec.Decode(&e); err != nil {
			return fmt.Errorf("read build log entry %d: %w", i, err)
		}
		e.Index = i
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (s *fileLogs) watch(ctx context.Context, id string) (*watcher, func(), error) {
	w := newWatcher()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watchers[id] == nil {
		s.watchers[id] = map[*watcher]struct{}{}
	}
	s.watchers[id][w] = struct{}{}
	return w, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.watchers[id], w)
		if len(s.watchers[id]) == 0 {
			delete(s.watchers, id)
		}
	}, nil
}

func (s *fileLogs) notify(id string, end bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers[id] {
		w.notify(end)
	}
}

func (s *fileLogs) publishEnd(ctx context.Context, id string) error {
	s.notify(id, true)
	return nil
}

func (s *fileLogs) drop(ctx context.Context, id string) error {
	logPath, err := s.path(id, ".log")
	if err != nil {
		return err
	}
	idxPath, _ := s.path(id, ".idx")
	fl, err := s.state(id, false)
	if err != nil {
		return err
	}
	if fl != nil {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		fl.dropped = true
	}
	s.mu.Lock()
	delete(s.builds, id)
	s.mu.Unlock()
	var errs []error
	for _, p := range []string{idxPath, logPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *fileLogs) close() error { return nil }
