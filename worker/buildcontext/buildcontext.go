// Package buildcontext turns an uploaded build context (a bare Dockerfile or
// a tar, tar.gz or zip archive) into a directory, confined to that directory
// whatever the archive says, and finds the context and Dockerfile in it.
//
// Every problem with the upload itself is an *engine.UserError with code
// "context": retrying would fail the same way.
package buildcontext

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/berth-dev/berth/worker/engine"
)

// Limits bound what an upload may unpack to.
type Limits struct {
	// MaxCompressed is the largest upload in bytes, as sent.
	MaxCompressed int64
	// MaxUnpacked is the most file content in bytes an archive may unpack to.
	MaxUnpacked int64
	// MaxEntries is the most entries (files, directories, links) an archive
	// may hold.
	MaxEntries int64
	// MaxCompressionRatio is the most bytes an archive may unpack to per
	// byte of the upload read so far. It is checked as every file is
	// written, once more than ratioFloor bytes were, so that a
	// decompression bomb stops early instead of filling the disk up to
	// MaxUnpacked.
	MaxCompressionRatio int64
}

// Default limits. Source trees compress about 3 to 10 times; 100 leaves
// room for sparse or repetitive files while a gzip of zeros (1000:1) fails.
const (
	DefaultMaxCompressed       = 512 << 20 // 512 MiB
	DefaultMaxUnpacked         = 2 << 30   // 2 GiB
	DefaultMaxEntries          = 100_000
	DefaultMaxCompressionRatio = 100
)

// ratioFloor is what any upload may unpack to whatever its compression:
// small contexts (a Dockerfile and a few generated files) can compress
// far better than 100:1 and harm nobody.
const ratioFloor = 16 << 20

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{MaxCompressed: DefaultMaxCompressed, MaxUnpacked: DefaultMaxUnpacked, MaxEntries: DefaultMaxEntries,
		MaxCompressionRatio: DefaultMaxCompressionRatio}
}

// OrDefault returns l with every zero or negative field set to its default.
func (l Limits) OrDefault() Limits {
	d := DefaultLimits()
	if l.MaxCompressed <= 0 {
		l.MaxCompressed = d.MaxCompressed
	}
	if l.MaxUnpacked <= 0 {
		l.MaxUnpacked = d.MaxUnpacked
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxCompressionRatio <= 0 {
		l.MaxCompressionRatio = d.MaxCompressionRatio
	}
	return l
}

// Kind is what an upload turned out to be.
type Kind string

// Kinds of upload.
const (
	KindDockerfile Kind = "dockerfile"
	KindTar        Kind = "tar"
	KindTarGzip    Kind = "tar.gz"
	KindZip        Kind = "zip"
)

// userErr returns a context user error.
func userErr(format string, args ...any) *engine.UserError {
	return engine.Errorf(engine.CodeContext, format, args...)
}

// CopyLimited copies r to w, failing with a user error once more than max
// bytes arrive. It is how an upload is received before Unpack reads it.
func CopyLimited(w io.Writer, r io.Reader, max int64) (int64, error) {
	n, err := io.Copy(w, io.LimitReader(r, max+1))
	if err != nil {
		return n, err
	}
	if n > max {
		return n, userErr("the build context is larger than the limit of %d bytes", max)
	}
	return n, nil
}

// Detect tells what the upload starting with head is, from its bytes alone.
// head should hold at least the first 512 bytes (fewer for a shorter upload).
func Detect(head []byte) (Kind, error) {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return KindTarGzip, nil
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		return KindZip, nil
	case isTarHeader(head):
		return KindTar, nil
	case bytes.HasPrefix(head, []byte("BZh")),
		bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}),
		bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "", userErr("unsupported build context: bzip2, xz and zstd archives are not accepted; upload a tar, tar.gz or zip archive or a Dockerfile")
	case looksLikeText(head):
		return KindDockerfile, nil
	}
	return "", userErr("unsupported build context: not a tar, tar.gz or zip archive nor a Dockerfile")
}

