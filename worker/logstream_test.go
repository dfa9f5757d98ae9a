package worker

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/worker/engine"
)

// TestLogStreamLongLines: lines of 1 MiB, the longest the engine passes,
// go out in batches the manager's gRPC server accepts (4 MiB a message),
// so every one is acknowledged; in batches of 256 lines the stream broke
// on each resend and the log stopped there.
func TestLogStreamLongLines(t *testing.T) {
	m := newFakeManager(t, &pb.Job{}, nil)
	conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	l := newLogStream(pb.NewBuildManagerClient(conn), m.job.JobToken, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go l.run(ctx)
	const lines = 12
	for i := range lines {
		l.Log(engine.LineOutput, strings.Repeat(string(rune('a'+i)), 1<<20))
	}
	last, err := l.close(ctx)
	if err != nil || last != lines {
		t.Fatalf("close = %d, %v", last, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.logs) != lines || m.logs[lines].GetMessage()[0] != 'a'+lines-1 {
		t.Fatalf("the manager stored %d lines", len(m.logs))
	}
}

// TestLogStreamPendingBytes: output held for a manager that does not
// acknowledge stops at maxPendingBytes, not only at maxPending lines;
// phase and error lines are still kept, and close reports the drop.
func TestLogStreamPendingBytes(t *testing.T) {
	l := newLogStream(nil, "job-token", slog.New(slog.NewTextHandler(io.Discard, nil)))
	line := strings.Repeat("x", 1<<20)
	for range 100 {
		l.Log(engine.LineOutput, line)
	}
	l.Log(engine.LineError, "the step failed")
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) != maxPendingBytes>>20+1 || l.dropped != 100-maxPendingBytes>>20 || l.pending[len(l.pending)-1].GetMessage() != "the step failed" {
		t.Fatalf("%d entries held (%d bytes), %d dropped", len(l.pending), l.pendingBytes, l.dropped)
	}
}
