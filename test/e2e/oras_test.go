package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/test/harness"
)

const (
	orasArtifactType  = "application/vnd.berth.e2e.config"
	orasReferrerType  = "application/vnd.berth.e2e.signature"
	orasArtifactFile  = "settings.json"
	orasSignatureFile = "signature.txt"
)

// oras runs the oras CLI in dir with the target's credentials and plain HTTP.
func oras(t *testing.T, c *containerEnv, dir string, args ...string) string {
	t.Helper()
	args = append(args, "--plain-http", "--username", tgt.user, "--password", tgt.password)
	r := c.execIn(t, dir, "", "oras", args...)
	if r.Err != nil {
		t.Fatalf("oras %s: %v\nstdout:\n%s\nstderr:\n%s", redact(strings.Join(args, " ")), r.Err, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// descriptor is what `oras ... --format json` prints for what it pushed.
type descriptor struct {
	MediaType    string `json:"mediaType"`
	Digest       string `json:"digest"`
	ArtifactType string `json:"artifactType"`
}

// TestOras pushes an artifact with its own artifact type and pulls it back,
// then attaches a referrer to an image and finds it with discover.
func TestOras(t *testing.T) {
	s := requireServer(t)
	c := containers(t)

	t.Run("push-pull", func(t *testing.T) {
		src := t.TempDir()
		content := []byte(`{"berth":"e2e","nonce":"` + harness.RandomHex(8) + `"}` + "\n")
		if err := os.WriteFile(filepath.Join(src, orasArtifactFile), content, 0o644); err != nil {
			t.Fatal(err)
		}
		ref := s.ref(repo("oras-artifact"), "v1")
		var pushed descriptor
		out := oras(t, c, src, "push", "--format", "json", "--artifact-type", orasArtifactType,
			ref, orasArtifactFile+":application/json")
		if err := json.Unmarshal([]byte(out), &pushed); err != nil || pushed.Digest == "" {
			t.Fatalf("oras push output %q: %v", out, err)
		}

		dst := t.TempDir()
		oras(t, c, dst, "pull", "--output", dst, ref)
		got, err := os.ReadFile(filepath.Join(dst, orasArtifactFile))
		if err != nil {
			t.Fatalf("pulled artifact: %v", err)
		}
		if !bytes.Equal(got, content) {
			t.Fatalf("pulled %q, pushed %q", got, content)
		}

		// The registry must keep the artifact type it was given.
		var m struct {
			ArtifactType string `json:"artifactType"`
		}
		raw := oras(t, c, dst, "manifest", "fetch", ref)
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatalf("manifest %q: %v", raw, err)
		}
		if m.ArtifactType != orasArtifactType {
			t.Fatalf("artifactType %q, want %q", m.ArtifactType, orasArtifactType)
		}
	})

	t.Run("attach-discover", func(t *testing.T) {
		img := busyboxImage(t)
		subject := s.ref(repo("oras-subject"), "v1")
		work := t.TempDir()
		// Copy the image in with oras itself, straight from the OCI layout.
		r := c.execIn(t, work, "", "oras", "cp", "--from-oci-layout", "--to-plain-http",
			"--to-username", tgt.user, "--to-password", tgt.password, img.ociDir+":latest", subject)
		if r.Err != nil {
			t.Fatalf("oras cp: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
		}

		sig := []byte("signed by berth e2e " + harness.RandomHex(8) + "\n")
		if err := os.WriteFile(filepath.Join(work, orasSignatureFile), sig, 0o644); err != nil {
			t.Fatal(err)
		}
		var attached descriptor
		out := oras(t, c, work, "attach", "--format", "json", "--artifact-type", orasReferrerType,
			subject, orasSignatureFile+":text/plain")
		if err := json.Unmarshal([]byte(out), &attached); err != nil || attached.Digest == "" {
			t.Fatalf("oras attach output %q: %v", out, err)
		}

		out = oras(t, c, work, "discover", "--format", "json", "--artifact-type", orasReferrerType, subject)
		var tree any
		if err := json.Unmarshal([]byte(out), &tree); err != nil {
			t.Fatalf("oras discover output %q: %v", out, err)
		}
		// oras's JSON layout differs between releases; what matters is that
		// the referrer appears with its digest and artifact type.
		if !containsDescriptor(tree, attached.Digest, orasReferrerType) {
			t.Fatalf("oras discover does not list referrer %s (%s):\n%s", attached.Digest, orasReferrerType, out)
		}
	})
}

// containsDescriptor walks decoded JSON for an object with the given digest
// and artifactType.
func containsDescriptor(v any, digest, artifactType string) bool {
	switch x := v.(type) {
	case map[string]any:
		if x["digest"] == digest && x["artifactType"] == artifactType {
			return true
		}
		for _, child := range x {
			if containsDescriptor(child, digest, artifactType) {
				return true
			}
		}
	case []any:
		for _, child := range x {
			if containsDescriptor(child, digest, artifactType) {
				return true
			}
		}
	}
	return false
}
