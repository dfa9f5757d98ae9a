// Package testenv holds helpers for end-to-end tests of any package: a real
// OCI registry (distribution's) on a loopback port, a tiny busybox base
// image pushed into a registry, and the tools those need.
//
// Helpers skip the test, saying what is missing, when a tool is not
// installed (scripts/install-deps.sh installs them all); set
// BERTH_E2E_REQUIRE=1 to make a missing tool a failure instead.
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// missing skips (or fails, under BERTH_E2E_REQUIRE) a test that needs
// something not installed.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + " (run scripts/install-deps.sh)"
	if os.Getenv("BERTH_E2E_REQUIRE") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// RequireTools skips the test unless every named program is on PATH.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing(t, "%s is not installed", n)
		}
	}
}

// RepoRoot returns the root of the berth module (the directory of go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Creds are registry credentials; the zero value means anonymous.
type Creds struct {
	Username, Password string
}

// Registry is a running distribution registry.
type Registry struct {
	// Host is 127.0.0.1:port; the registry speaks plain HTTP.
	Host string
	// Creds are the credentials it demands (zero when it demands none).
	Creds Creds
	// Dir is its storage directory.
	Dir string
}

// StartDistribution runs distribution's registry (.tools/bin/registry) on a
// free loopback port with storage in a temp dir, until the test ends.
func StartDistribution(t testing.TB) *Registry {
	t.Helper()
	return startDistribution(t, Creds{})
}

// StartDistributionAuth is StartDistribution with htpasswd authentication
// demanding creds.
func StartDistributionAuth(t testing.TB, creds Creds) *Registry {
	t.Helper()
	return startDistribution(t, creds)
}

