// Package reference parses the names that appear in OCI distribution API
// paths: repository names, tags, digests, and the /v2/... paths that carry
// them. It is pure string handling with no I/O, so the router can call it on
// every request.
//
// Errors are sentinel values wrapped with detail; callers map them to
// distribution-spec error codes:
//
//	ErrNameInvalid       → 400 NAME_INVALID
//	ErrTagInvalid        → 400 MANIFEST_INVALID on PUT (TAG_INVALID is not a
//	                       spec code), 404 MANIFEST_UNKNOWN on GET/HEAD/DELETE
//	ErrDigestInvalid     → 400 DIGEST_INVALID
//	ErrDigestUnsupported → 400 DIGEST_INVALID (it also matches ErrDigestInvalid)
//	ErrNoRoute           → 404 NOT_FOUND (no such endpoint)
package reference

import (
	"errors"
	"fmt"
	"strings"
)

// MaxNameLength is the longest repository name accepted, counting every
// component and separating slash. The distribution spec lets registries cap
// names; 255 keeps "host/name" inside common 255-byte reference limits.
const MaxNameLength = 255

// Errors returned by this package, always wrapped with detail; test with
// errors.Is.
var (
	// ErrNameInvalid reports a repository name that breaks the
	// distribution-spec grammar, is too long, or has fewer than the two
	// components (namespace/name) berth requires.
	ErrNameInvalid = errors.New("invalid repository name")
	// ErrTagInvalid reports a tag outside [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
	ErrTagInvalid = errors.New("invalid tag")
	// ErrDigestInvalid reports a string that is not a well-formed digest.
	ErrDigestInvalid = errors.New("invalid digest")
	// ErrDigestUnsupported reports a well-formed digest whose algorithm is not
	// sha256 or sha512. Errors carrying it also match ErrDigestInvalid.
	ErrDigestUnsupported = errors.New("unsupported digest algorithm")
)

// ValidateName reports whether name is a repository name berth accepts: the
// distribution-spec grammar
//
//	[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
//
// at most MaxNameLength bytes, with at least two slash-separated components
// because every berth repository lives in a namespace (user or organization).
func ValidateName(name string) error {
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w: %d bytes, longest allowed is %d", ErrNameInvalid, len(name), MaxNameLength)
	}
	components, err := scanName(name)
	if err != nil {
		return err
	}
	if components < 2 {
		return fmt.Errorf("%w: %q has no namespace (want namespace/name)", ErrNameInvalid, name)
	}
	return nil
}

// SplitName validates name and splits it at its first slash into the
// namespace (a user or organization) and the repository within it, which may
// itself contain slashes.
func SplitName(name string) (namespace, repository string, err error) {
	if err := ValidateName(name); err != nil {
		return "", "", err
	}
	namespace, repository, _ = strings.Cut(name, "/")
	return namespace, repository, nil
}

// scanName checks name against the distribution-spec grammar by hand (a
// regexp costs an allocation-heavy match on every request) and returns how
// many components it has. The tests check it against the spec regexp.
func scanName(name string) (int, error) {
	if name == "" {
		return 0, fmt.Errorf("%w: empty", ErrNameInvalid)
	}
	components := 1
	i := 0
	for {
		// A component: alphanumeric runs joined by single separators.
		if i >= len(name) || !isLowerAlnum(name[i]) {
			return 0, nameErr(name, i, "component must start with [a-z0-9]")
		}
		for i < len(name) && isLowerAlnum(name[i]) {
			i++
		}
		if i == len(name) {
			return components, nil
		}
		switch c := name[i]; c {
		case '/':
			components++
			i++
			continue
		case '.':
			i++
		case '_':
			i++
			if i < len(name) && name[i] == '_' {
				i++
			}
		case '-':
			for i < len(name) && name[i] == '-' {
				i++
			}
		default:
			return 0, nameErr(name, i, "byte not allowed")
		}
		// A separator must be followed by another alphanumeric run.
		if i >= len(name) || !isLowerAlnum(name[i]) {
			return 0, nameErr(name, i, "separator must be followed by [a-z0-9]")
		}
	}
}

func nameErr(name string, i int, why string) error {
	if i < len(name) {
		return fmt.Errorf("%w: %q: %s (byte %q at %d)", ErrNameInvalid, clip(name), why, name[i], i)
	}
	return fmt.Errorf("%w: %q: %s (at end)", ErrNameInvalid, clip(name), why)
}

func isLowerAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

// clip keeps error messages short when a client sends a huge value.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
