package reference

import (
	"errors"
	"strings"
	"testing"
)

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"acme/app", "a/b.c-d_e__f/g", "a/b___c", "A/b", "a//b", "foo/blobs/bar", "a/b--c", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		want := len(name) <= MaxNameLength && specName.MatchString(name) && strings.Contains(name, "/")
		if (err == nil) != want {
			t.Fatalf("ValidateName(%q) = %v, spec says ok=%v", name, err, want)
		}
		if err != nil && !errors.Is(err, ErrNameInvalid) {
			t.Fatalf("ValidateName(%q) error %v does not match ErrNameInvalid", name, err)
		}
		ns, repo, serr := SplitName(name)
		if (serr == nil) != (err == nil) {
			t.Fatalf("SplitName and ValidateName disagree on %q", name)
		}
		if serr == nil && (ns+"/"+repo != name || strings.Contains(ns, "/")) {
			t.Fatalf("SplitName(%q) = %q, %q", name, ns, repo)
		}
	})
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"latest", "v1.0", "sha256:" + sha256Hex, "sha512:" + sha512Hex, "sha256:totallywrong", "sha384:abc", ".x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tag, d, err := ParseRef(s)
		if err != nil {
			if tag != "" || d != "" {
				t.Fatalf("ParseRef(%q) returned values with error %v", s, err)
			}
			isTag, isDigest := errors.Is(err, ErrTagInvalid), errors.Is(err, ErrDigestInvalid)
			if isTag == isDigest {
				t.Fatalf("ParseRef(%q) error %v must be exactly one of tag or digest", s, err)
			}
			if isTag != !strings.Contains(s, ":") {
				t.Fatalf("ParseRef(%q) error %v judged the wrong kind", s, err)
			}
			return
		}
		switch {
		case tag != "" && d == "":
			if tag != s || !specTag.MatchString(tag) {
				t.Fatalf("ParseRef(%q) tag %q does not match the spec", s, tag)
			}
		case tag == "" && d != "":
			if string(d) != s {
				t.Fatalf("ParseRef(%q) digest %q differs from input", s, d)
			}
			if verr := d.Validate(); verr != nil {
				t.Fatalf("ParseRef(%q) accepted a digest go-digest rejects: %v", s, verr)
			}
			if a := d.Algorithm(); a != "sha256" && a != "sha512" {
				t.Fatalf("ParseRef(%q) accepted algorithm %q", s, a)
			}
		default:
			t.Fatalf("ParseRef(%q) = %q, %q: want exactly one", s, tag, d)
		}
	})
}

func FuzzSplitV2Path(f *testing.F) {
	for _, s := range []string{
		"/v2/", "/v2/_catalog", "/v2/acme/app/manifests/latest", "/v2/foo/blobs/bar/manifests/x",
		"/v2/acme/app/blobs/uploads/", "/v2/acme/app/blobs/uploads/abc", "/v2/acme/app/tags/list",
		"/v2/acme/app/referrers/sha256:" + sha256Hex, "/v2/acme/../app/tags/list", "/v2/a%2fb/tags/list",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, err := SplitV2Path(p)
		if err != nil {
			if !errors.Is(err, ErrNoRoute) && !errors.Is(err, ErrNameInvalid) {
				t.Fatalf("SplitV2Path(%q) error %v matches neither sentinel", p, err)
			}
			if r != (Route{}) {
				t.Fatalf("SplitV2Path(%q) returned %+v with an error", p, r)
			}
			return
		}
		// Whatever is accepted is free of traversal and encoding tricks.
		for _, bad := range []string{"%", "\\", "//", "/./", "/../", "\x00"} {
			if strings.Contains(p, bad) {
				t.Fatalf("SplitV2Path(%q) accepted a path containing %q", p, bad)
			}
		}
		if strings.HasSuffix(p, "/..") || strings.HasSuffix(p, "/.") {
			t.Fatalf("SplitV2Path(%q) accepted a dot segment", p)
		}
		if r.Rest == "." || r.Rest == ".." || strings.Contains(r.Rest, "/") {
			t.Fatalf("SplitV2Path(%q) gave Rest %q", p, r.Rest)
		}
		if r.Kind == KindBase || r.Kind == KindCatalog {
			if r.Name != "" || r.Rest != "" {
				t.Fatalf("SplitV2Path(%q) = %+v", p, r)
			}
			return
		}
		if ValidateName(r.Name) != nil {
			t.Fatalf("SplitV2Path(%q) gave invalid name %q", p, r.Name)
		}
		// The route must rebuild the path it came from.
		rebuilt := "/v2/" + r.Name + "/" + string(r.Kind)
		switch r.Kind {
		case KindManifests, KindBlobs, KindReferrers:
			if r.Rest == "" {
				t.Fatalf("SplitV2Path(%q) gave empty Rest for %s", p, r.Kind)
			}
			rebuilt += "/" + r.Rest
		case KindUploads:
			if r.Rest != "" || strings.HasSuffix(p, "/") {
				rebuilt += "/" + r.Rest
			}
		}
		if rebuilt != p {
			t.Fatalf("SplitV2Path(%q) = %+v, which rebuilds as %q", p, r, rebuilt)
		}
	})
}
