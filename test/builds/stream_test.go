package builds

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// TestLogStream: a watcher on …/logs/stream, connected before the build
// runs, receives every entry in order while the build runs, and the stream
// ends after the terminal phase. A reconnect with Last-Event-ID replays
// only what follows.
func TestLogStream(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	repo := newRepo(t, e, "stream")
	b := submit(t, e, repo, harness.BuildRequest{DockerTags: []string{"v1"}},
		harness.Entry{Name: "Dockerfile", Body: e.dockerfile(`RUN for i in 1 2 3 4 5; do echo line-$i; sleep 0.4; done`)})
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	var events []harness.Event
	err := e.client.Stream(ctx, repo, b.ID, "", func(ev harness.Event) bool {
		events = append(events, ev)
		return true
	})
	if err != nil {
		t.Fatalf("log stream: %v (after %d events)", err, len(events))
	}
	final, err := e.client.GetBuild(ctx, repo, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.Phase != "complete" {
		t.Fatalf("the stream ended with the build %s: %s\n%s", final.Phase, deref(final.Error), dumpLogs(e, repo, b.ID))
	}
	entries := logsOf(t, e, repo, b.ID)
	// Complete and in order: event i is entry i.
	if len(events) != len(entries) {
		t.Errorf("the stream sent %d events, the log has %d entries", len(events), len(entries))
	}
	for i := range min(len(events), len(entries)) {
		ev := events[i]
		if ev.ID != strconv.Itoa(i) {
			t.Errorf("event %d has id %q", i, ev.ID)
		}
		if ev.Entry.Message != entries[i].Message || ev.Entry.Type != entries[i].Type {
			t.Errorf("event %d is %q/%q, entry %d is %q/%q", i, ev.Entry.Type, ev.Entry.Message, i, entries[i].Type, entries[i].Message)
		}
	}
	if len(events) == 0 {
		t.Fatal("no events")
	}
	if last := events[len(events)-1].Entry; last.Type != "phase" || last.Message != "complete" {
		t.Errorf("the stream's last event is %q/%q, want the complete phase", last.Type, last.Message)
	}
	// The lines arrive live, not in one batch at the end, and promptly.
	var lineAt []time.Time
	var delays []time.Duration
	for i := 1; i <= 5; i++ {
		want := fmt.Sprintf("line-%d", i)
		found := false
		for _, ev := range events {
			if ev.Entry.Type == "" && strings.TrimSpace(ev.Entry.Message) == want {
				lineAt = append(lineAt, ev.Received)
				delays = append(delays, ev.Received.Sub(ev.Entry.Time()))
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("%s never reached the watcher\n%s", want, formatLog(entries))
		}
	}
	for i := 1; i < len(lineAt); i++ {
		if lineAt[i].Before(lineAt[i-1]) {
			t.Errorf("line-%d arrived before line-%d", i+1, i)
		}
	}
	if spread := lineAt[4].Sub(lineAt[0]); spread < time.Second {
		t.Errorf("line-1 and line-5 (written 1.6 s apart) reached the watcher %s apart: not streamed live", spread)
	}
	p50 := harness.Median(delays)
	t.Logf("log latency worker line → watcher: p50 %s, all %v (target p50 < 100ms)", p50, delays)
	if p50 > 2*time.Second {
		t.Errorf("log lines reach a watcher with a median delay of %s", p50)
	}

	// Resuming: after id N-3 come exactly the last two entries.
	n := len(events)
	var replay []harness.Event
	if err := e.client.Stream(ctx, repo, b.ID, strconv.Itoa(n-3), func(ev harness.Event) bool {
		replay = append(replay, ev)
		return true
	}); err != nil {
		t.Fatalf("resumed stream: %v", err)
	}
	if len(replay) != 2 || replay[0].ID != strconv.Itoa(n-2) || replay[1].ID != strconv.Itoa(n-1) {
		ids := []string{}
		for _, ev := range replay {
			ids = append(ids, ev.ID)
		}
		t.Errorf("resuming after %d sent ids %v, want %d and %d", n-3, ids, n-2, n-1)
	}
	// Past the end of an ended build: 204, so an EventSource stops.
	err = e.client.Stream(ctx, repo, b.ID, strconv.Itoa(n-1), func(harness.Event) bool { return true })
	var se *harness.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNoContent {
		t.Errorf("a stream past the end of an ended build answered %v, want 204", err)
	}
}
