package buildmanager

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"

	"github.com/berth-dev/berth/registry/storage"
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

// appendScript appends entries to a build's live log and wakes watchers
// with the new length, atomically, so that published lengths only grow.
// In "seq" mode ARGV holds (sequence, entry) pairs and entries at or below
// the stored sequence are skipped: a worker resending a batch after a lost
// acknowledgement does not duplicate lines.
var appendScript = redis.NewScript(`
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local pushed = 0
if ARGV[2] == 'seq' then
  for i = 3, #ARGV, 2 do
    local s = tonumber(ARGV[i])
    if s > last then
      redis.call('RPUSH', KEYS[1], ARGV[i + 1])
      last = s
      pushed = pushed + 1
    end
  end
  redis.call('SET', KEYS[2], last, 'EX', ARGV[1])
else
  for i = 3, #ARGV do
    redis.call('RPUSH', KEYS[1], ARGV[i])
    pushed = pushed + 1
  end
end
local n = redis.call('LLEN', KEYS[1])
if pushed > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('PUBLISH', KEYS[3], n)
end
return {last, n}
`)

// endMessage is published on a build's log channel once it is terminal.
const endMessage = "end"

// liveLogs keeps running builds' logs in Redis: a list per build, a
// sequence key for deduplication and a pub/sub channel to wake watchers on
// any server instance.
type liveLogs struct {
	rc     redis.UniversalClient
	prefix string
}

// The hash tag keeps a build's keys in one Redis Cluster slot (the script
// touches them together).
func (l *liveLogs) listKey(id string) string { return l.prefix + "buildlogs:{" + id + "}" }
func (l *liveLogs) seqKey(id string) string  { return l.prefix + "buildlogs:{" + id + "}:seq" }
func (l *liveLogs) channel(id string) string { return l.prefix + "buildlogs:{" + id + "}:live" }

// append stores entries made by the manager.
func (l *liveLogs) append(ctx context.Context, id string, entries ...LogEntry) error {
	args := []any{int(logTTL / time.Second), "plain"}
	for _, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		args = append(args, b)
	}
	err := appendScript.Run(ctx, l.rc, []string{l.listKey(id), l.seqKey(id), l.channel(id)}, args...).Err()
	if err != nil {
		return fmt.Errorf("append build log: %w", err)
	}
	return nil
}

// appendSeq stores worker entries with their sequence numbers and returns
// the highest sequence number stored so far.
func (l *liveLogs) appendSeq(ctx context.Context, id string, seqs []int64, entries []LogEntry) (int64, error) {
	args := []any{int(logTTL / time.Second), "seq"}
	for i, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			return 0, err
		}
		args = append(args, seqs[i], b)
	}
	res, err := appendScript.Run(ctx, l.rc, []string{l.listKey(id), l.seqKey(id), l.channel(id)}, args...).Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("append build log: %w", err)
	}
	return res[0], nil
}

// storedSeq is the highest worker sequence number stored.
func (l *liveLogs) storedSeq(ctx context.Context, id string) (int64, error) {
	n, err := l.rc.Get(ctx, l.seqKey(id)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// resetSeq forgets the worker sequence so that the next attempt's worker,
// which counts from 1 again, is not deduplicated away.
func (l *liveLogs) resetSeq(ctx context.Context, id string) error {
	return l.rc.Del(ctx, l.seqKey(id)).Err()
}

// read returns the entries from start and the log's length.
func (l *liveLogs) read(ctx context.Context, id string, start int) ([]LogEntry, int, error) {
	pipe := l.rc.Pipeline()
	rng := pipe.LRange(ctx, l.listKey(id), int64(start), -1)
	n := pipe.LLen(ctx, l.listKey(id))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, fmt.Errorf("read build log: %w", err)
	}
	raw := rng.Val()
	out := make([]LogEntry, 0, len(raw))
	for i, s := range raw {
		var e LogEntry
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			return nil, 0, fmt.Errorf("read build log entry %d: %w", start+i, err)
		}
		e.Index = start + i
		out = append(out, e)
	}
	return out, int(n.Val()), nil
}

func (l *liveLogs) drop(ctx context.Context, id string) error {
	return l.rc.Del(ctx, l.listKey(id), l.seqKey(id)).Err()
}

func (l *liveLogs) publishEnd(ctx context.Context, id string) error {
	return l.rc.Publish(ctx, l.channel(id), endMessage).Err()
}

// archiveLog writes entries as gzip-compressed JSON into blob storage and
// returns the digest naming it.
func archiveLog(ctx context.Context, d storage.Driver, id string, entries []LogEntry) (string, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if entries == nil {
		entries = []LogEntry{}
	}
	if err := json.NewEncoder(zw).Encode(entries); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	dgst, _, err := putBlob(ctx, d, "buildlog-"+id, &buf, -1)
	return dgst, err
}

// readArchive loads an archived log.
func readArchive(ctx context.Context, d storage.Driver, ref string) ([]LogEntry, error) {
	rc, _, err := d.Open(ctx, digest.Digest(ref))
	if err != nil {
		return nil, fmt.Errorf("open log archive %s: %w", ref, err)
	}
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		return nil, fmt.Errorf("read log archive %s: %w", ref, err)
	}
	var entries []LogEntry
	if err := json.NewDecoder(zr).Decode(&entries); err != nil {
		return nil, fmt.Errorf("read log archive %s: %w", ref, err)
	}
	for i := range entries {
		entries[i].Index = i
	}
	return entries, nil
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

// logHub shares one Redis subscription among every local watcher of every
// build, waking each watcher when its build's log grows or ends.
type logHub struct {
	logs *liveLogs
	log  *slog.Logger

	mu       sync.Mutex
	ps       *redis.PubSub
	watchers map[string]map[*watcher]struct{} // by channel
}

type watcher struct {
	wake chan struct{} // capacity 1: wake-ups coalesce
	mu   sync.Mutex
	end  bool
}

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

// add registers a watcher of build id; the returned function removes it.
func (h *logHub) add(ctx context.Context, id string) (*watcher, func(), error) {
	ch := h.logs.channel(id)
	w := &watcher{wake: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ps == nil {
		h.ps = h.logs.rc.Subscribe(context.WithoutCancel(ctx))
		go h.dispatch(h.ps)
	}
	if h.watchers[ch] == nil {
		// Subscribe waits for Redis to confirm, so no publication after
		// add returns is missed.
		if err := h.ps.Subscribe(ctx, ch); err != nil {
			return nil, nil, fmt.Errorf("subscribe to build log: %w", err)
		}
		h.watchers[ch] = map[*watcher]struct{}{}
	}
	h.watchers[ch][w] = struct{}{}
	return w, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.watchers[ch], w)
		if len(h.watchers[ch]) == 0 {
			delete(h.watchers, ch)
			if err := h.ps.Unsubscribe(context.Background(), ch); err != nil {
				h.log.Warn("unsubscribe from build log failed", "channel", ch, "err", err)
			}
		}
	}, nil
}

func (h *logHub) dispatch(ps *redis.PubSub) {
	for msg := range ps.Channel(redis.WithChannelSize(1024)) {
		h.mu.Lock()
		for w := range h.watchers[msg.Channel] {
			w.notify(msg.Payload == endMessage)
		}
		h.mu.Unlock()
	}
}

func (h *logHub) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ps == nil {
		return nil
	}
	err := h.ps.Close()
	h.ps = nil
	return err
}
