package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/egress"
)

// Init is `berth sandbox-init`, the first program inside a sandbox. It runs
// as root of the sandbox's user namespace: it checks that it is not in the
// host's network namespace (the only way out must be slirp4netns's
// gateway), closes the denied networks and executes the command. Any
// failure ends it before the command runs: a build never proceeds with a
// weaker network policy than configured.
func Init(args []string) error {
	policy, argv, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := checkSlirpNetwork(ctx); err != nil {
		return err
	}
	for _, r := range policy.routes() {
		if out, err := exec.CommandContext(ctx, r[0], r[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("sandbox-init: %s: %w: %s", strings.Join(r, " "), err, bytes.TrimSpace(out))
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("sandbox-init: %w", err)
	}
	return syscall.Exec(path, argv, os.Environ())
}

// checkSlirpNetwork refuses a network namespace whose default route does
// not go through slirp4netns: running the build on the host's network
// would defeat the policy silently.
func checkSlirpNetwork(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "ip", "-4", "route", "show", "default").CombinedOutput()
	if err != nil {
		return fmt.Errorf("sandbox-init: read the default route: %w: %s", err, bytes.TrimSpace(out))
	}
	if !bytes.Contains(out, []byte("via "+Gateway+" ")) {
		return fmt.Errorf("sandbox-init: the default route is %q, not slirp4netns's gateway %s: not in a sandboxed network", bytes.TrimSpace(out), Gateway)
	}
	return nil
}

// DefaultPolicy is the network policy for RUN steps: every IPv4 network
// the server's own egress policy calls non-public and every address of this
// host are denied, except allowed. The sandbox's own loopback stays usable:
// local routes win over these.
func DefaultPolicy(allowed []netip.Prefix) (NetworkPolicy, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return NetworkPolicy{}, fmt.Errorf("sandbox: list the host's addresses: %w", err)
	}
	p := NetworkPolicy{Denied: egress.NonPublicIPv4(), Allowed: allowed}
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipnet.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !ip.Is4() || ip.IsLoopback() {
			continue
		}
		p.Denied = append(p.Denied, netip.PrefixFrom(ip, 32))
	}
	return p, nil
}

// ErrUnavailable is in the chain of Check's error when this machine cannot
// give builds a sandbox.
var ErrUnavailable = errors.New("build sandbox unavailable")

// InitIfAsked runs Init and exits when the program was started as a
// sandbox's init (its first argument is "sandbox-init"), and returns
// otherwise. Test binaries that drive a build engine call it first in
// TestMain, so that they can stand in for berth inside the sandbox.
func InitIfAsked() {
	if len(os.Args) < 2 || os.Args[1] != "sandbox-init" {
		return
	}
	// Init only returns on failure: on success the engine replaced it.
	fmt.Fprintln(os.Stderr, Init(os.Args[2:]))
	os.Exit(125)
}
