package local

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/berth-dev/berth/internal/buildhost"
)

// identity is who a worker runs as.
type identity struct {
	buildhost.Identity
	// dropped is true when the server is root and the worker is not.
	dropped bool
}

// currentIdentity is the server's own user: workers run as it when the
// server is not root.
func currentIdentity() identity {
	id := identity{Identity: buildhost.Identity{UID: os.Geteuid(), GID: os.Getegid()}}
	if u, err := user.LookupId(strconv.Itoa(id.UID)); err == nil {
		id.Name = u.Username
	} else {
		id.Name = strconv.Itoa(id.UID)
	}
	return id
}

// maxUsers bounds the build users of one machine: every server on it draws
// from the same users, each held by one build at a time.
const maxUsers = 256

// userPool gives every running build a user of its own, with subordinate ID
// ranges of its own, so that builds cannot touch each other's files or
// processes even outside their sandbox. The users (prefix + 1, 2, …) are
// shared by the servers of a machine: a build holds its user through an
// exclusive lock on a file in lockDir, so a user is free exactly when no
// live build holds the lock, whichever server started that build. A user
// taken from the pool has every process of its IDs killed first: what a
// crashed server's build left behind.
type userPool struct {
	prefix  string
	lockDir string
	log     *slog.Logger

	mu   sync.Mutex
	held map[int]bool
}

// buildUser is a pool user held by one build.
type buildUser struct {
	n     int
	ident identity
	lock  *os.File
}

// newUserPool creates the first size users (idempotently) and the lock
// directory, root-only.
func newUserPool(prefix, lockDir string, size int, log *slog.Logger) (*userPool, error) {
	// The parent holds the servers' build roots, which build users must
	// be able to reach.
	if err := os.MkdirAll(filepath.Dir(lockDir), 0o755); err != nil {
		return nil, fmt.Errorf("local executor: build user locks: %w", err)
	}
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("local executor: build user locks: %w", err)
	}
	if err := os.Chmod(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("local executor: build user locks: %w", err)
	}
	p := &userPool{prefix: prefix, lockDir: lockDir, log: log, held: map[int]bool{}}
	for n := 1; n <= size; n++ {
		if _, err := p.ensure(n); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *userPool) ensure(n int) (identity, error) {
	id, err := buildhost.EnsureUser(p.prefix+strconv.Itoa(n), "/etc/subuid", "/etc/subgid")
	if err != nil {
		return identity{}, fmt.Errorf("local executor: build user: %w", err)
	}
	return identity{Identity: id, dropped: true}, nil
}

// acquire takes the first free user, creating it when every existing one
// is held.
func (p *userPool) acquire() (*buildUser, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := 1; n <= maxUsers; n++ {
		if p.held[n] {
			continue
		}
		f, err := os.OpenFile(filepath.Join(p.lockDir, strconv.Itoa(n)+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("local executor: build user lock: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue
			}
			return nil, fmt.Errorf("local executor: build user lock: %w", err)
		}
		ident, err := p.ensure(n)
		if err != nil {
			f.Close()
			return nil, err
		}
		u := &buildUser{n: n, ident: ident, lock: f}
		if killed := killIdentity(ident, p.log); killed > 0 {
			p.log.Warn("killed processes a previous build of the user left", "user", ident.Name, "killed", killed)
		}
		removeTempFilesOf(ident, p.log)
		p.held[n] = true
		return u, nil
	}
	return nil, fmt.Errorf("local executor: all %d build users of this machine are in use", maxUsers)
}

// release kills whatever the build left running under the user's IDs,
// removes what it left in the shared temporary directory and frees the user.
func (p *userPool) release(u *buildUser) {
	killIdentity(u.ident, p.log)
	removeTempFilesOf(u.ident, p.log)
	p.mu.Lock()
	delete(p.held, u.n)
	p.mu.Unlock()
	u.lock.Close()
}

// killIdentity kills every process whose real, effective or saved user ID
// is the identity's or one of its subordinate IDs, until a pass finds none,
// and returns how many it killed. Only a holder of the user may call it.
func killIdentity(id identity, log *slog.Logger) int {
	killedPIDs := map[int]bool{}
	self := os.Getpid()
	for pass := 0; pass < 10; pass++ {
		killed := 0
		ents, err := os.ReadDir("/proc")
		if err != nil {
			log.Error("listing processes failed", "err", err)
			return len(killedPIDs)
		}
		for _, ent := range ents {
			pid, err := strconv.Atoi(ent.Name())
			if err != nil || pid == self {
				continue
			}
			uids, zombie, err := processUIDs(pid)
			if err != nil || zombie {
				// A zombie runs nothing and takes no signal; its parent
				// reaps it.
				continue
			}
			for _, uid := range uids {
				if uid == id.UID || id.SubUIDs.Contains(uid) {
					if syscall.Kill(pid, syscall.SIGKILL) == nil {
						killed++
						killedPIDs[pid] = true
					}
					break
				}
			}
		}
		if killed == 0 {
			break
		}
	}
	return len(killedPIDs)
}

// processUIDs reads the real, effective, saved and filesystem user IDs of a
// process, and whether it is a zombie.
func processUIDs(pid int) (uids []int, zombie bool, err error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if state, ok := strings.CutPrefix(line, "State:"); ok {
			zombie = strings.HasPrefix(strings.TrimSpace(state), "Z")
			continue
		}
		rest, ok := strings.CutPrefix(line, "Uid:")
		if !ok {
			continue
		}
		for _, field := range strings.Fields(rest) {
			n, err := strconv.Atoi(field)
			if err != nil {
				return nil, false, err
			}
			uids = append(uids, n)
		}
		return uids, zombie, nil
	}
	return nil, false, errors.New("no Uid line")
}

// removeTempFilesOf removes the entries of buildhost.SandboxStateParent owned by the user: a
// sandbox's state that a killed worker could not remove.
func removeTempFilesOf(id identity, log *slog.Logger) {
	ents, err := os.ReadDir(buildhost.SandboxStateParent)
	if err != nil {
		return
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok || int(st.Uid) != id.UID {
			continue
		}
		path := filepath.Join(buildhost.SandboxStateParent, e.Name())
		if err := os.RemoveAll(path); err != nil {
			log.Warn("removing a build user's temporary files failed", "path", path, "err", err)
		}
	}
}
