package buildmanager

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/buildmanager/buildmanagertest"
	"github.com/berth-dev/berth/buildmanager/queue"
)

// eachLogStore runs fn on every live-log store: files, Redis over the
// embedded server, and the real Redis (BERTH_TEST_REDIS_ADDR, default
// 127.0.0.1:6379; BERTH_TEST_REDIS=skip leaves it out).
func eachLogStore(t *testing.T, limits LogLimits, fn func(t *testing.T, s liveLogStore)) {
	t.Run("file", func(t *testing.T) {
		s, err := newFileLogs(filepath.Join(t.TempDir(), "logs"), limits)
		if err != nil {
			t.Fatal(err)
		}
		fn(t, s)
	})
	t.Run("miniredis", func(t *testing.T) {
		s := newRedisLogs(buildmanagertest.Redis(t), "t-", limits, slog.New(slog.DiscardHandler))
		t.Cleanup(func() { s.close() })
		fn(t, s)
	})
	if os.Getenv("BERTH_TEST_REDIS") == "skip" {
		return
	}
	t.Run("redis", func(t *testing.T) {
		addr := os.Getenv("BERTH_TEST_REDIS_ADDR")
		if addr == "" {
			addr = "127.0.0.1:6379"
		}
		rc, err := queue.RedisConfig{Host: addr}.Dial(context.Background())
		if err != nil {
			t.Fatalf("Redis unreachable (BERTH_TEST_REDIS=skip to skip): %v", err)
		}
		t.Cleanup(func() { rc.Close() })
		s := newRedisLogs(rc, "t"+randHex(6)+"-", limits, slog.New(slog.DiscardHandler))
		t.Cleanup(func() { s.close() })
		fn(t, s)
	})
}

