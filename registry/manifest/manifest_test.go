package manifest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/registry/reference"
)

const (
	dConfig  = "sha256:b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910"
	dLayer1  = "sha256:77ea7eee3d80b1a38f83906dd3048e2689457eb90e18a7d12f839c5ae37106a2"
	dLayer2  = "sha256:95cf1a2e1698fe3ca1fcc3f653119146b271d0b62e487ec264441e886a11bd06"
	dLayer3  = "sha256:a0e70458d19e37e14d6388030a017c587283e2fb6ef10c0744cad0294c47e8f8"
	dAmd64   = "sha256:5861314d7fccb39c2192173240eab44fa35ca66426201ca2acd0630a6258dd51"
	dArm64   = "sha256:f69162950f235e3cdbbad33f1f912d1a504be90d8a37d002c735d6f3e3882265"
	dAttest  = "sha256:bcc7930764b9b7a8b9bbd0161b568e869466d0c4efaee8006a56f3e8e6d82b69"
	dChild   = "sha256:729ea5f8e4b696697d9088488c4ce0b0121e4e84eb1c13dfa4fd78fdb0b78f63"
	dNested  = "sha256:d815cf088759d23d23029fc27e56fbfa692b78d1c8d62c1a92f07eaffff956dd"
	dSubject = "sha256:a9491f4c1bf7b0cffbadcba2db8f028e4b3f2867cb59e1f3a0bc1968f3c51242"
	dSBOM    = "sha256:98f3ae1ef67113d8140d4f6cb8d2830070e21ea48f091be519659846c771a374"
	dEmpty   = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	dDockCfg = "sha256:df041fe8f874f17eec7bbd30ff3f81ae1a9651d7cd34702238a1977b9510c01a"
	dDockL1  = "sha256:31489cd5d662a434e2d42bc0fe00f8e04248eaf5a9b6f44f07c67a59c0cfd4c8"
	dDockL2  = "sha256:95cae5499083fa2aa553a0af61ce9e7f9d85dce5b939b6a9347133f85c5e236b"
	dWinCfg  = "sha256:540dfc15d7fe480e1eeba6544358e5fa26d904f94e623757e4c0079bae91d940"
	d512Cfg  = "sha512:94c8b7ece2eb4a7c29b365b19a26e8a5fb2d7afc13e94824876847466024aa337c22798ae3a2e9c0689af7fb1b909f4af13c8cb490d80cb4440f6b26634c0d9a"
	d512L    = "sha512:510a172555f902f65dca277c21f66afa2e1b8660f433e9a666a3890f75d6776f48ee8f8eef4b3ffab466abc5d9a3dfd8b218c09f598bbef82c814ff84795c6bb"

	ociConfigType = "application/vnd.oci.image.config.v1+json"
	ociLayerGzip  = "application/vnd.oci.image.layer.v1.tar+gzip"
	dockerLayer   = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func blob(dg string, size int64, mt string) Ref {
	return Ref{Digest: digest.Digest(dg), Size: size, MediaType: mt}
}

func child(dg string, size int64, mt string) Ref {
	return Ref{Digest: digest.Digest(dg), Size: size, MediaType: mt, IsManifest: true}
}

func TestParseTestdata(t *testing.T) {
	tests := []struct {
		file string
		ct   string
		want Parsed
	}{
		{
			file: "oci-image-manifest.json", ct: MediaTypeImageManifest,
			want: Parsed{
				MediaType:    MediaTypeImageManifest,
				ArtifactType: ociConfigType,
				Config:       &Descriptor{ociConfigType, dConfig, 1470},
				Annotations: map[string]string{
					"org.opencontainers.image.created":   "2025-11-03T10:12:44Z",
					"org.opencontainers.image.base.name": "docker.io/library/alpine:3.20",
				},
				Refs: []Ref{
					blob(dConfig, 1470, ociConfigType),
					blob(dLayer1, 2811478, ociLayerGzip),
					blob(dLayer2, 32, ociLayerGzip),
					blob(dLayer3, 16724, "application/vnd.oci.image.layer.v1.tar+zstd"),
				},
			},
		},
		{
			file: "oci-index.json", ct: MediaTypeImageIndex,
			want: Parsed{
				MediaType:   MediaTypeImageIndex,
				Annotations: map[string]string{"org.opencontainers.image.ref.name": "3.20"},
				Refs: []Ref{
					child(dAmd64, 1058, MediaTypeImageManifest),
					child(dArm64, 1058, MediaTypeImageManifest),
					child(dAttest, 841, MediaTypeImageManifest),
				},
			},
		},
		{
			file: "oci-index-nested.json", ct: MediaTypeImageIndex,
			want: Parsed{
				MediaType:    MediaTypeImageIndex,
				ArtifactType: "application/vnd.example.bundle.v1",
				Subject:      &Descriptor{MediaTypeImageIndex, dSubject, 1609},
				Refs: []Ref{
					child(dNested, 702, MediaTypeImageIndex),
					child(dChild, 525, MediaTypeImageManifest),
				},
			},
		},
		{
			file: "oci-artifact.json", ct: MediaTypeImageManifest,
			want: Parsed{
				MediaType:    MediaTypeImageManifest,
				ArtifactType: "application/spdx+json",
				Config:       &Descriptor{"application/vnd.oci.empty.v1+json", dEmpty, 2},
				Subject:      &Descriptor{MediaTypeImageManifest, dSubject, 1609},
				Annotations:  map[string]string{"org.opencontainers.image.created": "2025-11-03T10:20:00Z"},
				Refs: []Ref{
					blob(dEmpty, 2, "application/vnd.oci.empty.v1+json"),
					blob(dSBOM, 4096, "application/spdx+json"),
				},
			},
		},
		{
			file: "docker-manifest.json", ct: MediaTypeDockerManifest,
			want: Parsed{
				MediaType: MediaTypeDockerManifest,
				Config:    &Descriptor{"application/vnd.docker.container.image.v1+json", dDockCfg, 7023},
				Refs: []Ref{
					blob(dDockCfg, 7023, "application/vnd.docker.container.image.v1+json"),
					blob(dDockL1, 32654, dockerLayer),
					blob(dDockL2, 16724, dockerLayer),
				},
			},
		},
		{
			file: "docker-manifest-list.json", ct: MediaTypeDockerManifestList,
			want: Parsed{
				MediaType: MediaTypeDockerManifestList,
				Refs: []Ref{
					child(dAmd64, 528, MediaTypeDockerManifest),
					child(dArm64, 528, MediaTypeDockerManifest),
				},
			},
		},
		{
			// Foreign, non-distributable and urls-bearing layers are not
			// the registry's to hold.
			file: "docker-foreign-layers.json", ct: MediaTypeDockerManifest,
			want: Parsed{
				MediaType: MediaTypeDockerManifest,
				Config:    &Descriptor{"application/vnd.docker.container.image.v1+json", dWinCfg, 2146},
				Refs: []Ref{
					blob(dWinCfg, 2146, "application/vnd.docker.container.image.v1+json"),
					blob(dDockL2, 3210, dockerLayer),
				},
			},
		},
		{
			file: "oci-sha512.json", ct: MediaTypeImageManifest,
			want: Parsed{
				MediaType:    MediaTypeImageManifest,
				ArtifactType: ociConfigType,
				Config:       &Descriptor{ociConfigType, d512Cfg, 9},
				Refs: []Ref{
					blob(d512Cfg, 9, ociConfigType),
					blob(d512L, 8, "application/vnd.oci.image.layer.v1.tar"),
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			payload := readTestdata(t, tt.file)
			orig := bytes.Clone(payload)
			// The Content-Type decides; every payload here also names its
			// type, so the generic fallbacks must agree.
			for _, ct := range []string{tt.ct, tt.ct + "; charset=utf-8", strings.ToUpper(tt.ct), "", "application/json", "application/octet-stream"} {
				got, err := Parse(ct, payload)
				if err != nil {
					t.Fatalf("Parse(%q): %v", ct, err)
				}
				if !reflect.DeepEqual(*got, tt.want) {
					t.Errorf("Parse(%q) =\n%+v\nwant\n%+v", ct, *got, tt.want)
				}
			}
			if !bytes.Equal(payload, orig) {
				t.Error("Parse modified the payload")
			}
		})
	}
}

// manifestJSON builds an OCI image manifest payload from raw JSON parts.
func manifestJSON(top, config, layers string) string {
	return `{"schemaVersion":2` + top + `,"config":` + config + `,"layers":[` + layers + `]}`
}

func desc(mt, dg string, size string, extra string) string {
	return `{"mediaType":"` + mt + `","digest":"` + dg + `","size":` + size + extra + `}`
}

var (
	goodConfig = desc(ociConfigType, dConfig, "1470", "")
	goodLayer  = desc(ociLayerGzip, dLayer1, "100", "")
)

func TestParseRules(t *testing.T) {
	tests := []struct {
		name    string
		ct      string
		payload string
		wantErr error // nil for success
		badDig  bool  // expect *BadDigestError
		check   func(t *testing.T, p *Parsed)
	}{
		{
			name: "zero layers", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, ""),
			check: func(t *testing.T, p *Parsed) {
				if len(p.Refs) != 1 || p.Refs[0].Digest != dConfig {
					t.Errorf("Refs = %+v, want only the config", p.Refs)
				}
			},
		},
		{
			name: "unknown fields allowed", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"x-vendor":{"nested":[1,{"Layers":2,"layers":3}]},"config":` +
				desc(ociConfigType, dConfig, "1", `,"x":true,"platform":{"os":"linux"}`) + `,"layers":[]}`,
			check: func(t *testing.T, p *Parsed) {
				if p.Config.Size != 1 {
					t.Errorf("Config = %+v", p.Config)
				}
			},
		},
		{
			name: "no mediaType, content type decides", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, goodLayer),
		},
		{
			name: "shape fallback: manifest", ct: "",
			payload: manifestJSON("", goodConfig, goodLayer),
			check: func(t *testing.T, p *Parsed) {
				if p.MediaType != MediaTypeImageManifest {
					t.Errorf("MediaType = %q", p.MediaType)
				}
			},
		},
		{
			name: "shape fallback: index", ct: "application/json",
			payload: `{"schemaVersion":2,"manifests":[` + desc(MediaTypeImageManifest, dAmd64, "10", "") + `]}`,
			check: func(t *testing.T, p *Parsed) {
				if p.MediaType != MediaTypeImageIndex || !p.IsIndex() || len(p.Refs) != 1 || !p.Refs[0].IsManifest {
					t.Errorf("Parsed = %+v", p)
				}
			},
		},
		{
			name: "shape fallback: config without layers", ct: "",
			payload: `{"schemaVersion":2,"config":` + goodConfig + `}`, wantErr: ErrUnsupported,
		},
		{
			name: "shape fallback: nothing", ct: "",
			payload: `{"schemaVersion":2}`, wantErr: ErrUnsupported,
		},
		{
			name: "generic content type, unknown payload mediaType", ct: "application/json",
			payload: manifestJSON(`,"mediaType":"application/vnd.example+json"`, goodConfig, ""), wantErr: ErrUnsupported,
		},
		{
			name: "schema 1 content type", ct: "application/vnd.docker.distribution.manifest.v1+prettyjws",
			payload: manifestJSON("", goodConfig, ""), wantErr: ErrUnsupported,
		},
		{
			name: "unknown content type", ct: "application/vnd.example.manifest.v9+json",
			payload: manifestJSON("", goodConfig, ""), wantErr: ErrUnsupported,
		},
		{
			name: "mediaType disagrees with content type", ct: MediaTypeImageIndex,
			payload: manifestJSON(`,"mediaType":"`+MediaTypeImageManifest+`"`, goodConfig, ""), wantErr: ErrInvalid,
		},
		{
			name: "docker mediaType under OCI content type", ct: MediaTypeImageManifest,
			payload: manifestJSON(`,"mediaType":"`+MediaTypeDockerManifest+`"`, goodConfig, ""), wantErr: ErrInvalid,
		},
		{
			name: "empty mediaType counts as given", ct: MediaTypeImageManifest,
			payload: manifestJSON(`,"mediaType":""`, goodConfig, ""), wantErr: ErrInvalid,
		},
		{
			name: "index content type, manifest shape", ct: MediaTypeImageIndex,
			payload: manifestJSON("", goodConfig, goodLayer), wantErr: ErrInvalid,
		},
		{
			name: "manifest content type, index shape", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"manifests":[]}`, wantErr: ErrInvalid,
		},
		{
			name: "manifest with both config and manifests", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"config":` + goodConfig + `,"layers":[],"manifests":[]}`, wantErr: ErrInvalid,
		},
		{
			name: "index without manifests", ct: MediaTypeImageIndex,
			payload: `{"schemaVersion":2}`, wantErr: ErrInvalid,
		},
		{
			name: "empty index", ct: MediaTypeImageIndex,
			payload: `{"schemaVersion":2,"manifests":[]}`,
			check: func(t *testing.T, p *Parsed) {
				if len(p.Refs) != 0 {
					t.Errorf("Refs = %+v", p.Refs)
				}
			},
		},
		{
			name: "missing config", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"layers":[]}`, wantErr: ErrInvalid,
		},
		{
			// The review's fuzz run pushed this and got 201 (F17b): image
			// manifests of both formats require a layers array.
			name: "layers null", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"config":` + goodConfig + `,"layers":null}`, wantErr: ErrInvalid,
		},
		{
			name: "layers null, docker", ct: MediaTypeDockerManifest,
			payload: `{"schemaVersion":2,"config":` + goodConfig + `,"layers":null}`, wantErr: ErrInvalid,
		},
		{
			name: "layers missing", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"config":` + goodConfig + `}`, wantErr: ErrInvalid,
		},
		{
			name: "layers an object", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"config":` + goodConfig + `,"layers":{}}`, wantErr: ErrInvalid,
		},
		{
			name: "schemaVersion 1", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":1,"config":` + goodConfig + `,"layers":[]}`, wantErr: ErrInvalid,
		},
		{
			name: "schemaVersion missing", ct: MediaTypeImageManifest,
			payload: `{"config":` + goodConfig + `,"layers":[]}`, wantErr: ErrInvalid,
		},
		{
			name: "schemaVersion string", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":"2","config":` + goodConfig + `,"layers":[]}`, wantErr: ErrInvalid,
		},
		{name: "not JSON", ct: MediaTypeImageManifest, payload: `schemaVersion: 2`, wantErr: ErrInvalid},
		{name: "JSON array", ct: MediaTypeImageManifest, payload: `[{"schemaVersion":2}]`, wantErr: ErrInvalid},
		{name: "JSON null", ct: MediaTypeImageManifest, payload: `null`, wantErr: ErrInvalid},
		{name: "empty payload", ct: MediaTypeImageManifest, payload: ``, wantErr: ErrInvalid},
		{name: "trailing garbage", ct: MediaTypeImageManifest, payload: manifestJSON("", goodConfig, "") + `}`, wantErr: ErrInvalid},
		{name: "invalid UTF-8", ct: MediaTypeImageManifest, payload: manifestJSON(`,"x":"`+"\xff"+`"`, goodConfig, ""), wantErr: ErrInvalid},
		{
			name: "sha256:totallywrong", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, goodLayer+","+desc(ociLayerGzip, "sha256:totallywrong", "1", "")),
			wantErr: reference.ErrDigestInvalid, badDig: true,
			check: nil,
		},
		{
			name: "uppercase hex digest", ct: MediaTypeImageManifest,
			payload: manifestJSON("", desc(ociConfigType, strings.ToUpper(dConfig), "1", ""), ""),
			wantErr: reference.ErrDigestInvalid, badDig: true,
		},
		{
			name: "sha384 unsupported", ct: MediaTypeImageManifest,
			payload: manifestJSON("", desc(ociConfigType, "sha384:"+strings.Repeat("ab", 48), "1", ""), ""),
			wantErr: reference.ErrDigestUnsupported, badDig: true,
		},
		{
			name: "bad subject digest", ct: MediaTypeImageManifest,
			payload: manifestJSON(`,"subject":`+desc(MediaTypeImageManifest, "sha256:abc", "1", ""), goodConfig, ""),
			wantErr: reference.ErrDigestInvalid, badDig: true,
		},
		{
			name: "bad index child digest", ct: MediaTypeImageIndex,
			payload: `{"schemaVersion":2,"manifests":[` + desc(MediaTypeImageManifest, "nope", "1", "") + `]}`,
			wantErr: reference.ErrDigestInvalid, badDig: true,
		},
		{
			name: "digest missing", ct: MediaTypeImageManifest,
			payload: manifestJSON("", `{"mediaType":"`+ociConfigType+`","size":1}`, ""), wantErr: ErrInvalid,
		},
		{
			name: "size missing", ct: MediaTypeImageManifest,
			payload: manifestJSON("", `{"mediaType":"`+ociConfigType+`","digest":"`+dConfig+`"}`, ""), wantErr: ErrInvalid,
		},
		{
			name: "negative size", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, desc(ociLayerGzip, dLayer1, "-1", "")), wantErr: ErrInvalid,
		},
		{
			name: "fractional size", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, desc(ociLayerGzip, dLayer1, "1.5", "")), wantErr: ErrInvalid,
		},
		{
			name: "descriptor mediaType missing", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, `{"digest":"`+dLayer1+`","size":1}`), wantErr: ErrInvalid,
		},
		{
			name: "descriptor mediaType malformed", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, desc("tar+gzip", dLayer1, "1", "")), wantErr: ErrInvalid,
		},
		{
			name: "descriptor mediaType with parameters", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, desc("application/vnd.example.layer+tar; version=2", dLayer1, "1", "")),
		},
		{
			name: "descriptor mediaType subtype too long", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, desc("application/"+strings.Repeat("x", 128), dLayer1, "1", "")), wantErr: ErrInvalid,
		},
		{
			name: "descriptor mediaType bad byte", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, desc("application/x=y", dLayer1, "1", "")), wantErr: ErrInvalid,
		},
		{
			name: "artifactType malformed", ct: MediaTypeImageManifest,
			payload: manifestJSON(`,"artifactType":"not a type"`, goodConfig, ""), wantErr: ErrInvalid,
		},
		{
			name: "annotations must be strings", ct: MediaTypeImageManifest,
			payload: manifestJSON(`,"annotations":{"a":1}`, goodConfig, ""), wantErr: ErrInvalid,
		},
		{
			name: "data matches", ct: MediaTypeImageManifest,
			payload: manifestJSON("", desc("application/vnd.oci.empty.v1+json", dEmpty, "2", `,"data":"e30="`), ""),
			check: func(t *testing.T, p *Parsed) {
				if p.ArtifactType != "application/vnd.oci.empty.v1+json" {
					t.Errorf("ArtifactType = %q, want the config media type", p.ArtifactType)
				}
			},
		},
		{
			name: "data not base64", ct: MediaTypeImageManifest,
			payload: manifestJSON("", desc("application/vnd.oci.empty.v1+json", dEmpty, "2", `,"data":"e30"`), ""), wantErr: ErrInvalid,
		},
		{
			name: "data size mismatch", ct: MediaTypeImageManifest,
			payload: manifestJSON("", desc("application/vnd.oci.empty.v1+json", dEmpty, "3", `,"data":"e30="`), ""), wantErr: ErrInvalid,
		},
		{
			name: "data digest mismatch", ct: MediaTypeImageManifest,
			payload: manifestJSON("", desc("application/vnd.oci.empty.v1+json", dConfig, "2", `,"data":"e30="`), ""), wantErr: ErrInvalid,
		},
		{
			name: "data on a layer", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, desc("text/plain", "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "5", `,"data":"aGVsbG8="`)),
		},
		{
			name: "sha512 data", ct: MediaTypeImageManifest,
			payload: manifestJSON("", desc("application/vnd.oci.empty.v1+json",
				"sha512:27c74670adb75075fad058d5ceaf7b20c4e7786c83bae8a32f626f9782af34c9a33c2046ef60fd2a7878d378e29fec851806bbd9a67878f3a9f1cda4830763fd", "2", `,"data":"e30="`), ""),
		},
		{
			name: "duplicate layers collapse", ct: MediaTypeImageManifest,
			payload: manifestJSON("", desc("application/vnd.oci.empty.v1+json", dEmpty, "2", ""), desc("application/vnd.oci.empty.v1+json", dEmpty, "2", "")+","+goodLayer+","+goodLayer),
			check: func(t *testing.T, p *Parsed) {
				want := []Ref{blob(dEmpty, 2, "application/vnd.oci.empty.v1+json"), blob(dLayer1, 100, ociLayerGzip)}
				if !reflect.DeepEqual(p.Refs, want) {
					t.Errorf("Refs = %+v, want %+v", p.Refs, want)
				}
			},
		},
		{
			name: "foreign layer without urls is skipped", ct: MediaTypeDockerManifest,
			payload: manifestJSON("", goodConfig, desc("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", dLayer1, "5", "")),
			check: func(t *testing.T, p *Parsed) {
				if len(p.Refs) != 1 || p.Refs[0].Digest != dConfig {
					t.Errorf("Refs = %+v, want only the config", p.Refs)
				}
			},
		},
		{
			name: "skipped layers are still validated", ct: MediaTypeDockerManifest,
			payload: manifestJSON("", goodConfig, desc("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "sha256:x", "5", `,"urls":["https://x.invalid/"]`)),
			wantErr: reference.ErrDigestInvalid, badDig: true,
		},
		{
			name: "same digest, two sizes", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, goodLayer+","+desc(ociLayerGzip, dLayer1, "101", "")), wantErr: ErrInvalid,
		},
		{
			name: "subject not in refs", ct: MediaTypeImageManifest,
			payload: manifestJSON(`,"subject":`+desc(MediaTypeImageManifest, dSubject, "9", ""), goodConfig, ""),
			check: func(t *testing.T, p *Parsed) {
				if p.Subject == nil || p.Subject.Digest != dSubject || p.Subject.Size != 9 || p.Subject.MediaType != MediaTypeImageManifest {
					t.Errorf("Subject = %+v", p.Subject)
				}
				for _, r := range p.Refs {
					if r.Digest == dSubject {
						t.Errorf("subject listed in Refs")
					}
				}
			},
		},
		{
			name: "docker manifest ignores OCI fields", ct: MediaTypeDockerManifest,
			payload: manifestJSON(`,"artifactType":"application/x-thing","subject":`+desc(MediaTypeImageManifest, dSubject, "9", ""), goodConfig, ""),
			check: func(t *testing.T, p *Parsed) {
				if p.Subject != nil || p.ArtifactType != "" {
					t.Errorf("Docker manifest got Subject %+v, ArtifactType %q", p.Subject, p.ArtifactType)
				}
			},
		},
		{
			name: "case variant of a known key", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"config":` + goodConfig + `,"layers":[],"Layers":[` + goodLayer + `]}`, wantErr: ErrInvalid,
		},
		{
			name: "unicode fold variant of a known key", ct: MediaTypeImageManifest,
			payload: `{"ſchemaVersion":2,"config":` + goodConfig + `,"layers":[]}`, wantErr: ErrInvalid,
		},
		{
			name: "case variant inside a descriptor", ct: MediaTypeImageManifest,
			payload: manifestJSON("", goodConfig, `{"mediaType":"`+ociLayerGzip+`","digest":"`+dLayer1+`","Digest":"`+dLayer2+`","size":1}`), wantErr: ErrInvalid,
		},
		{
			name: "repeated key", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"config":` + goodConfig + `,"config":` + goodConfig + `,"layers":[]}`, wantErr: ErrInvalid,
		},
		{
			name: "repeated key spelled with an escape", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"config":` + goodConfig + `,"layers":[],"l\u0061yers":[]}`, wantErr: ErrInvalid,
		},
		{
			name: "escaped key spelled exactly is fine", ct: MediaTypeImageManifest,
			payload: `{"schemaVersion":2,"config":` + goodConfig + `,"l\u0061yers":[` + goodLayer + `]}`,
			check: func(t *testing.T, p *Parsed) {
				if len(p.Refs) != 2 {
					t.Errorf("Refs = %+v", p.Refs)
				}
			},
		},
		{
			name: "case variants in annotations are data", ct: MediaTypeImageManifest,
			payload: manifestJSON(`,"annotations":{"mediaType":"a","MediaType":"b"}`, goodConfig, ""),
			check: func(t *testing.T, p *Parsed) {
				if p.Annotations["mediaType"] != "a" || p.Annotations["MediaType"] != "b" {
					t.Errorf("Annotations = %v", p.Annotations)
				}
			},
		},
		{
			name: "too large", ct: MediaTypeImageManifest,
			payload: manifestJSON(`,"pad":"`+strings.Repeat("x", MaxManifestSize)+`"`, goodConfig, ""), wantErr: ErrTooLarge,
		},
		{
			name: "just under the limit", ct: MediaTypeImageManifest,
			payload: func() string {
				base := manifestJSON(`,"pad":""`, goodConfig, "")
				return manifestJSON(`,"pad":"`+strings.Repeat("x", MaxManifestSize-len(base))+`"`, goodConfig, "")
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.ct, []byte(tt.payload))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if tt.check != nil {
					tt.check(t, p)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Parse error = %v, want %v", err, tt.wantErr)
			}
			if p != nil {
				t.Errorf("Parse returned %+v with an error", p)
			}
			var bd *BadDigestError
			if errors.As(err, &bd) != tt.badDig {
				t.Errorf("Parse error %v: BadDigestError = %v, want %v", err, !tt.badDig, tt.badDig)
			}
			if tt.badDig && !errors.Is(err, ErrInvalid) {
				t.Errorf("BadDigestError %v does not match ErrInvalid", err)
			}
		})
	}
}

func TestBadDigestErrorField(t *testing.T) {
	payload := manifestJSON("", goodConfig, goodLayer+","+goodLayer+","+desc(ociLayerGzip, "sha256:totallywrong", "1", ""))
	_, err := Parse(MediaTypeImageManifest, []byte(payload))
	var bd *BadDigestError
	if !errors.As(err, &bd) {
		t.Fatalf("Parse error = %v, want *BadDigestError", err)
	}
	if bd.Field != "layers[2].digest" || bd.Digest != "sha256:totallywrong" {
		t.Errorf("BadDigestError = %+v", bd)
	}
	if !strings.Contains(err.Error(), "layers[2].digest") {
		t.Errorf("message %q does not say where", err)
	}
}

func BenchmarkParse(b *testing.B) {
	payload := readTestdata(b, "oci-image-manifest.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := Parse(MediaTypeImageManifest, payload); err != nil {
			b.Fatal(err)
		}
	}
}
