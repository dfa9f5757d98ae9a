// Package local is the executor that runs each build worker as a child
// process of the server (`berth worker`), the default for a single machine.
//
// When the server runs as root the worker does not: every running build
// gets an unprivileged user of its own from a pool (created if missing,
// each with /etc/subuid and /etc/subgid ranges of its own so rootless
// buildah can map a user namespace), runs from a root-owned copy of the
// binary (the server's own may sit in a root-only directory), in a
// per-build directory outside the server's data directory, private to that
// user. Whatever way the worker ends (Stop, its own exit, the server
// dying) every process of its user is killed, its directory removed and
// its user returned to the pool.
//
// New refuses to start when the machine cannot sandbox builds: it runs the
// worker's own check (`berth worker --check`) as a build user first.
package local

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/executors"
	"github.com/berth-dev/berth/internal/buildhost"
)

// Kind is the executor kind in the EXECUTORS config list (Quay calls its
// equivalent "popen").
const Kind = "local"

// Defaults for Config fields left zero.
const (
	DefaultName        = "local"
	DefaultUserPrefix  = "berth-build-"
	DefaultMaxLifetime = 3 * time.Hour
	DefaultStopGrace   = 10 * time.Second
	// DefaultStorageDriver is what rootless buildah can use anywhere; the
	// worker may still choose another with its own flags.
	DefaultStorageDriver = "vfs"
	rootBuildRoot        = "/var/lib/berth-builds"
	// userLockDir holds the locks of the machine's build users, shared by
	// every server on it.
	userLockDir = rootBuildRoot + "/users"
	// checkTimeout bounds the worker's check at New.
	checkTimeout = 2 * time.Minute
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("local executor: closed")

// Config configures a local executor. Every field has a default.
type Config struct {
	// Name is the executor's unique name among the configured executors.
	Name string
	// Command is the worker command line before the per-build flags; the
	// default is this process's own binary followed by "worker".
	Command []string
	// UserPrefix names the build users when the server runs as root:
	// UserPrefix + "1", + "2", …, created when missing. Ignored when not
	// root: the worker then runs as the server's user.
	UserPrefix string
	// Users is how many build users exist from the start, at least one per
	// build that may run at once (ALLOWED_WORKER_COUNT); more are created
	// when other servers of the machine hold them.
	Users int
	// BuildRoot holds the per-build directories and, when root, the copy
	// of the worker binary. Default /var/lib/berth-builds/<instance> as
	// root, /var/tmp/berth-builds-<uid>/<instance> otherwise, <instance>
	// being derived from DataDir so that servers side by side never share
	// one. It must not be inside DataDir,
	// and as root every parent must be searchable by the worker user.
	BuildRoot string
	// DataDir is the server's --data-dir; New refuses a BuildRoot inside it.
	DataDir string
	// MaxLifetime ends a worker that runs longer (reported on Events).
	MaxLifetime time.Duration
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
	StopGrace time.Duration
	// StorageDriver is passed to the worker as STORAGE_DRIVER.
	StorageDriver string
	// Engine is the one build engine the workers make and check, passed
	// as workerpb.EnginesEnv (default workerpb.DefaultEngine); the
	// worker's check at New refuses a name its binary lacks.
	Engine string
	// Env is added to the worker's environment (after the defaults, so it
	// can override them). The server's own environment is not passed on,
	// apart from PATH, locale, time zone and proxy settings.
	Env map[string]string
	// Logger receives the executor's events and the workers' output.
	Logger *slog.Logger
}

// WorkerInfo describes a running worker.
type WorkerInfo struct {
	ExecutionID string
	BuildID     string
	// PID is the worker's process ID, which is also its process group ID.
	PID int
	// UID is the user the worker runs as.
	UID int
	// Dir is the build's directory; WorkDir and StorageRoot are inside it.
	Dir         string
	WorkDir     string
	StorageRoot string
	Started     time.Time
}

// Executor starts `berth worker` child processes. Create it with New and
// end it with Close.
type Executor struct {
	cfg    Config
	log    *slog.Logger
	root   bool      // the server is root: builds run as pool users
	users  *userPool // when root
	self   identity  // the server's own user, when not root
	binary string    // what is exec'd: Command[0], or its root-owned copy
	lock   *os.File

	mu       sync.Mutex
	closed   bool
	workers  map[string]*worker
	finished map[string]time.Time // IDs that ended, for an idempotent Stop

	events *executors.EventQueue
}

// forgetAfter bounds how long Stop remembers a finished execution ID.
const forgetAfter = 24 * time.Hour

type worker struct {
	info    WorkerInfo
	ident   identity
	user    *buildUser // nil when the server is not root
	cmd     *exec.Cmd
	out     []*lineLogger
	expiry  *time.Timer
	cleaned chan struct{} // closed once the process is reaped and its directory removed

	// stopping is set (under Executor.mu) by Stop and Close so the exit is
	// not reported on Events.
	stopping bool
	// outlived is set when MaxLifetime ended the worker.
	outlived atomic.Bool

	// sigMu guards reaped: signals go to the process group only while the
	// leader is unreaped, so its ID cannot have been reused.
	sigMu  sync.Mutex
	reaped bool
	gone   chan struct{} // closed when the leader has exited (still a zombie)
}

var _ executors.Executor = (*Executor)(nil)
var _ executors.Reporter = (*Executor)(nil)

// New prepares the executor: as root it ensures the worker user and its
// subordinate ID ranges exist and copies the worker binary to a root-owned
// path; it removes what a previous run of the server left in BuildRoot
// (processes and directories) and locks BuildRoot against a second server.
// ctx bounds the worker's check, which may take up to two minutes.
func New(ctx context.Context, cfg Config) (*Executor, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	e := &Executor{
		cfg:      cfg,
		log:      cfg.Logger.With("executor", cfg.Name),
		workers:  make(map[string]*worker),
		finished: make(map[string]time.Time),
	}
	var err error
	e.root = os.Geteuid() == 0
	if e.root {
		if e.users, err = newUserPool(cfg.UserPrefix, userLockDir, cfg.Users, e.log); err != nil {
			return nil, err
		}
		if err := buildhost.OpenTunDevice(e.log); err != nil {
			return nil, fmt.Errorf("local executor: %w", err)
		}
	} else {
		e.self = currentIdentity()
		e.log.Warn("the server is not root: every build runs as its own user, not as a user of its own; run the server as root to give each build a user", "user", e.self.Name)
	}
	if err := e.prepareBuildRoot(); err != nil {
		return nil, err
	}
	if e.lock, err = lockBuildRoot(cfg.BuildRoot); err != nil {
		return nil, err
	}
	e.binary, err = exec.LookPath(cfg.Command[0])
	if err == nil {
		e.binary, err = filepath.Abs(e.binary)
	}
	if err != nil {
		e.lock.Close()
		return nil, fmt.Errorf("local executor: worker command: %w", err)
	}
	if e.root {
		binDir := filepath.Join(cfg.BuildRoot, "bin")
		if e.binary, err = installBinary(e.binary, binDir); err == nil {
			err = pruneBinaries(binDir, e.binary)
		}
		if err != nil {
			e.lock.Close()
			return nil, err
		}
	}
	if err := e.removeStale(); err != nil {
		e.lock.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if err := e.check(ctx); err != nil {
		e.lock.Close()
		return nil, err
	}
	e.events = executors.NewEventQueue()
	e.log.Info("local executor ready", "build_root", cfg.BuildRoot, "build_users", cfg.UserPrefix+"N",
		"worker_binary", e.binary)
	return e, nil
}

// check runs the worker's self-check (`<worker command> --check`) as a
// build would run: as a build user, in a build directory. The worker checks
// that it can sandbox a build here (see sandbox.Preflight) and says which
// check failed.
func (e *Executor) check(ctx context.Context) error {
	ident, user, err := e.takeUser()
	if err != nil {
		return err
	}
	defer e.giveBack(user)
	id, err := newExecutionID("check")
	if err != nil {
		return err
	}
	dirs, err := e.makeBuildDirs(id, ident)
	if err != nil {
		return err
	}
	defer e.removeDir(dirs.root)
	args := append(append([]string(nil), e.cfg.Command[1:]...), "--check",
		"--work-dir="+dirs.work, "--storage-root="+dirs.storage)
	cmd := e.command(dirs, ident, e.binary, args...)
	cmd.Dir = dirs.work
	cmd.WaitDelay = 5 * time.Second
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := spawn(cmd); err != nil {
		return fmt.Errorf("local executor: start the worker's check: %w", err)
	}
	go func() {
		<-ctx.Done()
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("local executor: builds cannot run on this machine (the worker's check as %s failed: %v): %s",
			ident.Name, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// takeUser is the identity a new build runs as: a pool user of its own as
// root, else the server's own.
func (e *Executor) takeUser() (identity, *buildUser, error) {
	if !e.root {
		return e.self, nil, nil
	}
	u, err := e.users.acquire()
	if err != nil {
		return identity{}, nil, err
	}
	return u.ident, u, nil
}

// giveBack returns a pool user, killing whatever still runs as it.
func (e *Executor) giveBack(u *buildUser) {
	if u != nil {
		e.users.release(u)
	}
}

func (c *Config) setDefaults() error {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if len(c.Command) == 0 {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("local executor: own binary: %w", err)
		}
		c.Command = []string{self, "worker"}
	} else {
		c.Command = append([]string(nil), c.Command...)
	}
	if c.UserPrefix == "" {
		c.UserPrefix = DefaultUserPrefix
	}
	if c.Users <= 0 {
		c.Users = 1
	}
	if c.BuildRoot == "" {
		base := rootBuildRoot
		if os.Geteuid() != 0 {
			base = "/var/tmp/berth-builds-" + strconv.Itoa(os.Geteuid())
		}
		// One directory per server instance (keyed by its data directory),
		// so that several servers on one machine each own their build root.
		c.BuildRoot = filepath.Join(base, instanceKey(c.DataDir))
	}
	if c.MaxLifetime <= 0 {
		c.MaxLifetime = DefaultMaxLifetime
	}
	if c.StopGrace <= 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.StorageDriver == "" {
		c.StorageDriver = DefaultStorageDriver
	}
	if c.Engine == "" {
		c.Engine = workerpb.DefaultEngine
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	root, err := filepath.Abs(c.BuildRoot)
	if err != nil {
		return fmt.Errorf("local executor: build root: %w", err)
	}
	c.BuildRoot = root
	if c.DataDir != "" {
		data, err := filepath.Abs(c.DataDir)
		if err != nil {
			return fmt.Errorf("local executor: data dir: %w", err)
		}
		if root == data || strings.HasPrefix(root, data+string(filepath.Separator)) {
			return fmt.Errorf("local executor: build root %s must be outside the data directory %s", root, data)
		}
	}
	return nil
}

// Name returns the configured name.
func (e *Executor) Name() string { return e.cfg.Name }

// Running counts workers started and not yet stopped or exited.
func (e *Executor) Running(ctx context.Context) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.workers), nil
}

// Events reports every worker that exited without a Stop (including one
// ended for exceeding MaxLifetime, with that reason), once its directory is
// removed. It is closed by Close.
func (e *Executor) Events() <-chan executors.Event { return e.events.Out() }

// Worker describes a running worker; false once it stopped or exited.
func (e *Executor) Worker(executionID string) (WorkerInfo, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	w, ok := e.workers[executionID]
	if !ok {
		return WorkerInfo{}, false
	}
	return w.info, true
}

// Start launches a worker for spec and returns once it runs.
func (e *Executor) Start(ctx context.Context, spec executors.WorkerSpec) (string, error) {
	if spec.ManagerAddr == "" || spec.RegistrationToken == "" {
		return "", errors.New("local executor: worker spec needs a manager address and a registration token")
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return "", ErrClosed
	}
	id, err := newExecutionID(spec.BuildID)
	if err != nil {
		return "", err
	}
	ident, user, err := e.takeUser()
	if err != nil {
		return "", err
	}
	dirs, err := e.makeBuildDirs(id, ident)
	if err != nil {
		e.giveBack(user)
		return "", err
	}
	args := append(append([]string(nil), e.cfg.Command[1:]...),
		"--manager="+spec.ManagerAddr,
		"--work-dir="+dirs.work,
		"--storage-root="+dirs.storage)
	if spec.ManagerInsecure {
		args = append(args, "--insecure")
	}
	cmd := e.command(dirs, ident, e.binary, args...)
	cmd.Dir = dirs.work
	// The token goes in the environment, never on the command line where
	// every user on the host could read it.
	cmd.Env = append(cmd.Env, "BERTH_REGISTRATION_TOKEN="+spec.RegistrationToken, "BERTH_BUILD_ID="+spec.BuildID)
	if spec.ManagerCAPEM != "" {
		cmd.Env = append(cmd.Env, "BERTH_MANAGER_CA_PEM="+spec.ManagerCAPEM)
	}
	logger := e.log.With("build_id", spec.BuildID, "execution_id", id)
	stdout, stderr := newLineLogger(logger, "stdout"), newLineLogger(logger, "stderr")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Output pipes held by a process that escaped the group must not keep
	// the reaper waiting.
	cmd.WaitDelay = 5 * time.Second

	w := &worker{
		info: WorkerInfo{ExecutionID: id, BuildID: spec.BuildID, UID: ident.UID, Dir: dirs.root, WorkDir: dirs.work,
			StorageRoot: dirs.storage},
		ident:   ident,
		user:    user,
		cmd:     cmd,
		out:     []*lineLogger{stdout, stderr},
		cleaned: make(chan struct{}),
		gone:    make(chan struct{}),
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.removeDir(dirs.root)
		e.giveBack(user)
		return "", ErrClosed
	}
	if err := spawn(cmd); err != nil {
		e.mu.Unlock()
		e.removeDir(dirs.root)
		e.giveBack(user)
		return "", fmt.Errorf("local executor: start worker: %w", err)
	}
	w.info.PID = cmd.Process.Pid
	w.info.Started = time.Now()
	e.workers[id] = w
	e.mu.Unlock()
	w.expiry = time.AfterFunc(e.cfg.MaxLifetime, func() {
		logger.Warn("worker exceeded its maximum lifetime", "max_lifetime", e.cfg.MaxLifetime)
		w.outlived.Store(true)
		e.terminate(context.Background(), w)
	})
	go e.reap(w, logger)
	logger.Info("worker started", "pid", w.info.PID, "uid", ident.UID, "user", ident.Name)
	return id, nil
}

// Stop ends the worker's process group (SIGTERM, then SIGKILL after the
// grace period or when ctx ends) and waits until its directory is removed.
func (e *Executor) Stop(ctx context.Context, executionID string) error {
	e.mu.Lock()
	w, ok := e.workers[executionID]
	if !ok {
		_, known := e.finished[executionID]
		e.mu.Unlock()
		if known {
			return nil
		}
		return fmt.Errorf("%w: %s", executors.ErrUnknownWorker, executionID)
	}
	w.stopping = true
	e.mu.Unlock()
	e.terminate(ctx, w)
	select {
	case <-w.cleaned:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("local executor: stop %s: %w", executionID, ctx.Err())
	}
}

// Close stops every running worker (as Stop does, so none is reported on
// Events), refuses further Starts, closes the Events channel and releases
// BuildRoot. The server calls it on shutdown.
func (e *Executor) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	ids := make([]string, 0, len(e.workers))
	for id := range e.workers {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Go(func() { errs[i] = e.Stop(ctx, id) })
	}
	wg.Wait()
	e.events.Close()
	// The copy of the worker binary is the bulk of a build root; the next
	// New makes it again. (Many short-lived servers, as in tests, would
	// otherwise leave one copy each.)
	if err := os.RemoveAll(filepath.Join(e.cfg.BuildRoot, "bin")); err != nil {
		errs = append(errs, err)
	}
	e.removeEmptyBuildRoot()
	errs = append(errs, e.lock.Close())
	return errors.Join(errs...)
}

// terminate signals the worker's process group: SIGTERM, then SIGKILL
// once the leader exited, the grace period passed or ctx ended. It does
// not wait for the cleanup.
func (e *Executor) terminate(ctx context.Context, w *worker) {
	w.signalGroup(syscall.SIGTERM)
	grace := time.NewTimer(e.cfg.StopGrace)
	defer grace.Stop()
	select {
	case <-w.gone:
	case <-grace.C:
	case <-ctx.Done():
	}
	w.signalGroup(syscall.SIGKILL)
}

func (w *worker) signalGroup(sig syscall.Signal) {
	w.sigMu.Lock()
	defer w.sigMu.Unlock()
	if !w.reaped {
		_ = syscall.Kill(-w.info.PID, sig)
	}
}

// reap waits for the worker's exit, kills what is left of its process
// group and of its execution, removes its directory and records the end.
func (e *Executor) reap(w *worker, logger *slog.Logger) {
	pid := w.info.PID
	if err := waitExit(pid); err != nil {
		logger.Error("waiting for worker failed", "err", err)
	}
	close(w.gone)
	w.expiry.Stop()
	w.sigMu.Lock()
	// The leader is a zombie until Wait, so its ID still names our group.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	w.reaped = true
	w.sigMu.Unlock()
	waitErr := w.cmd.Wait()
	for _, o := range w.out {
		o.flush()
	}
	if w.user != nil {
		// Everything of the build's user, its sandbox's processes too,
		// before its files go: every process carrying the execution's
		// marker runs as that user, so no marker scan is needed.
		killIdentity(w.ident, logger)
	} else {
		killExecution(w.info.ExecutionID, w.ident.UID, logger)
	}
	e.removeDir(w.info.Dir)
	e.giveBack(w.user)

	e.mu.Lock()
	delete(e.workers, w.info.ExecutionID)
	now := time.Now()
	for id, at := range e.finished {
		if now.Sub(at) > forgetAfter {
			delete(e.finished, id)
		}
	}
	e.finished[w.info.ExecutionID] = now
	stopped := w.stopping
	e.mu.Unlock()

	logger.Info("worker ended", "pid", pid, "stopped", stopped, "status", exitStatus(waitErr),
		"duration", time.Since(w.info.Started).Round(time.Millisecond))
	close(w.cleaned)
	if !stopped {
		ev := executors.Event{ExecutionID: w.info.ExecutionID, Ended: true}
		if w.outlived.Load() {
			ev.Reason = fmt.Sprintf("the worker ran longer than the executor's MAX_LIFETIME_S (%s) and was stopped", e.cfg.MaxLifetime)
		}
		e.events.Push(ev)
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// newExecutionID names an execution after its build (readable in ps and
// in the build root) plus randomness (one build may have several attempts).
func newExecutionID(buildID string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("local executor: execution id: %w", err)
	}
	var name strings.Builder
	for _, r := range buildID {
		if name.Len() >= 40 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			name.WriteRune(r)
		}
	}
	if name.Len() == 0 {
		name.WriteString("build")
	}
	return name.String() + "-" + hex.EncodeToString(b[:]), nil
}

// instanceKey names a server instance's build root after its data
// directory: the first 12 hex digits of the SHA-256 of its absolute path.
func instanceKey(dataDir string) string {
	if dataDir == "" {
		return "default"
	}
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	sum := sha256.Sum256([]byte(dataDir))
	return hex.EncodeToString(sum[:6])
}
