package registry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/store/sqlstore"
	"github.com/berth-dev/berth/internal/testenv"
)

// uploadsUndeletable is the SQL store with DeleteUpload failing.
type uploadsUndeletable struct{ *sqlstore.Store }

var errDeleteRefused = errors.New("delete refused")

func (uploadsUndeletable) DeleteUpload(context.Context, string) error { return errDeleteRefused }

// A digest mismatch spends the upload session; when forgetting it fails,
// the client still gets DIGEST_INVALID and the failure is logged rather than
// lost.
func TestSpentUploadDropFailureIsLogged(t *testing.T) {
	dir := t.TempDir()
	sql := openStore(t, dir)
	st := uploadsUndeletable{sql}
	dave := addUser(t, st, "dave")
	var logs testenv.SyncBuffer
	s := serve(t, st, filepath.Join(dir, "blobs"), slog.New(slog.NewTextHandler(&logs, nil)))
	tok := s.pushToken(t, dave, "dave/app")

	do := func(method, url string, body []byte) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	start := do("POST", s.srv.URL+"/v2/dave/app/blobs/uploads/", nil)
	if start.StatusCode != http.StatusAccepted {
		t.Fatalf("starting an upload answered %d, want 202", start.StatusCode)
	}
	loc := start.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = s.srv.URL + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	wrong := digest.FromString("not the content")
	put := do("PUT", loc+sep+"digest="+wrong.String(), []byte("the content"))
	body, _ := io.ReadAll(put.Body)
	if put.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "DIGEST_INVALID") {
		t.Fatalf("PUT with a wrong digest answered %d %s, want 400 DIGEST_INVALID", put.StatusCode, body)
	}
	out := logs.String()
	if !strings.Contains(out, "dropping a spent upload failed") || !strings.Contains(out, errDeleteRefused.Error()) {
		t.Errorf("the failed drop was not logged with its error; log:\n%s", out)
	}
}