func startDistribution(t testing.TB, creds Creds) *Registry {
	t.Helper()
	bin := filepath.Join(RepoRoot(t), ".tools", "bin", "registry")
	if _, err := os.Stat(bin); err != nil {
		missing(t, "distribution's registry is not at %s", bin)
	}
	dir := t.TempDir()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	auth := ""
	if creds.Username != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(creds.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(creds.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: berth-test\n    path: %s\n", htpasswd)
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
%s`, filepath.Join(dir, "data"), addr, auth)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start registry: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("registry exited: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry did not start on %s:\n%s", addr, out.String())
		}
	}
	return &Registry{Host: addr, Creds: creds, Dir: dir}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// busyboxApplets are the commands the base image links to busybox.
var busyboxApplets = []string{"sh", "cat", "echo", "ls", "mkdir", "test", "true", "false", "sleep", "touch", "wc", "env", "id", "rm", "cp", "grep", "printf"}

// BusyboxImage builds a tiny image from the host's static busybox
// (Debian's busybox-static) with buildah and pushes it to
// host/repo:latest (plain HTTP), returning that reference.
func BusyboxImage(t testing.TB, host, repo string, creds Creds) string {
	t.Helper()
	RequireTools(t, "buildah")
	busybox := "/bin/busybox"
	if out, err := exec.Command("file", "-L", busybox).Output(); err == nil && !bytes.Contains(out, []byte("statically linked")) {
		missing(t, "%s is not statically linked (install busybox-static)", busybox)
	} else if _, err := os.Stat(busybox); err != nil {
		missing(t, "%s is missing (install busybox-static)", busybox)
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("root:x:0:0:root:/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := NewBuildah(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctr := strings.TrimSpace(b.Run(ctx, t, "from", "scratch"))
	b.Run(ctx, t, "copy", ctr, rootfs+"/", "/")
	b.Run(ctx, t, "config", "--env", "PATH=/bin", "--cmd", "/bin/sh", ctr)
	ref := host + "/" + repo + ":latest"
	b.Run(ctx, t, "commit", "--quiet", ctr, "berth-test-busybox")
	args := []string{"push", "--tls-verify=false"}
	if creds.Username != "" {
		args = append(args, "--creds", creds.Username+":"+creds.Password)
	}
	b.Run(ctx, t, append(args, "berth-test-busybox", "docker://"+ref)...)
	return ref
}

// Buildah runs the buildah CLI over a private vfs storage root that is
// removed when the test ends.
type Buildah struct {
	Root, RunRoot string
}

// NewBuildah makes a private buildah storage for the test.
func NewBuildah(t testing.TB) *Buildah {
	t.Helper()
	RequireTools(t, "buildah")
	dir := t.TempDir()
	b := &Buildah{Root: filepath.Join(dir, "root"), RunRoot: filepath.Join(dir, "run")}
	// vfs layers hold directories without write permission; as root
	// RemoveAll copes, but make sure the temp dir cleanup can descend.
	t.Cleanup(func() { makeWritable(dir) })
	return b
}

func (b *Buildah) command(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--root", b.Root, "--runroot", b.RunRoot, "--storage-driver", "vfs"}, args...)
	cmd := exec.CommandContext(ctx, "buildah", full...)
	cmd.Env = append(os.Environ(), "BUILDAH_ISOLATION=chroot")
	return cmd
}

// Run runs buildah with args, failing the test on error, and returns its
// standard output.
func (b *Buildah) Run(ctx context.Context, t testing.TB, args ...string) string {
	t.Helper()
	cmd := b.command(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("buildah %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// makeWritable gives the owner write permission on every directory under
// dir so that the test's temp dir cleanup can remove it.
func makeWritable(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
}

// ExtractImage copies ref (plain HTTP) into a directory with skopeo and
// unpacks its layers in order into a root filesystem, returning that
// directory. Whiteouts are not applied: tests look for files a build added.
func ExtractImage(t testing.TB, ref string, creds Creds) string {
	t.Helper()
	RequireTools(t, "skopeo", "tar")
	dir := t.TempDir()
	layout := filepath.Join(dir, "oci")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"copy", "--src-tls-verify=false", "--insecure-policy"}
	if creds.Username != "" {
		args = append(args, "--src-creds", creds.Username+":"+creds.Password)
	}
	args = append(args, "docker://"+ref, "dir:"+layout)
	if out, err := exec.CommandContext(ctx, "skopeo", args...).CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy %s: %v\n%s", ref, err, out)
	}
	m, err := readManifest(filepath.Join(layout, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		blob := filepath.Join(layout, strings.TrimPrefix(l.Digest, "sha256:"))
		// GNU tar recognises a compressed file by its bytes.
		targs := []string{"-x", "-f", blob, "-C", rootfs, "--no-same-owner"}
		if out, err := exec.CommandContext(ctx, "tar", targs...).CombinedOutput(); err != nil {
			t.Fatalf("unpack layer %s: %v\n%s", l.Digest, err, out)
		}
	}
	return rootfs
}

// Config returns the image config of ref (plain HTTP) as skopeo shows it.
func Config(t testing.TB, ref string, creds Creds) []byte {
	t.Helper()
	RequireTools(t, "skopeo")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"inspect", "--config", "--tls-verify=false"}
	if creds.Username != "" {
		args = append(args, "--creds", creds.Username+":"+creds.Password)
	}
	out, err := exec.CommandContext(ctx, "skopeo", append(args, "docker://"+ref)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("skopeo inspect %s: %v\n%s", ref, err, ee.Stderr)
		}
		t.Fatalf("skopeo inspect %s: %v", ref, err)
	}
	return out
}

// manifest is the part of an image manifest (OCI or Docker v2) tests read.
type manifest struct {
	Layers []struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	} `json:"layers"`
}

func readManifest(path string) (*manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	return &m, nil
}

// CopyImage copies src to dst within plain-HTTP registries with skopeo
// (a cheap way to give an image a second name).
func CopyImage(t testing.TB, src, dst string, creds Creds) {
	t.Helper()
	RequireTools(t, "skopeo")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"copy", "--insecure-policy", "--src-tls-verify=false", "--dest-tls-verify=false"}
	if creds.Username != "" {
		c := creds.Username + ":" + creds.Password
		args = append(args, "--src-creds", c, "--dest-creds", c)
	}
	args = append(args, "docker://"+src, "docker://"+dst)
	if out, err := exec.CommandContext(ctx, "skopeo", args...).CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy %s %s: %v\n%s", src, dst, err, out)
	}
}
