// Package httprange parses the two byte-range headers the registry meets:
// Range on blob GETs (RFC 9110 section 14.2) and Content-Range on chunked
// upload PATCHes (the OCI distribution spec's "<start>-<end>" form).
package httprange

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Outcomes of Parse other than success. Each tells the caller what to send.
var (
	// ErrMalformed: the header does not parse, or uses a unit other than
	// bytes. RFC 9110 says to ignore it: serve the whole blob with 200.
	ErrMalformed = errors.New("httprange: malformed range")
	// ErrUnsatisfiable: the header is valid but selects no byte of the blob.
	// Answer 416 with "Content-Range: bytes */<size>".
	ErrUnsatisfiable = errors.New("httprange: range not satisfiable")
	// ErrMultiple: the header asks for several ranges. They are valid but
	// the registry does not build multipart responses; the server may
	// ignore Range, so serve the whole blob with 200.
	ErrMultiple = errors.New("httprange: multiple ranges not supported")
)

// Parse interprets a Range header for a representation of size bytes and
// returns the inclusive byte positions to send: 0 <= start <= end < size
// whenever err is nil. It accepts one range-spec of the form "bytes=a-b",
// "bytes=a-" or "bytes=-n" (the last n bytes); an end beyond the blob is
// clamped to its last byte. An empty header is ErrMalformed: callers check
// for its absence first.
func Parse(header string, size int64) (start, end int64, err error) {
	unit, set, ok := strings.Cut(trimOWS(header), "=")
	if !ok || !strings.EqualFold(trimOWS(unit), "bytes") {
		return 0, 0, fmt.Errorf("%w: not a bytes range", ErrMalformed)
	}
	var spec string
	specs := 0
	// A list may hold empty elements ("a-b, ,c-d"), which recipients skip.
	for elem := range strings.SplitSeq(set, ",") {
		elem = trimOWS(elem)
		if elem == "" {
			continue
		}
		if !validSpec(elem) {
			return 0, 0, fmt.Errorf("%w: bad range-spec %q", ErrMalformed, clip(elem))
		}
		specs++
		spec = elem
	}
	switch {
	case specs == 0:
		return 0, 0, fmt.Errorf("%w: empty range set", ErrMalformed)
	case specs > 1:
		return 0, 0, ErrMultiple
	}
	return resolve(spec, size)
}

// validSpec reports whether s is "digits-", "digits-digits" or "-digits",
// with last >= first in the middle form (RFC 9110 makes a spec with
// last < first invalid, and one invalid spec invalidates the header).
func validSpec(s string) bool {
	first, last, ok := strings.Cut(s, "-")
	if !ok || !digits(first) && first != "" || !digits(last) && last != "" || first == "" && last == "" {
		return false
	}
	if first != "" && last != "" {
		return parseDigits(last) >= parseDigits(first)
	}
	return true
}

// resolve turns a syntactically valid spec into positions within size.
func resolve(spec string, size int64) (start, end int64, err error) {
	if size <= 0 {
		return 0, 0, fmt.Errorf("%w: empty representation", ErrUnsatisfiable)
	}
	first, last, _ := strings.Cut(spec, "-")
	if first == "" {
		n := parseDigits(last)
		if n == 0 {
			return 0, 0, fmt.Errorf("%w: zero-length suffix", ErrUnsatisfiable)
		}
		return max(0, size-n), size - 1, nil
	}
	start = parseDigits(first)
	if start >= size {
		return 0, 0, fmt.Errorf("%w: first byte %s beyond size %d", ErrUnsatisfiable, clip(first), size)
	}
	end = size - 1
	if last != "" {
		end = min(end, parseDigits(last))
	}
	return start, end, nil
}

// ParseContentRange parses the Content-Range header of an upload chunk:
// "<start>-<end>" with inclusive positions, optionally prefixed by "bytes "
// (as RFC 9110 writes it) or "bytes=" (as some clients do), and optionally
// followed by "/<total>" or "/*". It returns 0 <= start <= end whenever
// err is nil; every failure wraps ErrMalformed. Whether start matches the
// upload's current offset is the caller's check (416 when it does not).
func ParseContentRange(header string) (start, end int64, err error) {
	s := trimOWS(header)
	if len(s) >= 6 && strings.EqualFold(s[:5], "bytes") && (s[5] == ' ' || s[5] == '=') {
		s = strings.TrimLeft(s[6:], " ")
	}
	s, total, hasTotal := strings.Cut(s, "/")
	first, last, ok := strings.Cut(s, "-")
	if !ok || !digits(first) || !digits(last) {
		return 0, 0, fmt.Errorf("%w: content range %q", ErrMalformed, clip(header))
	}
	start, end = parseDigits(first), parseDigits(last)
	if start > end || end == math.MaxInt64 {
		return 0, 0, fmt.Errorf("%w: content range %q out of order or too large", ErrMalformed, clip(header))
	}
	if hasTotal && total != "*" {
		if !digits(total) || parseDigits(total) <= end {
			return 0, 0, fmt.Errorf("%w: content range total %q", ErrMalformed, clip(total))
		}
	}
	return start, end, nil
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseDigits parses a string of digits, saturating at math.MaxInt64: a
// position too large to represent is beyond any blob, which is how the
// callers treat it.
func parseDigits(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return math.MaxInt64
	}
	return n
}

// trimOWS removes the optional whitespace (space and tab) HTTP allows
// around header values and list elements.
func trimOWS(s string) string { return strings.Trim(s, " \t") }

// clip keeps error messages short when a client sends a huge header.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
