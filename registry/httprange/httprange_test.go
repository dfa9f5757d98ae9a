package httprange

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const size = 1000
	tests := []struct {
		header     string
		size       int64
		start, end int64
		err        error
	}{
		{header: "bytes=0-499", size: size, start: 0, end: 499},
		{header: "bytes=500-999", size: size, start: 500, end: 999},
		{header: "bytes=500-", size: size, start: 500, end: 999},
		{header: "bytes=0-0", size: size, start: 0, end: 0},
		{header: "bytes=999-999", size: size, start: 999, end: 999},
		{header: "bytes=0-", size: size, start: 0, end: 999},
		{header: "bytes=-1", size: size, start: 999, end: 999},
		{header: "bytes=-500", size: size, start: 500, end: 999},
		{header: "bytes=-1000", size: size, start: 0, end: 999},
		{header: "bytes=-5000", size: size, start: 0, end: 999},
		{header: "bytes=900-5000", size: size, start: 900, end: 999},
		{header: "bytes=0-99999999999999999999", size: size, start: 0, end: 999},
		{header: "bytes=-99999999999999999999", size: size, start: 0, end: 999},
		{header: "BYTES=1-2", size: size, start: 1, end: 2},
		{header: " bytes=1-2 ", size: size, start: 1, end: 2},
		{header: "bytes= 1-2", size: size, start: 1, end: 2},
		{header: "bytes=1-2,", size: size, start: 1, end: 2},
		{header: "bytes=, 1-2 ,", size: size, start: 1, end: 2},
		{header: "bytes=0-0", size: 1, start: 0, end: 0},
		{header: "bytes=-1", size: 1, start: 0, end: 0},

		{header: "bytes=1000-", size: size, err: ErrUnsatisfiable},
		{header: "bytes=1000-2000", size: size, err: ErrUnsatisfiable},
		{header: "bytes=99999999999999999999-", size: size, err: ErrUnsatisfiable},
		{header: "bytes=-0", size: size, err: ErrUnsatisfiable},
		{header: "bytes=0-", size: 0, err: ErrUnsatisfiable},
		{header: "bytes=-5", size: 0, err: ErrUnsatisfiable},
		{header: "bytes=0-0", size: 0, err: ErrUnsatisfiable},
		{header: "bytes=0-0", size: -1, err: ErrUnsatisfiable},

		{header: "bytes=0-1,5-6", size: size, err: ErrMultiple},
		{header: "bytes=0-1, -5", size: size, err: ErrMultiple},
		{header: "bytes=2000-,3000-", size: size, err: ErrMultiple},

		{header: "", size: size, err: ErrMalformed},
		{header: "bytes", size: size, err: ErrMalformed},
		{header: "bytes=", size: size, err: ErrMalformed},
		{header: "bytes=,", size: size, err: ErrMalformed},
		{header: "bytes=-", size: size, err: ErrMalformed},
		{header: "bytes=5", size: size, err: ErrMalformed},
		{header: "bytes=5-4", size: size, err: ErrMalformed},
		{header: "bytes=a-b", size: size, err: ErrMalformed},
		{header: "bytes=+1-2", size: size, err: ErrMalformed},
		{header: "bytes=1-+2", size: size, err: ErrMalformed},
		{header: "bytes=--1", size: size, err: ErrMalformed},
		{header: "bytes=1-2-3", size: size, err: ErrMalformed},
		{header: "bytes=1 -2", size: size, err: ErrMalformed},
		{header: "bytes=0x1-2", size: size, err: ErrMalformed},
		{header: "items=0-1", size: size, err: ErrMalformed},
		{header: "bytes 0-1", size: size, err: ErrMalformed},
		{header: "bytes=0-1,x", size: size, err: ErrMalformed},
		{header: "bytes=0-1,2-1", size: size, err: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q/%d", tc.header, tc.size), func(t *testing.T) {
			start, end, err := Parse(tc.header, tc.size)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Parse = %d, %d, %v; want %v", start, end, err, tc.err)
				}
				return
			}
			if err != nil || start != tc.start || end != tc.end {
				t.Fatalf("Parse = %d, %d, %v; want %d, %d, nil", start, end, err, tc.start, tc.end)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		header     string
		start, end int64
		ok         bool
	}{
		{"0-0", 0, 0, true},
		{"0-1023", 0, 1023, true},
		{"1024-2047", 1024, 2047, true},
		{"bytes 0-99", 0, 99, true},
		{"bytes=0-99", 0, 99, true},
		{"Bytes 5-9", 5, 9, true},
		{"bytes 0-99/100", 0, 99, true},
		{"bytes 0-99/*", 0, 99, true},
		{"0-99/1000", 0, 99, true},
		{" 3-4 ", 3, 4, true},
		{"9223372036854775806-9223372036854775806", 9223372036854775806, 9223372036854775806, true},

		{"", 0, 0, false},
		{"-", 0, 0, false},
		{"5", 0, 0, false},
		{"5-", 0, 0, false},
		{"-5", 0, 0, false},
		{"5-4", 0, 0, false},
		{"a-b", 0, 0, false},
		{"+1-2", 0, 0, false},
		{"1-2-3", 0, 0, false},
		{"bytes */100", 0, 0, false},
		{"bytes 0-99/99", 0, 0, false},
		{"bytes 0-99/50", 0, 0, false},
		{"bytes 0-99/", 0, 0, false},
		{"bytes 0-99/x", 0, 0, false},
		{"bytesx 0-1", 0, 0, false},
		{"0 - 1", 0, 0, false},
		{"0-99999999999999999999", 0, 0, false},
		{"0-9223372036854775807", 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.header), func(t *testing.T) {
			start, end, err := ParseContentRange(tc.header)
			if !tc.ok {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseContentRange = %d, %d, %v; want ErrMalformed", start, end, err)
				}
				return
			}
			if err != nil || start != tc.start || end != tc.end {
				t.Fatalf("ParseContentRange = %d, %d, %v; want %d, %d, nil", start, end, err, tc.start, tc.end)
			}
		})
	}
}

