package builds

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// userErrorWithin is how soon after the failing step a user error must
// end the build.
const userErrorWithin = 5 * time.Second

// checkUserError asserts a build ended in error at its first attempt,
// with the message as an error entry before the terminal phase entry.
func checkUserError(t *testing.T, b *harness.Build, entries []harness.LogEntry) (errIdx int) {
	t.Helper()
	if b.Phase != "error" {
		t.Fatalf("build ended %s (error %q), want error\n%s", b.Phase, deref(b.Error), formatLog(entries))
	}
	if b.Error == nil || *b.Error == "" {
		t.Errorf("an error build has no error message")
	}
	if n := attempts(entries); n != 1 {
		t.Errorf("a user error was retried: %d attempts logged\n%s", n, formatLog(entries))
	}
	errIdx = indexOf(entries, 0, func(en harness.LogEntry) bool { return en.Type == "error" })
	end := indexOf(entries, 0, isPhase("error"))
	if errIdx < 0 || end < 0 || errIdx > end {
		t.Fatalf("want an error entry, then the error phase entry (at %d and %d)\n%s", errIdx, end, formatLog(entries))
	}
	if end != len(entries)-1 {
		t.Errorf("entries after the terminal phase\n%s", formatLog(entries))
	}
	return errIdx
}

// TestDockerfileSyntaxError: a bad instruction ends the build in error at
// once, never retried, with the parser's message in the log.
func TestDockerfileSyntaxError(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	repo := newRepo(t, e, "syntax")
	b := submit(t, e, repo, harness.BuildRequest{DockerTags: []string{"v1"}},
		harness.Entry{Name: "Dockerfile", Body: e.dockerfile("BOGUSINSTRUCTION foo", "RUN true")})
	b, _ = await(t, e, repo, b.ID, nil)
	entries := logsOf(t, e, repo, b.ID)
	i := checkUserError(t, b, entries)
	t.Logf("error entry: %q", entries[i].Message)
	if !strings.Contains(strings.ToLower(entries[i].Message), "bogusinstruction") {
		t.Errorf("the error entry %q does not name the bad instruction", entries[i].Message)
	}
	if indexOf(entries, 0, isPhase("building")) >= 0 {
		t.Errorf("a Dockerfile that does not parse reached building\n%s", formatLog(entries))
	}
}

// TestFailingRun: RUN exiting 3 ends the build in error within 5 s of the
// step, with its output and the exit status in the log, never retried.
func TestFailingRun(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	repo := newRepo(t, e, "runfail")
	marker := "before-failure-" + harness.RandomHex(4)
	b := submit(t, e, repo, harness.BuildRequest{DockerTags: []string{"v1"}},
		harness.Entry{Name: "Dockerfile", Body: e.dockerfile("RUN echo "+marker+" && exit 3", "RUN echo never-reached")})
	b, _ = await(t, e, repo, b.ID, nil)
	entries := logsOf(t, e, repo, b.ID)
	errIdx := checkUserError(t, b, entries)
	// The step's output line (not the command entry echoing the step).
	out := indexOf(entries, 0, func(en harness.LogEntry) bool {
		return en.Type == "" && strings.TrimSpace(en.Message) == marker
	})
	if out < 0 {
		t.Fatalf("the failing step's output %q is not in the log\n%s", marker, formatLog(entries))
	}
	exitStatus := regexp.MustCompile(`(?i)(exit|status|code)\D{0,12}\b3\b`)
	if indexOf(entries, out, matches(exitStatus)) < 0 {
		t.Errorf("no log entry after the step's output gives the exit status 3\n%s", formatLog(entries))
	}
	if indexOf(entries, 0, func(en harness.LogEntry) bool {
		return en.Type == "" && strings.TrimSpace(en.Message) == "never-reached"
	}) >= 0 {
		t.Errorf("the step after the failing one ran\n%s", formatLog(entries))
	}
	stepAt, endAt := entries[out].Time(), entries[len(entries)-1].Time()
	if d := endAt.Sub(stepAt); d > userErrorWithin {
		t.Errorf("the build ended %s after the failing step's output, want within %s", d, userErrorWithin)
	} else {
		t.Logf("error %s after the failing step's output (error entry %d: %q)", d.Round(time.Millisecond), errIdx, entries[errIdx].Message)
	}
}

