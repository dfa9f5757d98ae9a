package gitsource

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/berth-dev/berth/internal/builderr"
	"github.com/berth-dev/berth/test/gitserver"
)

// result is one Fetch: where it went, what it logged, how it ended.
type result struct {
	dir  string
	logs []string
	err  error
}

func (r result) logged(substr string) bool {
	for _, l := range r.logs {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

func fetch(t *testing.T, src Source) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	res := result{dir: filepath.Join(t.TempDir(), "src")}
	res.err = Fetch(ctx, loopbackPolicy, res.dir, src, func(line string) {
		mu.Lock()
		defer mu.Unlock()
		res.logs = append(res.logs, line)
	})
	return res
}

// mustFetch fetches src and checks that dir has a detached HEAD at sha.
func mustFetch(t *testing.T, src Source) result {
	t.Helper()
	res := fetch(t, src)
	if res.err != nil {
		t.Fatalf("Fetch: %v\nlog:\n%s", res.err, strings.Join(res.logs, "\n"))
	}
	assertHead(t, res.dir, src.CommitSHA)
	return res
}

// assertHead checks that the repository at dir has a detached HEAD at sha
// and a clean worktree.
func assertHead(t *testing.T, dir, sha string) {
	t.Helper()
	repo, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	head, err := repo.Head()
	if err != nil {
		t.Fatal(err)
	}
	if head.Name() != plumbing.HEAD || head.Hash().String() != sha {
		t.Fatalf("%s: HEAD is %s at %s, want detached at %s", dir, head.Name(), head.Hash(), sha)
	}
}

func assertFile(t *testing.T, dir, name, want string) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s holds %q, want %q", name, got, want)
	}
}

// assertUserError checks that err is a git user error with sentinel in its
// chain.
func assertUserError(t *testing.T, err, sentinel error) *builderr.UserError {
	t.Helper()
	ue, ok := builderr.AsUserError(err)
	if !ok {
		t.Fatalf("error %v is not a user error", err)
	}
	if ue.Code != builderr.CodeGit {
		t.Fatalf("user error code %q, want %q", ue.Code, builderr.CodeGit)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v does not wrap %v", err, sentinel)
	}
	return ue
}

func TestGitDaemon(t *testing.T) {
	r := gitserver.NewRepo(t)
	var history []string
	for i := 1; i <= 30; i++ {
		history = append(history, r.Commit(fmt.Sprintf("commit %d", i), map[string]string{
			"n.txt":      fmt.Sprint(i),
			"Dockerfile": "FROM scratch\n",
		}))
	}
	r.Push("main")
	base := gitserver.ServeGitDaemon(t, r.Root)
	url := base + "/" + r.Name
	tip := history[len(history)-1]

	t.Run("branch tip", func(t *testing.T) {
		res := mustFetch(t, Source{URL: url, Ref: "refs/heads/main", CommitSHA: tip})
		assertFile(t, res.dir, "n.txt", "30")
		if res.logged("fetching deeper") {
			t.Fatalf("the tip needed deepening:\n%s", strings.Join(res.logs, "\n"))
		}
		if !res.logged("Checked out commit " + tip) {
			t.Fatalf("log does not say what was checked out:\n%s", strings.Join(res.logs, "\n"))
		}
	})
	t.Run("empty sha builds the tip", func(t *testing.T) {
		res := fetch(t, Source{URL: url, Ref: "refs/heads/main"})
		if res.err != nil {
			t.Fatal(res.err)
		}
		assertHead(t, res.dir, tip)
	})
	t.Run("older commit needs deepening", func(t *testing.T) {
		// The 25th commit counting the tip as the first.
		old := history[len(history)-25]
		res := mustFetch(t, Source{URL: url, Ref: "refs/heads/main", CommitSHA: old})
		assertFile(t, res.dir, "n.txt", "6")
		if !res.logged("fetching deeper") {
			t.Fatalf("no deepening was logged:\n%s", strings.Join(res.logs, "\n"))
		}
	})
	t.Run("first commit at full depth", func(t *testing.T) {
		res := mustFetch(t, Source{URL: url, Ref: "refs/heads/main", CommitSHA: history[0]})
		assertFile(t, res.dir, "n.txt", "1")
	})
	t.Run("unreachable server is retryable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		res := fetch(t, Source{URL: "git://" + addr + "/repo.git", Ref: "refs/heads/main", CommitSHA: tip})
		if res.err == nil {
			t.Fatal("fetching from a closed port succeeded")
		}
		if _, ok := builderr.AsUserError(res.err); ok {
			t.Fatalf("a closed port is a user error: %v", res.err)
		}
	})
}

func TestTag(t *testing.T) {
	r := gitserver.NewRepo(t)
	tagged := r.Commit("release", map[string]string{"v.txt": "1.0"})
	r.Tag("v1")
	r.Commit("after", map[string]string{"v.txt": "next"})
	r.Push("main", "refs/tags/v1")
	url := gitserver.ServeGitDaemon(t, r.Root) + "/" + r.Name

	res := mustFetch(t, Source{URL: url, Ref: "refs/tags/v1", CommitSHA: tagged})
	assertFile(t, res.dir, "v.txt", "1.0")
	// An empty SHA peels the annotated tag to its commit.
	res = fetch(t, Source{URL: url, Ref: "refs/tags/v1"})
	if res.err != nil {
		t.Fatal(res.err)
	}
	assertHead(t, res.dir, tagged)
}