// isTarHeader reports whether b starts with a tar header: the ustar magic,
// or (for old v7 archives) a header whose checksum is right.
func isTarHeader(b []byte) bool {
	if len(b) < 512 {
		return false
	}
	if bytes.Equal(b[257:262], []byte("ustar")) {
		return true
	}
	stored := strings.TrimRight(strings.TrimSpace(string(b[148:156])), "\x00")
	if stored == "" {
		return false
	}
	var want int64
	if _, err := fmt.Sscanf(stored, "%o", &want); err != nil {
		return false
	}
	var sum int64
	for i, c := range b[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	return sum == want
}

// looksLikeText reports whether b could be the start of a Dockerfile.
func looksLikeText(b []byte) bool {
	if bytes.IndexByte(b, 0) >= 0 {
		return false
	}
	if utf8.Valid(b) {
		return true
	}
	// The head may end in the middle of a multi-byte rune.
	for i := 1; i < utf8.UTFMax && i < len(b); i++ {
		if utf8.Valid(b[:len(b)-i]) {
			return true
		}
	}
	return false
}

// Unpack reads the upload in file src and writes it into the existing
// directory dest: a bare Dockerfile becomes dest/Dockerfile, an archive is
// extracted. Nothing is ever written outside dest: entries with absolute or
// escaping names, links pointing outside dest, entries written through a
// link, and device, fifo or socket entries fail the whole upload.
func Unpack(ctx context.Context, src, dest string, lim Limits) (Kind, error) {
	lim = lim.OrDefault()
	f, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("open upload: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat upload: %w", err)
	}
	if st.Size() > lim.MaxCompressed {
		return "", userErr("the build context is larger than the limit of %d bytes", lim.MaxCompressed)
	}
	if st.Size() == 0 {
		return "", userErr("the build context is empty")
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", fmt.Errorf("read upload: %w", err)
	}
	head = head[:n]
	kind, err := Detect(head)
	if err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("rewind upload: %w", err)
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return "", fmt.Errorf("open context directory: %w", err)
	}
	defer root.Close()
	x := &extractor{root: root, lim: lim, links: map[string]bool{}}
	read := &countingReader{r: f}
	x.consumed = func() int64 { return read.n }
	switch kind {
	case KindDockerfile:
		err = x.dockerfile(read)
	case KindTar:
		err = x.tar(ctx, read)
	case KindTarGzip:
		var zr *gzip.Reader
		zr, err = gzip.NewReader(bufio.NewReader(read))
		if err != nil {
			return "", userErr("the build context is not a valid gzip file: %v", err)
		}
		err = x.tar(ctx, zr)
	case KindZip:
		err = x.zip(ctx, f, st.Size())
	}
	if err == nil {
		err = x.checkLinks()
	}
	if err != nil {
		// What was written must not be used: a link checked as harmful is
		// still on disk, and a partial tree is no context.
		if cerr := clearDir(root); cerr != nil {
			return "", errors.Join(err, cerr)
		}
		return "", err
	}
	return kind, nil
}

// clearDir removes everything in root, never following links.
func clearDir(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return fmt.Errorf("open context directory: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("list context directory: %w", err)
	}
	for _, n := range names {
		if err := root.RemoveAll(n); err != nil {
			return fmt.Errorf("clear context directory: %w", err)
		}
	}
	return nil
}

