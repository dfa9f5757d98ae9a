package gitsource

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"

	"github.com/berth-dev/berth/worker/engine"
)

// parseEndpoint parses a clone URL (scp-like git@host:path included) and
// refuses every transport but the network ones: a file:// or local path
// URL, from a trigger or a .gitmodules, would read the worker's own disk.
func parseEndpoint(raw string) (*transport.Endpoint, error) {
	ep, err := transport.NewEndpoint(strings.TrimSpace(raw))
	if err != nil {
		return nil, &engine.UserError{Code: engine.CodeGit, Message: fmt.Sprintf("%q is not a valid git URL", redact(raw)), Err: err}
	}
	switch ep.Protocol {
	case "ssh", "https", "http", "git":
		return ep, nil
	}
	return nil, engine.Errorf(engine.CodeGit, "the git URL %q uses %q; only ssh://, git@host:path, https://, http:// and git:// are supported", redact(raw), ep.Protocol)
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
			return nil, engine.Errorf(engine.CodeGit, "%s is an SSH URL but the git source has no deploy key and known_hosts for it", shown)
		}
		if f.src.GetPrivateKey() == "" {
			return nil, engine.Errorf(engine.CodeGit, "%s is an SSH URL but the git source has no deploy key", shown)
		}
		user := ep.User
		if user == "" {
			user = "git"
		}
		keys, err := gitssh.NewPublicKeys(user, []byte(f.src.GetPrivateKey()), "")
		if err != nil {
			return nil, &engine.UserError{Code: engine.CodeGit, Message: "the deploy key is not a valid unencrypted OpenSSH private key", Err: err}
		}
		keys.HostKeyCallback = f.checkHostKey
		// Offer only the key types known_hosts holds for this server, so
		// that it proves the recorded key rather than another one it has.
		keys.HostKeyAlgorithms = f.hosts.HostKeyAlgorithms(hostPort(ep))
		return keys, nil
	case "https", "http":
		if (f.src.GetUsername() == "" && f.src.GetPassword() == "") || !sameServer(ep, f.base) {
			return nil, nil
		}
		return &githttp.BasicAuth{Username: f.src.GetUsername(), Password: f.src.GetPassword()}, nil
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
	herr := &engine.UserError{Code: engine.CodeGit, Message: msg, Err: fmt.Errorf("%w: %w", ErrHostKeyMismatch, err)}
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
	return net.JoinHostPort(ep.Host, strconv.Itoa(port))
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
				return "", engine.Errorf(engine.CodeGit, "the submodule URL %q climbs above the root of %s", sub, redact(parent))
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
