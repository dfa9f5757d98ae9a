// Package buildhost prepares a machine to host sandboxed builds: the users
// builds run as, with their subordinate ID ranges in /etc/subuid and
// /etc/subgid (which rootless user namespaces map above the user's own ID),
// and the TUN device their sandboxes' network needs.
package buildhost

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

// Count is the size of a range given to a user: a full 16-bit range, what
// images with ordinary UIDs expect.
const Count = 65536

// Floor is where allocated ranges start, above the IDs that real users get
// (the shadow tools' own default).
const Floor = 100000

// Range is one line of /etc/subuid or /etc/subgid.
type Range struct {
	Owner        string // user name or numeric ID
	Start, Count int
}

// Contains reports whether id is in the range.
func (r Range) Contains(id int) bool { return id >= r.Start && id < r.Start+r.Count }

// Parse reads the lines of a subordinate ID file, skipping comments and
// malformed lines.
func Parse(data []byte) []Range {
	var ranges []Range
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
		ranges = append(ranges, Range{Owner: f[0], Start: start, Count: count})
	}
	return ranges
}

// Ensure gives the user a range of Count IDs in path (/etc/subuid or
// /etc/subgid) unless it has one already, by name or by ID, and returns the
// user's (first) range. A new range starts after every existing one, so it
// overlaps none.
func Ensure(path, name string, id int) (Range, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return Range{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	// Two servers starting at once must not both append.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return Range{}, fmt.Errorf("lock %s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Range{}, fmt.Errorf("read %s: %w", path, err)
	}
	next := Floor
	for _, r := range Parse(data) {
		if r.Owner == name || r.Owner == strconv.Itoa(id) {
			return r, nil
		}
		next = max(next, r.Start+r.Count)
	}
	line := fmt.Sprintf("%s:%d:%d\n", name, next, Count)
	if len(data) > 0 && data[len(data)-1] != '\n' {
		line = "\n" + line
	}
	if _, err := f.WriteString(line); err != nil {
		return Range{}, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return Range{}, fmt.Errorf("sync %s: %w", path, err)
	}
	return Range{Owner: name, Start: next, Count: Count}, nil
}

// Identity is an unprivileged user that builds run as.
type Identity struct {
	Name     string
	UID, GID int
	Groups   []uint32
	// SubUIDs and SubGIDs are the user's subordinate ranges.
	SubUIDs, SubGIDs Range
}

// EnsureUser makes sure the system user name exists (created without a home
// or login shell, in a group of its own), is unprivileged and owns
// subordinate UID and GID ranges in the given files, and returns it.
func EnsureUser(name, subuidPath, subgidPath string) (Identity, error) {
	u, err := user.Lookup(name)
	if errors.As(err, new(user.UnknownUserError)) {
		out, uerr := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
			"--user-group", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		// Another server may have created it at the same moment.
		if uerr != nil && !bytes.Contains(out, []byte("already exists")) {
			return Identity{}, fmt.Errorf("create user %s: %w: %s", name, uerr, bytes.TrimSpace(out))
		}
		u, err = user.Lookup(name)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("user %s: %w", name, err)
	}
	id := Identity{Name: u.Username}
	if id.UID, err = strconv.Atoi(u.Uid); err != nil {
		return Identity{}, fmt.Errorf("user %s uid %q: %w", name, u.Uid, err)
	}
	if id.GID, err = strconv.Atoi(u.Gid); err != nil {
		return Identity{}, fmt.Errorf("user %s gid %q: %w", name, u.Gid, err)
	}
	if id.UID == 0 || id.GID == 0 {
		return Identity{}, fmt.Errorf("user %s has uid %d gid %d; it must be unprivileged", name, id.UID, id.GID)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return Identity{}, fmt.Errorf("groups of %s: %w", name, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return Identity{}, fmt.Errorf("group id %q of %s: %w", g, name, err)
		}
		if n == 0 {
			return Identity{}, fmt.Errorf("user %s is in group 0; it must be unprivileged", name)
		}
		id.Groups = append(id.Groups, uint32(n))
	}
	if id.SubUIDs, err = Ensure(subuidPath, id.Name, id.UID); err != nil {
		return Identity{}, err
	}
	if id.SubGIDs, err = Ensure(subgidPath, id.Name, id.UID); err != nil {
		return Identity{}, err
	}
	return id, nil
}
