package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
		if ok, err := q.Queued(ctx, "b1"); err != nil || !ok {
			t.Fatalf("Queued = %v, %v", ok, err)
		}
		if ok, _ := q.Queued(ctx, "b2"); ok {
			t.Fatal("b2 reported queued")
		}
		if err := q.Remove(ctx, "b1"); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if ok, _ := q.Queued(ctx, "b1"); ok {
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
		if ok, err := q.Queued(context.Background(), "b0"); err != nil || ok {
			t.Errorf("finished build still queued: %v %v", ok, err)
		}
	})
}

func TestEmbeddedSaveRestore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapshot")
	ctx := context.Background()
	e, err := StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	rc := e.Client()
	rc.RPush(ctx, "p:buildlogs:{a}", "one", "two")
	rc.Set(ctx, "p:buildlogs:{a}:seq", "7", 0)
	rc.RPush(ctx, "asynq:other", "not kept")
	rc.Close()
	if err := e.Save(path, "buildlogs:"); err != nil {
		t.Fatal(err)
	}
	e.Close()

	e2, err := StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if err := e2.Restore(path); err != nil {
		t.Fatal(err)
	}
	rc = e2.Client()
	defer rc.Close()
	if got := rc.LRange(ctx, "p:buildlogs:{a}", 0, -1).Val(); len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Fatalf("list restored as %v", got)
	}
	if got := rc.Get(ctx, "p:buildlogs:{a}:seq").Val(); got != "7" {
		t.Fatalf("string restored as %q", got)
	}
	if n := rc.Exists(ctx, "asynq:other").Val(); n != 0 {
		t.Fatal("a key outside the pattern was saved")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("snapshot left behind: %v", err)
	}
	// Nothing to restore is not an error.
	if err := e2.Restore(path); err != nil {
		t.Fatal(err)
	}
}
