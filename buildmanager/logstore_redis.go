package buildmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// appendScript appends entries to a build's live log and wakes watchers
// with the new length, atomically, so that published lengths only grow.
//
// KEYS: the list, the meta hash (seq, bytes, capped), the channel.
// ARGV: TTL in seconds, mode, MaxLines, MaxBytes, the two marker entries
// (lines, bytes), then (sequence, message bytes, entry) triples. In "seq"
// mode entries at or below the stored sequence are skipped (a worker
// resending a batch after a lost acknowledgement does not duplicate
// lines), and an entry that would take the log past a limit is replaced
// by the limit's marker, once, after which the worker's output is dropped.
// In "plain" mode (the manager's entries) every entry is kept.
var appendScript = redis.NewScript(`
local list, meta, chan = KEYS[1], KEYS[2], KEYS[3]
local maxLines, maxBytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local last = tonumber(redis.call('HGET', meta, 'seq') or '0')
local bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0')
local capped = redis.call('HGET', meta, 'capped') == '1'
local n = redis.call('LLEN', list)
local pushed = 0
for i = 7, #ARGV, 3 do
  local size, entry = tonumber(ARGV[i + 1]), ARGV[i + 2]
  local keep = true
  if ARGV[2] == 'seq' then
    local s = tonumber(ARGV[i])
    if s <= last then
      keep = false
    else
      last = s
      if not capped then
        local marker = nil
        if n + 1 > maxLines then
          marker = ARGV[5]
        elseif bytes + size > maxBytes then
          marker = ARGV[6]
        end
        if marker then
          capped = true
          redis.call('RPUSH', list, marker)
          n = n + 1
          pushed = pushed + 1
        end
      end
      keep = not capped
    end
  end
  if keep then
    redis.call('RPUSH', list, entry)
    n = n + 1
    bytes = bytes + size
    pushed = pushed + 1
  end
end
redis.call('HSET', meta, 'seq', last, 'bytes', bytes, 'capped', capped and '1' or '0')
redis.call('EXPIRE', meta, ARGV[1])
if pushed > 0 then
  redis.call('EXPIRE', list, ARGV[1])
  redis.call('PUBLISH', chan, n)
end
return {last, n}
`)

// endMessage is published on a build's log channel once it is terminal.
const endMessage = "end"

// redisReadChunk is how many entries one read of a Redis log fetches.
const redisReadChunk = 128

// redisLogs keeps live logs in Redis: a list per build, a hash for the
// sequence and the limits' counters, and a pub/sub channel that wakes
// watchers on any server instance.
type redisLogs struct {
	rc     redis.UniversalClient
	prefix string
	limits LogLimits
	hub    *logHub
}

func newRedisLogs(rc redis.UniversalClient, prefix string, limits LogLimits, log *slog.Logger) *redisLogs {
	return &redisLogs{rc: rc, prefix: prefix, limits: limits.withDefaults(),
		hub: &logHub{rc: rc, log: log, watchers: map[string]map[*watcher]struct{}{}}}
}

// The hash tag keeps a build's keys in one Redis Cluster slot (the script
// touches them together).
func (l *redisLogs) listKey(id string) string { return l.prefix + "buildlogs:{" + id + "}" }
func (l *redisLogs) metaKey(id string) string { return l.prefix + "buildlogs:{" + id + "}:meta" }
func (l *redisLogs) channel(id string) string { return l.prefix + "buildlogs:{" + id + "}:live" }

func (l *redisLogs) run(ctx context.Context, id, mode string, seqs []int64, entries []LogEntry) (int64, error) {
	lineMarker, err := json.Marshal(l.limits.lineMarker())
	if err != nil {
		return 0, err
	}
	byteMarker, err := json.Marshal(l.limits.byteMarker())
	if err != nil {
		return 0, err
	}
	args := make([]any, 0, 6+3*len(entries))
	args = append(args, int(logTTL/time.Second), mode, l.limits.MaxLines, l.limits.MaxBytes, lineMarker, byteMarker)
	for i, e := range entries {
		l.limits.cut(&e)
		b, err := json.Marshal(e)
		if err != nil {
			return 0, err
		}
		var seq int64
		if seqs != nil {
			seq = seqs[i]
		}
		args = append(args, seq, len(e.Message), b)
	}
	res, err := appendScript.Run(ctx, l.rc, []string{l.listKey(id), l.metaKey(id), l.channel(id)}, args...).Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("append build log: %w", err)
	}
	return res[0], nil
}

func (l *redisLogs) append(ctx context.Context, id string, entries ...LogEntry) error {
	_, err := l.run(ctx, id, "plain", nil, entries)
	return err
}

func (l *redisLogs) appendSeq(ctx context.Context, id string, seqs []int64, entries []LogEntry) (int64, error) {
	return l.run(ctx, id, "seq", seqs, entries)
}

func (l *redisLogs) storedSeq(ctx context.Context, id string) (int64, error) {
	n, err := l.rc.HGet(ctx, l.metaKey(id), "seq").Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

func (l *redisLogs) resetSeq(ctx context.Context, id string) error {
	return l.rc.HDel(ctx, l.metaKey(id), "seq").Err()
}

func (l *redisLogs) length(ctx context.Context, id string) (int, error) {
	n, err := l.rc.LLen(ctx, l.listKey(id)).Result()
	if err != nil {
		return 0, fmt.Errorf("read build log: %w", err)
	}
	return int(n), nil
}

func (l *redisLogs) read(ctx context.Context, id string, start, limit int, fn func(LogEntry) error) error {
	for limit != 0 {
		n := redisReadChunk
		if limit > 0 {
			n = min(n, limit)
		}
		raw, err := l.rc.LRange(ctx, l.listKey(id), int64(start), int64(start+n-1)).Result()
		if err != nil {
			return fmt.Errorf("read build log: %w", err)
		}
		for i, s := range raw {
			var e LogEntry
			if err := json.Unmarshal([]byte(s), &e); err != nil {
				return fmt.Errorf("read build log entry %d: %w", start+i, err)
			}
			e.Index = start + i
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(raw) < n {
			return nil
		}
		start += n
		if limit > 0 {
			limit -= n
		}
	}
	return nil
}

func (l *redisLogs) watch(ctx context.Context, id string) (*watcher, func(), error) {
	return l.hub.add(ctx, l.channel(id))
}

func (l *redisLogs) publishEnd(ctx context.Context, id string) error {
	return l.rc.Publish(ctx, l.channel(id), endMessage).Err()
}

func (l *redisLogs) drop(ctx context.Context, id string) error {
	return l.rc.Del(ctx, l.listKey(id), l.metaKey(id)).Err()
}

func (l *redisLogs) close() error { return l.hub.close() }

// logHub shares one Redis subscription among every local watcher of every
// build, waking each watcher when its build's log grows or ends.
type logHub struct {
	rc  redis.UniversalClient
	log *slog.Logger

	mu       sync.Mutex
	ps       *redis.PubSub
	watchers map[string]map[*watcher]struct{} // by channel
}

// add registers a watcher of channel ch; the returned function removes it.
func (h *logHub) add(ctx context.Context, ch string) (*watcher, func(), error) {
	w := newWatcher()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ps == nil {
		h.ps = h.rc.Subscribe(context.WithoutCancel(ctx))
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
