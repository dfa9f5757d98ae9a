package triggers

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// DeployKey is a trigger's SSH key pair: the public half goes to the forge
// (or the git server's authorized_keys), the private half, encrypted at rest
// by the store, to the worker that clones.
type DeployKey struct {
	// PublicKey is an authorized_keys line: "ssh-ed25519 AAAA… <comment>".
	PublicKey string
	// PrivateKeyPEM is the private key in OpenSSH PEM form
	// ("-----BEGIN OPENSSH PRIVATE KEY-----").
	PrivateKeyPEM []byte
}

// GenerateDeployKey makes a fresh ed25519 key pair; comment ends the public
// line (e.g. "berth trigger <uuid>"), "" for none.
func GenerateDeployKey(comment string) (DeployKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return DeployKey{}, fmt.Errorf("triggers: generate ed25519 key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return DeployKey{}, fmt.Errorf("triggers: encode public key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return DeployKey{}, fmt.Errorf("triggers: encode private key: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	if comment != "" {
		line += " " + comment
	}
	return DeployKey{PublicKey: line, PrivateKeyPEM: pem.EncodeToMemory(block)}, nil
}

// errHostKeySeen aborts the handshake once the host key is captured: the
// scan never authenticates.
var errHostKeySeen = errors.New("host key captured")

// ScanHostKey connects to an SSH server (host:port; port 22 when absent),
// records the host key it presents and returns it as a known_hosts line
// ("[host]:port ssh-ed25519 AAAA…"), so that clones later verify that key
// instead of trusting whatever answers. ed25519 is preferred when the server
// offers several. dial connects (nil: a plain net.Dialer); the host comes
// from a user's trigger, so berth passes its egress policy's DialContext.
func ScanHostKey(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), hostport string) (string, error) {
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), "22")
	}
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	conn, err := dial(ctx, "tcp", hostport)
	if err != nil {
		return "", fmt.Errorf("triggers: scan host key of %s: %w", hostport, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return "", fmt.Errorf("triggers: scan host key of %s: %w", hostport, err)
		}
	}
	// Closing the connection when ctx ends unblocks a stalled handshake.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var key ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User: "git",
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			key = k
			return errHostKeySeen
		},
		HostKeyAlgorithms: []string{
			ssh.KeyAlgoED25519,
			ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
			ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
		},
	}
	_, _, _, err = ssh.NewClientConn(conn, hostport, cfg)
	if key == nil {
		if err == nil {
			err = errors.New("server presented no host key")
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("triggers: scan host key of %s: %w", hostport, err)
	}
	return knownhosts.Line([]string{knownhosts.Normalize(hostport)}, key), nil
}
