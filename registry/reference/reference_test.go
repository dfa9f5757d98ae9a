package reference

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// specName is the distribution-spec name regexp, kept here as the oracle for
// the hand-written scanner.
var specName = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

var specTag = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

const (
	sha256Hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	sha512Hex = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)

func TestValidateName(t *testing.T) {
	long := "ns/" + strings.Repeat("a", MaxNameLength-3)
	tests := []struct {
		name string
		ok   bool
	}{
		{"library/busybox", true},
		{"acme/team/app", true},
		{"a/b", true},
		{"a0/b-c", true},
		{"a/b--c", true},
		{"a/b---c", true},
		{"a/b_c", true},
		{"a/b__c", true},
		{"a/b.c", true},
		{"a/b.c-d_e__f", true},
		{"foo/blobs/bar", true},
		{"foo/manifests", true},
		{long, true},
		{long + "a", false},
		{"busybox", false}, // berth needs a namespace
		{"", false},
		{"a/", false},
		{"/a", false},
		{"a//b", false},
		{"A/b", false},
		{"a/B", false},
		{"a/b___c", false},
		{"a/b..c", false},
		{"a/b._c", false},
		{"a/b-_c", false},
		{"a/_b", false},
		{"a/b_", false},
		{"a/b-", false},
		{"a/.b", false},
		{"a/b/", false},
		{"a/b c", false},
		{"a/b\x00", false},
		{"a/..", false},
		{"a/b%2fc", false},
		{"a/bé", false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrNameInvalid) {
			t.Errorf("ValidateName(%q) error %v does not match ErrNameInvalid", tt.name, err)
		}
		// The two-component rule aside, the scanner must agree with the spec.
		_, scanErr := scanName(tt.name)
		if (scanErr == nil) != specName.MatchString(tt.name) {
			t.Errorf("scanName(%q) = %v, spec regexp match = %v", tt.name, scanErr, specName.MatchString(tt.name))
		}
	}
}

func TestSplitName(t *testing.T) {
	tests := []struct{ in, ns, repo string }{
		{"acme/app", "acme", "app"},
		{"acme/team/app", "acme", "team/app"},
	}
	for _, tt := range tests {
		ns, repo, err := SplitName(tt.in)
		if err != nil || ns != tt.ns || repo != tt.repo {
			t.Errorf("SplitName(%q) = %q, %q, %v; want %q, %q", tt.in, ns, repo, err, tt.ns, tt.repo)
		}
	}
	if _, _, err := SplitName("app"); !errors.Is(err, ErrNameInvalid) {
		t.Errorf("SplitName(app) error = %v, want ErrNameInvalid", err)
	}
}

func TestValidateTag(t *testing.T) {
	tests := []struct {
		tag string
		ok  bool
	}{
		{"latest", true},
		{"v1.2.3", true},
		{"_private", true},
		{"UPPER-case_1.0", true},
		{"0", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{".hidden", false},
		{"-dash", false},
		{"a:b", false},
		{"a/b", false},
		{"a b", false},
		{"a+b", false},
		{"tag\x00", false},
	}
	for _, tt := range tests {
		err := ValidateTag(tt.tag)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateTag(%q) = %v, want ok=%v", tt.tag, err, tt.ok)
		}
		if (err == nil) != specTag.MatchString(tt.tag) {
			t.Errorf("ValidateTag(%q) = %v disagrees with the spec regexp", tt.tag, err)
		}
		if err != nil && !errors.Is(err, ErrTagInvalid) {
			t.Errorf("ValidateTag(%q) error %v does not match ErrTagInvalid", tt.tag, err)
		}
	}
}

