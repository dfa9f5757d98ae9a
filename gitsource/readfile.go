package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/berth-dev/berth/internal/builderr"
	"github.com/berth-dev/berth/internal/egress"
)

// ErrRefNotFound is in the chain of the error ResolveRef and ReadFile
// return when the server has no such ref, or no default branch (an empty
// repository, a HEAD naming no branch).
var ErrRefNotFound = errors.New("ref not found")

// ErrFileNotFound is in the chain of the error ReadFile returns when the
// commit has no regular file at the path.
var ErrFileNotFound = errors.New("file not found")

// ErrFileTooLarge is in the chain of the error ReadFile returns when the
// file is larger than the limit asked for.
var ErrFileTooLarge = errors.New("file too large")

// RemoteTimeout bounds one ResolveRef or ReadFile: both run while an API
// request waits, against a server that may hang.
const RemoteTimeout = 30 * time.Second

// readFetchBudget bounds the objects ReadFile holds in memory, in bytes: a
// depth-1 fetch brings the commit's whole tree. go-git holds each object
// whole before storing it, so one huge object can pass the bound once
// before the fetch stops; RemoteTimeout bounds that too. A variable so that
// tests can lower it.
var readFetchBudget int64 = 256 << 20

// maxSymlinks bounds the symbolic links ReadFile follows for one path.
const maxSymlinks = 8

// RemoteRef is a ref on a git server and the commit it names.
type RemoteRef struct {
	// Name is the full ref name (refs/heads/main).
	Name string
	// Commit is the commit's SHA; annotated tags are peeled.
	Commit string
	// DefaultBranch is the branch the server's HEAD names ("main"), ""
	// when the server does not say.
	DefaultBranch string
}

// remote is one server a ResolveRef or ReadFile talks to, with the
// credentials and host keys Fetch would use for it.
type remote struct {
	f      *fetcher
	shown  string
	auth   transport.AuthMethod
	remote *git.Remote
}

// dial checks src and prepares its credentials, under policy, for a
// remote storing into st; the returned function removes the known_hosts
// file.
func dial(policy *egress.Policy, src Source, st storage.Storer) (*remote, func(), error) {
	rawURL := strings.TrimSpace(src.URL)
	base, err := parseEndpoint(rawURL)
	if err != nil {
		return nil, nil, err
	}
	f := &fetcher{src: src, base: base, log: func(string) {}, policy: policy}
	cleanup := func() {}
	if base.Protocol == "ssh" {
		if cleanup, err = f.loadKnownHosts(); err != nil {
			return nil, nil, err
		}
	}
	shown := redact(rawURL)
	auth, err := f.auth(base, shown)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	r := &remote{f: f, shown: shown, auth: withPolicy(policy, auth),
		remote: git.NewRemote(st, &config.RemoteConfig{Name: "origin", URLs: []string{rawURL}})}
	return r, cleanup, nil
}

// ResolveRef asks src's server (git ls-remote) which commit ref names: a
// full ref name (refs/heads/main, refs/tags/v1), or "" for the default
// branch (the branch HEAD names). src's ref and commit are not used. The
// errors are Fetch's: *builderr.UserError when the user must fix something
// (ErrRefNotFound, ErrAuth, ErrHostKeyMismatch in the chain), others for a
// server that could not be reached. The server must be one policy allows
// (nil: the default policy; ErrRefusedHost otherwise).
func ResolveRef(ctx context.Context, policy *egress.Policy, src Source, ref string) (RemoteRef, error) {
	ctx, cancel := context.WithTimeout(ctx, RemoteTimeout)
	defer cancel()
	r, cleanup, err := dial(policy, src, memory.NewStorage())
	if err != nil {
		return RemoteRef{}, err
	}
	defer cleanup()
	return r.resolve(ctx, strings.TrimSpace(ref))
}

func (r *remote) resolve(ctx context.Context, ref string) (RemoteRef, error) {
	if ref != "" && ref != "HEAD" && !strings.HasPrefix(ref, "refs/") {
		return RemoteRef{}, builderr.Errorf(builderr.CodeGit, "the ref %q is not a full ref name (refs/heads/…, refs/tags/…)", ref)
	}
	refs, err := r.remote.ListContext(ctx, &git.ListOptions{Auth: r.auth, PeelingOption: git.AppendPeeled})
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return RemoteRef{}, &builderr.UserError{Code: builderr.CodeGit, Message: fmt.Sprintf("the repository %s is empty: it has no branch", r.shown),
			Err: fmt.Errorf("%w: %w", ErrRefNotFound, err)}
	}
	if err != nil {
		return RemoteRef{}, r.f.classify(ctx, err, r.shown, ref, "")
	}
	tips := map[string]string{}
	peeled := map[string]string{}
	var head *plumbing.Reference
	for _, adv := range refs {
		name := adv.Name().String()
		switch {
		case name == "HEAD":
			head = adv
		case strings.HasSuffix(name, "^{}"):
			peeled[strings.TrimSuffix(name, "^{}")] = adv.Hash().String()
		case adv.Type() == plumbing.HashReference:
			tips[name] = adv.Hash().String()
		}
	}
	out := RemoteRef{DefaultBranch: defaultBranch(head, tips)}
	if ref == "" || ref == "HEAD" {
		if out.DefaultBranch == "" {
			return RemoteRef{}, &builderr.UserError{Code: builderr.CodeGit, Message: fmt.Sprintf("the repository %s has no default branch", r.shown), Err: ErrRefNotFound}
		}
		ref = "refs/heads/" + out.DefaultBranch
	}
	out.Name = ref
	if out.Commit = peeled[ref]; out.Commit == "" {
		out.Commit = tips[ref]
	}
	if out.Commit == "" {
		return RemoteRef{}, &builderr.UserError{Code: builderr.CodeGit, Message: fmt.Sprintf("the ref %s does not exist in %s", ref, r.shown), Err: ErrRefNotFound}
	}
	return out, nil
}

