package buildmanager

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// newAwaitService is a service whose manager has only a file log store, in
// which build "b1" has stored worker lines up to sequence 2.
func newAwaitService(t *testing.T) *service {
	t.Helper()
	logs, err := newFileLogs(filepath.Join(t.TempDir(), "logs"), LogLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := logs.appendSeq(context.Background(), "b1", []int64{1, 2},
		[]LogEntry{{Message: "one"}, {Message: "two"}}); err != nil {
		t.Fatal(err)
	}
	return &service{m: &Manager{logs: logs, log: slog.New(slog.DiscardHandler)}}
}

// TestFinishStopsWaitingForLogsWhenTheWorkerHangsUp: Finish waits up to
// logWait for log lines the worker says it sent, but a worker that has gone
// (its call's context ended) ends the wait at once.
func TestFinishStopsWaitingForLogsWhenTheWorkerHangsUp(t *testing.T) {
	s := newAwaitService(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	err := s.awaitLogs(ctx, "b1", 3)
	if took := time.Since(start); took > logWait/2 {
		t.Errorf("awaitLogs returned %v after the worker hung up, want well under %v", took, logWait)
	}
	if status.Code(err) != codes.Canceled {
		t.Errorf("awaitLogs = %v, want code Canceled", err)
	}
}

// TestFinishReturnsOnceTheLastLogLineIsStored: no wait when the worker's
// last line is already stored, and a wait that ends when it arrives.
func TestFinishReturnsOnceTheLastLogLineIsStored(t *testing.T) {
	s := newAwaitService(t)
	if err := s.awaitLogs(context.Background(), "b1", 2); err != nil {
		t.Fatalf("awaitLogs with every line stored = %v, want nil", err)
	}
	time.AfterFunc(50*time.Millisecond, func() {
		_, _ = s.m.logs.appendSeq(context.Background(), "b1", []int64{3}, []LogEntry{{Message: "three"}})
	})
	start := time.Now()
	if err := s.awaitLogs(context.Background(), "b1", 3); err != nil {
		t.Fatalf("awaitLogs = %v, want nil", err)
	}
	if took := time.Since(start); took > logWait/2 {
		t.Errorf("awaitLogs returned %v after the last line was stored, want well under %v", took, logWait)
	}
	got, err := s.m.logs.storedSeq(context.Background(), "b1")
	if err != nil || got != 3 {
		t.Errorf("stored sequence = %d, %v; want 3", got, err)
	}
}
