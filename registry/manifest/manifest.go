// Package manifest parses and validates the manifests a client PUTs to the
// registry: OCI image manifests and indexes, and Docker schema 2 manifests
// and manifest lists. It reads only the manifest JSON, never blob contents,
// and never rewrites the payload: the registry stores and serves the bytes it
// was given, since their digest is the manifest's identity.
package manifest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/registry/reference"
)

// Manifest media types Parse accepts.
const (
	MediaTypeImageManifest      = v1.MediaTypeImageManifest
	MediaTypeImageIndex         = v1.MediaTypeImageIndex
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// MaxManifestSize is the largest payload Parse reads, in bytes. The
// distribution spec asks registries to accept at least 4 MiB; the caller
// should stop reading the request body one byte past this.
const MaxManifestSize = 4 << 20

// Errors returned by Parse, wrapped with detail; test with errors.Is, and
// check for *BadDigestError with errors.As first. The distribution-spec code
// to answer with:
//
//	*BadDigestError → 400 DIGEST_INVALID (it also matches ErrInvalid)
//	ErrInvalid      → 400 MANIFEST_INVALID
//	ErrUnsupported  → 400 MANIFEST_INVALID (the conformance suite expects it
//	                  for unknown media types; 415 is the alternative)
//	ErrTooLarge     → 413 SIZE_INVALID
var (
	ErrInvalid     = errors.New("manifest invalid")
	ErrUnsupported = errors.New("manifest media type unsupported")
	ErrTooLarge    = errors.New("manifest too large")
)

// BadDigestError reports a descriptor whose digest is malformed or uses an
// algorithm other than sha256 or sha512. It matches ErrInvalid and the
// reference package's ErrDigestInvalid (and ErrDigestUnsupported when the
// digest was well-formed) under errors.Is. A digest that is well-formed but
// disagrees with a descriptor's embedded data is plain ErrInvalid.
type BadDigestError struct {
	Field  string // where in the manifest, such as "layers[2].digest"
	Digest string // the value sent, shortened if long
	Err    error  // from reference.ParseDigest
}

func (e *BadDigestError) Error() string {
	return fmt.Sprintf("%v: %s: %v", ErrInvalid, e.Field, e.Err)
}

// Unwrap lets errors.Is see both the manifest and the digest sentinel.
func (e *BadDigestError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// Descriptor identifies content a manifest points at.
type Descriptor struct {
	MediaType string
	Digest    digest.Digest
	Size      int64
}

// Ref is content that must exist in the repository for the manifest to be
// complete: a blob (config or layer) or, for an index, a child manifest.
type Ref struct {
	Digest     digest.Digest
	Size       int64
	MediaType  string
	IsManifest bool // a child of an index, stored as a manifest, not a blob
}

// Parsed is what the registry needs from a manifest besides its bytes.
type Parsed struct {
	// MediaType is one of the four constants above.
	MediaType string
	// ArtifactType is what the referrers API reports: the manifest's
	// artifactType, or for an OCI image manifest without one its config's
	// media type. Empty for Docker media types, which have no referrers.
	ArtifactType string
	// Config is the config descriptor of an image manifest; nil for indexes.
	Config *Descriptor
	// Subject is the manifest this one refers to (OCI types only). It is not
	// in Refs: the registry must accept a referrer before its subject.
	Subject *Descriptor
	// Annotations are the manifest's top-level annotations.
	Annotations map[string]string
	// Refs lists config then layers for a manifest, children for an index,
	// in payload order with duplicates removed. Layers the registry does
	// not hold (non-distributable or foreign media types, or any layer with
	// urls) are left out.
	Refs []Ref
}

// IsIndex reports whether the manifest is an index or manifest list.
func (p *Parsed) IsIndex() bool {
	return p.MediaType == MediaTypeImageIndex || p.MediaType == MediaTypeDockerManifestList
}

// rawDescriptor covers the descriptor fields Parse reads. Pointers tell a
// missing field from a zero one.
type rawDescriptor struct {
	MediaType *string  `json:"mediaType"`
	Digest    *string  `json:"digest"`
	Size      *int64   `json:"size"`
	URLs      []string `json:"urls"`
	Data      *string  `json:"data"`
}

// rawManifest covers all four manifest shapes, so one json.Unmarshal reads
// any of them; unknown fields are ignored.
type rawManifest struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     *string           `json:"mediaType"`
	ArtifactType  *string           `json:"artifactType"`
	Config        *rawDescriptor    `json:"config"`
	Layers        []rawDescriptor   `json:"layers"`
	Manifests     []rawDescriptor   `json:"manifests"`
	Subject       *rawDescriptor    `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

// Parse validates payload as a manifest of the type contentType names and
// returns what the registry needs to store it. contentType is the request's
// Content-Type; when it is empty or generic (application/json,
// application/octet-stream) the payload's own mediaType decides, and without
// one its shape does (config and layers: OCI image manifest; manifests: OCI
// index). A payload mediaType that disagrees with contentType is invalid.
func Parse(contentType string, payload []byte) (*Parsed, error) {
	if len(payload) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, limit is %d", ErrTooLarge, len(payload), MaxManifestSize)
	}
	if !utf8.Valid(payload) {
		return nil, fmt.Errorf("%w: payload is not UTF-8", ErrInvalid)
	}
	if t := bytes.TrimLeft(payload, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrInvalid)
	}
	var raw rawManifest
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := checkKeys(payload); err != nil {
		return nil, err
	}
	if raw.SchemaVersion == nil {
		return nil, fmt.Errorf("%w: schemaVersion missing", ErrInvalid)
	}
	if *raw.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: schemaVersion is %d, want 2", ErrInvalid, *raw.SchemaVersion)
	}
	mediaType, err := decideMediaType(contentType, &raw)
	if err != nil {
		return nil, err
	}
	p := &Parsed{MediaType: mediaType, Annotations: raw.Annotations}
	if p.IsIndex() {
		err = p.readIndex(&raw)
	} else {
		err = p.readManifest(&raw)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// decideMediaType picks the manifest type from the Content-Type, falling
// back to the payload's mediaType and then its shape.
func decideMediaType(contentType string, raw *rawManifest) (string, error) {
	ct, _, _ := strings.Cut(contentType, ";")
	ct = strings.ToLower(strings.TrimSpace(ct))
	switch ct {
	case MediaTypeImageManifest, MediaTypeImageIndex, MediaTypeDockerManifest, MediaTypeDockerManifestList:
		if raw.MediaType != nil && *raw.MediaType != ct {
			return "", fmt.Errorf("%w: mediaType %q does not match Content-Type %q", ErrInvalid, clip(*raw.MediaType), ct)
		}
		return ct, nil
	case "", "application/json", "application/octet-stream":
	default:
		return "", fmt.Errorf("%w: Content-Type %q", ErrUnsupported, clip(ct))
	}
	if raw.MediaType != nil {
		switch mt := *raw.MediaType; mt {
		case MediaTypeImageManifest, MediaTypeImageIndex, MediaTypeDockerManifest, MediaTypeDockerManifestList:
			return mt, nil
		default:
			return "", fmt.Errorf("%w: mediaType %q", ErrUnsupported, clip(mt))
		}
	}
	hasManifest := raw.Config != nil && raw.Layers != nil
	hasIndex := raw.Manifests != nil
	switch {
	case hasManifest && !hasIndex:
		return MediaTypeImageManifest, nil
	case hasIndex && raw.Config == nil && raw.Layers == nil:
		return MediaTypeImageIndex, nil
	default:
		return "", fmt.Errorf("%w: no media type given and the payload's shape names none", ErrUnsupported)
	}
}

func (p *Parsed) readManifest(raw *rawManifest) error {
	if raw.Manifests != nil {
		return fmt.Errorf("%w: image manifest has a manifests field", ErrInvalid)
	}
	if raw.Config == nil {
		return fmt.Errorf("%w: config missing", ErrInvalid)
	}
	// Both formats require the array; null unmarshals to the same nil
	// slice as a missing field, while [] does not.
	if raw.Layers == nil {
		return fmt.Errorf("%w: layers missing or null, want an array", ErrInvalid)
	}
	isOCI := p.MediaType == MediaTypeImageManifest
	cfg, err := checkDescriptor(field{"config", -1}, raw.Config)
	if err != nil {
		return err
	}
	p.Config = &cfg
	refs := newRefSet(1 + len(raw.Layers))
	if err := refs.add(field{"config", -1}, cfg, false); err != nil {
		return err
	}
	for i := range raw.Layers {
		l, err := checkDescriptor(field{"layers", i}, &raw.Layers[i])
		if err != nil {
			return err
		}
		if len(raw.Layers[i].URLs) > 0 || strings.Contains(l.MediaType, "nondistributable") || strings.Contains(l.MediaType, "foreign") {
			continue // fetched from elsewhere; the registry never holds it
		}
		if err := refs.add(field{"layers", i}, l, false); err != nil {
			return err
		}
	}
	p.Refs = refs.list
	if isOCI {
		if err := p.readOCIFields(raw); err != nil {
			return err
		}
		if p.ArtifactType == "" {
			p.ArtifactType = cfg.MediaType
		}
	}
	return nil
}

func (p *Parsed) readIndex(raw *rawManifest) error {
	if raw.Config != nil || raw.Layers != nil {
		return fmt.Errorf("%w: index has a config or layers field", ErrInvalid)
	}
	if raw.Manifests == nil {
		return fmt.Errorf("%w: manifests missing", ErrInvalid)
	}
	refs := newRefSet(len(raw.Manifests))
	for i := range raw.Manifests {
		m, err := checkDescriptor(field{"manifests", i}, &raw.Manifests[i])
		if err != nil {
			return err
		}
		if err := refs.add(field{"manifests", i}, m, true); err != nil {
			return err
		}
	}
	p.Refs = refs.list
	if p.MediaType == MediaTypeImageIndex {
		return p.readOCIFields(raw)
	}
	return nil
}

// readOCIFields reads the fields OCI 1.1 added for artifacts and referrers.
func (p *Parsed) readOCIFields(raw *rawManifest) error {
	if raw.ArtifactType != nil {
		if !validMediaType(*raw.ArtifactType) {
			return fmt.Errorf("%w: artifactType %q is not a media type", ErrInvalid, clip(*raw.ArtifactType))
		}
		p.ArtifactType = *raw.ArtifactType
	}
	if raw.Subject != nil {
		s, err := checkDescriptor(field{"subject", -1}, raw.Subject)
		if err != nil {
			return err
		}
		p.Subject = &s
	}
	return nil
}

// field names a descriptor's place in the manifest for error messages. It is
// formatted only when an error needs it, keeping the success path free of
// per-layer allocations.
type field struct {
	name  string
	index int // -1 for a field that is not an array element
}

func (f field) String() string {
	if f.index < 0 {
		return f.name
	}
	return fmt.Sprintf("%s[%d]", f.name, f.index)
}

// checkDescriptor validates the fields every descriptor must have, and its
// embedded data if any.
func checkDescriptor(field field, d *rawDescriptor) (Descriptor, error) {
	if d.MediaType == nil {
		return Descriptor{}, fmt.Errorf("%w: %s.mediaType missing", ErrInvalid, field)
	}
	if !validMediaType(*d.MediaType) {
		return Descriptor{}, fmt.Errorf("%w: %s.mediaType %q is not a media type", ErrInvalid, field, clip(*d.MediaType))
	}
	if d.Digest == nil {
		return Descriptor{}, fmt.Errorf("%w: %s.digest missing", ErrInvalid, field)
	}
	dg, err := reference.ParseDigest(*d.Digest)
	if err != nil {
		return Descriptor{}, &BadDigestError{Field: field.String() + ".digest", Digest: clip(*d.Digest), Err: err}
	}
	if d.Size == nil {
		return Descriptor{}, fmt.Errorf("%w: %s.size missing", ErrInvalid, field)
	}
	if *d.Size < 0 {
		return Descriptor{}, fmt.Errorf("%w: %s.size is negative", ErrInvalid, field)
	}
	if d.Data != nil {
		data, err := base64.StdEncoding.DecodeString(*d.Data)
		if err != nil {
			return Descriptor{}, fmt.Errorf("%w: %s.data is not base64: %w", ErrInvalid, field, err)
		}
		if int64(len(data)) != *d.Size {
			return Descriptor{}, fmt.Errorf("%w: %s.data holds %d bytes, size says %d", ErrInvalid, field, len(data), *d.Size)
		}
		if got := dg.Algorithm().FromBytes(data); got != dg {
			return Descriptor{}, fmt.Errorf("%w: %s.data digests to %s, digest says %s", ErrInvalid, field, got, dg)
		}
	}
	return Descriptor{MediaType: *d.MediaType, Digest: dg, Size: *d.Size}, nil
}

// refSet collects Refs in order without duplicates, so callers can insert
// them under a unique key, and rejects a digest given two different sizes.
type refSet struct {
	list []Ref
	size map[digest.Digest]int64
}

func newRefSet(n int) refSet {
	return refSet{list: make([]Ref, 0, n), size: make(map[digest.Digest]int64, n)}
}

func (s *refSet) add(field field, d Descriptor, isManifest bool) error {
	if size, seen := s.size[d.Digest]; seen {
		if size != d.Size {
			return fmt.Errorf("%w: %s: %s listed with sizes %d and %d", ErrInvalid, field, d.Digest, size, d.Size)
		}
		return nil
	}
	s.size[d.Digest] = d.Size
	s.list = append(s.list, Ref{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType, IsManifest: isManifest})
	return nil
}

// validMediaType checks the RFC 6838 shape OCI requires of media types:
// type "/" subtype, each a restricted-name, optionally followed by
// parameters (which are not examined).
func validMediaType(s string) bool {
	s, _, _ = strings.Cut(s, ";")
	typ, sub, ok := strings.Cut(strings.TrimRight(s, " "), "/")
	return ok && restrictedName(typ) && restrictedName(sub)
}

// restrictedName is RFC 6838's restricted-name: an alphanumeric followed by
// up to 126 of alphanumerics and !#$&-^_.+
func restrictedName(s string) bool {
	if len(s) == 0 || len(s) > 127 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || strings.IndexByte("!#$&-^_.+", c) < 0) {
			return false
		}
	}
	return true
}

// clip keeps error messages short when a client sends a huge value.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