func TestErrorMessagesClipped(t *testing.T) {
	_, _, err := Parse("bytes="+strings.Repeat("9", 10000)+"x", 10)
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error for a huge header is %d bytes long", len(err.Error()))
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"bytes=0-1", "bytes=5-", "bytes=-3", "bytes=0-1,2-3", "bytes=, 1-2 ,", "items=1-2", "bytes=99999999999999999999-"} {
		f.Add(s, int64(10))
		f.Add(s, int64(0))
	}
	f.Fuzz(func(t *testing.T, header string, size int64) {
		start, end, err := Parse(header, size)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsatisfiable) && !errors.Is(err, ErrMultiple) {
				t.Fatalf("Parse(%q, %d) returned an error outside the sentinels: %v", header, size, err)
			}
			return
		}
		if !(0 <= start && start <= end && end < size) {
			t.Fatalf("Parse(%q, %d) = %d, %d: not 0 <= start <= end < size", header, size, start, end)
		}
		// The positions it returns, written back as a range, select the same bytes.
		s2, e2, err := Parse(fmt.Sprintf("bytes=%d-%d", start, end), size)
		if err != nil || s2 != start || e2 != end {
			t.Fatalf("round trip of %d-%d over %d gave %d, %d, %v", start, end, size, s2, e2, err)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"0-0", "bytes 0-99/100", "bytes=5-9", "0-99/*", "5-4", "1-2-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		start, end, err := ParseContentRange(header)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseContentRange(%q): error outside ErrMalformed: %v", header, err)
			}
			return
		}
		if !(0 <= start && start <= end) {
			t.Fatalf("ParseContentRange(%q) = %d, %d: not 0 <= start <= end", header, start, end)
		}
		if end-start+1 <= 0 {
			t.Fatalf("ParseContentRange(%q) = %d, %d: length overflows", header, start, end)
		}
		s2, e2, err := ParseContentRange(fmt.Sprintf("%d-%d", start, end))
		if err != nil || s2 != start || e2 != end {
			t.Fatalf("round trip of %d-%d gave %d, %d, %v", start, end, s2, e2, err)
		}
	})
}
