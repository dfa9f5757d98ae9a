package gitsource

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/builderr"
	"github.com/berth-dev/berth/test/gitserver"
)

// readRepo is a repository with main (the default branch) and feature,
// an annotated tag, nested files and symbolic links, served by git daemon.
type readRepo struct {
	*gitserver.Repo
	url                   string
	mainSHA, tagSHA, feat string
}

func newReadRepo(t *testing.T) *readRepo {
	t.Helper()
	r := gitserver.NewRepo(t)
	tagSHA := r.Commit("tagged", map[string]string{"Dockerfile": "FROM tagged\n"})
	r.Tag("v1")
	for name, target := range map[string]string{"link": "sub/Dockerfile.sub", "escape": "../../etc/passwd", "abs": "/etc/passwd"} {
		if err := os.Symlink(target, filepath.Join(r.Work, name)); err != nil {
			t.Fatal(err)
		}
	}
	mainSHA := r.Commit("main", map[string]string{"Dockerfile": "FROM main\n", "sub/Dockerfile.sub": "FROM sub\n"})
	r.Branch("feature")
	feat := r.Commit("feature", map[string]string{"Dockerfile": "FROM feature\n"})
	r.Push("main", "feature", "refs/tags/v1")
	return &readRepo{Repo: r, url: gitserver.ServeGitDaemon(t, r.Root) + "/" + r.Name, mainSHA: mainSHA, tagSHA: tagSHA, feat: feat}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestResolveRef(t *testing.T) {
	r := newReadRepo(t)
	src := Source{URL: r.url}
	for _, c := range []struct{ ref, name, sha string }{
		{"", "refs/heads/main", r.mainSHA},
		{"HEAD", "refs/heads/main", r.mainSHA},
		{"refs/heads/main", "refs/heads/main", r.mainSHA},
		{"refs/heads/feature", "refs/heads/feature", r.feat},
		// The annotated tag is peeled to its commit.
		{"refs/tags/v1", "refs/tags/v1", r.tagSHA},
	} {
		got, err := ResolveRef(ctxT(t), loopbackPolicy, src, c.ref)
		if err != nil {
			t.Fatalf("ResolveRef(%q): %v", c.ref, err)
		}
		if got != (RemoteRef{Name: c.name, Commit: c.sha, DefaultBranch: "main"}) {
			t.Errorf("ResolveRef(%q) = %+v, want %s at %s", c.ref, got, c.name, c.sha)
		}
	}

	t.Run("missing branch", func(t *testing.T) {
		_, err := ResolveRef(ctxT(t), loopbackPolicy, src, "refs/heads/nope")
		ue := assertUserError(t, err, ErrRefNotFound)
		if !strings.Contains(ue.Message, "refs/heads/nope") {
			t.Errorf("message %q does not name the ref", ue.Message)
		}
	})
	t.Run("short ref name", func(t *testing.T) {
		if _, err := ResolveRef(ctxT(t), loopbackPolicy, src, "main"); err == nil {
			t.Fatal("a short ref name was accepted")
		} else if _, ok := builderr.AsUserError(err); !ok {
			t.Fatalf("short ref name: %v, want a user error", err)
		}
	})
	t.Run("default branch other than main", func(t *testing.T) {
		r.Git("--git-dir="+r.Bare, "symbolic-ref", "HEAD", "refs/heads/feature")
		t.Cleanup(func() { r.Git("--git-dir="+r.Bare, "symbolic-ref", "HEAD", "refs/heads/main") })
		got, err := ResolveRef(ctxT(t), loopbackPolicy, src, "")
		if err != nil || got.Name != "refs/heads/feature" || got.Commit != r.feat || got.DefaultBranch != "feature" {
			t.Fatalf("ResolveRef(\"\") = %+v, %v; want feature at %s", got, err, r.feat)
		}
	})
	t.Run("empty repository", func(t *testing.T) {
		empty := gitserver.NewRepoIn(t, r.Root, "empty.git")
		_, err := ResolveRef(ctxT(t), loopbackPolicy, Source{URL: strings.TrimSuffix(r.url, r.Name) + empty.Name}, "")
		assertUserError(t, err, ErrRefNotFound)
	})
	t.Run("missing repository", func(t *testing.T) {
		_, err := ResolveRef(ctxT(t), loopbackPolicy, Source{URL: strings.TrimSuffix(r.url, r.Name) + "nothing.git"}, "")
		if _, ok := builderr.AsUserError(err); !ok {
			t.Fatalf("missing repository: %v, want a user error", err)
		}
	})
	t.Run("local URL refused", func(t *testing.T) {
		for _, u := range []string{"file://" + r.Bare, r.Bare} {
			if _, err := ResolveRef(ctxT(t), loopbackPolicy, Source{URL: u}, ""); err == nil {
				t.Errorf("%s was read", u)
			}
		}
	})
}

func TestReadFile(t *testing.T) {
	r := newReadRepo(t)
	read := func(ref, name string, limit int64) (string, error) {
		b, err := ReadFile(ctxT(t), loopbackPolicy, Source{URL: r.url, Ref: ref}, name, limit)
		return string(b), err
	}
	for _, c := range []struct{ ref, name, want string }{
		{"", "Dockerfile", "FROM main\n"},
		{"", "/Dockerfile", "FROM main\n"},
		{"", "/sub/Dockerfile.sub", "FROM sub\n"},
		{"", "sub/../Dockerfile", "FROM main\n"},
		// A symbolic link inside the repository is followed.
		{"", "link", "FROM sub\n"},
		{"refs/heads/feature", "Dockerfile", "FROM feature\n"},
		{"refs/tags/v1", "Dockerfile", "FROM tagged\n"},
	} {
		got, err := read(c.ref, c.name, 1<<20)
		if err != nil || got != c.want {
			t.Errorf("ReadFile(%q, %q) = %q, %v; want %q", c.ref, c.name, got, err, c.want)
		}
	}
	for _, name := range []string{"missing", "sub", "sub/missing", "/", "../Dockerfile", "escape", "abs", "Dockerfile/x"} {
		if got, err := read("", name, 1<<20); !errors.Is(err, ErrFileNotFound) {
			t.Errorf("ReadFile(%q) = %q, %v; want ErrFileNotFound", name, got, err)
		}
	}
	if _, err := read("", "Dockerfile", 4); !errors.Is(err, ErrFileTooLarge) {
		t.Errorf("a 10-byte file with a 4-byte limit: %v, want ErrFileTooLarge", err)
	}
	if _, err := read("refs/heads/gone", "Dockerfile", 1<<20); !errors.Is(err, ErrRefNotFound) {
		t.Errorf("a missing branch: %v, want ErrRefNotFound", err)
	}

	t.Run("memory budget", func(t *testing.T) {
		big := gitserver.NewRepoIn(t, r.Root, "big.git")
		big.Commit("big", map[string]string{"Dockerfile": "FROM big\n", "blob": strings.Repeat("berth ", 1<<18)})
		big.Push("main")
		url := strings.TrimSuffix(r.url, r.Name) + big.Name
		if got, err := ReadFile(ctxT(t), loopbackPolicy, Source{URL: url}, "Dockerfile", 1<<20); err != nil || string(got) != "FROM big\n" {
			t.Fatalf("within the budget: %q, %v", got, err)
		}
		old := readFetchBudget
		readFetchBudget = 1 << 20
		t.Cleanup(func() { readFetchBudget = old })
		_, err := ReadFile(ctxT(t), loopbackPolicy, Source{URL: url}, "Dockerfile", 1<<20)
		if _, ok := builderr.AsUserError(err); !ok || !errors.Is(err, errBudget) {
			t.Fatalf("a 1.5 MiB tree with a 1 MiB budget: %v, want a budget user error", err)
		}
	})
}

func TestReadFileSSH(t *testing.T) {
	r := gitserver.NewRepo(t)
	r.Commit("first", map[string]string{"Dockerfile": "FROM ssh\n"})
	r.Push("main")
	key, authorized := gitserver.NewSSHKey(t)
	base, known := gitserver.ServeSSH(t, r.Root, authorized)
	src := func() Source {
		return Source{URL: base + "/" + r.Name, PrivateKey: key, KnownHosts: known}
	}
	if got, err := ReadFile(ctxT(t), loopbackPolicy, src(), "Dockerfile", 1<<20); err != nil || string(got) != "FROM ssh\n" {
		t.Fatalf("ReadFile over SSH = %q, %v", got, err)
	}
	if got, err := ResolveRef(ctxT(t), loopbackPolicy, src(), ""); err != nil || got.Commit != r.Head() {
		t.Fatalf("ResolveRef over SSH = %+v, %v; want %s", got, err, r.Head())
	}

	t.Run("host key mismatch", func(t *testing.T) {
		_, otherKey := gitserver.NewSSHKey(t)
		s := src()
		s.KnownHosts = strings.Fields(known)[0] + " " + otherKey
		_, err := ReadFile(ctxT(t), loopbackPolicy, s, "Dockerfile", 1<<20)
		assertUserError(t, err, ErrHostKeyMismatch)
		_, err = ResolveRef(ctxT(t), loopbackPolicy, s, "")
		assertUserError(t, err, ErrHostKeyMismatch)
	})
	t.Run("no known_hosts", func(t *testing.T) {
		s := src()
		s.KnownHosts = ""
		if _, err := ReadFile(ctxT(t), loopbackPolicy, s, "Dockerfile", 1<<20); err == nil {
			t.Fatal("an SSH server was trusted without known_hosts")
		}
	})
	t.Run("wrong deploy key", func(t *testing.T) {
		s := src()
		s.PrivateKey, _ = gitserver.NewSSHKey(t)
		_, err := ResolveRef(ctxT(t), loopbackPolicy, s, "")
		assertUserError(t, err, ErrAuth)
	})
}

func TestReadFileHTTP(t *testing.T) {
	r := gitserver.NewRepo(t)
	r.Commit("first", map[string]string{"Dockerfile": "FROM http\n"})
	r.Push("main")
	url := gitserver.ServeHTTP(t, r.Root, "x-token", "t0ken") + "/" + r.Name
	got, err := ReadFile(ctxT(t), loopbackPolicy, Source{URL: url, Username: "x-token", Password: "t0ken"}, "Dockerfile", 1<<20)
	if err != nil || string(got) != "FROM http\n" {
		t.Fatalf("ReadFile over HTTP = %q, %v", got, err)
	}
	_, err = ReadFile(ctxT(t), loopbackPolicy, Source{URL: url, Username: "x-token", Password: "wrong-secret"}, "Dockerfile", 1<<20)
	ue := assertUserError(t, err, ErrAuth)
	if strings.Contains(ue.Message, "wrong-secret") {
		t.Fatalf("message %q shows the token", ue.Message)
	}
}

// TestReadFileTimeout: a server that accepts and never answers ends the
// call at the context's deadline, as a retryable (not a user) error.
func TestReadFileTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err = ReadFile(ctx, loopbackPolicy, Source{URL: "git://" + l.Addr().String() + "/repo.git"}, "Dockerfile", 1<<20)
	if err == nil {
		t.Fatal("a silent server gave a file")
	}
	if _, ok := builderr.AsUserError(err); ok {
		t.Fatalf("a silent server gave a user error: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("ReadFile took %s against a silent server with a 1s deadline", d)
	}
}
