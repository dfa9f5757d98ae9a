package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/berth-dev/berth/test/harness"
)

// ociIndex is the part of an OCI index (or Docker manifest list, which has
// the same shape) the tests read.
type ociIndex struct {
	MediaType string `json:"mediaType"`
	Manifests []struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Platform  *struct {
			Architecture string `json:"architecture"`
			OS           string `json:"os"`
		} `json:"platform"`
		Annotations map[string]string `json:"annotations"`
	} `json:"manifests"`
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// layoutDigest returns the digest index.json of an OCI layout records for tag.
func layoutDigest(t *testing.T, dir, tag string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx ociIndex
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatalf("index.json of %s: %v", dir, err)
	}
	for _, m := range idx.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] == tag {
			return m.Digest
		}
	}
	t.Fatalf("tag %q not in %s/index.json: %s", tag, dir, data)
	return ""
}

// rawManifest fetches a manifest's exact bytes with skopeo and checks that
// they hash to the digest the reference implies when it is a digest.
func rawManifest(t *testing.T, c *containerEnv, ref string) []byte {
	t.Helper()
	out := c.run(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", creds(), "docker://"+ref)
	return []byte(out)
}

// TestSkopeo copies a single image in and out, then a two-platform index
// with --all, and checks digests survive the round trip.
func TestSkopeo(t *testing.T) {
	s := requireServer(t)
	c := containers(t)
	img := busyboxImage(t)

	t.Run("single", func(t *testing.T) {
		remote := s.ref(repo("skopeo-single"), "v1")
		c.run(t, "skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", creds(),
			"oci:"+img.ociDir+":latest", "docker://"+remote)
		out := t.TempDir()
		c.run(t, "skopeo", "copy", "--src-tls-verify=false", "--src-creds", creds(),
			"docker://"+remote, "oci:"+out+":copy")

		want := layoutDigest(t, img.ociDir, "latest")
		if got := layoutDigest(t, out, "copy"); got != want {
			t.Fatalf("copied out manifest %s, pushed %s", got, want)
		}
		if got := sha256Digest(rawManifest(t, c, remote)); got != want {
			t.Fatalf("registry serves manifest %s, pushed %s", got, want)
		}
	})

	t.Run("multi-arch", func(t *testing.T) {
		// Two one-layer images that differ in platform and content, joined
		// in a manifest list by buildah.
		amd, err := buildBusyboxImage(t, c, "localhost/berth-e2e/multi:amd64", "amd64", "amd64\n")
		if err != nil {
			t.Fatal(err)
		}
		arm, err := buildBusyboxImage(t, c, "localhost/berth-e2e/multi:arm64", "arm64", "arm64\n")
		if err != nil {
			t.Fatal(err)
		}
		list := "localhost/berth-e2e/multi-list:" + harness.RandomHex(4)
		c.run(t, "buildah", "manifest", "create", list)
		defer c.exec(t, "", "buildah", "manifest", "rm", list)
		c.run(t, "buildah", "manifest", "add", list, "containers-storage:"+amd.name)
		c.run(t, "buildah", "manifest", "add", list, "containers-storage:"+arm.name)

		remote := s.ref(repo("skopeo-multi"), "v1")
		c.run(t, "buildah", "manifest", "push", "--all", "--format", "oci", "--tls-verify=false",
			"--creds", creds(), list, "docker://"+remote)

		pushed := rawManifest(t, c, remote)
		var idx ociIndex
		if err := json.Unmarshal(pushed, &idx); err != nil {
			t.Fatalf("index from the registry: %v\n%s", err, pushed)
		}
		var arches []string
		for _, m := range idx.Manifests {
			if m.Platform == nil {
				t.Fatalf("index entry %s has no platform", m.Digest)
			}
			arches = append(arches, m.Platform.OS+"/"+m.Platform.Architecture)
			// Each child must be served byte-exact under its digest.
			child := rawManifest(t, c, s.Addr+"/"+repo("skopeo-multi")+"@"+m.Digest)
			if got := sha256Digest(child); got != m.Digest {
				t.Errorf("child manifest %s is served with digest %s", m.Digest, got)
			}
		}
		sort.Strings(arches)
		if strings.Join(arches, ",") != "linux/amd64,linux/arm64" {
			t.Fatalf("index platforms %v, want linux/amd64 and linux/arm64", arches)
		}

		// Out with --all into an OCI layout: the index and both images.
		out := t.TempDir()
		c.run(t, "skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--src-creds", creds(),
			"docker://"+remote, "oci:"+out+":multi")
		indexDigest := sha256Digest(pushed)
		if got := layoutDigest(t, out, "multi"); got != indexDigest {
			t.Fatalf("copied-out index %s, registry has %s", got, indexDigest)
		}
		for _, m := range idx.Manifests {
			blob := filepath.Join(out, "blobs", "sha256", strings.TrimPrefix(m.Digest, "sha256:"))
			if _, err := os.Stat(blob); err != nil {
				t.Errorf("platform manifest %s missing from the copy: %v", m.Digest, err)
			}
		}

		// And back in to another repository with --all: same index digest.
		again := s.ref(repo("skopeo-multi-copy"), "v1")
		c.run(t, "skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", creds(),
			"oci:"+out+":multi", "docker://"+again)
		if got := sha256Digest(rawManifest(t, c, again)); got != indexDigest {
			t.Fatalf("re-pushed index %s, want %s", got, indexDigest)
		}
	})
}
