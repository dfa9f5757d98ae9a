package gitserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// cloneWithGit clones url with the git CLI (env adds to the environment)
// and returns the clone's HEAD.
func cloneWithGit(t *testing.T, url string, env ...string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "clone")
	cmd := exec.Command("git", "clone", "--quiet", url, dst)
	cmd.Env = append(gitEnv(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git clone %s: %v\n%s", url, err, out)
	}
	return run(t, dst, "git", "rev-parse", "HEAD")
}

func TestServers(t *testing.T) {
	r := NewRepo(t)
	want := r.Commit("first", map[string]string{"a/b.txt": "hello"})
	r.Push("main")

	t.Run("git daemon", func(t *testing.T) {
		if got := cloneWithGit(t, ServeGitDaemon(t, r.Root)+"/"+r.Name); got != want {
			t.Fatalf("cloned HEAD %s, want %s", got, want)
		}
	})
	t.Run("http anonymous", func(t *testing.T) {
		if got := cloneWithGit(t, ServeHTTP(t, r.Root, "", "")+"/"+r.Name); got != want {
			t.Fatalf("cloned HEAD %s, want %s", got, want)
		}
	})
	t.Run("http auth", func(t *testing.T) {
		base := ServeHTTP(t, r.Root, "bot", "s3cret")
		url := strings.Replace(base, "http://", "http://bot:s3cret@", 1) + "/" + r.Name
		if got := cloneWithGit(t, url); got != want {
			t.Fatalf("cloned HEAD %s, want %s", got, want)
		}
		bad := strings.Replace(base, "http://", "http://bot:wrong@", 1) + "/" + r.Name
		cmd := exec.Command("git", "clone", "--quiet", bad, filepath.Join(t.TempDir(), "x"))
		cmd.Env = append(gitEnv(), "GIT_TERMINAL_PROMPT=0")
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("clone with a wrong password succeeded:\n%s", out)
		}
	})
	t.Run("ssh", func(t *testing.T) {
		priv, pub := NewSSHKey(t)
		base, known := ServeSSH(t, r.Root, pub)
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "id")
		khFile := filepath.Join(dir, "known_hosts")
		if err := os.WriteFile(keyFile, []byte(priv), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(khFile, []byte(known+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		sshCmd := "GIT_SSH_COMMAND=ssh -F /dev/null -i " + keyFile + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + khFile
		if got := cloneWithGit(t, base+"/"+r.Name, sshCmd); got != want {
			t.Fatalf("cloned HEAD %s, want %s", got, want)
		}
	})
}

func TestPostReceiveHook(t *testing.T) {
	r := NewRepo(t)
	marker := filepath.Join(t.TempDir(), "pushed")
	r.PostReceiveHook("#!/bin/sh\ncat > " + marker + "\n")
	sha := r.Commit("first", map[string]string{"f": "1"})
	r.Push("main")
	got, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha + " refs/heads/main"; !strings.Contains(string(got), want) {
		t.Fatalf("hook read %q, want a line ending in %q", got, want)
	}
}