// extractor writes entries under root, keeping count of what it wrote.
type extractor struct {
	root    *os.Root
	lim     Limits
	entries int64
	bytes   int64
	// consumed reports how many bytes of the upload were read so far.
	consumed func() int64
	// links holds the clean names of the symbolic links written so far.
	links map[string]bool
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// unpackedWriter writes a file's content, counting it into the
// extractor's total and checking the compression ratio as it grows.
type unpackedWriter struct {
	w io.Writer
	x *extractor
}

func (u *unpackedWriter) Write(p []byte) (int, error) {
	n, err := u.w.Write(p)
	u.x.bytes += int64(n)
	if err != nil {
		return n, err
	}
	if x := u.x; x.bytes > ratioFloor && overRatio(x.bytes, x.consumed(), x.lim.MaxCompressionRatio) {
		return n, userErr("the build context is compressed more than %d:1 (a decompression bomb?); this server refuses such archives",
			x.lim.MaxCompressionRatio)
	}
	return n, nil
}

// overRatio reports whether unpacked bytes came from fewer than
// 1/ratio as many read.
func overRatio(unpacked, read, ratio int64) bool {
	read = max(read, 1)
	return read <= math.MaxInt64/ratio && unpacked > read*ratio
}

func (x *extractor) dockerfile(r io.Reader) error {
	x.entries = 1
	return x.writeFile("Dockerfile", r, 0o644)
}

// corrupt wraps an error reading an archive.
func corrupt(kind string, err error) error {
	return &engine.UserError{Code: engine.CodeContext, Message: fmt.Sprintf("the build context is not a valid %s archive: %v", kind, err), Err: err}
}

func (x *extractor) tar(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return corrupt("tar", err)
		}
		switch h.Typeflag {
		case tar.TypeXGlobalHeader:
			continue
		case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return userErr("archive entry %q is a device or fifo file; build contexts may not contain those", h.Name)
		default:
			return userErr("archive entry %q has an unsupported type %q", h.Name, string(h.Typeflag))
		}
		name, err := x.begin(h.Name)
		if err != nil || name == "" {
			return err
		}
		perm := fs.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			err = x.mkdir(name, perm)
		case tar.TypeSymlink:
			err = x.symlink(h.Linkname, name)
		case tar.TypeLink:
			err = x.hardlink(h.Linkname, name)
		default:
			err = x.writeFile(name, tr, perm)
			if errors.Is(err, tar.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
				return corrupt("tar", err)
			}
		}
		if err != nil {
			return err
		}
	}
}

