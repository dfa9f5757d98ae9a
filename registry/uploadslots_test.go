package registry_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/registry"
)

// One account cannot hold more than DefaultMaxUploadsPerAccount uploads
// open at once (F13: slow bodies tie up goroutines and sockets): the next
// one is refused with 429 while other accounts are unaffected, and a slot
// comes back when an upload ends.
func TestConcurrentUploadsPerAccountAreCapped(t *testing.T) {
	e := newEnv(t)
	type slow struct {
		w    *io.PipeWriter
		done chan int
	}
	open := func(user, repo string) slow {
		resp := e.do("POST", "/v2/"+repo+"/blobs/uploads/", user, nil)
		expect(t, resp, 202, "")
		pr, pw := io.Pipe()
		req, err := http.NewRequest("PATCH", resp.Header.Get("Location"), pr)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(user, user+"-pw")
		s := slow{w: pw, done: make(chan int, 1)}
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				s.done <- -1
				return
			}
			resp.Body.Close()
			s.done <- resp.StatusCode
		}()
		t.Cleanup(func() { pw.Close() })
		if _, err := pw.Write([]byte("first bytes")); err != nil {
			t.Fatal(err)
		}
		return s
	}
	var held []slow
	for range registry.DefaultMaxUploadsPerAccount {
		held = append(held, open("alice", "alice/app"))
	}
	// The open uploads take their slots once the server has their headers.
	for deadline := time.Now().Add(10 * time.Second); e.h.UploadsInFlight("alice") < len(held); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d open uploads hold a slot", e.h.UploadsInFlight("alice"), len(held))
		}
		time.Sleep(10 * time.Millisecond)
	}
	data := []byte("one more layer")
	d := digest.FromBytes(data)
	resp := e.do("POST", "/v2/alice/app/blobs/uploads/?digest="+d.String(), "alice", data)
	expect(t, resp, 429, "TOOMANYREQUESTS")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// A chunk on a session of alice's is refused the same way.
	resp = e.do("POST", "/v2/alice/app/blobs/uploads/", "alice", nil)
	expect(t, resp, 202, "")
	expect(t, e.do("PATCH", resp.Header.Get("Location"), "alice", data), 429, "TOOMANYREQUESTS")
	// bob pushes as usual.
	e.pushBlob("bob", "bob/app", []byte("bob's layer"))

	// One of alice's uploads finishes: she may start another.
	held[0].w.Close()
	if code := <-held[0].done; code != http.StatusAccepted {
		t.Fatalf("the finished upload answered %d", code)
	}
	// Its slot comes back as its handler returns, just after the answer.
	for deadline := time.Now().Add(10 * time.Second); e.h.UploadsInFlight("alice") == len(held); {
		if time.Now().After(deadline) {
			t.Fatal("the finished upload's slot was not given back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	expect(t, e.do("POST", "/v2/alice/app/blobs/uploads/?digest="+d.String(), "alice", data), 201, "")
	for _, s := range held[1:] {
		s.w.Close()
		if code := <-s.done; code != http.StatusAccepted {
			t.Fatalf("an upload answered %d", code)
		}
	}
}