// TestMissingBaseImage: a FROM naming nothing in the registry is a user
// error.
func TestMissingBaseImage(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	repo := newRepo(t, e, "nobase")
	missing := e.srv.Addr + "/" + adminUser + "/does-not-exist-" + harness.RandomHex(4) + ":latest"
	b := submit(t, e, repo, harness.BuildRequest{DockerTags: []string{"v1"}},
		harness.Entry{Name: "Dockerfile", Body: "FROM " + missing + "\nRUN true\n"})
	b, _ = await(t, e, repo, b.ID, nil)
	entries := logsOf(t, e, repo, b.ID)
	i := checkUserError(t, b, entries)
	t.Logf("error entry: %q", entries[i].Message)
	if !strings.Contains(entries[i].Message, "does-not-exist") && !strings.Contains(deref(b.Error), "does-not-exist") {
		t.Errorf("the error %q does not name the missing image", entries[i].Message)
	}
}

// TestWorkerKilled: SIGKILL of the worker during building is an
// infrastructure failure: the attempt is logged, the build goes back to
// waiting, and the retry completes.
func TestWorkerKilled(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	repo := newRepo(t, e, "killed")
	b := submit(t, e, repo, harness.BuildRequest{DockerTags: []string{"v1"}},
		harness.Entry{Name: "Dockerfile", Body: e.dockerfile("RUN sleep 5 && echo slept > /slept")})
	await(t, e, repo, b.ID, func(b *harness.Build) bool { return b.Phase == "building" })
	p := workerOf(t, e, repo, b.ID)
	checkUnprivileged(t, p)
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("killing worker %d: %v", p.PID, err)
	}
	t.Logf("killed worker %d of build %s", p.PID, b.ID)
	var seen []string
	b, seen = await(t, e, repo, b.ID, nil)
	entries := logsOf(t, e, repo, b.ID)
	if b.Phase != "complete" {
		t.Fatalf("build ended %s (error %q) after its worker was killed, want complete after a retry (phases seen %v)\n%s",
			b.Phase, deref(b.Error), seen, formatLog(entries))
	}
	if n := attempts(entries); n != 2 {
		t.Errorf("%d attempts logged, want 2\n%s", n, formatLog(entries))
	}
	failed := indexOf(entries, 0, matches(regexp.MustCompile(`(?i)attempt 1\b.*fail`)))
	if failed < 0 {
		t.Fatalf("the failed attempt is not logged\n%s", formatLog(entries))
	}
	if failed < indexOf(entries, 0, isPhase("building")) {
		t.Errorf("the failed attempt is logged before building\n%s", formatLog(entries))
	}
	if w := indexOf(entries, failed, isPhase("waiting")); w < 0 {
		t.Errorf("no waiting phase after the failed attempt\n%s", formatLog(entries))
	} else if indexOf(entries, w, isPhase("build-scheduled")) < 0 || indexOf(entries, w, isPhase("complete")) < 0 {
		t.Errorf("the retry is not scheduled and completed after waiting\n%s", formatLog(entries))
	}
	if alive(p.PID) {
		t.Errorf("the killed worker %d is still alive", p.PID)
	}
	files, err := e.toolsFor(t).ReadImageFiles(context.Background(), e.srv.Addr+"/"+repo+"@"+b.ManifestDigests["v1"], e.creds(), "/slept")
	if err != nil {
		t.Fatal(err)
	}
	if files["/slept"] != "slept\n" {
		t.Errorf("/slept is %q", files["/slept"])
	}
}

