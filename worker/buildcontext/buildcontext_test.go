package buildcontext

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/worker/engine"
)

// entry is one archive member for the test builders.
type entry struct {
	name string
	typ  byte // tar type flag
	body string
	link string
	mode int64
}

func file(name, body string) entry {
	return entry{name: name, typ: tar.TypeReg, body: body, mode: 0o644}
}
func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) entry { return entry{name: name, typ: tar.TypeLink, link: target} }

func tarOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zipOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		body := e.body
		switch e.typ {
		case tar.TypeDir:
			h.SetMode(fs.ModeDir | 0o755)
		case tar.TypeSymlink:
			h.SetMode(fs.ModeSymlink | 0o777)
			body = e.link
		case tar.TypeFifo:
			h.SetMode(fs.ModeNamedPipe | 0o644)
		default:
			h.SetMode(0o644)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sandbox is a temp dir holding an "outside" directory with a sentinel
// file, the upload, and the destination work/src.
type sandbox struct {
	top, dest, upload, outside string
}

func newSandbox(t testing.TB, upload []byte) sandbox {
	t.Helper()
	top := t.TempDir()
	s := sandbox{top: top, dest: filepath.Join(top, "work", "src"), upload: filepath.Join(top, "upload"), outside: filepath.Join(top, "outside")}
	for _, d := range []string{s.dest, s.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.outside, "sentinel"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.upload, upload, 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// assertConfined fails when anything exists in the sandbox outside the
// destination other than what the sandbox made, or a link under the
// destination leads out of it.
func (s sandbox) assertConfined(t testing.TB) {
	t.Helper()
	allowed := map[string]bool{s.top: true, filepath.Join(s.top, "work"): true, s.upload: true, s.outside: true, filepath.Join(s.outside, "sentinel"): true}
	err := filepath.WalkDir(s.top, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if allowed[p] || p == s.dest || strings.HasPrefix(p, s.dest+"/") {
			if d.Type()&fs.ModeSymlink != 0 {
				if real, err := filepath.EvalSymlinks(p); err == nil {
					if realDest, _ := filepath.EvalSymlinks(s.dest); real != realDest && !strings.HasPrefix(real, realDest+"/") {
						t.Errorf("link %s leads outside the destination to %s", p, real)
					}
				}
			}
			return nil
		}
		t.Errorf("written outside the destination: %s", p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(s.outside, "sentinel")); err != nil || string(b) != "keep" {
		t.Errorf("sentinel outside changed: %q, %v", b, err)
	}
}

func TestUnpackAccepts(t *testing.T) {
	tree := []entry{
		dir("./app/"),
		file("./app/main.sh", "echo hi\n"),
		file("Dockerfile", "FROM scratch\n"),
		symlink("app/link", "main.sh"),
		symlink("up", "app/../app"),
		hardlink("app/hard", "app/main.sh"),
		file("app/main.sh", "echo replaced\n"), // a later entry wins
	}
	cases := []struct {
		name   string
		upload []byte
		kind   Kind
		want   map[string]string
	}{
		{"dockerfile", []byte("FROM busybox\nRUN true\n"), KindDockerfile, map[string]string{"Dockerfile": "FROM busybox\nRUN true\n"}},
		{"tar", tarOf(t, tree...), KindTar, map[string]string{"app/main.sh": "echo replaced\n", "app/link": "echo replaced\n", "app/hard": "echo hi\n", "Dockerfile": "FROM scratch\n", "up/main.sh": "echo replaced\n"}},
		{"tar.gz", gzipOf(t, tarOf(t, tree...)), KindTarGzip, map[string]string{"app/main.sh": "echo replaced\n", "Dockerfile": "FROM scratch\n"}},
		{"zip", zipOf(t, dir("app/"), file("app/a.txt", "a"), symlink("app/l", "a.txt"), file("Dockerfile", "FROM x")), KindZip, map[string]string{"app/a.txt": "a", "app/l": "a", "Dockerfile": "FROM x"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t, c.upload)
			kind, err := Unpack(context.Background(), s.upload, s.dest, Limits{})
			if err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			if kind != c.kind {
				t.Errorf("kind = %q, want %q", kind, c.kind)
			}
			for name, want := range c.want {
				got, err := os.ReadFile(filepath.Join(s.dest, name))
				if err != nil || string(got) != want {
					t.Errorf("%s = %q, %v; want %q", name, got, err, want)
				}
			}
			s.assertConfined(t)
		})
	}
}

func TestUnpackRejects(t *testing.T) {
	cases := []struct {
		name   string
		upload func(t *testing.T) []byte
		lim    Limits
		want   string // part of the message
	}{
		{"dot-dot", func(t *testing.T) []byte { return tarOf(t, file("../outside/evil", "x")) }, Limits{}, "outside the build context"},
		{"dot-dot inside", func(t *testing.T) []byte { return tarOf(t, file("a/../../outside/evil", "x")) }, Limits{}, "outside the build context"},
		{"absolute", func(t *testing.T) []byte { return tarOf(t, file("/tmp/evil", "x")) }, Limits{}, "absolute name"},
		{"symlink absolute", func(t *testing.T) []byte { return tarOf(t, symlink("l", "/etc")) }, Limits{}, "absolute path"},
		{"symlink up", func(t *testing.T) []byte { return tarOf(t, symlink("l", "../outside")) }, Limits{}, "outside the build context"},
		{"symlink deep up", func(t *testing.T) []byte { return tarOf(t, symlink("a/b/l", "../../../outside")) }, Limits{}, "outside the build context"},
		{"write through symlink", func(t *testing.T) []byte {
			return tarOf(t, dir("sub/"), symlink("l", "sub"), file("l/evil", "x"))
		}, Limits{}, "written through the link"},
		{"symlink chain", func(t *testing.T) []byte {
			return tarOf(t, symlink("p/q/l2", "../.."), symlink("l1", "p/q/l2/../../.."))
		}, Limits{}, "leads outside"},
		{"symlink chain later", func(t *testing.T) []byte {
			// l1 looks harmless until l2 appears.
			return tarOf(t, dir("p/q/l2/"), symlink("l1", "p/q/l2/../../.."), dir("x/"))
		}, Limits{}, ""}, // accepted: l2 is a directory, checked below in TestSymlinkChainLater
		{"hardlink absolute", func(t *testing.T) []byte { return tarOf(t, hardlink("h", "/etc/passwd")) }, Limits{}, "outside the build context"},
		{"hardlink up", func(t *testing.T) []byte { return tarOf(t, hardlink("h", "../outside/sentinel")) }, Limits{}, "outside the build context"},
		{"hardlink through symlink", func(t *testing.T) []byte {
			return tarOf(t, dir("d/"), file("d/f", "x"), symlink("l", "d"), hardlink("h", "l/f"))
		}, Limits{}, "through the link"},
		{"char device", func(t *testing.T) []byte { return tarOf(t, entry{name: "null", typ: tar.TypeChar}) }, Limits{}, "device or fifo"},
		{"block device", func(t *testing.T) []byte { return tarOf(t, entry{name: "sda", typ: tar.TypeBlock}) }, Limits{}, "device or fifo"},
		{"fifo", func(t *testing.T) []byte { return tarOf(t, entry{name: "p", typ: tar.TypeFifo}) }, Limits{}, "device or fifo"},
		{"zip slip", func(t *testing.T) []byte { return zipOf(t, file("../outside/evil", "x")) }, Limits{}, "outside the build context"},
		{"zip absolute", func(t *testing.T) []byte { return zipOf(t, file("/evil", "x")) }, Limits{}, "absolute name"},
		{"zip symlink out", func(t *testing.T) []byte { return zipOf(t, symlink("l", "../outside")) }, Limits{}, "outside the build context"},
		{"zip fifo", func(t *testing.T) []byte { return zipOf(t, entry{name: "p", typ: tar.TypeFifo}) }, Limits{}, "fifo"},
		{"gzip slip", func(t *testing.T) []byte { return gzipOf(t, tarOf(t, file("../outside/evil", "x"))) }, Limits{}, "outside the build context"},
		{"too many entries", func(t *testing.T) []byte { return tarOf(t, file("a", ""), file("b", ""), file("c", "")) }, Limits{MaxEntries: 2}, "more than 2 entries"},
		{"too big unpacked", func(t *testing.T) []byte { return gzipOf(t, tarOf(t, file("a", strings.Repeat("x", 5000)))) }, Limits{MaxUnpacked: 4096}, "unpacks to more than"},
		{"too big compressed", func(t *testing.T) []byte { return tarOf(t, file("a", strings.Repeat("x", 5000))) }, Limits{MaxCompressed: 1024}, "larger than the limit"},
		{"empty", func(t *testing.T) []byte { return nil }, Limits{}, "empty"},
		{"bzip2", func(t *testing.T) []byte { return []byte("BZh91AY&SY...") }, Limits{}, "bzip2"},
		{"binary", func(t *testing.T) []byte { return []byte{0x7f, 'E', 'L', 'F', 0, 0, 1} }, Limits{}, "unsupported build context"},
		{"corrupt gzip", func(t *testing.T) []byte { return append([]byte{0x1f, 0x8b, 8, 0}, bytes.Repeat([]byte{0xff}, 40)...) }, Limits{}, "not a valid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t, c.upload(t))
			_, err := Unpack(context.Background(), s.upload, s.dest, c.lim)
			s.assertConfined(t)
			if c.want == "" {
				if err != nil {
					t.Fatalf("Unpack: %v", err)
				}
				return
			}
			ue, ok := engine.AsUserError(err)
			if !ok {
				t.Fatalf("err = %v, want a user error", err)
			}
			if left, _ := os.ReadDir(s.dest); len(left) != 0 {
				t.Errorf("a rejected upload left %d entries in the destination", len(left))
			}
			if ue.Code != engine.CodeContext || !strings.Contains(ue.Message, c.want) {
				t.Errorf("err = %s %q, want code context with %q", ue.Code, ue.Message, c.want)
			}
		})
	}
}

// A link checked when written can be turned into an escape by a later
// entry that makes a directory on its path a link.
func TestSymlinkChainLater(t *testing.T) {
	s := newSandbox(t, tarOf(t, symlink("l1", "p/q/l2/../../.."), symlink("p/q/l2", "../..")))
	_, err := Unpack(context.Background(), s.upload, s.dest, Limits{})
	if ue, ok := engine.AsUserError(err); !ok || !strings.Contains(ue.Message, "leads outside") {
		t.Fatalf("err = %v, want a link escape", err)
	}
	s.assertConfined(t)
}

func TestResolve(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"sub/dir", "other"} {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"Dockerfile", "sub/Dockerfile", "sub/dir/Build.df"} {
		if err := os.WriteFile(filepath.Join(root, p), []byte("FROM x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		ctx, df       string
		wantCtx, want string
		code          string
	}{
		{"", "", ".", "Dockerfile", ""},
		{"/", "/Dockerfile", ".", "Dockerfile", ""},
		{"/sub", "", "sub", "sub/Dockerfile", ""},
		{"sub/", "/sub/dir/Build.df", "sub", "sub/dir/Build.df", ""},
		{"/other", "/Dockerfile", "other", "Dockerfile", ""},
		{"/other", "", "", "", engine.CodeDockerfile},
		{"/missing", "", "", "", engine.CodeContext},
		{"../..", "", "", "", engine.CodeContext},
		{"/", "/../../etc/passwd", "", "", engine.CodeContext},
		{"/", "/sub", "", "", engine.CodeDockerfile},
	}
	for _, c := range cases {
		gotCtx, gotDF, err := Resolve(root, c.ctx, c.df)
		if c.code != "" {
			ue, ok := engine.AsUserError(err)
			if !ok || ue.Code != c.code {
				t.Errorf("Resolve(%q, %q) err = %v, want code %s", c.ctx, c.df, err, c.code)
			}
			continue
		}
		if err != nil {
			t.Errorf("Resolve(%q, %q): %v", c.ctx, c.df, err)
			continue
		}
		if gotCtx != filepath.Join(root, c.wantCtx) || gotDF != filepath.Join(root, c.want) {
			t.Errorf("Resolve(%q, %q) = %s, %s", c.ctx, c.df, gotCtx, gotDF)
		}
	}
}

func TestCopyLimited(t *testing.T) {
	var buf bytes.Buffer
	if _, err := CopyLimited(&buf, strings.NewReader("12345"), 5); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if _, err := CopyLimited(&buf, strings.NewReader("123456"), 5); err == nil {
		t.Fatal("over the limit: no error")
	} else if _, ok := engine.AsUserError(err); !ok {
		t.Fatalf("over the limit: %v is not a user error", err)
	}
}

// FuzzUnpack feeds arbitrary uploads to Unpack and asserts that nothing is
// ever written outside the destination, whatever the outcome.
func FuzzUnpack(f *testing.F) {
	f.Add([]byte("FROM busybox\n"))
	f.Add(tarOf(f, file("../evil", "x")))
	f.Add(tarOf(f, symlink("l", "../outside"), file("l/x", "y")))
	f.Add(tarOf(f, symlink("p/q/l2", "../.."), symlink("l1", "p/q/l2/../../..")))
	f.Add(tarOf(f, dir("d/"), file("d/f", "x"), hardlink("h", "d/f"), symlink("s", "d")))
	f.Add(gzipOf(f, tarOf(f, file("a", "b"), symlink("c", "a"))))
	f.Add(zipOf(f, file("a/b", "c"), symlink("a/l", "..")))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newSandbox(t, data)
		_, _ = Unpack(context.Background(), s.upload, s.dest, Limits{MaxUnpacked: 1 << 20, MaxEntries: 1000})
		s.assertConfined(t)
	})
}
