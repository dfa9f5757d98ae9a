package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// eachRedis runs fn against the embedded server and against the real Redis
// at 127.0.0.1:6379 (BERTH_TEST_REDIS=skip runs the embedded one only), with
// a prefix unique to the test.
func eachRedis(t *testing.T, fn func(t *testing.T, rc redis.UniversalClient, prefix string)) {
	t.Run("miniredis", func(t *testing.T) {
		e, err := StartEmbedded()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		rc := e.Client()
		t.Cleanup(func() { rc.Close() })
		fn(t, rc, "t-")
	})
	if os.Getenv("BERTH_TEST_REDIS") == "skip" {
		return
	}
	t.Run("redis", func(t *testing.T) {
		rc, err := RedisConfig{Host: "127.0.0.1:6379"}.Dial(context.Background())
		if err != nil {
			t.Fatalf("Redis at 127.0.0.1:6379 is unreachable (BERTH_TEST_REDIS=skip to skip): %v", err)
		}
		t.Cleanup(func() { rc.Close() })
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		fn(t, rc, "t"+hex.EncodeToString(b)+"-")
	})
}

func newQueue(rc redis.UniversalClient, prefix string, concurrency int) *Asynq {
	q := NewAsynq(AsynqOptions{Redis: rc, Prefix: prefix, Concurrency: concurrency, RetryDelay: 50 * time.Millisecond, PollInterval: 20 * time.Millisecond})
	return q
}

func TestEnqueueRemoveQueued(t *testing.T) {
	eachRedis(t, func(t *testing.T, rc redis.UniversalClient, prefix string) {
		ctx := context.Background()
		q := newQueue(rc, prefix, 1)
		defer q.Close()
		if err := q.Enqueue(ctx, Task{BuildID: "b1", Timeout: time.Minute}); err != nil {
			t.Fatal(err)
		}
		if err := q.Enqueue(ctx, Task{BuildID: "b1", Timeout: time.Minute}); err != nil {
			t.Fatalf("second Enqueue: %v", err)
		}
		if missing, err := q.Missing(ctx, []string{"b1", "b2"}); err != nil || !slices.Equal(missing, []string{"b2"}) {
			t.Fatalf("Missing(b1, b2) = %v, %v; want b2 only", missing, err)
		}
		if err := q.Remove(ctx, "b1"); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if missing, err := q.Missing(ctx, []string{"b1"}); err != nil || len(missing) != 1 {
			t.Fatal("b1 still queued after Remove")
		}
		if err := q.Remove(ctx, "b1"); !errors.Is(err, ErrNotQueued) {
			t.Fatalf("second Remove: %v", err)
		}
		if err := q.Enqueue(ctx, Task{BuildID: "b1"}); err == nil {
			t.Fatal("Enqueue without timeout accepted")
		}
	})
}

