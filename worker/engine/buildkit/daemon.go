package buildkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/buildkit/client"

	"github.com/berth-dev/berth/worker/engine/enginehost"
	"github.com/berth-dev/berth/worker/sandbox"
)

// maxSocketPath is the longest unix socket path the kernel binds
// (sun_path, 108 bytes with its terminating NUL).
const maxSocketPath = 107

// startTimeout bounds how long buildkitd may take to answer on its socket.
const startTimeout = time.Minute

// daemon is one buildkitd, running in a sandbox of its own for one build.
type daemon struct {
	cmd    *exec.Cmd
	client *client.Client
	// exited is closed when the sandbox's process has ended; err is then
	// what Wait returned.
	exited chan struct{}
	err    error
	// out keeps the last lines buildkitd wrote, to explain a failure.
	out *tail
}

// daemonConfig is where one buildkitd keeps its state.
type daemonConfig struct {
	// binary is the buildkitd program.
	binary string
	// root is buildkitd's state: its content store and snapshots.
	root string
	// socket is the unix socket it listens on.
	socket string
	// env is its environment.
	env []string
	// dir is its working directory.
	dir string
	// sandbox wraps its command line.
	sandbox sandbox.Config
}

// argv is buildkitd's command line inside the sandbox: the OCI worker with
// runc and native snapshots (no kernel or FUSE support needed), RUN steps in
// the sandbox's own network namespace ("host" is the sandbox's, not the
// machine's), and no garbage collection (the root goes with the build).
// Its tracing socket sits beside its own socket, not in XDG_RUNTIME_DIR,
// whose path may be too long for one.
func (c daemonConfig) argv() []string {
	return c.sandbox.Wrap([]string{c.binary,
		"--root", c.root,
		"--addr", "unix://" + c.socket,
		"--otel-socket-path", filepath.Join(filepath.Dir(c.socket), "otel-grpc.sock"),
		"--oci-worker=true", "--containerd-worker=false",
		"--oci-worker-binary=runc",
		"--oci-worker-net=host",
		"--oci-worker-snapshotter=native",
		"--oci-worker-gc=false",
	})
}

// startDaemon starts buildkitd in its sandbox and waits until it answers on
// its socket. The caller stops it with stop.
func startDaemon(ctx context.Context, c daemonConfig) (*daemon, error) {
	if len(c.socket) > maxSocketPath {
		return nil, fmt.Errorf("buildkit: socket path %s is longer than %d bytes", c.socket, maxSocketPath)
	}
	argv := c.argv()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	// Its own group, so that stopping it kills the sandbox's helpers too;
	// killed with the worker (see the buildah engine's exec for why
	// Pdeathsig holds).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	d := &daemon{cmd: cmd, exited: make(chan struct{}), out: &tail{}}
	cmd.Stdout = d.out
	cmd.Stderr = d.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start buildkitd: %w", err)
	}
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()
	if err := d.connect(ctx, c.socket); err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

// connect waits for buildkitd to answer on socket.
func (d *daemon) connect(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("buildkitd exited at start: %v: %s", d.err, d.out.last())
		case <-ctx.Done():
			if err := context.Cause(ctx); errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("buildkitd did not answer within %v: %s", startTimeout, d.out.last())
			}
			return ctx.Err()
		case <-tick.C:
		}
		if _, err := os.Stat(socket); err != nil {
			continue
		}
		c, err := client.New(ctx, "unix://"+socket)
		if err != nil {
			continue
		}
		infoCtx, infoCancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = c.Info(infoCtx)
		infoCancel()
		if err != nil {
			c.Close()
			continue
		}
		d.client = c
		return nil
	}
}

// stop kills buildkitd with its sandbox and everything in it (the PID
// namespace's init is buildkitd: when it dies, so do its RUN containers)
// and waits for it.
func (d *daemon) stop() {
	if d.client != nil {
		d.client.Close()
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
	}
}

// socketPath is where buildkitd of a build listens: in its sandbox's
// state directory (enginehost.State.Dir), private to the build and short
// enough for a unix socket wherever the executor puts the build's own
// directory (see buildhost.SandboxStateParent).
func socketPath(stateDir string) string {
	return filepath.Join(stateDir, "buildkitd.sock")
}

// tail keeps the last non-empty lines written to it, and the line being
// written.
type tail struct {
	kept    enginehost.Tail
	partial string
	mu      sync.Mutex
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	text := t.partial + string(p)
	parts := strings.Split(text, "\n")
	t.partial = parts[len(parts)-1]
	for _, l := range parts[:len(parts)-1] {
		if l = strings.TrimSpace(l); l != "" {
			t.kept.Add(l)
		}
	}
	return len(p), nil
}

// last returns the kept lines, joined.
func (t *tail) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(append(t.kept.Lines(), strings.TrimSpace(t.partial)), "\n")
}
