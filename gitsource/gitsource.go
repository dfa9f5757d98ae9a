// Package gitsource fetches exactly one commit of a git repository, with
// its submodules, into a directory: the build worker's git source. It is a
// library of its own, shared by the worker and the API: the API server uses the same credentials and host-key checks to ask a source
// which commit a ref names (ResolveRef) and to read one file of it into
// memory (ReadFile).
//
// Servers only serve commits reachable from their refs (a bare SHA that is
// not a ref tip is refused), so the pushed ref is fetched shallowly and
// deepened step by step until the commit appears. SSH verifies the server
// against the known_hosts recorded when the trigger was activated; nothing
// is ever accepted blindly.
//
// Every connection goes through an egress policy (internal/egress): a
// server at a loopback, private or link-local address is refused, unless
// the policy allows its network, before anything is sent to it.
//
// Errors the user must fix (the commit or ref is gone, the repository does
// not exist, credentials are refused, the host key does not match) are
// *builderr.UserError with code builderr.CodeGit; every other error (the server
// is unreachable, the connection broke) is worth another attempt.
package gitsource

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/skeema/knownhosts"

	"github.com/berth-dev/berth/internal/builderr"
	"github.com/berth-dev/berth/internal/egress"
)

// ErrCommitNotFound is in the chain of the error Fetch returns when the
// source no longer holds the commit: it is not reachable from the ref even
// with the whole history fetched (a force-push removed it), or the ref
// itself is gone.
var ErrCommitNotFound = errors.New("commit not found")

// ErrHostKeyMismatch is in the chain of the error Fetch returns when an SSH
// server's host key is not the one recorded in Source.KnownHosts.
var ErrHostKeyMismatch = errors.New("SSH host key does not match known_hosts")

// ErrAuth is in the chain of the error Fetch returns when the server
// refuses the deploy key or token, or the repository does not exist for it.
var ErrAuth = errors.New("git server refused access")

// Source is a git repository to read from and the credentials to read it
// with. The worker fills it from the job's wire message, the API from the
// trigger.
type Source struct {
	URL string
	// CommitSHA is the full commit to fetch; empty means the tip of Ref.
	CommitSHA string
	// Ref is the branch or tag (a full ref name) that reaches CommitSHA;
	// empty means the server's default branch.
	Ref string
	// PrivateKey is a PEM SSH key for ssh URLs (a trigger's deploy key).
	PrivateKey string
	// KnownHosts holds the server's host keys in known_hosts format; SSH
	// refuses a server whose key is not among them.
	KnownHosts string
	// Username and Password are HTTP basic credentials, sent only to the
	// server of URL.
	Username string
	Password string
}

// depthSteps are the history depths fetched in turn until the commit
// appears: most builds are of the tip, and a commit far down a branch
// (a manual run of an old commit) takes a handful of round trips.
// math.MaxInt32 is git's "infinite" depth (what --unshallow sends).
var depthSteps = []int{1, 16, 128, 1024, math.MaxInt32}

// maxSubmoduleLevels bounds submodule recursion, since a repository could
// name itself as its own submodule.
const maxSubmoduleLevels = 8

// remotePrefix is where fetched refs are stored locally.
const remotePrefix = "refs/remotes/origin/"

// Fetch initialises a git repository in dst (created if missing, must not
// already hold one), fetches src.CommitSHA through src.Ref from src.URL,
// checks it out with a detached HEAD, and does the same for its submodules,
// recursively. An empty CommitSHA builds the ref's tip. Progress lines go
// to log (which may be nil). Every server, the submodules' too, must be
// one policy allows (nil: the default policy).
func Fetch(ctx context.Context, policy *egress.Policy, dst string, src Source, log func(string)) error {
	if log == nil {
		log = func(string) {}
	}
	ref := strings.TrimSpace(src.Ref)
	sha := strings.ToLower(strings.TrimSpace(src.CommitSHA))
	switch {
	case sha == "" && ref == "":
		return builderr.Errorf(builderr.CodeGit, "the git source names neither a ref nor a commit")
	case sha != "" && !plumbing.IsHash(sha):
		return builderr.Errorf(builderr.CodeGit, "%q is not a full commit SHA", src.CommitSHA)
	case ref != "" && !strings.HasPrefix(ref, "refs/"):
		return builderr.Errorf(builderr.CodeGit, "the ref %q is not a full ref name (refs/heads/…, refs/tags/…)", ref)
	}
	base, err := parseEndpoint(src.URL)
	if err != nil {
		return err
	}
	f := &fetcher{src: src, base: base, log: log, policy: policy}
	if base.Protocol == "ssh" {
		cleanup, err := f.loadKnownHosts()
		if err != nil {
			return err
		}
		defer cleanup()
	}
	return f.fetchInto(ctx, dst, strings.TrimSpace(src.URL), ref, sha, 0)
}