func TestRunConcurrencyPriorityRetry(t *testing.T) {
	eachRedis(t, func(t *testing.T, rc redis.UniversalClient, prefix string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		q := newQueue(rc, prefix, 2)
		defer q.Close()
		const n = 10
		for i := range n {
			if err := q.Enqueue(ctx, Task{BuildID: fmt.Sprintf("b%d", i), Timeout: time.Minute}); err != nil {
				t.Fatal(err)
			}
		}
		if err := q.Enqueue(ctx, Task{BuildID: "urgent", Priority: 1, Timeout: time.Minute}); err != nil {
			t.Fatal(err)
		}
		var (
			running, peak atomic.Int32
			mu            sync.Mutex
			order         []string
			failedOnce    = map[string]bool{}
			done          = make(chan struct{})
			handled       atomic.Int32
		)
		handler := func(ctx context.Context, id string) error {
			cur := running.Add(1)
			defer running.Add(-1)
			for {
				p := peak.Load()
				if cur <= p || peak.CompareAndSwap(p, cur) {
					break
				}
			}
			time.Sleep(30 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			order = append(order, id)
			if id == "b3" && !failedOnce[id] {
				failedOnce[id] = true
				return errors.New("fail once")
			}
			if handled.Add(1) == n+1 {
				close(done)
			}
			return nil
		}
		stopped := make(chan error, 1)
		go func() { stopped <- q.Run(ctx, handler) }()
		defer func() {
			cancel()
			if err := <-stopped; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("handled %d of %d builds", handled.Load(), n+1)
		}
		if peak.Load() > 2 {
			t.Errorf("peak concurrency %d, want <= 2", peak.Load())
		}
		mu.Lock()
		defer mu.Unlock()
		if order[0] != "urgent" && order[1] != "urgent" {
			t.Errorf("high priority build handled at %v", order)
		}
		count := 0
		for _, id := range order {
			if id == "b3" {
				count++
			}
		}
		if count != 2 {
			t.Errorf("b3 handled %d times, want 2 (one retry)", count)
		}
		// A finished task leaves nothing behind: the build can queue again.
		if missing, err := q.Missing(context.Background(), []string{"b0"}); err != nil || len(missing) != 1 {
			t.Errorf("finished build still queued: missing %v, %v", missing, err)
		}
	})
}

// Missing answers for many builds in every state a task can be in, in
// every priority queue; an archived leftover counts as missing and is
// replaced by the next Enqueue.
func TestMissing(t *testing.T) {
	eachRedis(t, func(t *testing.T, rc redis.UniversalClient, prefix string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// An hour's retry delay keeps a failed delivery in the retry state.
		q := NewAsynq(AsynqOptions{Redis: rc, Prefix: prefix, Concurrency: 2, RetryDelay: time.Hour, PollInterval: 20 * time.Millisecond})
		defer q.Close()
		enqueue := func(task Task) {
			t.Helper()
			task.Timeout = time.Minute
			if err := q.Enqueue(ctx, task); err != nil {
				t.Fatal(err)
			}
		}

		// Pending in each priority queue, scheduled, and 300 others of
		// which every third is queued.
		enqueue(Task{BuildID: "high", Priority: 1, Delay: time.Hour})
		enqueue(Task{BuildID: "normal", Delay: time.Hour})
		enqueue(Task{BuildID: "low", Priority: -1, Delay: time.Hour})
		var many, wantMissing []string
		for i := range 300 {
			id := fmt.Sprintf("m%03d", i)
			many = append(many, id)
			if i%3 == 0 {
				enqueue(Task{BuildID: id, Delay: time.Hour})
			} else {
				wantMissing = append(wantMissing, id)
			}
		}
		missing, err := q.Missing(ctx, append([]string{"high", "normal", "low"}, many...))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(missing, wantMissing) {
			t.Errorf("Missing = %d builds %v..., want the %d not queued", len(missing), missing[:min(len(missing), 5)], len(wantMissing))
		}

		// An archived leftover is missing; Enqueue replaces it.
		enqueue(Task{BuildID: "archived", Delay: time.Hour})
		if err := q.inspector.ArchiveTask(q.queueFor(0), "archived"); err != nil {
			t.Fatal(err)
		}
		if missing, err := q.Missing(ctx, []string{"archived"}); err != nil || !slices.Equal(missing, []string{"archived"}) {
			t.Fatalf("archived leftover: Missing = %v, %v", missing, err)
		}
		enqueue(Task{BuildID: "archived", Delay: time.Hour})
		if missing, err := q.Missing(ctx, []string{"archived"}); err != nil || len(missing) != 0 {
			t.Fatalf("re-queued leftover: Missing = %v, %v", missing, err)
		}

		// Being handled, and waiting for a retry.
		active := make(chan struct{})
		handler := func(ctx context.Context, id string) error {
			if id == "fails" {
				return errors.New("fails")
			}
			close(active)
			<-ctx.Done()
			return ctx.Err()
		}
		enqueue(Task{BuildID: "fails"})
		enqueue(Task{BuildID: "active"})
		stopped := make(chan error, 1)
		runCtx, stop := context.WithCancel(ctx)
		go func() { stopped <- q.Run(runCtx, handler) }()
		defer func() {
			stop()
			<-stopped
		}()
		<-active
		deadline := time.Now().Add(10 * time.Second)
		for {
			info, err := q.inspector.GetTaskInfo(q.queueFor(0), "fails")
			if err == nil && info.State.String() == "retry" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("failed delivery not waiting for a retry: %v %v", info, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if missing, err := q.Missing(ctx, []string{"fails", "active", "never"}); err != nil || !slices.Equal(missing, []string{"never"}) {
			t.Errorf("Missing(retrying, active, never queued) = %v, %v; want never only", missing, err)
		}
		if missing, err := q.Missing(ctx, nil); err != nil || len(missing) != 0 {
			t.Errorf("Missing(none) = %v, %v", missing, err)
		}
	})
}

// TestEmbeddedUnreachable is the regression test of the review's finding
// F3: a build step found the embedded Redis on a loopback port, read
// another tenant's live log and pushed a line into it. The embedded server
// now opens no socket at all, and a connection without the password drawn
// at start can neither read nor write a key.
func TestEmbeddedUnreachable(t *testing.T) {
	ctx := context.Background()
	before := listeningSockets(t)
	e, err := StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rc := e.Client()
	defer rc.Close()
	const key = "buildlogs:{victim}"
	if err := rc.RPush(ctx, key, `{"message":"victim build running"}`).Err(); err != nil {
		t.Fatalf("the server's own client: %v", err)
	}
	if after := listeningSockets(t); len(after) != len(before) {
		t.Fatalf("the embedded server listens: sockets %v before, %v after", before, after)
	}

	// A client holding a connection but not the password: the shape of
	// the review's repro, over the only way in there is.
	stranger := redis.NewClient(&redis.Options{
		Addr:   "embedded",
		Dialer: func(context.Context, string, string) (net.Conn, error) { return e.srv.Dial() },
	})
	defer stranger.Close()
	for name, cmd := range map[string]func() error{
		"LRANGE":   func() error { return stranger.LRange(ctx, key, 0, -1).Err() },
		"RPUSH":    func() error { return stranger.RPush(ctx, key, `{"message":"INJECTED"}`).Err() },
		"KEYS":     func() error { return stranger.Keys(ctx, "*").Err() },
		"FLUSHALL": func() error { return stranger.FlushAll(ctx).Err() },
	} {
		if err := cmd(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
			t.Errorf("%s without the password: %v, want NOAUTH", name, err)
		}
	}
	wrong := redis.NewClient(&redis.Options{
		Addr: "embedded", Password: "guess",
		Dialer: func(context.Context, string, string) (net.Conn, error) { return e.srv.Dial() },
	})
	defer wrong.Close()
	if err := wrong.LRange(ctx, key, 0, -1).Err(); err == nil {
		t.Error("a wrong password was accepted")
	}
	if got := rc.LRange(ctx, key, 0, -1).Val(); len(got) != 1 || strings.Contains(got[0], "INJECTED") {
		t.Errorf("the log key holds %q after the attempts", got)
	}

	// Closed means closed: a client left over cannot bring the server back.
	e.Close()
	if err := rc.Ping(ctx).Err(); err == nil {
		t.Error("the embedded server answered after Close")
	}
}

// listeningSockets returns the inodes of this process's listening TCP
// sockets.
func listeningSockets(t *testing.T) []string {
	t.Helper()
	listening := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 9 && fields[3] == "0A" { // TCP_LISTEN
				listening[fields[9]] = true
			}
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil {
			continue
		}
		inode, ok := strings.CutPrefix(target, "socket:[")
		inode = strings.TrimSuffix(inode, "]")
		if ok && listening[inode] {
			out = append(out, inode)
		}
	}
	return out
}