// readAll reads entries [start, start+limit) of a store's log.
func readAll(t *testing.T, s liveLogStore, id string, start, limit int) []LogEntry {
	t.Helper()
	var out []LogEntry
	if err := s.read(context.Background(), id, start, limit, func(e LogEntry) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func messages(es []LogEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Message
	}
	return out
}

func workerEntries(from, to int64, msg func(int64) string) ([]int64, []LogEntry) {
	var seqs []int64
	var es []LogEntry
	for s := from; s <= to; s++ {
		seqs = append(seqs, s)
		es = append(es, newEntry("", msg(s), time.Now()))
	}
	return seqs, es
}

func TestLogStoreAppendRead(t *testing.T) {
	eachLogStore(t, LogLimits{}, func(t *testing.T, s liveLogStore) {
		ctx := context.Background()
		id := "b-" + randHex(4)
		if n, err := s.length(ctx, id); n != 0 || err != nil {
			t.Fatalf("length of no log = %d, %v", n, err)
		}
		if got := readAll(t, s, id, 0, -1); len(got) != 0 {
			t.Fatalf("read of no log: %v", got)
		}
		if err := s.append(ctx, id, newEntry(LogPhase, "build-scheduled", time.Now())); err != nil {
			t.Fatal(err)
		}
		line := func(s int64) string { return fmt.Sprintf("line %d", s) }
		seqs, es := workerEntries(1, 300, line)
		if last, err := s.appendSeq(ctx, id, seqs, es); last != 300 || err != nil {
			t.Fatalf("appendSeq = %d, %v", last, err)
		}
		// A batch resent after a lost acknowledgement, overlapping new lines.
		seqs, es = workerEntries(290, 310, line)
		if last, err := s.appendSeq(ctx, id, seqs, es); last != 310 || err != nil {
			t.Fatalf("appendSeq of a resent batch = %d, %v", last, err)
		}
		if n, _ := s.length(ctx, id); n != 311 {
			t.Fatalf("length %d, want 311 (duplicates stored?)", n)
		}
		if seq, err := s.storedSeq(ctx, id); seq != 310 || err != nil {
			t.Fatalf("storedSeq = %d, %v", seq, err)
		}
		all := readAll(t, s, id, 0, -1)
		if len(all) != 311 || all[0].Type != LogPhase || all[0].Data["datetime"] == nil {
			t.Fatalf("read %d entries, first %+v", len(all), all[0])
		}
		for i, e := range all[1:] {
			if e.Message != line(int64(i+1)) || e.Index != i+1 {
				t.Fatalf("entry %d = %q (index %d)", i+1, e.Message, e.Index)
			}
		}
		page := readAll(t, s, id, 200, 130)
		if len(page) != 111 || page[0].Index != 200 || page[0].Message != "line 200" || page[110].Message != "line 310" {
			t.Fatalf("read(200, 130) = %d entries: %v…", len(page), messages(page[:min(3, len(page))]))
		}
		if got := readAll(t, s, id, 5, 2); len(got) != 2 || got[0].Message != "line 5" || got[1].Message != "line 6" {
			t.Fatalf("read(5, 2) = %v", messages(got))
		}
		if got := readAll(t, s, id, 311, -1); len(got) != 0 {
			t.Fatalf("read past the end = %v", messages(got))
		}
		if got := readAll(t, s, id, 0, 0); len(got) != 0 {
			t.Fatalf("read(0, 0) = %d entries", len(got))
		}
		// A consumer's error stops the read.
		stop := fmt.Errorf("enough")
		var seen int
		if err := s.read(ctx, id, 0, -1, func(LogEntry) error { seen++; return stop }); err != stop || seen != 1 {
			t.Fatalf("read after the consumer's error: %d entries, %v", seen, err)
		}

		// The next attempt's worker counts from 1 again.
		if err := s.resetSeq(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := s.append(ctx, id, newEntry(LogPhase, "build-scheduled", time.Now())); err != nil {
			t.Fatal(err)
		}
		seqs, es = workerEntries(1, 2, func(s int64) string { return fmt.Sprintf("retry %d", s) })
		if last, err := s.appendSeq(ctx, id, seqs, es); last != 2 || err != nil {
			t.Fatalf("appendSeq after resetSeq = %d, %v", last, err)
		}
		if got := readAll(t, s, id, 312, -1); len(got) != 2 || got[1].Message != "retry 2" {
			t.Fatalf("second attempt's lines: %v", messages(got))
		}

		if err := s.drop(ctx, id); err != nil {
			t.Fatal(err)
		}
		if n, err := s.length(ctx, id); n != 0 || err != nil {
			t.Fatalf("length after drop = %d, %v", n, err)
		}
		if seq, _ := s.storedSeq(ctx, id); seq != 0 {
			t.Fatalf("storedSeq after drop = %d", seq)
		}
		if err := s.append(ctx, id, newEntry("", "again", time.Now())); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, id, 0, -1); len(got) != 1 || got[0].Message != "again" {
			t.Fatalf("log after drop and append: %v", messages(got))
		}
	})
}

// TestLogStoreLimits: past a limit one marker says so, the worker's
// output is dropped (its sequence still acknowledged, so it does not
// resend), the manager's entries are kept, and long lines are cut.
func TestLogStoreLimits(t *testing.T) {
	limits := LogLimits{MaxBytes: 600, MaxLines: 20, MaxLineBytes: 50}
	eachLogStore(t, limits, func(t *testing.T, s liveLogStore) {
		ctx := context.Background()
		t.Run("lines", func(t *testing.T) {
			id := "lines-" + randHex(4)
			seqs, es := workerEntries(1, 30, func(s int64) string { return fmt.Sprintf("l%d", s) })
			if last, err := s.appendSeq(ctx, id, seqs[:10], es[:10]); last != 10 || err != nil {
				t.Fatal(last, err)
			}
			if last, err := s.appendSeq(ctx, id, seqs[10:], es[10:]); last != 30 || err != nil {
				t.Fatalf("appendSeq past the limit = %d, %v", last, err)
			}
			seqs, es = workerEntries(31, 40, func(s int64) string { return "later" })
			if last, err := s.appendSeq(ctx, id, seqs, es); last != 40 || err != nil {
				t.Fatalf("appendSeq after the limit = %d, %v", last, err)
			}
			if err := s.append(ctx, id, newEntry(LogPhase, "complete", time.Now())); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, s, id, 0, -1)
			if len(got) != 22 || got[19].Message != "l20" || got[21].Message != "complete" {
				t.Fatalf("log of %d entries: %v", len(got), messages(got))
			}
			if m := got[20]; m.Type != LogError || !strings.Contains(m.Message, "limit of 20 lines") || !strings.Contains(m.Message, "BUILD_LOG_MAX_LINES") {
				t.Fatalf("marker %+v", m)
			}
		})
		t.Run("bytes", func(t *testing.T) {
			id := "bytes-" + randHex(4)
			seqs, es := workerEntries(1, 10, func(s int64) string { return strings.Repeat("x", 40) })
			if _, err := s.appendSeq(ctx, id, seqs, es); err != nil { // 400 bytes
				t.Fatal(err)
			}
			if err := s.append(ctx, id, newEntry("", strings.Repeat("m", 45), time.Now())); err != nil {
				t.Fatal(err) // 445: the manager's lines count too
			}
			seqs, es = workerEntries(11, 30, func(s int64) string { return strings.Repeat("y", 45) })
			if _, err := s.appendSeq(ctx, id, seqs, es); err != nil { // 3 more fit (580), the 4th does not
				t.Fatal(err)
			}
			got := readAll(t, s, id, 0, -1)
			if len(got) != 15 {
				t.Fatalf("log of %d entries, want 15: %v", len(got), messages(got))
			}
			if m := got[14]; m.Type != LogError || !strings.Contains(m.Message, "limit of 600 bytes") {
				t.Fatalf("marker %+v", m)
			}
			if seq, _ := s.storedSeq(ctx, id); seq != 30 {
				t.Fatalf("storedSeq %d, want 30", seq)
			}
		})
		t.Run("line length", func(t *testing.T) {
			id := "long-" + randHex(4)
			long := strings.Repeat("é", 40) // 80 bytes; the limit falls inside a character
			if _, err := s.appendSeq(ctx, id, []int64{1}, []LogEntry{newEntry("", long, time.Now())}); err != nil {
				t.Fatal(err)
			}
			if err := s.append(ctx, id, newEntry(LogError, strings.Repeat("e", 60), time.Now())); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, s, id, 0, -1)
			want := strings.Repeat("é", 25) + " [line cut: 30 more bytes over the limit of 50 bytes per line (BUILD_LOG_MAX_LINE_BYTES)]"
			if len(got) != 2 || got[0].Message != want {
				t.Fatalf("cut line %q, want %q", got[0].Message, want)
			}
			if !strings.HasPrefix(got[1].Message, strings.Repeat("e", 50)+" [line cut: 10 more bytes") {
				t.Fatalf("manager's long line %q", got[1].Message)
			}
		})
	})
}

