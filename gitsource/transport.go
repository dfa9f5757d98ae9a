package gitsource

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	gitgit "github.com/go-git/go-git/v5/plumbing/transport/git"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"

	"github.com/berth-dev/berth/internal/builderr"
	"github.com/berth-dev/berth/internal/egress"
)

// go-git picks a transport per URL scheme from a process-wide table and
// takes no dialer per call, so gitsource installs its own transports once.
// They apply the egress policy that travels with each call's credentials
// (egressAuth): HTTP(S) through the policy's HTTP client, which checks
// every connection and redirect; SSH and git:// at one address the policy
// allowed, resolved here and handed to go-git as an IP literal, so that the
// name cannot resolve to another address when go-git dials. A call without
// egressAuth (nothing in berth makes one) gets go-git's own transport.
func init() {
	for scheme, fallback := range map[string]transport.Transport{
		"http": githttp.DefaultClient, "https": githttp.DefaultClient,
		"ssh": gitssh.DefaultClient, "git": gitgit.DefaultClient,
	} {
		client.InstallProtocol(scheme, &guardedTransport{fallback: fallback})
	}
	// The server's own ~/.ssh/config must not rename a user's SSH host:
	// its Hostname would be dialled instead of the checked address.
	gitssh.DefaultSSHConfig = nil
}

// egressAuth carries one call's egress policy to the installed transports,
// with the credentials (nil for anonymous access) they hand on to go-git.
type egressAuth struct {
	policy *egress.Policy
	auth   transport.AuthMethod
}

func (a *egressAuth) Name() string { return "berth-egress" }

func (a *egressAuth) String() string {
	if a.auth == nil {
		return "berth-egress"
	}
	return "berth-egress(" + a.auth.String() + ")"
}

// withPolicy wraps auth for the installed transports.
func withPolicy(p *egress.Policy, auth transport.AuthMethod) transport.AuthMethod {
	return &egressAuth{policy: p, auth: auth}
}

// resolveTimeout bounds the name lookup of an SSH or git:// server: go-git
// opens a session without a context.
const resolveTimeout = 30 * time.Second

// guardedTransport applies the policy of an egressAuth, then opens the
// session with fallback (go-git's transport of the scheme).
type guardedTransport struct {
	fallback transport.Transport
}

func (g *guardedTransport) NewUploadPackSession(ep *transport.Endpoint, auth transport.AuthMethod) (transport.UploadPackSession, error) {
	t, ep, auth, err := g.route(ep, auth)
	if err != nil {
		return nil, err
	}
	return t.NewUploadPackSession(ep, auth)
}

func (g *guardedTransport) NewReceivePackSession(ep *transport.Endpoint, auth transport.AuthMethod) (transport.ReceivePackSession, error) {
	t, ep, auth, err := g.route(ep, auth)
	if err != nil {
		return nil, err
	}
	return t.NewReceivePackSession(ep, auth)
}

// route returns the transport, endpoint and credentials for a session.
func (g *guardedTransport) route(ep *transport.Endpoint, auth transport.AuthMethod) (transport.Transport, *transport.Endpoint, transport.AuthMethod, error) {
	ea, ok := auth.(*egressAuth)
	if !ok {
		return g.fallback, ep, auth, nil
	}
	switch ep.Protocol {
	case "http", "https":
		return githttp.NewClient(ea.policy.HTTPClient()), ep, ea.auth, nil
	case "ssh", "git":
		pinned, err := pinEndpoint(ea.policy, ep)
		if err != nil {
			return nil, nil, nil, err
		}
		return g.fallback, pinned, ea.auth, nil
	}
	return nil, nil, nil, fmt.Errorf("gitsource: transport %q is not supported", ep.Protocol)
}