// defaultBranch is the branch HEAD names. A server that does not say
// (no symref capability) gets git's guess: a branch at HEAD's commit,
// main or master first.
func defaultBranch(head *plumbing.Reference, tips map[string]string) string {
	if head == nil {
		return ""
	}
	if head.Type() == plumbing.SymbolicReference {
		target := head.Target().String()
		if _, ok := tips[target]; !ok || !strings.HasPrefix(target, "refs/heads/") {
			return ""
		}
		return strings.TrimPrefix(target, "refs/heads/")
	}
	var same []string
	for name, sha := range tips {
		if sha == head.Hash().String() && strings.HasPrefix(name, "refs/heads/") {
			same = append(same, strings.TrimPrefix(name, "refs/heads/"))
		}
	}
	for _, pref := range []string{"main", "master"} {
		if slices.Contains(same, pref) {
			return pref
		}
	}
	if len(same) == 0 {
		return ""
	}
	return slices.Min(same)
}

// ReadFile reads one file from src's server without a checkout or disk:
// the tip of src.Ref (the default branch when empty) is fetched at depth 1
// into memory and the file read from its tree. name is relative to the
// repository root (a leading "/" is that root); symbolic links inside the
// repository are followed. A missing file is ErrFileNotFound, a file over
// limit bytes ErrFileTooLarge, a missing ref ErrRefNotFound; the other
// errors are ResolveRef's, and so is policy. src.CommitSHA is not used.
func ReadFile(ctx context.Context, policy *egress.Policy, src Source, name string, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, RemoteTimeout)
	defer cancel()
	st := &budgetStorage{Storage: memory.NewStorage(), left: readFetchBudget}
	r, cleanup, err := dial(policy, src, st)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	tip, err := r.resolve(ctx, strings.TrimSpace(src.Ref))
	if err != nil {
		return nil, err
	}
	local := plumbing.ReferenceName(remotePrefix + "file")
	err = r.remote.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{config.RefSpec("+" + tip.Name + ":" + local.String())},
		Depth:    1,
		Auth:     r.auth,
		Tags:     git.NoTags,
	})
	switch {
	case errors.Is(err, errBudget):
		return nil, &builderr.UserError{Code: builderr.CodeGit, Message: fmt.Sprintf("the files of %s in %s are larger than %d bytes together", tip.Name, r.shown, readFetchBudget), Err: err}
	case err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil, r.f.classify(ctx, err, r.shown, tip.Name, tip.Commit)
	}
	fetched, err := st.Reference(local)
	if err != nil {
		return nil, fmt.Errorf("read fetched ref %s: %w", tip.Name, err)
	}
	h := fetched.Hash()
	for {
		tag, err := object.GetTag(st, h)
		if err != nil {
			break
		}
		h = tag.Target
	}
	commit, err := object.GetCommit(st, h)
	if err != nil {
		return nil, fmt.Errorf("read commit %s of %s: %w", h, tip.Name, err)
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, fmt.Errorf("read tree of %s: %w", h, err)
	}
	return readTreeFile(st, tree, name, limit)
}

// readTreeFile reads the regular file at name in tree, following symbolic
// links that stay inside the tree.
func readTreeFile(st storer.EncodedObjectStorer, tree *object.Tree, name string, limit int64) ([]byte, error) {
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return nil, fmt.Errorf("%w: %q does not name a file in the repository", ErrFileNotFound, name)
	}
	for hops := 0; ; hops++ {
		entry, err := tree.FindEntry(p)
		if err != nil {
			// The whole tree is in memory: a failed lookup is a missing
			// path, a directory where a file was expected or an invalid name.
			return nil, fmt.Errorf("%w: %s: %w", ErrFileNotFound, p, err)
		}
		switch entry.Mode {
		case filemode.Regular, filemode.Executable, filemode.Deprecated:
			return readBlob(st, entry.Hash, p, limit)
		case filemode.Symlink:
			if hops >= maxSymlinks {
				return nil, fmt.Errorf("%w: %s: more than %d symbolic links", ErrFileNotFound, name, maxSymlinks)
			}
			target, err := readBlob(st, entry.Hash, p, 4096)
			if err != nil {
				return nil, err
			}
			next := path.Clean(path.Join(path.Dir(p), string(target)))
			if path.IsAbs(string(target)) || next == ".." || strings.HasPrefix(next, "../") {
				return nil, fmt.Errorf("%w: %s links outside the repository", ErrFileNotFound, p)
			}
			p = next
		default:
			return nil, fmt.Errorf("%w: %s is not a file", ErrFileNotFound, p)
		}
	}
}

func readBlob(st storer.EncodedObjectStorer, h plumbing.Hash, name string, limit int64) ([]byte, error) {
	blob, err := object.GetBlob(st, h)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if blob.Size > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrFileTooLarge, name, blob.Size, limit)
	}
	rd, err := blob.Reader()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer rd.Close()
	data, err := io.ReadAll(io.LimitReader(rd, limit))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return data, nil
}

// errBudget stops a fetch that would hold more than readFetchBudget.
var errBudget = errors.New("fetched objects exceed the memory budget")

// budgetStorage is memory storage that refuses objects past a byte budget.
type budgetStorage struct {
	*memory.Storage
	left int64
}

func (s *budgetStorage) SetEncodedObject(o plumbing.EncodedObject) (plumbing.Hash, error) {
	s.left -= o.Size()
	if s.left < 0 {
		return plumbing.ZeroHash, errBudget
	}
	return s.Storage.SetEncodedObject(o)
}
