// Package sandbox runs a build engine inside a network and user namespace of
// its own, so that the RUN steps of a Dockerfile reach the outside world but
// not the build host: not its loopback services (the API, the worker gRPC
// port, Redis, PostgreSQL), not its own addresses, and by default not the
// private, link-local and unique-local networks around it.
//
// rootlesskit makes the namespaces: a user namespace mapping the build's
// user to root and its subordinate IDs above it, a mount namespace (with /etc
// copied up so resolv.conf can point at slirp4netns's DNS), a PID namespace,
// and a network namespace whose only way out is slirp4netns with the host's
// loopback disabled. Inside, berth's own `sandbox-init` closes the denied
// networks with prohibit routes (the engine and its RUN steps lack
// CAP_NET_ADMIN to reopen them) and then executes the engine. The engine runs
// every RUN step in a further container (OCI runtime, private PID, mount,
// IPC and UTS namespaces) that shares this network namespace.
//
// Pulling and pushing happen outside the sandbox, where berth's registry is
// reachable; the engine inside builds from images already pulled.
package sandbox

import (
	"fmt"
	"net/netip"
	"strings"
)

// Gateway is slirp4netns's gateway in the sandbox's network (rootlesskit's
// default 10.0.2.0/24): traffic to anything outside leaves through it.
const Gateway = "10.0.2.2"

// Config is one sandbox.
type Config struct {
	// RootlessKit is the rootlesskit program ("rootlesskit" on PATH when
	// empty).
	RootlessKit string
	// Init is the command that rootlesskit runs inside the namespaces:
	// berth's binary followed by "sandbox-init". It applies the network
	// policy and then executes the wrapped command.
	Init []string
	// StateDir is rootlesskit's state directory, private to the build.
	StateDir string
	// Network decides what RUN steps may reach.
	Network NetworkPolicy
	// SlirpInPlace keeps slirp4netns in the mount namespace it starts in
	// rather than confining it to one of its own (its --enable-sandbox),
	// which takes CAP_SYS_ADMIN where the sandbox starts: a Kubernetes
	// pod's root does without it. slirp4netns's own seccomp filter stays
	// either way.
	SlirpInPlace bool
}

// NetworkPolicy is what a sandbox may reach beyond slirp4netns's own
// gateway and DNS. The host's loopback is never reachable.
type NetworkPolicy struct {
	// Denied are closed with prohibit routes.
	Denied []netip.Prefix
	// Allowed are routed out even when a denied prefix covers them: a
	// denied prefix inside an allowed one is dropped, and an allowed one
	// inside a denied one gets its own, more specific, route.
	Allowed []netip.Prefix
}

// Wrap returns the command line that runs argv inside a new sandbox.
func (c Config) Wrap(argv []string) []string {
	kit := c.RootlessKit
	if kit == "" {
		kit = "rootlesskit"
	}
	slirpSandbox := "--slirp4netns-sandbox=auto"
	if c.SlirpInPlace {
		slirpSandbox = "--slirp4netns-sandbox=false"
	}
	out := []string{kit,
		"--net=slirp4netns", "--disable-host-loopback",
		slirpSandbox, "--slirp4netns-seccomp=auto",
		"--copy-up=/etc", "--copy-up=/run",
		"--pidns", "--utsns", "--ipcns",
	}
	if c.StateDir != "" {
		out = append(out, "--state-dir="+c.StateDir)
	}
	out = append(out, c.Init...)
	out = append(out, c.Network.Args()...)
	out = append(out, "--")
	return append(out, argv...)
}

// Args are the sandbox-init flags that carry the policy.
func (p NetworkPolicy) Args() []string {
	var out []string
	for _, d := range p.Denied {
		out = append(out, "--deny="+d.String())
	}
	for _, a := range p.Allowed {
		out = append(out, "--allow="+a.String())
	}
	return out
}

// routes are the `ip route` commands that put the policy in place: prohibit
// routes for the denied prefixes not inside an allowed one, and gateway
// routes for allowed prefixes.
func (p NetworkPolicy) routes() [][]string {
	var cmds [][]string
	for _, d := range p.Denied {
		if !d.Addr().Is4() {
			// The sandbox has no IPv6 route at all.
			continue
		}
		covered := false
		for _, a := range p.Allowed {
			if a.Bits() <= d.Bits() && a.Contains(d.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			cmds = append(cmds, []string{"ip", "-4", "route", "replace", "prohibit", d.String()})
		}
	}
	for _, a := range p.Allowed {
		if a.Addr().Is4() {
			cmds = append(cmds, []string{"ip", "-4", "route", "replace", a.String(), "via", Gateway})
		}
	}
	return cmds
}

// parseFlags reads sandbox-init's arguments: --deny=CIDR and --allow=CIDR
// flags, then "--", then the command to execute.
func parseFlags(args []string) (NetworkPolicy, []string, error) {
	var p NetworkPolicy
	for i, a := range args {
		if a == "--" {
			if i == len(args)-1 {
				return p, nil, fmt.Errorf("sandbox-init: no command after --")
			}
			return p, args[i+1:], nil
		}
		name, value, ok := strings.Cut(a, "=")
		if !ok {
			return p, nil, fmt.Errorf("sandbox-init: unexpected argument %q", a)
		}
		prefix, err := netip.ParsePrefix(value)
		if err != nil {
			return p, nil, fmt.Errorf("sandbox-init: %s: %w", name, err)
		}
		switch name {
		case "--deny":
			p.Denied = append(p.Denied, prefix.Masked())
		case "--allow":
			p.Allowed = append(p.Allowed, prefix.Masked())
		default:
			return p, nil, fmt.Errorf("sandbox-init: unknown flag %s", name)
		}
	}
	return p, nil, fmt.Errorf("sandbox-init: no -- before the command")
}

// AllowedNetworksEnv is the worker's environment variable that carries the
// exceptions to DefaultPolicy (egress.FormatNetworks of config.yaml's
// BUILD_ALLOWED_NETWORKS) from the server, through its executor, to the
// build engine.
const AllowedNetworksEnv = "BERTH_BUILD_ALLOWED_NETWORKS"
