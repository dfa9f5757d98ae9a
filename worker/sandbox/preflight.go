package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
)

// Programs are what the sandbox itself runs, besides berth; each engine
// adds its own (Preflight's engine argument).
var Programs = []string{"rootlesskit", "slirp4netns", "newuidmap", "newgidmap", "ip", "nsenter"}

// Preflight checks that this machine can give builds a sandbox, and names
// the check that failed: the programs are installed (Programs and those of
// the engine, engine), the kernel allows
// unprivileged user namespaces, and a real sandbox starts and takes the
// network policy. prepare sets up the probe command as a build would run
// (its user, environment and directory). The error wraps ErrUnavailable.
func Preflight(ctx context.Context, cfg Config, engine []string, prepare func(*exec.Cmd)) error {
	for _, p := range slices.Concat(Programs, engine) {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%w: %s is not installed (Debian package %s)", ErrUnavailable, p, debianPackage(p))
		}
	}
	if err := checkUserNamespaces(); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if prepare == nil {
		if err := checkSubordinateIDs(); err != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	argv := cfg.Wrap([]string{"true"})
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if prepare != nil {
		prepare(cmd)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: starting a sandbox (user, PID and network namespaces with slirp4netns) failed: %v: %s",
			ErrUnavailable, err, lastLines(out, 5))
	}
	return nil
}

func checkUserNamespaces() error {
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n == 0 {
			return fmt.Errorf("user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)")
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return fmt.Errorf("unprivileged user namespaces are disabled (/proc/sys/kernel/unprivileged_userns_clone is 0)")
	}
	return nil
}

func debianPackage(program string) string {
	switch program {
	case "newuidmap", "newgidmap":
		return "uidmap"
	case "ip":
		return "iproute2"
	case "nsenter":
		return "util-linux"
	}
	return program
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(string(bytes.TrimSpace(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// checkSubordinateIDs makes sure the current user has ranges in /etc/subuid
// and /etc/subgid, which the sandbox's user namespace maps (as root, the
// server gives its build users theirs).
func checkSubordinateIDs() error {
	u, err := user.Current()
	if err != nil {
		return fmt.Errorf("who am I: %w", err)
	}
	return hasSubordinateIDs(u.Username, u.Uid, "/etc/subuid", "/etc/subgid")
}

func hasSubordinateIDs(name, uid string, paths ...string) error {
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("the user %s has no subordinate IDs: %w", name, err)
		}
		found := false
		for _, line := range strings.Split(string(data), "\n") {
			owner, _, _ := strings.Cut(strings.TrimSpace(line), ":")
			if owner != "" && (owner == name || owner == uid) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("the user %s has no range in %s (add one with usermod --add-subuids/--add-subgids, or run the server as root)", name, path)
		}
	}
	return nil
}
