package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"

	"github.com/berth-dev/berth/registry/reference"
)

func FuzzParse(f *testing.F) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		payload := readTestdata(f, e.Name())
		for _, ct := range []string{"", MediaTypeImageManifest, MediaTypeImageIndex, MediaTypeDockerManifest, MediaTypeDockerManifestList} {
			f.Add(ct, payload)
		}
	}
	f.Add(MediaTypeImageManifest, []byte(manifestJSON(`,"Layers":[]`, goodConfig, goodLayer)))
	f.Add(MediaTypeImageManifest, []byte(manifestJSON("", desc("application/vnd.oci.empty.v1+json", dEmpty, "2", `,"data":"e30="`), "")))

	f.Fuzz(func(t *testing.T, contentType string, payload []byte) {
		orig := bytes.Clone(payload)
		p, err := Parse(contentType, payload)
		if !bytes.Equal(payload, orig) {
			t.Fatal("Parse modified the payload")
		}
		if err != nil {
			if p != nil {
				t.Fatalf("Parse returned %+v with error %v", p, err)
			}
			n := 0
			for _, s := range []error{ErrInvalid, ErrUnsupported, ErrTooLarge} {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %v matches %d sentinels, want 1", err, n)
			}
			var bd *BadDigestError
			if errors.As(err, &bd) && !errors.Is(err, reference.ErrDigestInvalid) {
				t.Fatalf("BadDigestError %v does not match reference.ErrDigestInvalid", err)
			}
			return
		}

		switch p.MediaType {
		case MediaTypeImageManifest, MediaTypeImageIndex, MediaTypeDockerManifest, MediaTypeDockerManifestList:
		default:
			t.Fatalf("MediaType %q", p.MediaType)
		}
		if p.IsIndex() == (p.Config != nil) {
			t.Fatalf("index %v with config %+v", p.IsIndex(), p.Config)
		}
		seen := map[string]bool{}
		for _, r := range p.Refs {
			if _, err := reference.ParseDigest(string(r.Digest)); err != nil || r.Digest.Validate() != nil {
				t.Fatalf("Ref digest %q invalid: %v", r.Digest, err)
			}
			if r.Size < 0 || r.IsManifest != p.IsIndex() || seen[string(r.Digest)] {
				t.Fatalf("bad Ref %+v", r)
			}
			seen[string(r.Digest)] = true
		}
		if p.Config != nil && (len(p.Refs) == 0 || p.Refs[0].Digest != p.Config.Digest) {
			t.Fatalf("config %+v is not the first Ref in %+v", p.Config, p.Refs)
		}
		if s := p.Subject; s != nil && (s.Digest.Validate() != nil || s.Size < 0) {
			t.Fatalf("bad subject %+v", s)
		}

		// Parsing is a function of the content: the same payload under its
		// decided media type, and the same JSON re-encoded (other key
		// order, spacing and escapes), give the same result.
		again, err := Parse(p.MediaType, payload)
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("Parse under decided type %q = %+v, %v; first gave %+v", p.MediaType, again, err, p)
		}
		var generic any
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.UseNumber()
		if err := dec.Decode(&generic); err != nil {
			t.Fatalf("accepted payload does not decode: %v", err)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(generic); err != nil {
			t.Fatal(err)
		}
		re, err := Parse(contentType, buf.Bytes())
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil || !reflect.DeepEqual(re, p) {
			t.Fatalf("re-encoded payload parses as %+v, %v; original gave %+v\n%s", re, err, p, buf.Bytes())
		}
	})
}