func TestCommitGone(t *testing.T) {
	r := gitserver.NewRepo(t)
	base := r.Commit("base", map[string]string{"f": "base"})
	gone := r.Commit("gone", map[string]string{"f": "gone"})
	r.Push("main")
	r.Git("reset", "--quiet", "--hard", base)
	r.Commit("rewritten", map[string]string{"f": "rewritten"})
	r.Push("+main")
	url := gitserver.ServeGitDaemon(t, r.Root) + "/" + r.Name

	t.Run("force-pushed away", func(t *testing.T) {
		res := fetch(t, Source{URL: url, Ref: "refs/heads/main", CommitSHA: gone})
		ue := assertUserError(t, res.err, ErrCommitNotFound)
		if !strings.Contains(ue.Message, gone) || !strings.Contains(ue.Message, "refs/heads/main") {
			t.Fatalf("message %q names neither the commit nor the ref", ue.Message)
		}
	})
	t.Run("ref deleted", func(t *testing.T) {
		res := fetch(t, Source{URL: url, Ref: "refs/heads/feature", CommitSHA: gone})
		ue := assertUserError(t, res.err, ErrCommitNotFound)
		if !strings.Contains(ue.Message, "refs/heads/feature") {
			t.Fatalf("message %q does not name the ref", ue.Message)
		}
	})
}

func TestSSH(t *testing.T) {
	r := gitserver.NewRepo(t)
	sha := r.Commit("first", map[string]string{"ssh.txt": "over ssh"})
	r.Push("main")
	key, authorized := gitserver.NewSSHKey(t)
	base, known := gitserver.ServeSSH(t, r.Root, authorized)
	url := base + "/" + r.Name
	src := func() Source {
		return Source{URL: url, Ref: "refs/heads/main", CommitSHA: sha, PrivateKey: key, KnownHosts: known}
	}

	t.Run("deploy key and known host", func(t *testing.T) {
		res := mustFetch(t, src())
		assertFile(t, res.dir, "ssh.txt", "over ssh")
	})
	t.Run("host key mismatch", func(t *testing.T) {
		_, otherKey := gitserver.NewSSHKey(t)
		s := src()
		// The same host and port with another key: a man in the middle,
		// or a server whose key changed since activation.
		s.KnownHosts = strings.Fields(known)[0] + " " + otherKey
		res := fetch(t, s)
		ue := assertUserError(t, res.err, ErrHostKeyMismatch)
		if !strings.Contains(ue.Message, "does not match") || !strings.Contains(ue.Message, "127.0.0.1") {
			t.Fatalf("message %q does not explain the mismatch", ue.Message)
		}
	})
	t.Run("host not in known_hosts", func(t *testing.T) {
		s := src()
		s.KnownHosts = "[127.0.0.1]:1 " + strings.Join(strings.Fields(known)[1:], " ")
		assertUserError(t, fetch(t, s).err, ErrHostKeyMismatch)
	})
	t.Run("no known_hosts", func(t *testing.T) {
		s := src()
		s.KnownHosts = ""
		res := fetch(t, s)
		if _, ok := builderr.AsUserError(res.err); !ok {
			t.Fatalf("fetching without known_hosts gave %v, want a user error", res.err)
		}
	})
	t.Run("wrong deploy key", func(t *testing.T) {
		s := src()
		s.PrivateKey, _ = gitserver.NewSSHKey(t)
		assertUserError(t, fetch(t, s).err, ErrAuth)
	})
}

func TestHTTP(t *testing.T) {
	r := gitserver.NewRepo(t)
	sha := r.Commit("first", map[string]string{"http.txt": "over http"})
	r.Push("main")

	t.Run("token", func(t *testing.T) {
		url := gitserver.ServeHTTP(t, r.Root, "x-token", "t0ken") + "/" + r.Name
		res := mustFetch(t, Source{URL: url, Ref: "refs/heads/main", CommitSHA: sha, Username: "x-token", Password: "t0ken"})
		assertFile(t, res.dir, "http.txt", "over http")
	})
	t.Run("wrong token", func(t *testing.T) {
		url := gitserver.ServeHTTP(t, r.Root, "x-token", "t0ken") + "/" + r.Name
		res := fetch(t, Source{URL: url, Ref: "refs/heads/main", CommitSHA: sha, Username: "x-token", Password: "wrong"})
		ue := assertUserError(t, res.err, ErrAuth)
		if strings.Contains(ue.Message, "wrong") {
			t.Fatalf("message %q shows the token", ue.Message)
		}
	})
	t.Run("no token for a private repository", func(t *testing.T) {
		url := gitserver.ServeHTTP(t, r.Root, "x-token", "t0ken") + "/" + r.Name
		assertUserError(t, fetch(t, Source{URL: url, Ref: "refs/heads/main", CommitSHA: sha}).err, ErrAuth)
	})
	t.Run("anonymous", func(t *testing.T) {
		url := gitserver.ServeHTTP(t, r.Root, "", "") + "/" + r.Name
		res := mustFetch(t, Source{URL: url, Ref: "refs/heads/main", CommitSHA: sha})
		assertFile(t, res.dir, "http.txt", "over http")
	})
	t.Run("missing repository", func(t *testing.T) {
		url := gitserver.ServeHTTP(t, r.Root, "", "") + "/nothing.git"
		assertUserError(t, fetch(t, Source{URL: url, Ref: "refs/heads/main", CommitSHA: sha}).err, ErrAuth)
	})
}

