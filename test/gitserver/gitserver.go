// Package gitserver runs real git servers on loopback for tests of any
// package: bare repositories with a working clone to commit from, served by
// `git daemon` (git://), `git http-backend` (http://, optionally behind basic
// auth) and OpenSSH's sshd (ssh://, one authorized key). Every server and
// directory is removed when the test ends.
//
// Every Serve function returns a base URL; a repository's URL is the base,
// a slash and Repo.Name, and one server serves every repository under the
// root it was given (Repo.Root), so a superproject and its submodules can
// share one.
//
// Helpers skip the test when git or sshd is missing (scripts/install-deps.sh
// installs them); BERTH_E2E_REQUIRE=1 makes that a failure.
package gitserver

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// Repo is a bare repository (what the servers serve) and a working clone
// whose origin is that bare repository.
type Repo struct {
	t testing.TB
	// Root is the directory servers export; Bare lies under it.
	Root string
	// Name is Bare's path relative to Root ("repo.git").
	Name string
	// Bare is the bare repository's path.
	Bare string
	// Work is the working clone's path.
	Work string
}

// NewRepo creates an empty bare repository "repo.git" under a new root,
// and a working clone of it on branch main.
func NewRepo(t testing.TB) *Repo {
	t.Helper()
	return NewRepoIn(t, t.TempDir(), "repo.git")
}

// NewRepoIn creates an empty bare repository name under root (which may
// already hold others, served by the same servers) and a working clone of
// it on branch main.
func NewRepoIn(t testing.TB, root, name string) *Repo {
	t.Helper()
	testenv.RequireTools(t, "git")
	r := &Repo{t: t, Root: root, Name: name, Bare: filepath.Join(root, name), Work: t.TempDir()}
	run(t, root, "git", "init", "--quiet", "--bare", "--initial-branch=main", r.Bare)
	r.Git("init", "--quiet", "--initial-branch=main")
	r.Git("remote", "add", "origin", r.Bare)
	return r
}

// Git runs git with args in the working clone and returns its trimmed
// standard output; a failure fails the test.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return run(r.t, r.Work, "git", args...)
}

// Commit writes files (path relative to the clone → content) and commits
// every change in the clone with message msg. It returns the commit's SHA.
func (r *Repo) Commit(msg string, files map[string]string) string {
	r.t.Helper()
	for name, content := range files {
		p := filepath.Join(r.Work, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	r.Git("add", "--all")
	r.Git("commit", "--quiet", "--allow-empty", "--message", msg)
	return r.Head()
}

// Head returns the SHA of the clone's HEAD.
func (r *Repo) Head() string {
	r.t.Helper()
	return r.Git("rev-parse", "HEAD")
}

// Branch creates (or resets) branch name at HEAD and switches to it.
func (r *Repo) Branch(name string) {
	r.t.Helper()
	r.Git("checkout", "--quiet", "-B", name)
}

// Tag creates an annotated tag name at HEAD.
func (r *Repo) Tag(name string) {
	r.t.Helper()
	r.Git("tag", "--annotate", "--message", "tag "+name, name)
}

// Push pushes refspecs (a branch, "refs/tags/v1", "+main" to force) to the
// bare repository.
func (r *Repo) Push(refspecs ...string) {
	r.t.Helper()
	r.Git(append([]string{"push", "--quiet", "origin"}, refspecs...)...)
}

// PostReceiveHook installs script (a complete program, "#!/bin/sh\n…") as
// the bare repository's post-receive hook.
func (r *Repo) PostReceiveHook(script string) {
	r.t.Helper()
	p := filepath.Join(r.Bare, "hooks", "post-receive")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		r.t.Fatal(err)
	}
}

// gitSettings isolate the git programs the helpers start from the
// machine's configuration and give commits a fixed identity.
var gitSettings = []string{
	"GIT_CONFIG_NOSYSTEM=1",
	"GIT_CONFIG_GLOBAL=/dev/null",
	"GIT_AUTHOR_NAME=Berth Test", "GIT_AUTHOR_EMAIL=test@berth.invalid",
	"GIT_COMMITTER_NAME=Berth Test", "GIT_COMMITTER_EMAIL=test@berth.invalid",
	// Submodules added from local paths need the file protocol.
	"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=protocol.file.allow", "GIT_CONFIG_VALUE_0=always",
}

// gitEnv is the environment of the programs the helpers start.
func gitEnv() []string {
	return append(os.Environ(), gitSettings...)
}

// run runs a program in dir and returns its trimmed standard output.
func run(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = gitEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer starts a server program in its own process group, waits
// until it accepts connections on port, and stops the group (the server
// forks a child per connection) when the test ends.
func startServer(t testing.TB, port int, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = gitEnv()
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("%s exited before listening: %v\n%s", name, err, out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not listening on %s\n%s", name, addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ServeGitDaemon serves every repository under root over git:// and
// returns the base URL ("git://127.0.0.1:port").
func ServeGitDaemon(t testing.TB, root string) string {
	t.Helper()
	testenv.RequireTools(t, "git")
	port := freePort(t)
	startServer(t, port, "git", "daemon", "--export-all", "--reuseaddr", "--informative-errors",
		"--base-path="+root, "--listen=127.0.0.1", fmt.Sprintf("--port=%d", port), root)
	return fmt.Sprintf("git://127.0.0.1:%d", port)
}
