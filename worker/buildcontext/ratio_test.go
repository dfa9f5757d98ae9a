package buildcontext

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/worker/engine"
)

// zeroTarGz is a tar.gz holding one file of n zero bytes, streamed so that
// the test never holds n bytes.
func zeroTarGz(t *testing.T, n int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: n, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, zeroReader{}, n); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// diskUse sums the sizes of the files under dir.
func diskUse(t *testing.T, dir string) int64 {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// F9: a 2 MB tar.gz unpacked to 2 GiB in the build root. A context
// compressed beyond the ratio is refused as it unpacks, long before the
// unpacked-size limit, and leaves nothing behind.
func TestDecompressionBombStopsEarly(t *testing.T) {
	const size = 256 << 20 // gzip makes ~250 KiB of it: about 1000:1
	bomb := zeroTarGz(t, size)
	s := newSandbox(t, bomb)
	_, err := Unpack(context.Background(), s.upload, s.dest, Limits{})
	ue, ok := engine.AsUserError(err)
	if !ok || ue.Code != engine.CodeContext || !strings.Contains(ue.Message, "compressed more than 100:1") {
		t.Fatalf("Unpack(%d-byte gzip of %d zeros) = %v; want the compression ratio refused", len(bomb), size, err)
	}
	if n := diskUse(t, s.dest); n != 0 {
		t.Errorf("the refused bomb left %d bytes", n)
	}
	s.assertConfined(t)
}

func TestCompressionRatioLimits(t *testing.T) {
	// Small contexts may compress as well as they like.
	s := newSandbox(t, zeroTarGz(t, ratioFloor))
	if _, err := Unpack(context.Background(), s.upload, s.dest, Limits{}); err != nil {
		t.Fatalf("a %d-byte context of zeros: %v", ratioFloor, err)
	}
	// Incompressible content is never over the ratio.
	random := make([]byte, ratioFloor+1<<20)
	_, _ = rand.Read(random)
	s = newSandbox(t, gzipOf(t, tarOf(t, file("random", string(random)))))
	if _, err := Unpack(context.Background(), s.upload, s.dest, Limits{}); err != nil {
		t.Fatalf("an incompressible context: %v", err)
	}
	// The ratio is configurable.
	bomb := zeroTarGz(t, 64<<20)
	s = newSandbox(t, bomb)
	if _, err := Unpack(context.Background(), s.upload, s.dest, Limits{MaxCompressionRatio: 5000}); err != nil {
		t.Fatalf("64 MiB of zeros with a ratio of 5000: %v", err)
	}
	s = newSandbox(t, bomb)
	if _, err := Unpack(context.Background(), s.upload, s.dest, Limits{MaxCompressionRatio: 20}); err == nil ||
		!strings.Contains(err.Error(), "compressed more than 20:1") {
		t.Fatalf("64 MiB of zeros with a ratio of 20: %v", err)
	}
	// A zip's entries count what they read of the archive.
	s = newSandbox(t, zipOf(t, file("zeros", strings.Repeat("\x00", 32<<20))))
	if _, err := Unpack(context.Background(), s.upload, s.dest, Limits{}); err == nil || !strings.Contains(err.Error(), "compressed more than 100:1") {
		t.Fatalf("a zip of 32 MiB of zeros: %v", err)
	}
}

func TestLowerDefaultLimits(t *testing.T) {
	l := Limits{}.OrDefault()
	if l.MaxCompressed != 512<<20 || l.MaxUnpacked != 2<<30 || l.MaxCompressionRatio != 100 {
		t.Fatalf("defaults = %+v; want 512 MiB compressed, 2 GiB unpacked, 100:1", l)
	}
}

func TestOverRatio(t *testing.T) {
	for _, c := range []struct {
		unpacked, read, ratio int64
		want                  bool
	}{
		{100, 1, 100, false},
		{101, 1, 100, true},
		{1 << 40, 0, 100, true},
		{1 << 62, 1 << 62, 1 << 40, false}, // no overflow
	} {
		if got := overRatio(c.unpacked, c.read, c.ratio); got != c.want {
			t.Errorf("overRatio(%d, %d, %d) = %v", c.unpacked, c.read, c.ratio, got)
		}
	}
}