func TestParseDigest(t *testing.T) {
	tests := []struct {
		in          string
		wantErr     error // nil for success
		unsupported bool
	}{
		{"sha256:" + sha256Hex, nil, false},
		{"sha512:" + sha512Hex, nil, false},
		{"sha256:totallywrong", ErrDigestInvalid, false},
		{"sha256:" + strings.ToUpper(sha256Hex), ErrDigestInvalid, false},
		{"sha256:" + sha256Hex[:63], ErrDigestInvalid, false},
		{"sha256:" + sha256Hex + "0", ErrDigestInvalid, false},
		{"sha512:" + sha256Hex, ErrDigestInvalid, false},
		{"sha256:", ErrDigestInvalid, false},
		{":" + sha256Hex, ErrDigestInvalid, false},
		{sha256Hex, ErrDigestInvalid, false},
		{"SHA256:" + sha256Hex, ErrDigestInvalid, false},
		{"sha384:" + strings.Repeat("a", 96), ErrDigestUnsupported, true},
		{"md5:d41d8cd98f00b204e9800998ecf8427e", ErrDigestUnsupported, true},
		{"multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", ErrDigestUnsupported, true},
		{"sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", ErrDigestUnsupported, true},
		{"sha+:abc", ErrDigestInvalid, false},
		{"+sha:abc", ErrDigestInvalid, false},
		{"md5:abc/def", ErrDigestInvalid, false},
	}
	for _, tt := range tests {
		d, err := ParseDigest(tt.in)
		if tt.wantErr == nil {
			if err != nil || string(d) != tt.in {
				t.Errorf("ParseDigest(%q) = %q, %v; want success", tt.in, d, err)
			}
			if verr := d.Validate(); verr != nil {
				t.Errorf("ParseDigest(%q) accepted what go-digest rejects: %v", tt.in, verr)
			}
			continue
		}
		if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrDigestInvalid) {
			t.Errorf("ParseDigest(%q) error = %v, want %v (and ErrDigestInvalid)", tt.in, err, tt.wantErr)
		}
		if errors.Is(err, ErrDigestUnsupported) != tt.unsupported {
			t.Errorf("ParseDigest(%q) error = %v, unsupported = %v", tt.in, err, tt.unsupported)
		}
		if d != "" {
			t.Errorf("ParseDigest(%q) returned %q with an error", tt.in, d)
		}
	}
}

func TestParseRef(t *testing.T) {
	tests := []struct {
		in      string
		tag     string
		dgst    digest.Digest
		wantErr error
	}{
		{"latest", "latest", "", nil},
		{"v1.0", "v1.0", "", nil},
		{"sha256:" + sha256Hex, "", digest.Digest("sha256:" + sha256Hex), nil},
		{"sha512:" + sha512Hex, "", digest.Digest("sha512:" + sha512Hex), nil},
		// Looks like a digest, so it is judged as one.
		{"sha256:totallywrong", "", "", ErrDigestInvalid},
		{"latest:", "", "", ErrDigestInvalid},
		{"sha384:" + strings.Repeat("a", 96), "", "", ErrDigestUnsupported},
		// No colon: judged as a tag.
		{sha256Hex + sha256Hex + "x", "", "", ErrTagInvalid},
		{".bad", "", "", ErrTagInvalid},
		{"", "", "", ErrTagInvalid},
	}
	for _, tt := range tests {
		tag, d, err := ParseRef(tt.in)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("ParseRef(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if errors.Is(err, ErrTagInvalid) && errors.Is(err, ErrDigestInvalid) {
				t.Errorf("ParseRef(%q) error %v matches both tag and digest errors", tt.in, err)
			}
			continue
		}
		if err != nil || tag != tt.tag || d != tt.dgst {
			t.Errorf("ParseRef(%q) = %q, %q, %v; want %q, %q", tt.in, tag, d, err, tt.tag, tt.dgst)
		}
	}
}

