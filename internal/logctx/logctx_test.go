package logctx

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMiddlewareTagsEveryLineOfTheRequest(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Handler(slog.NewTextHandler(&buf, nil))).With("component", "test")
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.InfoContext(r.Context(), "handling", "path", r.URL.Path)
		log.WarnContext(With(r.Context(), slog.String("build_id", "b1")), "nested")
	}))

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	req.Header.Set(RequestIDHeader, "proxy-given.id_1")
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get(RequestIDHeader); got != "proxy-given.id_1" {
		t.Errorf("response X-Request-ID = %q, want the client's", got)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log:\n%s", buf.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "request_id=proxy-given.id_1") || !strings.Contains(l, "component=test") {
			t.Errorf("line without the request ID or the logger's own attributes: %s", l)
		}
	}
	if !strings.Contains(lines[1], "build_id=b1") {
		t.Errorf("nested attributes lost: %s", lines[1])
	}

	// A header that is not a sane token (log injection, overlong) is
	// replaced by a fresh ID.
	for _, bad := range []string{"a b", "x\nlevel=ERROR", strings.Repeat("a", 129), ""} {
		buf.Reset()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/x", nil)
		req.Header.Set(RequestIDHeader, bad)
		h.ServeHTTP(rec, req)
		got := rec.Header().Get(RequestIDHeader)
		if got == bad || !validID(got) || len(got) != 24 {
			t.Errorf("for X-Request-ID %q the response says %q, want a fresh ID", bad, got)
		}
	}
}

func TestOutsideARequestNothingIsAdded(t *testing.T) {
	var buf bytes.Buffer
	slog.New(Handler(slog.NewTextHandler(&buf, nil))).InfoContext(context.Background(), "plain")
	if strings.Contains(buf.String(), "request_id") {
		t.Errorf("a line outside any request got a request ID: %s", buf.String())
	}
	if RequestID(context.Background()) != "" {
		t.Error("RequestID outside a request is not empty")
	}
}