func (x *extractor) zip(ctx context.Context, r io.ReaderAt, size int64) error {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return corrupt("zip", err)
	}
	// Each entry is decompressed from its own stretch of the archive; what
	// was read is the sum of the stretches opened so far. Entries may
	// share bytes (the overlapping-entries bomb), so the sum stops at the
	// archive's size.
	var opened int64
	x.consumed = func() int64 { return min(opened, size) }
	for _, f := range zr.File {
		opened += int64(min(f.CompressedSize64, uint64(size)))
		if err := ctx.Err(); err != nil {
			return err
		}
		mode := f.Mode()
		if mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeIrregular) != 0 {
			return userErr("archive entry %q is a device, fifo or socket file; build contexts may not contain those", f.Name)
		}
		name, err := x.begin(f.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue
		}
		switch {
		case mode.IsDir():
			err = x.mkdir(name, mode.Perm())
		case mode&fs.ModeSymlink != 0:
			err = x.zipSymlink(f, name)
		default:
			err = x.zipFile(f, name, mode.Perm())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (x *extractor) zipSymlink(f *zip.File, name string) error {
	rc, err := f.Open()
	if err != nil {
		return corrupt("zip", err)
	}
	defer rc.Close()
	target, err := io.ReadAll(io.LimitReader(rc, 4097))
	if err != nil {
		return corrupt("zip", err)
	}
	if len(target) > 4096 {
		return userErr("archive entry %q is a link with an overlong target", f.Name)
	}
	return x.symlink(string(target), name)
}

func (x *extractor) zipFile(f *zip.File, name string, perm fs.FileMode) error {
	rc, err := f.Open()
	if err != nil {
		return corrupt("zip", err)
	}
	defer rc.Close()
	err = x.writeFile(name, rc, perm)
	if errors.Is(err, zip.ErrChecksum) || errors.Is(err, zip.ErrFormat) || errors.Is(err, zip.ErrAlgorithm) || errors.Is(err, io.ErrUnexpectedEOF) {
		return corrupt("zip", err)
	}
	return err
}

// begin counts an entry and returns its clean name inside the root ("" for
// the root itself), rejecting names that leave the root or pass through a
// link written earlier.
func (x *extractor) begin(raw string) (string, error) {
	x.entries++
	if x.entries > x.lim.MaxEntries {
		return "", userErr("the build context has more than %d entries", x.lim.MaxEntries)
	}
	name, err := cleanName(raw)
	if err != nil {
		return "", err
	}
	for dir := path.Dir(name); dir != "." && dir != "/"; dir = path.Dir(dir) {
		if x.links[dir] {
			return "", userErr("archive entry %q would be written through the link %q; build contexts may not do that", raw, dir)
		}
	}
	return name, nil
}

// cleanName validates an archive entry name and returns it cleaned and
// relative ("" for the root).
func cleanName(raw string) (string, error) {
	if strings.IndexByte(raw, 0) >= 0 {
		return "", userErr("archive entry %q has a NUL byte in its name", raw)
	}
	if strings.HasPrefix(raw, "/") {
		return "", userErr("archive entry %q has an absolute name; build contexts may only hold relative names", raw)
	}
	name := path.Clean(raw)
	if name == ".." || strings.HasPrefix(name, "../") {
		return "", userErr("archive entry %q points outside the build context", raw)
	}
	if name == "." {
		return "", nil
	}
	return name, nil
}

// replace removes an existing non-directory at name so that a later entry
// wins, as tar does, without following a link there.
func (x *extractor) replace(name string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", name, err)
	}
	if fi.IsDir() {
		return userErr("archive entry %q replaces a directory", name)
	}
	delete(x.links, name)
	if err := x.root.Remove(name); err != nil {
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return nil
}

func (x *extractor) parent(name string) error {
	if dir := path.Dir(name); dir != "." {
		if err := x.root.MkdirAll(dir, 0o755); err != nil {
			return x.fsErr(name, err)
		}
	}
	return nil
}

// fsErr turns a failure to write into the root: one caused by the
// archive's layout (a file where a directory should be, a name the root
// refuses) is the user's; anything else (a full disk) is not.
func (x *extractor) fsErr(name string, err error) error {
	if errors.Is(err, fs.ErrExist) || errors.Is(err, fs.ErrInvalid) || errors.Is(err, fs.ErrNotExist) ||
		errors.Is(err, fs.ErrPermission) || strings.Contains(err.Error(), "path escapes") ||
		strings.Contains(err.Error(), "not a directory") || strings.Contains(err.Error(), "too many levels") {
		return &engine.UserError{Code: engine.CodeContext, Message: fmt.Sprintf("archive entry %q cannot be written: %v", name, err), Err: err}
	}
	return fmt.Errorf("write %s: %w", name, err)
}

func (x *extractor) mkdir(name string, perm fs.FileMode) error {
	if x.links[name] {
		return userErr("archive entry %q replaces a link with a directory", name)
	}
	if err := x.parent(name); err != nil {
		return err
	}
	// The owner keeps write and search permission so later entries can be
	// written into the directory.
	perm |= 0o700
	err := x.root.Mkdir(name, perm)
	if errors.Is(err, fs.ErrExist) {
		fi, serr := x.root.Lstat(name)
		if serr != nil || !fi.IsDir() {
			return userErr("archive entry %q replaces a file with a directory", name)
		}
		return x.root.Chmod(name, perm)
	}
	if err != nil {
		return x.fsErr(name, err)
	}
	return x.root.Chmod(name, perm)
}

func (x *extractor) writeFile(name string, r io.Reader, perm fs.FileMode) error {
	if err := x.parent(name); err != nil {
		return err
	}
	if err := x.replace(name); err != nil {
		return err
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return x.fsErr(name, err)
	}
	left := x.lim.MaxUnpacked - x.bytes
	n, err := io.Copy(&unpackedWriter{w: f, x: x}, io.LimitReader(r, left+1))
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write %s: %w", name, cerr)
	}
	if err != nil {
		return err
	}
	if n > left {
		return userErr("the build context unpacks to more than the limit of %d bytes", x.lim.MaxUnpacked)
	}
	return x.root.Chmod(name, perm)
}

func (x *extractor) symlink(target, name string) error {
	if target == "" {
		return userErr("archive entry %q is a link with an empty target", name)
	}
	if path.IsAbs(target) {
		return userErr("archive entry %q is a link to the absolute path %q; links must stay inside the build context", name, target)
	}
	if t := path.Join(path.Dir(name), target); t == ".." || strings.HasPrefix(t, "../") {
		return userErr("archive entry %q is a link to %q, outside the build context", name, target)
	}
	if err := x.parent(name); err != nil {
		return err
	}
	if err := x.replace(name); err != nil {
		return err
	}
	if err := x.root.Symlink(target, name); err != nil {
		return x.fsErr(name, err)
	}
	x.links[name] = true
	return nil
}