// fetcher holds what one Fetch shares across the superproject and its
// submodules: the credentials and the host keys.
type fetcher struct {
	src    Source
	base   *transport.Endpoint
	log    func(string)
	policy *egress.Policy
	// hosts is the parsed known_hosts (nil for non-SSH sources).
	hosts *knownhosts.HostKeyDB

	mu sync.Mutex
	// hostKeyErr is the host key verification failure of the last SSH
	// connection: the SSH library flattens it into a string.
	hostKeyErr error
}

// takeHostKeyErr returns and forgets the last host key failure.
func (f *fetcher) takeHostKeyErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.hostKeyErr
	f.hostKeyErr = nil
	return err
}

// fetchInto fetches sha (the tip of ref when sha is empty; any branch or
// tag holding it when ref is empty) from rawURL into a new repository at
// dir, checks it out, and recurses into its submodules.
func (f *fetcher) fetchInto(ctx context.Context, dir, rawURL, ref, sha string, level int) error {
	ep, err := parseEndpoint(rawURL)
	if err != nil {
		return err
	}
	shown := redact(rawURL)
	auth, err := f.auth(ep, shown)
	if err != nil {
		return err
	}
	auth = withPolicy(f.policy, auth)
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		return fmt.Errorf("init repository in %s: %w", dir, err)
	}
	remote, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{rawURL}})
	if err != nil {
		return fmt.Errorf("add remote: %w", err)
	}
	specs := []config.RefSpec{
		config.RefSpec("+refs/heads/*:" + remotePrefix + "heads/*"),
		config.RefSpec("+refs/tags/*:" + remotePrefix + "tags/*"),
	}
	what := "every branch and tag"
	if ref != "" {
		specs = []config.RefSpec{config.RefSpec("+" + ref + ":" + remotePrefix + strings.TrimPrefix(ref, "refs/"))}
		what = ref
	}
	progress := newProgressWriter(f.log)
	defer progress.Flush()

	var target plumbing.Hash
	found := false
	for i, depth := range depthSteps {
		if i == 0 {
			f.log(fmt.Sprintf("Fetching %s from %s", what, shown))
		} else {
			f.log(fmt.Sprintf("Commit %s is not in the last %d commits of %s; fetching deeper", short(target), depthSteps[i-1], what))
		}
		err := remote.FetchContext(ctx, &git.FetchOptions{
			RefSpecs: specs,
			Depth:    depth,
			Auth:     auth,
			Progress: progress,
			Tags:     git.NoTags,
		})
		progress.Flush()
		if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return f.classify(ctx, err, shown, ref, sha)
		}
		tips, err := peeledTips(repo)
		if err != nil {
			return err
		}
		if sha == "" {
			// The ref's tip is the commit to build.
			sha = tips[0].String()
		}
		target = plumbing.NewHash(sha)
		complete, err := syncShallow(repo, tips)
		if err != nil {
			return err
		}
		if _, err := object.GetCommit(repo.Storer, target); err == nil {
			found = true
			break
		}
		if complete {
			break
		}
	}
	if !found && ref == "" {
		if found, err = f.fetchExact(ctx, repo, remote, auth, progress, target); err != nil {
			return err
		}
	}
	if !found {
		return &builderr.UserError{
			Code:    builderr.CodeGit,
			Message: fmt.Sprintf("commit %s is not reachable from %s in %s: it was removed (force-push or deletion) or never pushed there", sha, what, shown),
			Err:     ErrCommitNotFound,
		}
	}
	wt, err := repo.Worktree()
	if err != nil {
		return fmt.Errorf("open worktree: %w", err)
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: target, Force: true}); err != nil {
		return fmt.Errorf("check out %s: %w", sha, err)
	}
	f.log("Checked out commit " + sha)
	return f.submodules(ctx, repo, wt, dir, rawURL, target, level)
}

