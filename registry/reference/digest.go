package reference

import (
	// Linked so that go-digest's Available, Validate and Verifier agree with
	// ParseDigest about both supported algorithms anywhere berth uses them.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ParseDigest parses s as a digest berth can verify: "sha256:" followed by 64
// lowercase hex digits or "sha512:" followed by 128. A string that is
// well-formed per the OCI digest grammar but names another algorithm fails
// with an error matching both ErrDigestUnsupported and ErrDigestInvalid;
// anything else fails with ErrDigestInvalid.
//
// It checks syntax itself rather than trusting digest.Digest.Validate, whose
// answer depends on which hash packages are linked into the binary (sha384
// would pass there, and berth does not support it).
func ParseDigest(s string) (digest.Digest, error) {
	alg, encoded, ok := strings.Cut(s, ":")
	if !ok {
		return "", fmt.Errorf("%w: %q has no algorithm prefix", ErrDigestInvalid, clip(s))
	}
	var want int
	switch digest.Algorithm(alg) {
	case digest.SHA256:
		want = 64
	case digest.SHA512:
		want = 128
	default:
		if validAlgorithm(alg) && validEncoded(encoded) {
			return "", fmt.Errorf("%w: %w: %q", ErrDigestInvalid, ErrDigestUnsupported, clip(alg))
		}
		return "", fmt.Errorf("%w: %q is not algorithm:encoded", ErrDigestInvalid, clip(s))
	}
	if len(encoded) != want {
		return "", fmt.Errorf("%w: %s digest has %d hex digits, want %d", ErrDigestInvalid, alg, len(encoded), want)
	}
	for i := 0; i < len(encoded); i++ {
		if c := encoded[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", fmt.Errorf("%w: %s digest has byte %q at %d (want lowercase hex)", ErrDigestInvalid, alg, c, i)
		}
	}
	return digest.Digest(s), nil
}

// ParseRef interprets the <reference> element of a manifest path. A string
// containing ':' can only be a digest (tags never contain one), so it is
// parsed as such and errors match ErrDigestInvalid; anything else is
// validated as a tag and errors match ErrTagInvalid. Exactly one of tag and
// dgst is non-empty on success.
func ParseRef(s string) (tag string, dgst digest.Digest, err error) {
	if strings.IndexByte(s, ':') >= 0 {
		d, err := ParseDigest(s)
		if err != nil {
			return "", "", err
		}
		return "", d, nil
	}
	if err := ValidateTag(s); err != nil {
		return "", "", err
	}
	return s, "", nil
}

// validAlgorithm checks the OCI grammar
// algorithm-component (algorithm-separator algorithm-component)*, where a
// component is [a-z0-9]+ and a separator is one of [+._-].
func validAlgorithm(s string) bool {
	if s == "" {
		return false
	}
	prevSep := true // the first byte must start a component
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isLowerAlnum(c):
			prevSep = false
		case c == '+' || c == '.' || c == '_' || c == '-':
			if prevSep {
				return false
			}
			prevSep = true
		default:
			return false
		}
	}
	return !prevSep
}

// validEncoded checks the OCI grammar [a-zA-Z0-9=_-]+ for the encoded part.
func validEncoded(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '=' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
