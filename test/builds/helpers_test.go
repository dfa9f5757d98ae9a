package builds

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// phaseRank orders the phases a successful build passes through.
var phaseRank = map[string]int{
	"waiting": 0, "build-scheduled": 1, "unpacking": 2, "pulling": 3, "building": 4, "pushing": 5,
	"complete": 6, "error": 6, "internalerror": 6, "cancelled": 6, "expired": 6,
}

// runningPhases are the phases in which a build holds a worker slot.
var runningPhases = map[string]bool{"build-scheduled": true, "unpacking": true, "pulling": true, "building": true, "pushing": true}

// newRepo creates admin/<name>-<random> and returns it.
func newRepo(t *testing.T, e *env, name string) string {
	t.Helper()
	name = name + "-" + harness.RandomHex(3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.client.CreateRepo(ctx, adminUser, name); err != nil {
		t.Fatalf("creating repository: %v", err)
	}
	return adminUser + "/" + name
}

// dockerfile is a Dockerfile FROM the shared base image.
func (e *env) dockerfile(lines ...string) string {
	return "FROM " + e.base + "\n" + strings.Join(lines, "\n") + "\n"
}

// submit uploads a context through filedrop and requests a build of repo.
func submit(t *testing.T, e *env, repo string, r harness.BuildRequest, files ...harness.Entry) *harness.Build {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	archive, err := harness.TarGz(files...)
	if err != nil {
		t.Fatal(err)
	}
	if r.FileID, err = e.client.Upload(ctx, archive); err != nil {
		t.Fatalf("uploading the context: %v", err)
	}
	b, err := e.client.RequestBuild(ctx, repo, r)
	if err != nil {
		t.Fatalf("requesting the build: %v", err)
	}
	t.Logf("build %s of %s requested (phase %s)", b.ID, repo, b.Phase)
	return b
}

// await polls the build until it ends (or stop says so), returning it and
// the distinct phases seen, in order.
func await(t *testing.T, e *env, repo, id string, stop func(*harness.Build) bool) (*harness.Build, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	var seen []string
	b, err := e.client.Wait(ctx, repo, id, 100*time.Millisecond, stop, func(p string) { seen = append(seen, p) })
	if err != nil {
		t.Fatalf("waiting for build %s (phases seen %v): %v\n%s", id, seen, err, dumpLogs(e, repo, id))
	}
	return b, seen
}

// logsOf reads the whole log of a build.
func logsOf(t *testing.T, e *env, repo, id string) []harness.LogEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	entries, err := e.client.Logs(ctx, repo, id, 0)
	if err != nil {
		t.Fatalf("reading the log of %s: %v", id, err)
	}
	return entries
}

// dumpLogs renders a build's log for a failure message.
func dumpLogs(e *env, repo, id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	entries, err := e.client.Logs(ctx, repo, id, 0)
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	return formatLog(entries)
}

func formatLog(entries []harness.LogEntry) string {
	var sb strings.Builder
	sb.WriteString("---- build log ----\n")
	for i, en := range entries {
		typ := en.Type
		if typ == "" {
			typ = "-"
		}
		fmt.Fprintf(&sb, "%3d %-7s %s\n", i, typ, en.Message)
	}
	sb.WriteString("----")
	return sb.String()
}

// phasesIn returns the messages of the log's phase entries, in order.
func phasesIn(entries []harness.LogEntry) []string {
	var out []string
	for _, en := range entries {
		if en.Type == "phase" {
			out = append(out, en.Message)
		}
	}
	return out
}

// attempts counts the attempts a log records: each starts with a
// build-scheduled phase entry.
func attempts(entries []harness.LogEntry) int {
	n := 0
	for _, p := range phasesIn(entries) {
		if p == "build-scheduled" {
			n++
		}
	}
	return n
}

// checkOrdered fails unless phases never go backwards.
func checkOrdered(t *testing.T, what string, phases []string) {
	t.Helper()
	last := -1
	for _, p := range phases {
		r, ok := phaseRank[p]
		if !ok {
			t.Errorf("%s: unknown phase %q in %v", what, p, phases)
			continue
		}
		if r < last {
			t.Errorf("%s: phase %q after a later one: %v", what, p, phases)
		}
		last = r
	}
}

// indexOf returns the index of the first entry at or after from that
// matches, or -1.
func indexOf(entries []harness.LogEntry, from int, match func(harness.LogEntry) bool) int {
	for i := max(from, 0); i < len(entries); i++ {
		if match(entries[i]) {
			return i
		}
	}
	return -1
}

func isPhase(p string) func(harness.LogEntry) bool {
	return func(en harness.LogEntry) bool { return en.Type == "phase" && en.Message == p }
}

func matches(re *regexp.Regexp) func(harness.LogEntry) bool {
	return func(en harness.LogEntry) bool { return re.MatchString(en.Message) }
}

// workerOf waits until the build has exactly one worker process and
// returns it.
func workerOf(t *testing.T, e *env, repo, id string) harness.WorkerProc {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		procs, err := harness.WorkersOf(id)
		if err != nil {
			t.Fatal(err)
		}
		if len(procs) == 1 {
			return procs[0]
		}
		if len(procs) > 1 {
			t.Fatalf("build %s has %d worker processes at once: %+v", id, len(procs), procs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no `berth worker` process with BERTH_BUILD_ID=%s appeared\n%s", id, dumpLogs(e, repo, id))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// groupMembers lists the live processes in process group pgid (a worker
// leads its own group; buildah runs inside it).
func groupMembers(pgid int) []int {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name: state ppid pgrp ...
		s := string(stat)
		rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(rest) < 3 || rest[0] == "Z" {
			continue
		}
		if g, err := strconv.Atoi(rest[2]); err == nil && g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(rest) > 0 && rest[0] != "Z"
}

// checkUnprivileged fails unless every user ID of the worker is non-zero.
func checkUnprivileged(t *testing.T, p harness.WorkerProc) {
	t.Helper()
	if len(p.UIDs) != 4 {
		t.Fatalf("worker %d: Uid line has %d fields: %v", p.PID, len(p.UIDs), p.UIDs)
	}
	for _, u := range p.UIDs {
		if u == 0 {
			t.Fatalf("worker %d runs with host uid 0 (real, effective, saved, fs: %v)", p.PID, p.UIDs)
		}
	}
	t.Logf("worker %d runs as host uids %v", p.PID, p.UIDs)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