// fetchExact asks for commit by its SHA, which servers that allow
// reachable SHAs in wants (GitHub, GitLab) serve even when no branch or
// tag holds it; a submodule may pin such a commit. It reports whether the
// commit arrived; a server's refusal is not an error.
func (f *fetcher) fetchExact(ctx context.Context, repo *git.Repository, remote *git.Remote, auth transport.AuthMethod, progress *progressWriter, commit plumbing.Hash) (bool, error) {
	f.log(fmt.Sprintf("No branch or tag holds commit %s; asking for it by SHA", commit))
	err := remote.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{config.RefSpec("+" + commit.String() + ":" + remotePrefix + "pinned")},
		Depth:    1,
		Auth:     auth,
		Progress: progress,
		Tags:     git.NoTags,
	})
	progress.Flush()
	if ctx.Err() != nil {
		return false, fmt.Errorf("fetch commit %s: %w", commit, ctx.Err())
	}
	if hostErr := f.takeHostKeyErr(); hostErr != nil {
		return false, hostErr
	}
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		f.log("The server refused: " + err.Error())
		return false, nil
	}
	if _, err := object.GetCommit(repo.Storer, commit); err != nil {
		return false, nil
	}
	tips, err := peeledTips(repo)
	if err != nil {
		return false, err
	}
	_, err = syncShallow(repo, tips)
	return err == nil, err
}

// submodules fetches and checks out every submodule the checked-out
// commit pins, each from its own URL (relative URLs count from parentURL).
func (f *fetcher) submodules(ctx context.Context, repo *git.Repository, wt *git.Worktree, dir, parentURL string, commit plumbing.Hash, level int) error {
	subs, err := wt.Submodules()
	if err != nil {
		return &builderr.UserError{Code: builderr.CodeGit, Message: fmt.Sprintf("the .gitmodules file of commit %s cannot be read: %v", commit, err), Err: err}
	}
	if len(subs) == 0 {
		return nil
	}
	if level >= maxSubmoduleLevels {
		return builderr.Errorf(builderr.CodeGit, "submodules are nested more than %d levels deep", maxSubmoduleLevels)
	}
	c, err := repo.CommitObject(commit)
	if err != nil {
		return fmt.Errorf("read commit %s: %w", commit, err)
	}
	tree, err := c.Tree()
	if err != nil {
		return fmt.Errorf("read tree of %s: %w", commit, err)
	}
	for _, sub := range subs {
		cfg := sub.Config()
		if !filepath.IsLocal(filepath.FromSlash(cfg.Path)) {
			return builderr.Errorf(builderr.CodeGit, "submodule %q has a path outside the repository: %q", cfg.Name, cfg.Path)
		}
		entry, err := tree.FindEntry(cfg.Path)
		if err != nil || entry.Mode != filemode.Submodule {
			// .gitmodules may keep entries for submodules the commit no
			// longer has; git skips them too.
			f.log(fmt.Sprintf("Skipping submodule %s: commit %s does not pin it", cfg.Path, short(commit)))
			continue
		}
		subURL, err := resolveSubmoduleURL(parentURL, cfg.URL)
		if err != nil {
			return err
		}
		f.log(fmt.Sprintf("Submodule %s: commit %s from %s", cfg.Path, entry.Hash, redact(subURL)))
		subDir := filepath.Join(dir, filepath.FromSlash(cfg.Path))
		if err := f.fetchInto(ctx, subDir, subURL, "", entry.Hash.String(), level+1); err != nil {
			if ue, ok := builderr.AsUserError(err); ok {
				return &builderr.UserError{Code: ue.Code, Message: "submodule " + cfg.Path + ": " + ue.Message, Err: err}
			}
			return fmt.Errorf("submodule %s: %w", cfg.Path, err)
		}
	}
	return nil
}

