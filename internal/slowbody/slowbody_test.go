package slowbody_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/slowbody"
)

// The tests scale the production limits down (1 KiB/s and 60 s) so that
// they run in seconds: 1000 bytes/s and an idle budget of 1 s.
var testLimits = slowbody.Limits{MinRate: 1000, Idle: time.Second}

// outcome is what the handler saw of one body.
type outcome struct {
	n   int64
	err error
}

// newServer serves a handler that reads the whole body, optionally pausing
// after the first kilobyte, and reports what it read on outcomes.
func newServer(t *testing.T, pauseAfterFirstKB, workAfterBody time.Duration) (string, chan outcome) {
	t.Helper()
	outcomes := make(chan outcome, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		var err error
		if pauseAfterFirstKB > 0 {
			n, err = io.CopyN(io.Discard, r.Body, 1024)
			time.Sleep(pauseAfterFirstKB)
		}
		if err == nil {
			var m int64
			m, err = io.Copy(io.Discard, r.Body)
			n += m
		}
		if err == nil && workAfterBody > 0 {
			time.Sleep(workAfterBody)
			err = r.Context().Err()
		}
		outcomes <- outcome{n, err}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d", n)
	})
	srv := httptest.NewServer(slowbody.Handler(h, testLimits))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), outcomes
}

// sendPaced opens a raw TCP connection, announces size bytes and sends
// them in pieces of chunk bytes every interval, stopping early when the
// server closes the connection. It returns the number of bytes written.
func sendPaced(t *testing.T, addr string, size, chunk int, interval time.Duration) (net.Conn, int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size); err != nil {
		t.Fatal(err)
	}
	piece := []byte(strings.Repeat("a", chunk))
	sent := 0
	for sent < size {
		k := min(chunk, size-sent)
		if _, err := c.Write(piece[:k]); err != nil {
			break
		}
		sent += k
		time.Sleep(interval)
	}
	return c, sent
}

func waitOutcome(t *testing.T, outcomes chan outcome) outcome {
	t.Helper()
	select {
	case o := <-outcomes:
		return o
	case <-time.After(20 * time.Second):
		t.Fatal("the handler never finished reading the body")
		return outcome{}
	}
}

// A body trickling one byte at a time, far below the minimum rate, is cut
// off after about the idle budget: the review's attack (F13) held a
// connection for 105 s and counting with 1 byte every 15 s.
func TestTrickleIsCutOff(t *testing.T) {
	addr, outcomes := newServer(t, 0, 0)
	start := time.Now()
	done := make(chan int, 1)
	go func() {
		// 1 byte every 200 ms: 5 bytes/s against a minimum of 1000.
		_, sent := sendPaced(t, addr, 1000, 1, 200*time.Millisecond)
		done <- sent
	}()
	o := waitOutcome(t, outcomes)
	elapsed := time.Since(start)
	if !errors.Is(o.err, slowbody.ErrTooSlow) {
		t.Fatalf("handler read %d bytes, err %v; want ErrTooSlow", o.n, o.err)
	}
	if elapsed > 3*time.Second {
		t.Errorf("cut off after %s, want about %s", elapsed, testLimits.Idle)
	}
	select {
	case sent := <-done:
		if sent == 1000 {
			t.Errorf("the client sent its whole body: the connection was not closed")
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the server kept the connection open")
	}
}

// A slow but steady body, twice the minimum rate, succeeds even though it
// takes several times the idle budget to arrive.
func TestSteadySlowBodySucceeds(t *testing.T) {
	addr, outcomes := newServer(t, 0, 0)
	const size = 7000
	start := time.Now()
	c, _ := sendPaced(t, addr, size, 100, 50*time.Millisecond) // 2000 bytes/s
	o := waitOutcome(t, outcomes)
	if o.err != nil || o.n != size {
		t.Fatalf("handler read %d bytes, err %v; want %d", o.n, o.err, size)
	}
	if time.Since(start) < 3*testLimits.Idle {
		t.Fatalf("the body arrived in %s: the test did not outlast the idle budget", time.Since(start))
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != strconv.Itoa(size) {
		t.Fatalf("answer %d %q", resp.StatusCode, b)
	}
}

// Credit banked by a fast start does not buy a long stall: a body that
// stops sending is cut off after the idle budget.
func TestStallAfterBurstIsCutOff(t *testing.T) {
	addr, outcomes := newServer(t, 0, 0)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 2<<20)
	if _, err := c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	o := waitOutcome(t, outcomes)
	if !errors.Is(o.err, slowbody.ErrTooSlow) || o.n != 1<<20 {
		t.Fatalf("handler read %d bytes, err %v", o.n, o.err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("stall cut off after %s, want about %s", d, testLimits.Idle)
	}
}

// Time the handler spends between reads and after the body is not the
// client's: it neither fails the next read nor cancels the request.
func TestHandlerTimeIsNotCharged(t *testing.T) {
	for _, tc := range []struct {
		name        string
		pause, work time.Duration
	}{
		{"pause between reads", 2 * testLimits.Idle, 0},
		{"work after the body", 0, 2 * testLimits.Idle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, outcomes := newServer(t, tc.pause, tc.work)
			resp, err := http.Post("http://"+addr+"/upload", "application/octet-stream", strings.NewReader(strings.Repeat("b", 64<<10)))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			o := waitOutcome(t, outcomes)
			if o.err != nil || resp.StatusCode != 200 || string(b) != strconv.Itoa(64<<10) {
				t.Fatalf("answer %d %q, handler err %v", resp.StatusCode, b, o.err)
			}
		})
	}
}

// A handler that answers without reading the body leaves the server to
// discard it; a client that then trickles is cut off too.
func TestUnreadBodyIsBounded(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	})
	srv := httptest.NewServer(slowbody.Handler(h, testLimits))
	defer srv.Close()
	start := time.Now()
	c, sent := sendPaced(t, strings.TrimPrefix(srv.URL, "http://"), 100, 1, 200*time.Millisecond)
	_ = c
	if sent == 100 {
		t.Fatalf("the server waited %s for a trickling body it never read", time.Since(start))
	}
}
