package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/worker/engine"
)

// Batching of log entries: a batch goes out when it is this old or this
// large, so a line reaches the manager within ~50 ms without a round trip
// per line.
const (
	flushInterval = 50 * time.Millisecond
	maxBatch      = 256
	// maxBatchBytes keeps a batch of long lines (the engine passes lines of
	// up to 1 MiB) under gRPC's 4 MiB message limit: the manager refuses a
	// larger message, and the stream would break on every resend.
	maxBatchBytes = 1 << 20
	// maxPending bounds entries held for a manager that does not
	// acknowledge; beyond it the oldest unsent output is dropped, with a
	// note, rather than the worker's memory growing without end.
	maxPending = 100_000
	// maxPendingBytes bounds the same in bytes: 100,000 lines of up to
	// 1 MiB each would be 100 GB.
	maxPendingBytes = 64 << 20
)

// logStream sends log entries to the manager in batches over StreamLog and
// tracks the manager's acknowledgements. After a broken stream it opens a
// new one and sends again every entry not yet acknowledged (the manager
// ignores sequence numbers it has stored).
type logStream struct {
	client pb.BuildManagerClient
	token  string
	logger *slog.Logger

	mu      sync.Mutex
	seq     int64          // last sequence number given out
	pending []*pb.LogEntry // not yet acknowledged, in order
	// pendingBytes is the size of pending's messages.
	pendingBytes int
	sent         int // how many of pending went out on the current stream
	acked        int64
	closed       bool
	dropped      int64

	wake chan struct{}
	done chan struct{}
}

func newLogStream(client pb.BuildManagerClient, token string, logger *slog.Logger) *logStream {
	return &logStream{client: client, token: token, logger: logger, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Log implements engine.LogSink.
func (l *logStream) Log(t engine.LineType, message string) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	if (len(l.pending) >= maxPending || l.pendingBytes >= maxPendingBytes) && t == engine.LineOutput {
		l.dropped++
		l.mu.Unlock()
		return
	}
	l.seq++
	l.pending = append(l.pending, &pb.LogEntry{SequenceNumber: l.seq, Message: message, Type: lineType(t), TimeUnixNano: time.Now().UnixNano()})
	l.pendingBytes += len(message)
	n := len(l.pending) - l.sent
	l.mu.Unlock()
	if n == 1 || n >= maxBatch {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

func lineType(t engine.LineType) pb.LogType {
	switch t {
	case engine.LineCommand:
		return pb.LogType_LOG_TYPE_COMMAND
	case engine.LineError:
		return pb.LogType_LOG_TYPE_ERROR
	case engine.LinePhase:
		return pb.LogType_LOG_TYPE_PHASE
	}
	return pb.LogType_LOG_TYPE_UNSPECIFIED
}

// run sends batches until ctx ends or close has flushed everything.
func (l *logStream) run(ctx context.Context) {
	defer close(l.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.session(ctx)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			return
		}
		l.logger.Warn("log stream broken; reopening", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// session runs one StreamLog stream: it returns nil once closed and fully
// acknowledged, or the error that broke the stream.
func (l *logStream) session(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := l.client.StreamLog(sctx)
	if err != nil {
		return fmt.Errorf("open log stream: %w", err)
	}
	l.mu.Lock()
	l.sent = 0 // everything unacknowledged goes out again
	l.mu.Unlock()
	recvErr := make(chan error, 1)
	go func() {
		for {
			ack, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			l.ack(ack.GetSequenceNumber())
		}
	}()
	ticker := time.NewTicker(flushInterval)
	defer ticker.Stop()
	for {
		batch, full, finished := l.next()
		if len(batch) > 0 {
			if err := stream.Send(&pb.LogBatch{JobToken: l.token, Entries: batch}); err != nil {
				return fmt.Errorf("send log batch: %w", err)
			}
			if full {
				continue
			}
		}
		if finished {
			if err := stream.CloseSend(); err != nil {
				return fmt.Errorf("close log stream: %w", err)
			}
			// Acknowledgements until the server ends the stream.
			var err error
			select {
			case err = <-recvErr:
			case <-ctx.Done():
				return ctx.Err()
			}
			if l.allAcked() {
				return nil
			}
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("log stream ended before every entry was acknowledged")
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				err = errors.New("manager ended the log stream")
			}
			return err
		case <-l.wake:
		case <-ticker.C:
		}
	}
}

// next returns the next batch to send, whether it reached a batch limit
// (more may be waiting), and whether the stream is closed with nothing
// left to send.
func (l *logStream) next() (batch []*pb.LogEntry, full, finished bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	end, size := l.sent, 0
	for end < len(l.pending) && end-l.sent < maxBatch {
		size += len(l.pending[end].GetMessage())
		if size > maxBatchBytes && end > l.sent {
			full = true
			break
		}
		end++
	}
	full = full || end-l.sent == maxBatch
	batch = l.pending[l.sent:end]
	l.sent = end
	return batch, full, l.closed && l.sent == len(l.pending)
}

func (l *logStream) ack(seq int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq <= l.acked {
		return
	}
	l.acked = seq
	i := 0
	for i < len(l.pending) && l.pending[i].SequenceNumber <= seq {
		l.pendingBytes -= len(l.pending[i].GetMessage())
		i++
	}
	l.pending = l.pending[i:]
	l.sent = max(0, l.sent-i)
}

func (l *logStream) allAcked() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked >= l.seq
}

// close stops accepting entries and waits until every entry is
// acknowledged or ctx ends. It returns the last sequence number.
func (l *logStream) close(ctx context.Context) (int64, error) {
	l.mu.Lock()
	if l.dropped > 0 && !l.closed {
		l.seq++
		l.pending = append(l.pending, &pb.LogEntry{SequenceNumber: l.seq, Message: fmt.Sprintf("(%d output lines were dropped: the build manager did not keep up)", l.dropped), TimeUnixNano: time.Now().UnixNano()})
	}
	l.closed = true
	last := l.seq
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	select {
	case <-l.done:
	case <-ctx.Done():
	}
	if !l.allAcked() {
		return last, fmt.Errorf("log entries up to %d not acknowledged", last)
	}
	return last, nil
}
