package local

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// markerVar is the environment variable naming a worker's execution ID in
// the worker and everything it starts.
const markerVar = "BERTH_EXECUTION_ID"

// The parent-death signal fires when the thread that forked the child
// exits, not the process. Go ends a thread when a goroutine that locked it
// returns, so children are forked from one goroutine that holds its
// thread for the life of the process.
var (
	spawnOnce sync.Once
	spawnReqs chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread()
			for r := range spawnReqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	r := spawnReq{cmd: cmd, done: make(chan error, 1)}
	spawnReqs <- r
	return <-r.done
}

// waitExit blocks until the child pid has exited without reaping it, so
// its pid (and process group ID) stays reserved until cmd.Wait.
func waitExit(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// killExecution kills every process that carries the execution's marker
// in its environment: what escaped the worker's process group (a new
// session) or outlived a server that died. Without root only the server's
// own processes are visible, and only those of uid are considered.
func killExecution(id string, uid int, log *slog.Logger) {
	want := []byte(markerVar + "=" + id + "\x00")
	self := os.Getpid()
	// A process may fork while being looked for; a pass that kills none
	// proves the execution is gone.
	for pass := 0; pass < 5; pass++ {
		killed := 0
		ents, err := os.ReadDir("/proc")
		if err != nil {
			log.Error("listing processes failed", "err", err)
			return
		}
		for _, ent := range ents {
			pid, err := strconv.Atoi(ent.Name())
			if err != nil || pid == self {
				continue
			}
			if os.Geteuid() != 0 {
				fi, err := os.Stat(filepath.Join("/proc", ent.Name()))
				if err != nil {
					continue
				}
				if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != uid {
					continue
				}
			}
			env, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "environ"))
			if err != nil || !bytes.HasPrefix(env, want) && !bytes.Contains(env, append([]byte{0}, want...)) {
				continue
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				killed++
				log.Warn("killed leftover worker process", "pid", pid, "execution_id", id)
			}
		}
		if killed == 0 {
			return
		}
	}
}

// lineLogger turns a worker's output stream into one log record per line.
type lineLogger struct {
	log    *slog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
}

// maxLine bounds a buffered line; longer ones are logged in pieces.
const maxLine = 64 << 10

func newLineLogger(log *slog.Logger, stream string) *lineLogger {
	return &lineLogger{log: log, stream: stream}
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) >= maxLine {
		l.emit(l.buf)
		l.buf = nil
	}
	return len(p), nil
}

func (l *lineLogger) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if len(line) == 0 {
		return
	}
	l.log.Info("worker output", "stream", l.stream, "line", string(line))
}

// flush logs a last line that had no newline.
func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.emit(l.buf)
	l.buf = nil
}
