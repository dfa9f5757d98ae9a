package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"time"
)

// Entry is one member of a context archive.
type Entry struct {
	Name string
	Body string
	// Link makes the entry a symbolic link to Link (Body is ignored).
	Link string
	// Mode is the file's permission bits (0644 when zero).
	Mode int64
}

// TarGz packs entries, in order, into a gzip-compressed tar archive. Names
// are written as given, so tests can put "../" or absolute names in.
func TarGz(entries ...Entry) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	now := time.Now()
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Mode: 0o644, Size: int64(len(e.Body)), ModTime: now, Typeflag: tar.TypeReg}
		if e.Mode != 0 {
			h.Mode = e.Mode
		}
		if e.Link != "" {
			h.Typeflag, h.Linkname, h.Size, h.Mode = tar.TypeSymlink, e.Link, 0, 0o777
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", e.Name, err)
		}
		if e.Link == "" {
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				return nil, fmt.Errorf("tar body %s: %w", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
