package e2e

// Tests of the harness's own parsers; they need no server and always run.

import (
	"strings"
	"testing"
)

func TestParseChallenge(t *testing.T) {
	ch, err := parseChallenge(`Bearer realm="http://127.0.0.1:5000/v2/auth",service="127.0.0.1:5000",scope="repository:a/b:pull,push"`)
	if err != nil {
		t.Fatal(err)
	}
	if ch.scheme != "bearer" {
		t.Errorf("scheme %q, want bearer", ch.scheme)
	}
	want := map[string]string{
		"realm":   "http://127.0.0.1:5000/v2/auth",
		"service": "127.0.0.1:5000",
		"scope":   "repository:a/b:pull,push",
	}
	for k, v := range want {
		if ch.params[k] != v {
			t.Errorf("%s = %q, want %q", k, ch.params[k], v)
		}
	}

	ch, err = parseChallenge(`Basic realm="say \"hi\"", charset=UTF-8`)
	if err != nil {
		t.Fatal(err)
	}
	if ch.scheme != "basic" || ch.params["realm"] != `say "hi"` || ch.params["charset"] != "UTF-8" {
		t.Errorf("got %+v", ch)
	}

	for _, bad := range []string{"", `Bearer realm="open`, `Bearer realm`} {
		if _, err := parseChallenge(bad); err == nil {
			t.Errorf("parseChallenge(%q) accepted a malformed header", bad)
		}
	}
}

func TestParseRangeEnd(t *testing.T) {
	for h, want := range map[string]int64{"0-0": 1, "0-1048575": 1 << 20, "bytes=0-9": 10} {
		got, err := parseRangeEnd(h)
		if err != nil || got != want {
			t.Errorf("parseRangeEnd(%q) = %d, %v; want %d", h, got, err, want)
		}
	}
	for _, bad := range []string{"", "5-9", "0-", "0-x", "0--1"} {
		if _, err := parseRangeEnd(bad); err == nil {
			t.Errorf("parseRangeEnd(%q) accepted a malformed range", bad)
		}
	}
}

// sampleJUnit has the shape the conformance suite writes: one suite whose
// counters count checks (here one case failed two checks), the status in an
// attribute, the failure text in system-out.
const sampleJUnit = `<testsuites tests="7" failures="2" skipped="1" disabled="1">
  <testsuite name="OCI Conformance Test" tests="7" failures="2" errors="1" disabled="1" skipped="1" time="1.0">
    <testcase name="OCI Conformance Test/sha256 blobs/blob post only" classname="" status="passed"></testcase>
    <testcase name="OCI Conformance Test/sha256 blobs/post+put" classname="" status="passed"></testcase>
    <testcase name="OCI Conformance Test/sha256 blobs/chunk out of order" classname="" status="failure"><system-out>unexpected status 400, expected 416</system-out></testcase>
    <testcase name="OCI Conformance Test/referrers/list" classname="" status="error"><system-out>connection reset</system-out></testcase>
    <testcase name="OCI Conformance Test/tag param" classname="" status="skipped"></testcase>
    <testcase name="OCI Conformance Test/blob cancel" classname="" status="skipped"></testcase>
  </testsuite>
</testsuites>`

func TestSummarizeJUnit(t *testing.T) {
	s, err := summarizeJUnit([]byte(sampleJUnit))
	if err != nil {
		t.Fatal(err)
	}
	if s.total != 7 || s.passed != 2 || s.failed != 2 || s.errors != 1 || s.skipped != 1 || s.disabled != 1 {
		t.Errorf("suite counters %+v", s)
	}
	if s.cases != 6 || s.casesPassed != 2 || s.casesSkipped != 2 {
		t.Errorf("case counts %+v", s)
	}
	if len(s.failures) != 2 {
		t.Fatalf("failures %+v, want 2", s.failures)
	}
	// Sorted by name, with their reasons.
	if s.failures[0].name != "OCI Conformance Test/referrers/list" || s.failures[0].status != "error" {
		t.Errorf("first failure %+v", s.failures[0])
	}
	if !strings.Contains(s.failures[1].detail, "expected 416") {
		t.Errorf("second failure lost its detail: %+v", s.failures[1])
	}

	// A suite that counts no failure while a case failed is not the format
	// this parser knows, and must not pass as green.
	broken := strings.Replace(sampleJUnit, `failures="2" errors="1" disabled`, `failures="0" errors="0" disabled`, 1)
	if _, err := summarizeJUnit([]byte(broken)); err == nil {
		t.Error("a junit file whose counters disagree with its cases was accepted")
	}
	if _, err := summarizeJUnit([]byte("<testsuites></testsuites>")); err == nil {
		t.Error("a junit file without a suite was accepted")
	}
}