func (x *extractor) hardlink(target, name string) error {
	t, err := cleanName(target)
	if err != nil {
		return userErr("archive entry %q is a hard link to %q, outside the build context", name, target)
	}
	if t == "" {
		return userErr("archive entry %q is a hard link to a directory", name)
	}
	for dir := t; dir != "." && dir != "/"; dir = path.Dir(dir) {
		if x.links[dir] {
			return userErr("archive entry %q is a hard link through the link %q; build contexts may not do that", name, dir)
		}
	}
	fi, err := x.root.Lstat(t)
	if err != nil || !fi.Mode().IsRegular() {
		return userErr("archive entry %q is a hard link to %q, which is not a file earlier in the archive", name, target)
	}
	if err := x.parent(name); err != nil {
		return err
	}
	if err := x.replace(name); err != nil {
		return err
	}
	if err := x.root.Link(t, name); err != nil {
		return x.fsErr(name, err)
	}
	return nil
}

// maxLinkHops bounds link resolution, as the kernel does.
const maxLinkHops = 40

// checkLinks resolves every written link as the kernel would, following
// links written later too, and fails when one leads outside the root: a
// chain of links that each look harmless can still climb out.
func (x *extractor) checkLinks() error {
	for name := range x.links {
		if err := x.resolve(name); err != nil {
			return err
		}
	}
	return nil
}

func (x *extractor) resolve(name string) error {
	var cur []string
	pending := strings.Split(name, "/")
	hops := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return userErr("archive entry %q is a link that leads outside the build context", name)
			}
			cur = cur[:len(cur)-1]
			continue
		}
		p := strings.Join(append(cur, c), "/")
		fi, err := x.root.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			// A missing component or a plain one: the rest is resolved as
			// names, which the ".." rule above still confines.
			cur = append(cur, c)
			continue
		}
		hops++
		if hops > maxLinkHops {
			return userErr("archive entry %q is part of a link loop", name)
		}
		target, err := x.root.Readlink(p)
		if err != nil {
			return fmt.Errorf("read link %s: %w", p, err)
		}
		if path.IsAbs(target) {
			return userErr("archive entry %q is a link to the absolute path %q", name, target)
		}
		pending = append(strings.Split(target, "/"), pending...)
	}
	return nil
}

// Resolve finds the build context directory and the Dockerfile of a job in
// the unpacked source at root. contextPath and dockerfilePath are relative
// to root, a leading "/" meaning root itself (Quay's convention); an empty
// dockerfilePath means "Dockerfile" in the context directory. Both must stay
// inside root, and the Dockerfile must be a file.
func Resolve(root, contextPath, dockerfilePath string) (contextDir, dockerfile string, err error) {
	ctxRel, err := relInside(contextPath)
	if err != nil {
		return "", "", userErr("the context path %q points outside the source", contextPath)
	}
	var dfRel string
	if strings.TrimSpace(dockerfilePath) == "" {
		dfRel = path.Join(ctxRel, "Dockerfile")
	} else if dfRel, err = relInside(dockerfilePath); err != nil || dfRel == "." {
		return "", "", userErr("the Dockerfile path %q points outside the source", dockerfilePath)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return "", "", fmt.Errorf("open source: %w", err)
	}
	defer r.Close()
	if fi, err := r.Stat(ctxRel); err != nil || !fi.IsDir() {
		return "", "", userErr("the context directory %q does not exist in the source", contextPath)
	}
	fi, err := r.Stat(dfRel)
	if err != nil {
		return "", "", engine.Errorf(engine.CodeDockerfile, "missing Dockerfile: %q does not exist in the source", "/"+dfRel)
	}
	if !fi.Mode().IsRegular() {
		return "", "", engine.Errorf(engine.CodeDockerfile, "the Dockerfile %q is not a file", "/"+dfRel)
	}
	return path.Join(root, ctxRel), path.Join(root, dfRel), nil
}

// relInside turns a Quay-style path into a clean path relative to the
// root, rejecting one that climbs out of it.
func relInside(p string) (string, error) {
	rel := path.Clean(strings.TrimLeft(strings.TrimSpace(p), "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", errors.New("outside the source")
	}
	return rel, nil
}
