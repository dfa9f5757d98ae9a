package storage

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestValidateUploadID(t *testing.T) {
	good := []string{"a", "0", "5f1c3a0e-8b7d-4c2e-9f61-3b2a1d0c9e8f", "A_b-C", strings.Repeat("x", MaxUploadIDLen)}
	for _, id := range good {
		if err := ValidateUploadID(id); err != nil {
			t.Errorf("ValidateUploadID(%q) = %v, want nil", id, err)
		}
	}
	bad := []string{"", ".", "..", "../../etc", "a/b", `a\b`, "a.b", "a b", "a\x00", "ü", strings.Repeat("x", MaxUploadIDLen+1)}
	for _, id := range bad {
		if err := ValidateUploadID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateUploadID(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

func TestValidateDigest(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	good := []digest.Digest{
		digest.Digest("sha256:" + hex64),
		digest.Digest("sha512:" + hex64 + hex64),
	}
	for _, d := range good {
		if err := ValidateDigest(d); err != nil {
			t.Errorf("ValidateDigest(%q) = %v, want nil", d, err)
		}
	}
	bad := []digest.Digest{
		"",
		"sha256",
		"sha256:",
		digest.Digest("sha256:" + hex64[:63]),
		digest.Digest("sha256:" + hex64 + "a"),
		digest.Digest("sha256:" + strings.ToUpper(hex64)),
		digest.Digest("sha256:../../" + hex64[:58]),
		digest.Digest("sha512:" + hex64),
		digest.Digest("md5:" + hex64[:32]),
		digest.Digest("SHA256:" + hex64),
		digest.Digest(":" + hex64),
	}
	for _, d := range bad {
		if err := ValidateDigest(d); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateDigest(%q) = %v, want ErrInvalid", d, err)
		}
	}
}
