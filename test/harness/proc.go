package harness

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// WorkerProc is a running `berth worker` process.
type WorkerProc struct {
	PID     int
	PPID    int
	BuildID string
	// UIDs are the real, effective, saved and filesystem user IDs from
	// /proc/<pid>/status.
	UIDs []int
}

// WorkerProcs lists the `berth worker` processes on the host: processes
// whose second argument is "worker", whose program's name starts with
// berth (the local executor may run a copy named berth-<hash>), and
// whose environment carries BERTH_BUILD_ID. Processes that vanish while
// being read are skipped. Zombies (exited, not yet reaped) are left out:
// they hold no resources and run nothing. So are a worker's children that
// still show its command line and environment: between fork and exec a
// child reads exactly like its parent.
func WorkerProcs() ([]WorkerProc, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing /proc: %w", err)
	}
	var out []WorkerProc
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if len(args) < 2 || args[1] != "worker" || !strings.HasPrefix(filepath.Base(args[0]), "berth") {
			continue
		}
		environ, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err != nil {
			continue
		}
		var buildID string
		for _, kv := range bytes.Split(environ, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte("BERTH_BUILD_ID=")); ok {
				buildID = string(v)
			}
		}
		if buildID == "" {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", d.Name(), "status"))
		if err != nil {
			continue
		}
		p := WorkerProc{PID: pid, BuildID: buildID}
		zombie := false
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				p.PPID, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if v, ok := strings.CutPrefix(line, "State:"); ok && strings.HasPrefix(strings.TrimSpace(v), "Z") {
				zombie = true
			}
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				for _, f := range strings.Fields(v) {
					n, err := strconv.Atoi(f)
					if err != nil {
						return nil, fmt.Errorf("/proc/%d/status Uid line %q: %w", pid, line, err)
					}
					p.UIDs = append(p.UIDs, n)
				}
			}
		}
		if !zombie {
			out = append(out, p)
		}
	}
	byPID := map[int]WorkerProc{}
	for _, p := range out {
		byPID[p.PID] = p
	}
	kept := out[:0]
	for _, p := range out {
		if parent, ok := byPID[p.PPID]; ok && parent.BuildID == p.BuildID {
			continue
		}
		kept = append(kept, p)
	}
	return kept, nil
}

// WorkersOf returns the worker processes of one build.
func WorkersOf(buildID string) ([]WorkerProc, error) {
	all, err := WorkerProcs()
	if err != nil {
		return nil, err
	}
	var out []WorkerProc
	for _, p := range all {
		if p.BuildID == buildID {
			out = append(out, p)
		}
	}
	return out, nil
}