// peeledTips returns the commits the fetched refs point to (annotated tags
// peeled). A successful fetch of a named ref always stores it (a missing
// one is an error), so with a single ref tips[0] is its commit.
func peeledTips(repo *git.Repository) ([]plumbing.Hash, error) {
	refs, err := repo.References()
	if err != nil {
		return nil, fmt.Errorf("list references: %w", err)
	}
	var tips []plumbing.Hash
	err = refs.ForEach(func(r *plumbing.Reference) error {
		if r.Type() != plumbing.HashReference || !strings.HasPrefix(r.Name().String(), remotePrefix) {
			return nil
		}
		h := r.Hash()
		// Tags may point at tags; follow the chain to a commit.
		for {
			tag, err := repo.TagObject(h)
			if err != nil {
				break
			}
			h = tag.Target
		}
		if _, err := object.GetCommit(repo.Storer, h); err == nil {
			tips = append(tips, h)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(tips) == 0 {
		return nil, errors.New("the fetch stored no commit")
	}
	return tips, nil
}

// syncShallow walks the history reachable from tips, records the commits
// whose parents are missing as the repository's shallow boundary, and
// reports whether there are none (the whole history is present, so
// fetching deeper cannot bring more). go-git only ever adds to
// .git/shallow, ignoring the server's "unshallow" lines; left stale, the
// file would make the next deepening resend what is already here and
// mislead a git run inside the build.
func syncShallow(repo *git.Repository, tips []plumbing.Hash) (complete bool, err error) {
	seen := make(map[plumbing.Hash]bool, len(tips))
	var boundary []plumbing.Hash
	queue := append([]plumbing.Hash(nil), tips...)
	for len(queue) > 0 {
		h := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if seen[h] {
			continue
		}
		seen[h] = true
		c, err := object.GetCommit(repo.Storer, h)
		if err != nil {
			return false, fmt.Errorf("read commit %s: %w", h, err)
		}
		missing := false
		for _, p := range c.ParentHashes {
			if repo.Storer.HasEncodedObject(p) != nil {
				missing = true
				continue
			}
			queue = append(queue, p)
		}
		if missing {
			boundary = append(boundary, h)
		}
	}
	if err := repo.Storer.SetShallow(boundary); err != nil {
		return false, fmt.Errorf("record shallow commits: %w", err)
	}
	return len(boundary) == 0, nil
}

// classify turns a fetch failure into a user error when retrying cannot
// help, and wraps it as it is otherwise.
func (f *fetcher) classify(ctx context.Context, err error, shown, ref, sha string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("fetch from %s: %w", shown, ctx.Err())
	}
	if hostErr := f.takeHostKeyErr(); hostErr != nil {
		return hostErr
	}
	if errors.Is(err, egress.ErrRefused) {
		return refusedError(shown, err)
	}
	user := func(sentinel error, format string, args ...any) error {
		return &builderr.UserError{Code: builderr.CodeGit, Message: fmt.Sprintf(format, args...), Err: fmt.Errorf("%w: %w", sentinel, err)}
	}
	switch {
	case errors.Is(err, git.NoMatchingRefSpecError{}):
		return user(ErrCommitNotFound, "the ref %s no longer exists in %s, so commit %s cannot be fetched", ref, shown, sha)
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return user(ErrCommitNotFound, "the repository %s is empty", shown)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return user(ErrAuth, "the repository %s does not exist, or the trigger's credentials cannot read it", shown)
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		return user(ErrAuth, "%s refused the trigger's credentials (token)", shown)
	case strings.Contains(err.Error(), "unable to authenticate"):
		// golang.org/x/crypto/ssh has no error type for this.
		return user(ErrAuth, "%s refused the trigger's deploy key", shown)
	}
	return fmt.Errorf("fetch from %s: %w", shown, err)
}

// loadKnownHosts parses src.KnownHosts for the host key callback. The
// parser reads files, so the lines go through a temporary one, removed by
// the returned function.
func (f *fetcher) loadKnownHosts() (func(), error) {
	if strings.TrimSpace(f.src.KnownHosts) == "" {
		return nil, builderr.Errorf(builderr.CodeGit, "the git source has no known_hosts, so the SSH server %s cannot be verified; activate the trigger again", f.base.Host)
	}
	tmp, err := os.CreateTemp("", "berth-known-hosts-")
	if err != nil {
		return nil, fmt.Errorf("create known_hosts file: %w", err)
	}
	cleanup := func() { _ = os.Remove(tmp.Name()) }
	_, err = tmp.WriteString(f.src.KnownHosts + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("write known_hosts file: %w", err)
	}
	db, err := knownhosts.NewDB(tmp.Name())
	if err != nil {
		cleanup()
		return nil, &builderr.UserError{Code: builderr.CodeGit, Message: fmt.Sprintf("the git source's known_hosts cannot be parsed: %v", err), Err: err}
	}
	f.hosts = db
	return cleanup, nil
}