func TestLogStoreWatch(t *testing.T) {
	eachLogStore(t, LogLimits{}, func(t *testing.T, s liveLogStore) {
		ctx := context.Background()
		id := "w-" + randHex(4)
		w, remove, err := s.watch(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		defer remove()
		other, removeOther, err := s.watch(ctx, "other-"+randHex(4))
		if err != nil {
			t.Fatal(err)
		}
		defer removeOther()
		woken := func(w *watcher) bool {
			select {
			case <-w.wake:
				return true
			case <-time.After(2 * time.Second):
				return false
			}
		}
		if _, err := s.appendSeq(ctx, id, []int64{1}, []LogEntry{newEntry("", "x", time.Now())}); err != nil {
			t.Fatal(err)
		}
		if !woken(w) || w.ended() {
			t.Fatal("watcher not woken by an append")
		}
		if err := s.publishEnd(ctx, id); err != nil {
			t.Fatal(err)
		}
		if !woken(w) || !w.ended() {
			t.Fatal("watcher not told of the end")
		}
		select {
		case <-other.wake:
			t.Fatal("a watcher of another build was woken")
		case <-time.After(50 * time.Millisecond):
		}
	})
}

// TestFileLogsRestart: a new store over the directory (a restarted
// server) carries on where the last one stopped, after cutting what a
// crash left half written.
func TestFileLogsRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	limits := LogLimits{MaxLines: 5}
	s, err := newFileLogs(dir, limits)
	if err != nil {
		t.Fatal(err)
	}
	seqs, es := workerEntries(1, 8, func(s int64) string { return fmt.Sprintf("l%d", s) })
	if _, err := s.appendSeq(ctx, "b1", seqs, es); err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of the next append.
	f, err := os.OpenFile(filepath.Join(dir, "b1.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"message":"torn`)
	f.Close()
	f, _ = os.OpenFile(filepath.Join(dir, "b1.idx"), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(make([]byte, recordSize/2))
	f.Close()

	s2, err := newFileLogs(dir, limits)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := s2.length(ctx, "b1"); n != 6 {
		t.Fatalf("length after restart %d, want 6", n)
	}
	// The last record is the marker's, stored for line 6; lines 7 and 8,
	// dropped, would be dropped again if resent.
	if seq, _ := s2.storedSeq(ctx, "b1"); seq != 6 {
		t.Fatalf("storedSeq after restart %d, want 6", seq)
	}
	// Still over the limit: no second marker.
	seqs, es = workerEntries(9, 10, func(s int64) string { return "after" })
	if _, err := s2.appendSeq(ctx, "b1", seqs, es); err != nil {
		t.Fatal(err)
	}
	if err := s2.append(ctx, "b1", newEntry(LogPhase, "complete", time.Now())); err != nil {
		t.Fatal(err)
	}
	got := messages(readAll(t, s2, "b1", 0, -1))
	if len(got) != 7 || got[4] != "l5" || !strings.Contains(got[5], "limit of 5 lines") || got[6] != "complete" {
		t.Fatalf("log after restart: %q", got)
	}
	for _, id := range []string{"../b1", "b1/x", "", "b1.log"} {
		if err := s2.append(ctx, id, newEntry("", "x", time.Now())); err == nil {
			t.Errorf("build ID %q accepted as a file name", id)
		}
	}
	if info, err := os.Stat(filepath.Join(dir, "b1.log")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("log file mode %v, %v", info.Mode(), err)
	}
}

// FuzzLogLineCut: a cut line keeps a prefix of at most MaxLineBytes bytes,
// never splits a character of valid text, and says how much went.
func FuzzLogLineCut(f *testing.F) {
	f.Add("plain line", 4)
	f.Add(strings.Repeat("é", 40), 51)
	f.Add("\xff\xfe\xfd", 1)
	f.Fuzz(func(t *testing.T, msg string, max int) {
		if max < 1 || max > 1<<16 {
			return
		}
		e := LogEntry{Message: msg}
		LogLimits{MaxLineBytes: max}.cut(&e)
		if len(msg) <= max {
			if e.Message != msg {
				t.Fatalf("a line within the limit changed: %q", e.Message)
			}
			return
		}
		kept, note, ok := strings.Cut(e.Message, " [line cut: ")
		if !ok || len(kept) > max || !strings.HasPrefix(msg, kept) {
			t.Fatalf("cut %q to %q", msg, e.Message)
		}
		if !strings.HasPrefix(note, strconv.Itoa(len(msg)-len(kept))+" more bytes") {
			t.Fatalf("note %q for %d bytes cut", note, len(msg)-len(kept))
		}
		if utf8.ValidString(msg) && !utf8.ValidString(kept) {
			t.Fatalf("cut inside a character: %q", kept)
		}
	})
}
