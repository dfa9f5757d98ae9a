package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// makePublic sets a repository's visibility through the Quay-compatible API
// as the admin (Basic auth), failing the test unless the API accepts it.
func makePublic(t *testing.T, s *server, repository string) {
	t.Helper()
	ns, name, ok := strings.Cut(repository, "/")
	if !ok {
		t.Fatalf("repository %q has no namespace", repository)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		s.URL("/api/v1/repository/"+ns+"/"+name+"/changevisibility"),
		bytes.NewReader([]byte(`{"visibility":"public"}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(tgt.user, tgt.password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("changevisibility: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST changevisibility for %s: %s: %s", repository, resp.Status, body)
	}
}

// TestAnonymous checks visibility: without credentials a public repository
// can be pulled and a private one answers 401.
func TestAnonymous(t *testing.T) {
	s := requireServer(t)
	requireAuth(t)
	c := containers(t)
	img := busyboxImage(t)

	public, private := repo("anon-public"), repo("anon-private")
	for _, r := range []string{public, private} {
		c.run(t, "skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", creds(),
			"oci:"+img.ociDir+":latest", "docker://"+s.ref(r, "v1"))
	}
	makePublic(t, s, public)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	anon := newRegClient(s, "", "")
	getManifest := func(repository string) (int, error) {
		resp, err := anon.do(ctx, pullScope(repository), func() (*http.Request, error) {
			req, err := http.NewRequest(http.MethodGet, s.URL("/v2/"+repository+"/manifests/v1"), nil)
			if err == nil {
				req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
			}
			return req, err
		})
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	if code, err := getManifest(public); err != nil || code != http.StatusOK {
		t.Fatalf("anonymous GET of a public manifest: status %d, err %v; want 200", code, err)
	}
	code, err := getManifest(private)
	var statusErr *httpStatusError
	switch {
	case errors.As(err, &statusErr) && statusErr.code == http.StatusUnauthorized:
		// Refused at the token endpoint: also a 401 to the client.
	case err != nil:
		t.Fatalf("anonymous GET of a private manifest: %v; want 401", err)
	case code != http.StatusUnauthorized:
		t.Fatalf("anonymous GET of a private manifest: status %d; want 401", code)
	}

	// A real client agrees: skopeo pulls the public image with no creds at
	// all and is turned away from the private one.
	out := t.TempDir()
	c.run(t, "skopeo", "copy", "--src-tls-verify=false", "--src-no-creds",
		"docker://"+s.ref(public, "v1"), "oci:"+out+":anon")
	if got, want := layoutDigest(t, out, "anon"), layoutDigest(t, img.ociDir, "latest"); got != want {
		t.Fatalf("anonymous pull got manifest %s, want %s", got, want)
	}
	r := c.exec(t, "", "skopeo", "copy", "--src-tls-verify=false", "--src-no-creds",
		"docker://"+s.ref(private, "v1"), "oci:"+t.TempDir()+":anon")
	if r.Err == nil {
		t.Fatalf("anonymous skopeo pull of a private repository succeeded")
	}
}
