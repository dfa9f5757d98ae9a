package storage

import (
	"fmt"

	"github.com/opencontainers/go-digest"
)

// MaxUploadIDLen bounds upload IDs so that they fit in a file name or object
// key with room to spare.
const MaxUploadIDLen = 128

// encodedLen lists the digest algorithms drivers accept and the length of
// their hex encoding. OCI registers sha256 and sha512; anything else would be
// a blob no client can ask for by a name it trusts.
var encodedLen = map[digest.Algorithm]int{
	digest.SHA256: 64,
	digest.SHA512: 128,
}

// ValidateUploadID reports whether id may name an upload: 1 to MaxUploadIDLen
// characters from [A-Za-z0-9_-]. The alphabet has no dot or separator, so an
// ID can never be ".", ".." or a path, which lets drivers use it directly as
// a file name or key segment.
func ValidateUploadID(id string) error {
	if id == "" || len(id) > MaxUploadIDLen {
		return fmt.Errorf("%w: upload ID length %d", ErrInvalid, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: upload ID has byte %q at %d", ErrInvalid, c, i)
		}
	}
	return nil
}

// ValidateDigest reports whether d may name a blob: "sha256:" followed by 64
// lowercase hex digits or "sha512:" followed by 128. It checks syntax itself
// rather than calling d.Validate, whose answer depends on which hash packages
// happen to be linked into the binary.
func ValidateDigest(d digest.Digest) error {
	s := string(d)
	for i := 0; i < len(s); i++ {
		if s[i] != ':' {
			continue
		}
		want, ok := encodedLen[digest.Algorithm(s[:i])]
		if !ok {
			return fmt.Errorf("%w: unsupported digest algorithm %q", ErrInvalid, s[:i])
		}
		hex := s[i+1:]
		if len(hex) != want {
			return fmt.Errorf("%w: digest %s has %d hex digits, want %d", ErrInvalid, s[:i], len(hex), want)
		}
		for j := 0; j < len(hex); j++ {
			if c := hex[j]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return fmt.Errorf("%w: digest has non-hex byte %q", ErrInvalid, c)
			}
		}
		return nil
	}
	return fmt.Errorf("%w: digest %q has no algorithm", ErrInvalid, truncate(s))
}

// truncate keeps error messages short when a client sends a huge value.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
