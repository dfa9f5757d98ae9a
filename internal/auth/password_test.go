package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestPassword(t *testing.T) {
	h := testHash(t, "s3cret")
	if !strings.HasPrefix(h, "$2a$") {
		t.Fatalf("hash %q is not bcrypt", h)
	}
	if h2 := testHash(t, "other"); h2 == h {
		t.Fatal("different passwords hashed alike")
	}
	for _, tc := range []struct {
		hash, pw string
		want     bool
	}{
		{h, "s3cret", true},
		{h, "s3cret ", false},
		{h, "", false},
		{"", "", false},
		{"", "s3cret", false},
		{"not-a-hash", "s3cret", false},
		{h, strings.Repeat("x", 100), false},
	} {
		if got := CheckPassword(tc.hash, tc.pw); got != tc.want {
			t.Errorf("CheckPassword(%q, %q) = %v, want %v", tc.hash, tc.pw, got, tc.want)
		}
	}
	if _, err := HashPassword(strings.Repeat("x", 73)); !errors.Is(err, ErrPasswordTooLong) {
		t.Fatalf("73-byte password: err = %v, want ErrPasswordTooLong", err)
	}
}