// pinEndpoint returns ep with its host replaced by the first address the
// policy allows for it, or ep itself for a trusted host (dialled by name).
func pinEndpoint(p *egress.Policy, ep *transport.Endpoint) (*transport.Endpoint, error) {
	port := strconv.Itoa(endpointPort(ep))
	if p.Trusted(net.JoinHostPort(strings.Trim(ep.Host, "[]"), port)) {
		return ep, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	addrs, err := p.LookupAllowed(ctx, ep.Host)
	if err != nil {
		return nil, err
	}
	pinned := *ep
	pinned.Host = addrs[0].String()
	return &pinned, nil
}

// endpointPort is the port go-git dials for ep.
func endpointPort(ep *transport.Endpoint) int {
	switch {
	case ep.Port != 0:
		return ep.Port
	case ep.Protocol == "git":
		return 9418
	case ep.Protocol == "ssh":
		return gitssh.DefaultPort
	case ep.Protocol == "http":
		return 80
	}
	return 443
}

// CheckURL checks a git URL as a build would fetch it: a network transport
// (never file:// or a local path), whose host the policy allows. It
// returns an *builderr.UserError; ErrRefusedHost is in its chain when the
// policy refuses the host. A name that does not resolve passes: the fetch
// reports it.
func CheckURL(ctx context.Context, p *egress.Policy, raw string) error {
	ep, err := parseEndpoint(raw)
	if err != nil {
		return err
	}
	err = p.CheckHost(ctx, strings.Trim(ep.Host, "[]"), strconv.Itoa(endpointPort(ep)))
	if errors.Is(err, egress.ErrRefused) {
		return refusedError(redact(raw), err)
	}
	return nil
}

// ErrRefusedHost is in the chain of the error for a git server whose
// address the egress policy refuses.
var ErrRefusedHost = errors.New("git server address refused by the outbound network policy")

// refusedError is the user's error for a refused git server: the same
// whatever the server would have answered, since nothing was sent to it.
func refusedError(shown string, err error) error {
	return &builderr.UserError{Code: builderr.CodeGit,
		Message: fmt.Sprintf("the git server of %s is not reachable from berth: loopback, private and link-local addresses are refused unless an administrator allows their network (OUTBOUND_ALLOWED_NETWORKS)", shown),
		Err:     fmt.Errorf("%w: %w", ErrRefusedHost, err)}
}

// parseEndpoint parses a clone URL (scp-like git@host:path included) and
// refuses every transport but the network ones: a file:// or local path
// URL, from a trigger or a .gitmodules, would read the worker's own disk.
func parseEndpoint(raw string) (*transport.Endpoint, error) {
	ep, err := transport.NewEndpoint(strings.TrimSpace(raw))
	if err != nil {
		return nil, &builderr.UserError{Code: builderr.CodeGit, Message: fmt.Sprintf("%q is not a valid git URL", redact(raw)), Err: err}
	}
	switch ep.Protocol {
	case "ssh", "https", "http", "git":
	default:
		return nil, builderr.Errorf(builderr.CodeGit, "the git URL %q uses %q; only ssh://, git@host:path, https://, http:// and git:// are supported", redact(raw), ep.Protocol)
	}
	if !validHost(ep.Host) {
		// go-git reads "git@[::1]:x.git" as host "[": refuse what would
		// dial something else than it seems to name.
		return nil, builderr.Errorf(builderr.CodeGit, "%q is not a valid git URL: its host %q is neither a name nor an IP address", redact(raw), ep.Host)
	}
	return ep, nil
}

// validHost reports whether h is an IP address or a DNS name (letters,
// digits, '-', '_' and dots, not starting with '-').
func validHost(h string) bool {
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if h == "" || h[0] == '-' || len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// auth returns the credentials for ep. SSH always uses the deploy key and
// the recorded host keys. A token goes only to the host of the source's
// own URL, never to a submodule's other host; git:// and public HTTP(S)
// are anonymous.
func (f *fetcher) auth(ep *transport.Endpoint, shown string) (transport.AuthMethod, error) {
	switch ep.Protocol {
	case "ssh":
		if f.hosts == nil {
			// An SSH submodule of a repository fetched over HTTPS or git://.
			return nil, builderr.Errorf(builderr.CodeGit, "%s is an SSH URL but the git source has no deploy key and known_hosts for it", shown)
		}
		if f.src.PrivateKey == "" {
			return nil, builderr.Errorf(builderr.CodeGit, "%s is an SSH URL but the git source has no deploy key", shown)
		}
		user := ep.User
		if user == "" {
			user = "git"
		}
		keys, err := gitssh.NewPublicKeys(user, []byte(f.src.PrivateKey), "")
		if err != nil {
			return nil, &builderr.UserError{Code: builderr.CodeGit, Message: "the deploy key is not a valid unencrypted OpenSSH private key", Err: err}
		}
		// go-git dials the address the egress policy allowed, so the
		// callback checks the key recorded for the URL's own host:port.
		known := hostPort(ep)
		keys.HostKeyCallback = func(_ string, remote net.Addr, key ssh.PublicKey) error {
			return f.checkHostKey(known, remote, key)
		}
		// Offer only the key types known_hosts holds for this server, so
		// that it proves the recorded key rather than another one it has.
		keys.HostKeyAlgorithms = f.hosts.HostKeyAlgorithms(known)
		return keys, nil
	case "https", "http":
		if (f.src.Username == "" && f.src.Password == "") || !sameServer(ep, f.base) {
			return nil, nil
		}
		return &githttp.BasicAuth{Username: f.src.Username, Password: f.src.Password}, nil
	}
	return nil, nil
}

// checkHostKey verifies an SSH server against known_hosts and remembers a
// failure so that Fetch reports it as such.
func (f *fetcher) checkHostKey(hostname string, remote net.Addr, key ssh.PublicKey) error {
	err := f.hosts.HostKeyCallback()(hostname, remote, key)
	if err == nil {
		return nil
	}
	var msg string
	switch {
	case knownhosts.IsHostKeyChanged(err):
		msg = fmt.Sprintf("the SSH host key of %s (%s %s) does not match the key recorded when the trigger was activated; if the server's key really changed, activate the trigger again", hostname, key.Type(), ssh.FingerprintSHA256(key))
	case knownhosts.IsHostUnknown(err):
		msg = fmt.Sprintf("the SSH server %s is not in the git source's known_hosts (its key is %s %s)", hostname, key.Type(), ssh.FingerprintSHA256(key))
	default:
		msg = fmt.Sprintf("the SSH host key of %s cannot be verified: %v", hostname, err)
	}
	herr := &builderr.UserError{Code: builderr.CodeGit, Message: msg, Err: fmt.Errorf("%w: %w", ErrHostKeyMismatch, err)}
	f.mu.Lock()
	f.hostKeyErr = herr
	f.mu.Unlock()
	return herr
}

// hostPort is ep's address as the SSH client dials it.
func hostPort(ep *transport.Endpoint) string {
	port := ep.Port
	if port == 0 {
		port = gitssh.DefaultPort
	}
	return net.JoinHostPort(strings.Trim(ep.Host, "[]"), strconv.Itoa(port))
}

// sameServer reports whether a and b are the same scheme, host and port.
func sameServer(a, b *transport.Endpoint) bool {
	return a.Protocol == b.Protocol && strings.EqualFold(a.Host, b.Host) && a.Port == b.Port
}

// redact hides the password of a URL that carries one, for logs and
// messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || u.Scheme == "" {
		return raw
	}
	return u.Redacted()
}