func TestSubmodules(t *testing.T) {
	app := gitserver.NewRepo(t)
	lib := gitserver.NewRepoIn(t, app.Root, "lib.git")
	leaf := gitserver.NewRepoIn(t, app.Root, "leaf.git")

	leafSHA := leaf.Commit("leaf", map[string]string{"leaf.txt": "leaf v1"})
	leaf.Push("main")

	lib.Commit("lib", map[string]string{"lib.txt": "lib v1"})
	lib.Git("submodule", "add", "--quiet", "../leaf.git", "leaf")
	lib.Git("-C", "leaf", "checkout", "--quiet", leafSHA)
	libSHA := lib.Commit("pin leaf", nil)
	lib.Push("main")
	// Move lib's branch on, so the pinned commit is no longer a tip.
	lib.Commit("lib v2", map[string]string{"lib.txt": "lib v2"})
	lib.Push("main")

	app.Commit("app", map[string]string{"app.txt": "app"})
	app.Git("submodule", "add", "--quiet", "../lib.git", "vendor/lib")
	app.Git("-C", "vendor/lib", "checkout", "--quiet", libSHA)
	appSHA := app.Commit("pin lib", nil)
	app.Push("main")

	url := gitserver.ServeGitDaemon(t, app.Root) + "/" + app.Name
	res := mustFetch(t, Source{URL: url, Ref: "refs/heads/main", CommitSHA: appSHA})
	assertFile(t, res.dir, "app.txt", "app")
	assertHead(t, filepath.Join(res.dir, "vendor", "lib"), libSHA)
	assertFile(t, res.dir, "vendor/lib/lib.txt", "lib v1")
	assertHead(t, filepath.Join(res.dir, "vendor", "lib", "leaf"), leafSHA)
	assertFile(t, res.dir, "vendor/lib/leaf/leaf.txt", "leaf v1")
}

func TestSubmoduleOffBranch(t *testing.T) {
	app := gitserver.NewRepo(t)
	lib := gitserver.NewRepoIn(t, app.Root, "lib.git")
	lib.Commit("lib", map[string]string{"lib.txt": "main"})
	lib.Push("main")
	lib.Branch("tmp")
	orphan := lib.Commit("orphan", map[string]string{"lib.txt": "orphan"})
	lib.Push("tmp")

	app.Commit("app", nil)
	app.Git("submodule", "add", "--quiet", "-b", "tmp", "../lib.git", "lib")
	appSHA := app.Commit("pin an orphan", nil)
	app.Push("main")
	// No branch or tag holds the pinned commit any more.
	lib.Push(":tmp")
	url := gitserver.ServeGitDaemon(t, app.Root) + "/" + app.Name
	src := Source{URL: url, Ref: "refs/heads/main", CommitSHA: appSHA}

	res := fetch(t, src)
	ue := assertUserError(t, res.err, ErrCommitNotFound)
	if !strings.Contains(ue.Message, "submodule lib") || !strings.Contains(ue.Message, orphan) {
		t.Fatalf("message %q names neither the submodule nor its commit", ue.Message)
	}

	// Servers that serve any SHA (GitHub, GitLab) hand it over by name.
	lib.Git("-C", lib.Bare, "config", "uploadpack.allowAnySHA1InWant", "true")
	res = mustFetch(t, src)
	assertHead(t, filepath.Join(res.dir, "lib"), orphan)
	assertFile(t, res.dir, "lib/lib.txt", "orphan")
}

func TestInvalidSources(t *testing.T) {
	const sha = "0123456789abcdef0123456789abcdef01234567"
	for name, src := range map[string]Source{
		"file URL":        {URL: "file:///etc", Ref: "refs/heads/main", CommitSHA: sha},
		"local path":      {URL: "/srv/git/repo.git", Ref: "refs/heads/main", CommitSHA: sha},
		"short sha":       {URL: "https://example.com/r.git", Ref: "refs/heads/main", CommitSHA: "0123abc"},
		"short ref":       {URL: "https://example.com/r.git", Ref: "main", CommitSHA: sha},
		"nothing to pick": {URL: "https://example.com/r.git"},
	} {
		t.Run(name, func(t *testing.T) {
			res := fetch(t, src)
			if _, ok := builderr.AsUserError(res.err); !ok {
				t.Fatalf("Fetch gave %v, want a user error", res.err)
			}
			if _, err := os.Stat(res.dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("an invalid source created %s", res.dir)
			}
		})
	}
}
