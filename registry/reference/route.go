package reference

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoRoute reports a path that is not a distribution API endpoint, or one
// carrying bytes or segments no endpoint accepts (percent escapes, "..",
// empty segments, control or non-ASCII bytes).
var ErrNoRoute = errors.New("no such /v2 endpoint")

// Kind names the endpoint family a /v2 path addresses.
type Kind string

// The endpoint families of the distribution API.
const (
	KindBase      Kind = "base"          // /v2/ (API version check)
	KindCatalog   Kind = "catalog"       // /v2/_catalog
	KindManifests Kind = "manifests"     // /v2/<name>/manifests/<reference>
	KindBlobs     Kind = "blobs"         // /v2/<name>/blobs/<digest>
	KindUploads   Kind = "blobs/uploads" // /v2/<name>/blobs/uploads/[<id>]
	KindTagsList  Kind = "tags/list"     // /v2/<name>/tags/list
	KindReferrers Kind = "referrers"     // /v2/<name>/referrers/<digest>
)

// Route is a /v2 path split into its parts.
type Route struct {
	// Name is the repository name, validated with ValidateName; empty for
	// KindBase and KindCatalog.
	Name string
	// Kind is the endpoint family.
	Kind Kind
	// Rest is the single path segment after the endpoint marker, not yet
	// parsed: the tag or digest for KindManifests (see ParseRef), the digest
	// for KindBlobs and KindReferrers (see ParseDigest), the upload session
	// ID for KindUploads ("" when starting an upload), and "" otherwise.
	Rest string
}

// SplitV2Path splits an escaped URL path (http.Request.URL.EscapedPath, so
// an encoded slash stays visible as "%2F" and is refused) into a Route.
//
// Names may themselves contain the words "manifests", "blobs" and so on as
// components ("acme/blobs/x" is a valid name), so the endpoint is decided by
// the rightmost marker: every Rest is a single segment, which pins the
// marker to the last two or three segments. "<name>/blobs/uploads" (no
// trailing slash) is read as starting an upload rather than fetching a blob
// whose digest would be "uploads", which could never be valid.
//
// Errors match ErrNoRoute for paths that are no endpoint and ErrNameInvalid
// for an endpoint path whose name is invalid.
func SplitV2Path(p string) (Route, error) {
	if p == "/v2" || p == "/v2/" {
		return Route{Kind: KindBase}, nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return Route{}, fmt.Errorf("%w: path does not start with /v2/", ErrNoRoute)
	}
	if err := checkPathBytes(rest); err != nil {
		return Route{}, err
	}
	if rest == "_catalog" {
		return Route{Kind: KindCatalog}, nil
	}

	h1, s1 := cutLast(rest)
	h2, s2 := cutLast(h1)
	h3, s3 := cutLast(h2)

	var r Route
	switch {
	case s3 == "blobs" && s2 == "uploads":
		r = Route{Name: h3, Kind: KindUploads, Rest: s1}
	case s2 == "blobs" && s1 == "uploads":
		r = Route{Name: h2, Kind: KindUploads}
	case s1 == "":
		return Route{}, fmt.Errorf("%w: trailing slash", ErrNoRoute)
	case s2 == "manifests":
		r = Route{Name: h2, Kind: KindManifests, Rest: s1}
	case s2 == "blobs":
		r = Route{Name: h2, Kind: KindBlobs, Rest: s1}
	case s2 == "tags" && s1 == "list":
		r = Route{Name: h2, Kind: KindTagsList}
	case s2 == "referrers":
		r = Route{Name: h2, Kind: KindReferrers, Rest: s1}
	default:
		return Route{}, fmt.Errorf("%w: no endpoint marker in %q", ErrNoRoute, clip(p))
	}
	if err := ValidateName(r.Name); err != nil {
		return Route{}, err
	}
	return r, nil
}

// cutLast splits s at its last slash; with no slash, head is empty and tail
// is s.
func cutLast(s string) (head, tail string) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return "", s
	}
	return s[:i], s[i+1:]
}

// checkPathBytes refuses what no name, tag, digest or upload ID contains, so
// that nothing after the router has to think about traversal or encoding
// tricks: percent escapes (an encoded "/" or "." would otherwise smuggle
// structure past this split), backslashes, control and non-ASCII bytes,
// empty segments (except the trailing one of an upload start) and "." or
// ".." segments.
func checkPathBytes(rest string) error {
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c <= 0x20 || c >= 0x7f || c == '%' || c == '\\' || c == '?' || c == '#' {
			return fmt.Errorf("%w: path has byte %q at %d", ErrNoRoute, c, i+len("/v2/"))
		}
	}
	for seg, more := range segments(rest) {
		switch {
		case seg == "" && more:
			return fmt.Errorf("%w: empty path segment", ErrNoRoute)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: %q path segment", ErrNoRoute, seg)
		}
	}
	return nil
}

// segments yields the slash-separated segments of s, each with whether
// another follows it.
func segments(s string) func(yield func(string, bool) bool) {
	return func(yield func(string, bool) bool) {
		for {
			i := strings.IndexByte(s, '/')
			if i < 0 {
				yield(s, false)
				return
			}
			if !yield(s[:i], true) {
				return
			}
			s = s[i+1:]
		}
	}
}
