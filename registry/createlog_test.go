package registry_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/testenv"
)

// Concurrent pushes that create one repository log its creation once: only
// the request that created it says so.
func TestRepositoryCreatedOnPushLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	carol := addUser(t, st, "carol")
	var logs testenv.SyncBuffer
	s := serve(t, st, filepath.Join(dir, "blobs"), slog.New(slog.NewTextHandler(&logs, nil)))
	// A bearer token, as podman pushes with, keeps authentication cheap so
	// that the pushes race for the creation.
	tok := s.pushToken(t, carol, "carol/fresh")

	const pushes = 16
	var wg sync.WaitGroup
	statuses := make(chan int, pushes)
	for i := range pushes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := []byte(strings.Repeat("x", i+1))
			req, _ := http.NewRequest("POST", s.srv.URL+"/v2/carol/fresh/blobs/uploads/?digest="+digest.FromBytes(data).String(), bytes.NewReader(data))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusCreated {
			t.Errorf("push answered %d, want 201", s)
		}
	}
	if n := strings.Count(logs.String(), "repository created on push"); n != 1 {
		t.Errorf("creation logged %d times, want once:\n%s", n, logs.String())
	}
}
