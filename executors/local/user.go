package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// subIDCount is the size of the subordinate ID range given to the worker
// user: a full 16-bit range, what images with ordinary UIDs expect.
const subIDCount = 65536

// subIDFloor is where automatically allocated ranges start, above the IDs
// that real users get (the shadow tools' own default).
const subIDFloor = 100000

// identity is who the worker runs as.
type identity struct {
	name   string
	uid    int
	gid    int
	groups []uint32
	// dropped is true when the server is root and the worker is not.
	dropped bool
}

// currentIdentity is the server's own user: workers run as it when the
// server is not root.
func currentIdentity() (identity, error) {
	id := identity{uid: os.Geteuid(), gid: os.Getegid()}
	if u, err := user.LookupId(strconv.Itoa(id.uid)); err == nil {
		id.name = u.Username
	} else {
		id.name = strconv.Itoa(id.uid)
	}
	return id, nil
}

// ensureWorkerUser makes sure the unprivileged worker user exists (created
// as a system user without a login shell) and owns subordinate UID and GID
// ranges, and returns its identity.
func ensureWorkerUser(name, subuidPath, subgidPath string) (identity, error) {
	u, err := user.Lookup(name)
	if errors.As(err, new(user.UnknownUserError)) {
		out, uerr := exec.Command("useradd", "--system", "--create-home", "--user-group",
			"--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if uerr != nil {
			return identity{}, fmt.Errorf("local executor: create worker user %s: %w: %s", name, uerr, bytes.TrimSpace(out))
		}
		u, err = user.Lookup(name)
	}
	if err != nil {
		return identity{}, fmt.Errorf("local executor: worker user %s: %w", name, err)
	}
	id := identity{name: u.Username, dropped: true}
	if id.uid, err = strconv.Atoi(u.Uid); err != nil {
		return identity{}, fmt.Errorf("local executor: worker user %s uid %q: %w", name, u.Uid, err)
	}
	if id.gid, err = strconv.Atoi(u.Gid); err != nil {
		return identity{}, fmt.Errorf("local executor: worker user %s gid %q: %w", name, u.Gid, err)
	}
	if id.uid == 0 || id.gid == 0 {
		return identity{}, fmt.Errorf("local executor: worker user %s has uid %d gid %d; it must be unprivileged", name, id.uid, id.gid)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return identity{}, fmt.Errorf("local executor: groups of %s: %w", name, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return identity{}, fmt.Errorf("local executor: group id %q of %s: %w", g, name, err)
		}
		if n == 0 {
			return identity{}, fmt.Errorf("local executor: worker user %s is in group 0; it must be unprivileged", name)
		}
		id.groups = append(id.groups, uint32(n))
	}
	for _, p := range []string{subuidPath, subgidPath} {
		if _, err := ensureSubIDRange(p, id.name, id.uid); err != nil {
			return identity{}, err
		}
	}
	return id, nil
}

// subIDRange is one line of /etc/subuid or /etc/subgid.
type subIDRange struct {
	owner        string // user name or numeric ID
	start, count int
}

func parseSubIDs(data []byte) []subIDRange {
	var ranges []subIDRange
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		count, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || start < 0 || count <= 0 {
			continue
		}
		ranges = append(ranges, subIDRange{owner: f[0], start: start, count: count})
	}
	return ranges
}

// ensureSubIDRange gives the user a range in path (/etc/subuid or
// /etc/subgid) unless it has one already, by name or by ID. A new range
// starts after every existing one, so it overlaps none. It returns the
// start of the user's (first) range.
func ensureSubIDRange(path, name string, id int) (int, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("local executor: open %s: %w", path, err)
	}
	defer f.Close()
	// Two servers starting at once must not both append.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return 0, fmt.Errorf("local executor: lock %s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("local executor: read %s: %w", path, err)
	}
	ranges := parseSubIDs(data)
	next := subIDFloor
	for _, r := range ranges {
		if r.owner == name || r.owner == strconv.Itoa(id) {
			return r.start, nil
		}
		next = max(next, r.start+r.count)
	}
	line := fmt.Sprintf("%s:%d:%d\n", name, next, subIDCount)
	if len(data) > 0 && data[len(data)-1] != '\n' {
		line = "\n" + line
	}
	if _, err := f.WriteString(line); err != nil {
		return 0, fmt.Errorf("local executor: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("local executor: sync %s: %w", path, err)
	}
	return next, nil
}
