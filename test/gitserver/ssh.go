package gitserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/berth-dev/berth/internal/testenv"
)

// NewSSHKey returns a new ed25519 key pair: the private key in OpenSSH PEM
// form (a deploy key) and its authorized_keys line.
func NewSSHKey(t testing.TB) (privatePEM, authorizedKey string) {
	t.Helper()
	pubKey, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pubKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block)), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
}

// ServeSSH serves every repository under root over SSH with OpenSSH's sshd
// on a loopback port, accepting only authorizedKey (an authorized_keys
// line, "ssh-ed25519 AAAA…") for user root. It returns the base URL
// ("ssh://root@127.0.0.1:port" followed by root, since the path of an SSH
// URL is the repository's path on the server) and the server's known_hosts
// line ("[127.0.0.1]:port ssh-ed25519 AAAA…").
//
// sshd must run as root; the test is skipped otherwise.
func ServeSSH(t testing.TB, root, authorizedKey string) (url, knownHostsLine string) {
	t.Helper()
	testenv.RequireTools(t, "git", "ssh-keygen")
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
		if _, err := os.Stat(sshd); err != nil {
			testenv.RequireTools(t, "sshd")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("sshd needs root to serve git over SSH")
	}
	// sshd refuses to start without its privilege separation directory,
	// which only the service unit creates.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host_ed25519")
	run(t, dir, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", hostKey)
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	// Only git runs through this key: no shell, no forwarding.
	line := "restrict " + strings.TrimSpace(authorizedKey) + "\n"
	if err := os.WriteFile(authorized, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfg := filepath.Join(dir, "sshd_config")
	conf := strings.Join([]string{
		fmt.Sprintf("Port %d", port),
		"ListenAddress 127.0.0.1",
		"HostKey " + hostKey,
		"PidFile none",
		"AuthorizedKeysFile " + authorized,
		"StrictModes no",
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"AllowUsers root",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"LogLevel VERBOSE",
	}, "\n") + "\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startServer(t, port, sshd, "-D", "-e", "-f", cfg)
	fields := strings.Fields(string(pub))
	if len(fields) < 2 {
		t.Fatalf("unexpected host public key %q", pub)
	}
	return fmt.Sprintf("ssh://root@127.0.0.1:%d%s", port, root),
		fmt.Sprintf("[127.0.0.1]:%d %s %s", port, fields[0], fields[1])
}
