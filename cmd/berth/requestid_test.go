package main

import (
	"encoding/json"
	"net/http"
	"testing"
)

// Every answer names its request: the X-Request-ID header (the client's,
// when it sent a sane one), and the request_id of an API error body, which
// is also on the server's log lines of that request.
func TestRequestIDs(t *testing.T) {
	s := serve(t, "", t.TempDir())
	req, err := http.NewRequest(http.MethodGet, "http://"+s.addr+"/api/v1/repository/nobody/nothing", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Request-ID", "trace-4711")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		RequestID string `json:"request_id"`
		Status    int    `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("X-Request-ID") != "trace-4711" || body.RequestID != "trace-4711" || body.Status == 0 {
		t.Errorf("header %q, body %+v; want the client's request ID in both", resp.Header.Get("X-Request-ID"), body)
	}
	v2 := s.request(t, http.MethodGet, "/v2/", "", false, nil)
	if id := v2.Header.Get("X-Request-ID"); len(id) != 24 {
		t.Errorf("/v2/ answered without a fresh request ID (%q)", id)
	}
}