// resolveSubmoduleURL resolves a .gitmodules URL: "./x" and "../x" count
// from the superproject's URL (each "../" drops one path element, as git
// does), anything else is absolute.
func resolveSubmoduleURL(parent, sub string) (string, error) {
	if !strings.HasPrefix(sub, "./") && !strings.HasPrefix(sub, "../") {
		return sub, nil
	}
	base := strings.TrimSuffix(parent, "/")
	// The path of an scp-like URL follows the first colon; of any other,
	// the first slash after "scheme://host".
	pathStart := 0
	if i := strings.Index(base, "://"); i >= 0 {
		if j := strings.Index(base[i+3:], "/"); j >= 0 {
			pathStart = i + 3 + j
		} else {
			pathStart = len(base)
		}
	} else if i := strings.Index(base, ":"); i >= 0 {
		pathStart = i + 1
	}
	rest := sub
	for {
		switch {
		case strings.HasPrefix(rest, "./"):
			rest = rest[2:]
			continue
		case strings.HasPrefix(rest, "../"):
			path := base[pathStart:]
			if path == "" || path == "/" {
				return "", builderr.Errorf(builderr.CodeGit, "the submodule URL %q climbs above the root of %s", sub, redact(parent))
			}
			// With no slash left (git@host:repo.git) the whole path goes.
			base = base[:pathStart+max(strings.LastIndex(path, "/"), 0)]
			rest = rest[3:]
			continue
		}
		break
	}
	if strings.HasSuffix(base, ":") {
		return base + rest, nil
	}
	return base + "/" + rest, nil
}

// short abbreviates a commit SHA for messages.
func short(h fmt.Stringer) string {
	s := h.String()
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// progressInterval spaces progress lines that a server rewrites in place
// ("Receiving objects: 42%\r"): each final line is logged, the updates
// between at most this often.
const progressInterval = 2 * time.Second

// progressWriter turns a server's progress stream into log lines.
type progressWriter struct {
	log func(string)

	mu   sync.Mutex
	buf  []byte
	last time.Time
}

func newProgressWriter(log func(string)) *progressWriter {
	return &progressWriter{log: log}
}

// Write logs every complete line of p: lines ended by "\n" always, lines
// ended by "\r" when progressInterval has passed since the last line.
func (w *progressWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexAny(string(w.buf), "\r\n")
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimSpace(string(w.buf[:i]))
		final := w.buf[i] == '\n'
		w.buf = w.buf[i+1:]
		if line == "" {
			continue
		}
		if now := time.Now(); final || now.Sub(w.last) >= progressInterval {
			w.last = now
			w.log(line)
		}
	}
}

// Flush logs an unterminated last line.
func (w *progressWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if line := strings.TrimSpace(string(w.buf)); line != "" {
		w.log(line)
	}
	w.buf = w.buf[:0]
}
