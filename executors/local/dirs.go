package local

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/berth-dev/berth/buildmanager/workerpb"
)

// buildDirs is one execution's directory tree under BuildRoot/builds.
type buildDirs struct {
	root    string // BuildRoot/builds/<execution ID>
	work    string // --work-dir: source and context
	storage string // --storage-root: the build engine's image store
	run     string // XDG_RUNTIME_DIR
	home    string // HOME, so nothing lands in a home shared by builds
	tmp     string // TMPDIR, so large temporary files go away with the build
}

func (e *Executor) buildsDir() string { return filepath.Join(e.cfg.BuildRoot, "builds") }

func (e *Executor) dirsFor(id string) buildDirs {
	root := filepath.Join(e.buildsDir(), id)
	return buildDirs{
		root:    root,
		work:    filepath.Join(root, "work"),
		storage: filepath.Join(root, "storage"),
		run:     filepath.Join(root, "run"),
		home:    filepath.Join(root, "home"),
		tmp:     filepath.Join(root, "tmp"),
	}
}

// prepareBuildRoot creates BuildRoot and BuildRoot/builds. As root they
// are root-owned and not writable by the build users, who must still be
// able to reach their own directories inside: every parent of BuildRoot
// must be searchable by others. BuildRoot/builds is not listable (0711):
// a build's directory has a random name, so a build user cannot find the
// directory a crashed server's build of the same user left behind.
func (e *Executor) prepareBuildRoot() error {
	root := e.cfg.BuildRoot
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{root, 0o755}, {e.buildsDir(), 0o711}, {filepath.Join(root, "bin"), 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("local executor: create %s: %w", d.path, err)
		}
		if !e.root {
			continue
		}
		if err := os.Chown(d.path, 0, 0); err != nil {
			return fmt.Errorf("local executor: own %s: %w", d.path, err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("local executor: chmod %s: %w", d.path, err)
		}
	}
	if !e.root {
		return nil
	}
	for p := filepath.Dir(root); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("local executor: build root parent %s: %w", p, err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("local executor: build root %s is unreachable for the worker user: %s is not searchable by others (mode %v)",
				root, p, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// removeEmptyBuildRoot removes BuildRoot on Close when no build directory
// is left in it, so a machine that ran many short-lived servers (tests, or
// one per data directory) keeps no empty root per instance. It runs while
// the lock is still held; each step is a plain Remove, which leaves
// anything a build left behind in place.
func (e *Executor) removeEmptyBuildRoot() {
	if err := os.Remove(e.buildsDir()); err != nil {
		return
	}
	if err := os.Remove(filepath.Join(e.cfg.BuildRoot, ".lock")); err != nil {
		return
	}
	if err := os.Remove(e.cfg.BuildRoot); err != nil {
		e.cfg.Logger.Debug("build root kept", "dir", e.cfg.BuildRoot, "err", err)
	}
}

// lockBuildRoot holds an exclusive lock on BuildRoot for the executor's
// life: New removes every build directory it finds, which must never hit a
// second server's live builds.
func lockBuildRoot(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("local executor: lock build root: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("local executor: build root %s is in use by another executor", root)
		}
		return nil, fmt.Errorf("local executor: lock build root: %w", err)
	}
	return f, nil
}

// makeBuildDirs creates an execution's directories, owned by the build's
// user and private to it.
func (e *Executor) makeBuildDirs(id string, ident identity) (buildDirs, error) {
	d := e.dirsFor(id)
	if err := os.Mkdir(d.root, 0o700); err != nil {
		return buildDirs{}, fmt.Errorf("local executor: build dir: %w", err)
	}
	for _, p := range []string{d.root, d.work, d.storage, d.run, d.home, d.tmp} {
		if p != d.root {
			if err := os.Mkdir(p, 0o700); err != nil {
				e.removeDir(d.root)
				return buildDirs{}, fmt.Errorf("local executor: build dir: %w", err)
			}
		}
		if ident.dropped {
			if err := os.Lchown(p, ident.UID, ident.GID); err != nil {
				e.removeDir(d.root)
				return buildDirs{}, fmt.Errorf("local executor: build dir owner: %w", err)
			}
		}
	}
	return d, nil
}

// removeDir removes a build directory. Without root, a rootless build
// engine leaves files owned by subordinate IDs that only the user
// namespace can delete, so removal falls back to `buildah unshare`.
func (e *Executor) removeDir(dir string) {
	err := os.RemoveAll(dir)
	if err != nil && !e.root {
		if out, uerr := exec.Command("buildah", "unshare", "rm", "-rf", dir).CombinedOutput(); uerr == nil {
			err = nil
		} else {
			err = fmt.Errorf("%w; buildah unshare: %v: %s", err, uerr, out)
		}
	}
	if err != nil {
		e.log.Error("removing build directory failed", "dir", dir, "err", err)
	}
}

// removeStale ends and removes what a previous run of the server left
// behind (it was killed, so its workers' directories stayed).
func (e *Executor) removeStale() error {
	entries, err := os.ReadDir(e.buildsDir())
	if err != nil {
		return fmt.Errorf("local executor: list build root: %w", err)
	}
	for _, ent := range entries {
		killExecution(ent.Name(), e.self.UID, e.log)
		dir := filepath.Join(e.buildsDir(), ent.Name())
		e.removeDir(dir)
		e.log.Info("removed stale build directory", "dir", dir)
	}
	return nil
}

// command prepares a process that runs as the build's user in an
// execution's directories, in its own process group, killed when the
// server dies.
func (e *Executor) command(d buildDirs, ident identity, path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Env = e.workerEnv(d, ident)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if ident.dropped {
		cmd.SysProcAttr.Credential = &syscall.Credential{
			Uid:    uint32(ident.UID),
			Gid:    uint32(ident.GID),
			Groups: ident.Groups,
		}
	}
	return cmd
}

// passedEnv names the server environment variables a worker inherits:
// what finding programs, locale and proxies need, and nothing that could
// carry the server's secrets.
var passedEnv = []string{"PATH", "LANG", "LC_ALL", "TZ",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func (e *Executor) workerEnv(d buildDirs, ident identity) []string {
	env := map[string]string{"PATH": defaultPath}
	for _, k := range passedEnv {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	env["HOME"] = d.home
	env["USER"] = ident.Name
	env["LOGNAME"] = ident.Name
	env["XDG_RUNTIME_DIR"] = d.run
	env["TMPDIR"] = d.tmp
	env["STORAGE_DRIVER"] = e.cfg.StorageDriver
	for k, v := range e.cfg.Env {
		env[k] = v
	}
	// The worker makes and checks only the executor's engine: a machine
	// needs no other engine's programs.
	env[workerpb.EnginesEnv] = e.cfg.Engine
	// The marker that lets the executor find every process of this
	// execution, even one that left the process group.
	env[markerVar] = filepath.Base(d.root)
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// installBinary copies the worker binary to a root-owned 0755 path in
// binDir named by its content hash, reusing an identical copy. The
// server's own binary may sit where the worker user cannot read it.
func installBinary(src, binDir string) (string, error) {
	sum, err := fileSHA256(src)
	if err != nil {
		return "", fmt.Errorf("local executor: hash worker binary: %w", err)
	}
	dst := filepath.Join(binDir, filepath.Base(src)+"-"+sum[:16])
	if fi, err := os.Lstat(dst); err == nil {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().IsRegular() && fi.Mode().Perm() == 0o755 && ok && st.Uid == 0 {
			if have, err := fileSHA256(dst); err == nil && have == sum {
				return dst, nil
			}
		}
		if err := os.Remove(dst); err != nil {
			return "", fmt.Errorf("local executor: replace worker binary copy: %w", err)
		}
	}
	if err := copyFile(src, dst); err != nil {
		return "", fmt.Errorf("local executor: copy worker binary: %w", err)
	}
	return dst, nil
}

// pruneBinaries removes earlier copies (of older server versions) from
// binDir; BuildRoot's lock guarantees no other server uses them.
func pruneBinaries(binDir, keep string) error {
	ents, err := os.ReadDir(binDir)
	if err != nil {
		return fmt.Errorf("local executor: list %s: %w", binDir, err)
	}
	for _, ent := range ents {
		if p := filepath.Join(binDir, ent.Name()); p != keep {
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("local executor: remove old worker binary: %w", err)
			}
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".copy-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
