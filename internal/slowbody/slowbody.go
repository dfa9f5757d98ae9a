// Package slowbody cuts off request bodies that arrive too slowly.
//
// http.Server's ReadTimeout bounds a whole request, which no single value
// fits: a multi-gigabyte layer over a modest link needs hours, while a
// client sending one byte every few seconds should not hold a goroutine and
// a socket for even that long. Instead each read of a body gets a deadline
// from a time budget: the budget starts at Limits.Idle, every read spends
// the time it waited, and every byte that arrives earns 1/MinRate seconds,
// up to Idle again. A body that keeps up with MinRate on average never runs
// out, a stall of Idle ends it whatever came before, and a trickle below
// MinRate is cut off after a bounded time. Time the handler spends between
// reads (writing to disk, hashing) costs the client nothing.
package slowbody

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Limits is the pace a request body must keep.
type Limits struct {
	// MinRate is the average rate, in bytes per second, a body must
	// sustain; 0 disables the rate (only Idle applies).
	MinRate int64
	// Idle is the longest a body may send nothing, and the most time it
	// may bank ahead of MinRate. Zero disables the guard.
	Idle time.Duration
}

// Defaults: a rate far below any real link, and a minute of silence.
const (
	DefaultMinRate = 1024
	DefaultIdle    = 60 * time.Second
)

// Handler wraps next so that every request body it reads keeps to l. The
// deadlines are set on the connection through http.ResponseController, so
// a body that falls behind fails its read with a timeout and the server
// closes the connection.
func Handler(next http.Handler, l Limits) http.Handler {
	if l.Idle <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		b := &body{src: r.Body, rc: http.NewResponseController(w), limits: l, budget: l.Idle, now: time.Now}
		r.Body = b
		next.ServeHTTP(w, r)
		// The server discards up to 256 KiB of an unread body before the
		// next request on the connection; that wait keeps to the same
		// budget.
		if !b.done && !b.unsupported {
			b.arm()
		}
	})
}

// body is a request body whose reads are held to its limits.
type body struct {
	src    io.ReadCloser
	rc     *http.ResponseController
	limits Limits
	now    func() time.Time
	// budget is how long the next read may wait.
	budget time.Duration
	// done is set once the body reached its end and the deadline was
	// cleared: the server's own read after the body (it watches for the
	// client hanging up) must not time out while the handler works.
	done bool
	// unsupported is set when the connection takes no deadlines (a
	// ResponseWriter that is not the server's): reads then pass through.
	unsupported bool
}

// arm sets the connection's read deadline to the remaining budget.
func (b *body) arm() {
	if err := b.rc.SetReadDeadline(b.now().Add(b.budget)); errors.Is(err, http.ErrNotSupported) {
		b.unsupported = true
	}
}

func (b *body) Read(p []byte) (int, error) {
	if b.done || b.unsupported {
		return b.src.Read(p)
	}
	b.arm()
	start := b.now()
	n, err := b.src.Read(p)
	b.budget -= b.now().Sub(start)
	if b.limits.MinRate > 0 {
		b.budget += time.Duration(int64(n) * int64(time.Second) / b.limits.MinRate)
	} else if n > 0 {
		b.budget = b.limits.Idle
	}
	b.budget = min(b.budget, b.limits.Idle)
	switch {
	case err == io.EOF && !b.unsupported:
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("%w (the body must average %d bytes/s and never pause %s): %w",
			ErrTooSlow, b.limits.MinRate, b.limits.Idle, err)
	}
	return n, err
}

// ErrTooSlow is wrapped in the error of a read cut off by its deadline.
var ErrTooSlow = errors.New("request body too slow")

func (b *body) Close() error { return b.src.Close() }