func TestSplitV2Path(t *testing.T) {
	dg := "sha256:" + sha256Hex
	tests := []struct {
		path string
		want Route
		err  error
	}{
		{"/v2/", Route{Kind: KindBase}, nil},
		{"/v2", Route{Kind: KindBase}, nil},
		{"/v2/_catalog", Route{Kind: KindCatalog}, nil},
		{"/v2/acme/app/manifests/latest", Route{"acme/app", KindManifests, "latest"}, nil},
		{"/v2/acme/app/manifests/" + dg, Route{"acme/app", KindManifests, dg}, nil},
		{"/v2/acme/team/app/manifests/v1", Route{"acme/team/app", KindManifests, "v1"}, nil},
		{"/v2/acme/app/blobs/" + dg, Route{"acme/app", KindBlobs, dg}, nil},
		{"/v2/acme/app/blobs/uploads/", Route{"acme/app", KindUploads, ""}, nil},
		{"/v2/acme/app/blobs/uploads", Route{"acme/app", KindUploads, ""}, nil},
		{"/v2/acme/app/blobs/uploads/3f2a-bc_9", Route{"acme/app", KindUploads, "3f2a-bc_9"}, nil},
		{"/v2/acme/app/tags/list", Route{"acme/app", KindTagsList, ""}, nil},
		{"/v2/acme/app/referrers/" + dg, Route{"acme/app", KindReferrers, dg}, nil},
		// Names containing marker words: the rightmost marker wins.
		{"/v2/foo/blobs/bar/manifests/latest", Route{"foo/blobs/bar", KindManifests, "latest"}, nil},
		{"/v2/foo/manifests/manifests/latest", Route{"foo/manifests", KindManifests, "latest"}, nil},
		{"/v2/foo/blobs/blobs/" + dg, Route{"foo/blobs", KindBlobs, dg}, nil},
		{"/v2/foo/blobs/blobs/uploads/", Route{"foo/blobs", KindUploads, ""}, nil},
		{"/v2/foo/blobs/uploads/blobs/uploads/x", Route{"foo/blobs/uploads", KindUploads, "x"}, nil},
		{"/v2/foo/tags/tags/list", Route{"foo/tags", KindTagsList, ""}, nil},
		{"/v2/foo/referrers/manifests/list", Route{"foo/referrers", KindManifests, "list"}, nil},
		{"/v2/foo/tags/list/manifests/list", Route{"foo/tags/list", KindManifests, "list"}, nil},
		// The reference is left for the handler to judge.
		{"/v2/acme/app/manifests/sha256:bad", Route{"acme/app", KindManifests, "sha256:bad"}, nil},

		{"/v2/app/manifests/latest", Route{}, ErrNameInvalid},
		{"/v2/Acme/app/manifests/latest", Route{}, ErrNameInvalid},
		{"/v2/manifests/latest", Route{}, ErrNameInvalid},
		{"/v2/acme/app/tags/list/", Route{}, ErrNoRoute},
		{"/v2/acme/app/manifests/", Route{}, ErrNoRoute},
		{"/v2/acme/app/manifests", Route{}, ErrNoRoute},
		{"/v2/acme/app", Route{}, ErrNoRoute},
		{"/v2/acme/app/unknown/x", Route{}, ErrNoRoute},
		{"/v2/acme/app/tags/other", Route{}, ErrNoRoute},
		{"/v3/acme/app/tags/list", Route{}, ErrNoRoute},
		{"/v2acme/app/tags/list", Route{}, ErrNoRoute},
		{"", Route{}, ErrNoRoute},
		{"/v2//acme/app/tags/list", Route{}, ErrNoRoute},
		{"/v2/acme//app/tags/list", Route{}, ErrNoRoute},
		{"/v2/acme/../app/tags/list", Route{}, ErrNoRoute},
		{"/v2/acme/./app/tags/list", Route{}, ErrNoRoute},
		{"/v2/acme/app/manifests/..", Route{}, ErrNoRoute},
		{"/v2/acme/app/blobs/uploads/..", Route{}, ErrNoRoute},
		{"/v2/acme/%2e%2e/app/tags/list", Route{}, ErrNoRoute},
		{"/v2/acme%2Fapp/tags/list", Route{}, ErrNoRoute},
		{"/v2/acme/app/manifests/lat%00est", Route{}, ErrNoRoute},
		{"/v2/acme/app/manifests/lat\x00est", Route{}, ErrNoRoute},
		{"/v2/acme/app/manifests/a\\b", Route{}, ErrNoRoute},
		{"/v2/acme/app/manifests/a b", Route{}, ErrNoRoute},
		{"/v2/acme/app/manifests/ĺatest", Route{}, ErrNoRoute},
		{"/v2/acme/app/tags/list?n=1", Route{}, ErrNoRoute},
	}
	for _, tt := range tests {
		got, err := SplitV2Path(tt.path)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("SplitV2Path(%q) = %+v, %v; want error %v", tt.path, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("SplitV2Path(%q) = %+v, %v; want %+v", tt.path, got, err, tt.want)
		}
	}
}

func BenchmarkSplitV2Path(b *testing.B) {
	p := "/v2/acme/team/app/manifests/sha256:" + sha256Hex
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SplitV2Path(p); err != nil {
			b.Fatal(err)
		}
	}
}
