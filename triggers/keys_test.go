package triggers_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/triggers"
)

func TestGenerateDeployKey(t *testing.T) {
	k, err := triggers.GenerateDeployKey("berth trigger 5f0c4a1e")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.PublicKey, "ssh-ed25519 AAAA") || !strings.HasSuffix(k.PublicKey, " berth trigger 5f0c4a1e") {
		t.Fatalf("public key line = %q", k.PublicKey)
	}
	if !bytes.HasPrefix(k.PrivateKeyPEM, []byte("-----BEGIN OPENSSH PRIVATE KEY-----")) {
		t.Fatalf("private key is not OpenSSH PEM: %.40q", k.PrivateKeyPEM)
	}
	pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(k.PublicKey))
	if err != nil || comment != "berth trigger 5f0c4a1e" {
		t.Fatalf("ParseAuthorizedKey: %v (comment %q)", err, comment)
	}
	signer, err := ssh.ParsePrivateKey(k.PrivateKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(signer.PublicKey().Marshal(), pub.Marshal()) {
		t.Fatal("private and public halves do not match")
	}
	sig, err := signer.Sign(rand.Reader, []byte("clone"))
	if err != nil || pub.Verify([]byte("clone"), sig) != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	other, err := triggers.GenerateDeployKey("")
	if err != nil || other.PublicKey == k.PublicKey || strings.Count(other.PublicKey, " ") != 1 {
		t.Fatalf("second key %q, %v", other.PublicKey, err)
	}
}

// sshServer serves SSH handshakes on loopback with a fresh ed25519 host key.
func sshServer(t *testing.T) (addr string, hostKey ssh.PublicKey) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// The scanner hangs up after the key exchange.
				_, _, _, _ = ssh.NewServerConn(c, cfg)
			}()
		}
	}()
	return ln.Addr().String(), signer.PublicKey()
}

func TestScanHostKey(t *testing.T) {
	addr, hostKey := sshServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	line, err := triggers.ScanHostKey(ctx, nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	if want := knownhosts.Line([]string{knownhosts.Normalize(addr)}, hostKey); line != want {
		t.Fatalf("line = %q, want %q", line, want)
	}
	// The recorded line, as a known_hosts file, accepts this server's key
	// and refuses another one.
	path := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(path, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check, err := knownhosts.New(path)
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(addr, tcp, hostKey); err != nil {
		t.Errorf("known_hosts refuses the scanned key: %v", err)
	}
	_, otherKey := sshServer(t)
	if err := check(addr, tcp, otherKey); err == nil {
		t.Error("known_hosts accepts a different key")
	}
}

func TestScanHostKeyGivesUpWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(3 * time.Second) // never speaks SSH
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := triggers.ScanHostKey(ctx, nil, ln.Addr().String()); err == nil {
		t.Fatal("silent server yielded a key")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v despite a 200ms deadline", d)
	}
	if _, err := triggers.ScanHostKey(context.Background(), nil, "127.0.0.1:1"); err == nil {
		t.Fatal("closed port yielded a key")
	}
}

func TestScanHostKeyThroughEgressPolicy(t *testing.T) {
	addr, _ := sshServer(t)
	_, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var def *egress.Policy // the default: public addresses only
	for _, target := range []string{addr, "localhost:" + port, "[::ffff:127.0.0.1]:" + port} {
		_, err := triggers.ScanHostKey(ctx, def.DialContext, target)
		if !errors.Is(err, egress.ErrRefused) {
			t.Errorf("scan of %s = %v, want ErrRefused", target, err)
		}
	}
	allowed, err := egress.New(egress.Options{AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := triggers.ScanHostKey(ctx, allowed.DialContext, addr); err != nil {
		t.Fatalf("scan with 127.0.0.0/8 allowed: %v", err)
	}
}