// TestCancelDuringBuilding: DELETE while building → cancelled, and the
// worker (and everything in its process group) is gone.
func TestCancelDuringBuilding(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	repo := newRepo(t, e, "cancel")
	b := submit(t, e, repo, harness.BuildRequest{DockerTags: []string{"v1"}},
		harness.Entry{Name: "Dockerfile", Body: e.dockerfile("RUN sleep 120")})
	await(t, e, repo, b.ID, func(b *harness.Build) bool { return b.Phase == "building" })
	p := workerOf(t, e, repo, b.ID)
	checkUnprivileged(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if err := e.client.Cancel(ctx, repo, b.ID); err != nil {
		t.Fatalf("cancelling a building build: %v", err)
	}
	took := time.Since(start)
	t.Logf("cancel answered after %s", took.Round(time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("cancelling a building build took %s", took)
	}
	got, err := e.client.GetBuild(ctx, repo, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Phase != "cancelled" {
		t.Errorf("after the cancel answered the build is %s, want cancelled", got.Phase)
	}
	deadline := time.Now().Add(15 * time.Second)
	for alive(p.PID) || len(groupMembers(p.PID)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("15 s after the cancel, worker %d alive=%v, its process group still has %v", p.PID, alive(p.PID), groupMembers(p.PID))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("worker %d and its process group gone %s after the cancel", p.PID, time.Since(start).Round(time.Millisecond))
	if procs, _ := harness.WorkersOf(b.ID); len(procs) > 0 {
		t.Errorf("worker processes of the cancelled build remain: %+v", procs)
	}
	// Terminal phases never change.
	time.Sleep(time.Second)
	if got, err = e.client.GetBuild(ctx, repo, b.ID); err != nil || got.Phase != "cancelled" {
		t.Errorf("a second after cancelling, the build is %v (%v)", got, err)
	}
	entries := logsOf(t, e, repo, b.ID)
	if last := entries[len(entries)-1]; last.Type != "phase" || last.Message != "cancelled" {
		t.Errorf("the log does not end with the cancelled phase\n%s", formatLog(entries))
	}
}

// TestContextEscapes: an archive with ../ entries, an absolute entry name
// or a symlink pointing out of the work directory is rejected, and nothing
// is written outside.
func TestContextEscapes(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	// /tmp is writable by the worker user: an escape would land here.
	outside, err := os.MkdirTemp("/tmp", "berth-escape-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(outside)
	if err := os.Chmod(outside, 0o1777); err != nil {
		t.Fatal(err)
	}
	dotdot := strings.Repeat("../", 16) + strings.TrimPrefix(outside, "/") + "/dotdot"
	cases := []struct {
		name    string
		entries []harness.Entry
		victim  string
	}{
		{"dotdot", []harness.Entry{{Name: dotdot, Body: "escaped\n"}}, filepath.Join(outside, "dotdot")},
		{"absolute", []harness.Entry{{Name: outside + "/absolute", Body: "escaped\n"}}, filepath.Join(outside, "absolute")},
		{"symlink", []harness.Entry{{Name: "out", Link: outside}, {Name: "out/via-symlink", Body: "escaped\n"}}, filepath.Join(outside, "via-symlink")},
		{"symlink-relative", []harness.Entry{{Name: "out", Link: strings.Repeat("../", 16) + "etc/passwd"}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			repo := newRepo(t, e, "escape")
			files := append([]harness.Entry{{Name: "Dockerfile", Body: e.dockerfile("COPY . /ctx")}}, c.entries...)
			b := submit(t, e, repo, harness.BuildRequest{DockerTags: []string{"v1"}}, files...)
			b, _ = await(t, e, repo, b.ID, nil)
			entries := logsOf(t, e, repo, b.ID)
			i := checkUserError(t, b, entries)
			t.Logf("rejected: %s", entries[i].Message)
			if c.victim != "" {
				if _, err := os.Lstat(c.victim); err == nil {
					t.Errorf("the archive wrote %s outside the work directory", c.victim)
				}
			}
			left, _ := os.ReadDir(outside)
			if len(left) > 0 {
				t.Errorf("%s holds %d entries written by the build", outside, len(left))
			}
		})
	}
}

// TestWorkerHostUIDNotRoot: the worker and what it starts run as a host
// user other than root.
func TestWorkerHostUIDNotRoot(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	repo := newRepo(t, e, "uid")
	b := submit(t, e, repo, harness.BuildRequest{DockerTags: []string{"v1"}},
		harness.Entry{Name: "Dockerfile", Body: e.dockerfile("RUN sleep 3")})
	await(t, e, repo, b.ID, func(b *harness.Build) bool { return b.Phase == "building" })
	p := workerOf(t, e, repo, b.ID)
	checkUnprivileged(t, p)
	// Everything in the worker's process group (buildah and the RUN
	// step's processes) runs unprivileged on the host too.
	for _, pid := range groupMembers(p.PID) {
		status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
		if err != nil {
			continue // ended meanwhile
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) == 5 && f[0] == "Uid:" {
				for _, u := range f[1:] {
					if u == "0" {
						t.Errorf("process %d in the worker's group runs with host uid 0: %s", pid, line)
					}
				}
			}
		}
	}
	b, _ = await(t, e, repo, b.ID, nil)
	if b.Phase != "complete" {
		t.Errorf("build ended %s (%s)\n%s", b.Phase, deref(b.Error), dumpLogs(e, repo, b.ID))
	}
}
