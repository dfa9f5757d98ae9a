package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// SecretKeyFile is the key file LoadSecrets creates in the data directory
// when the configuration names no DATABASE_SECRET_KEY.
const SecretKeyFile = "database-secret.key"

// ErrSecretCorrupt is returned by Open for a ciphertext that does not
// authenticate: another key, another purpose, or tampering.
var ErrSecretCorrupt = errors.New("secret does not decrypt")

// Secrets encrypts values an administrator may read back (robot tokens,
// OAuth client secrets) before they go to the database: AES-256-GCM with a
// random nonce, the value's purpose bound in as associated data so that a
// ciphertext copied to another row or column does not decrypt.
//
// Passwords and OAuth access tokens are never given back, so they are
// hashed instead and do not come here.
type Secrets struct {
	aead cipher.AEAD
}

// NewSecrets derives the AES-256 key from key material of any length
// (SHA-256 of it), so that Quay's DATABASE_SECRET_KEY strings work as they are.
func NewSecrets(key []byte) (*Secrets, error) {
	if len(key) < 16 {
		return nil, errors.New("secret key: need at least 16 bytes of key material")
	}
	sum := sha256.Sum256(append([]byte("berth secrets v1\x00"), key...))
	block, err := aes.NewCipher(sum[:])
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	return &Secrets{aead: aead}, nil
}

// LoadSecrets returns the server's Secrets: keyed by configKey (config
// DATABASE_SECRET_KEY) when it is not empty, otherwise by a random key kept
// in dataDir/SecretKeyFile, created (mode 0600) on first use. Every process
// sharing a database must use the same key: with a DATABASE_SECRET_KEY, or
// by sharing the data directory.
func LoadSecrets(configKey, dataDir string) (*Secrets, error) {
	if configKey != "" {
		return NewSecrets([]byte(configKey))
	}
	path := filepath.Join(dataDir, SecretKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b, err = createKeyFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("secret key %s: %w", path, err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("secret key %s: %w", path, err)
	}
	return NewSecrets(key)
}

// createKeyFile writes a new random key to path, atomically and only if no
// file exists there yet; when another process wins the race its key is
// returned, so that both use one key.
func createKeyFile(path string) ([]byte, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails
	content := []byte(base64.StdEncoding.EncodeToString(key) + "\n")
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, ".secret-key-*") // created 0600
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return os.ReadFile(path)
	} else if err != nil {
		return nil, err
	}
	return content, nil
}

// Seal encrypts plaintext for the given purpose (for example
// "robot-token:org+bot"); only Open with the same purpose decrypts it.
func (s *Secrets) Seal(plaintext []byte, purpose string) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	_, _ = rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, plaintext, []byte(purpose))
}

// Open decrypts what Seal produced for purpose.
func (s *Secrets) Open(ciphertext []byte, purpose string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(ciphertext) < n+s.aead.Overhead() {
		return nil, ErrSecretCorrupt
	}
	pt, err := s.aead.Open(nil, ciphertext[:n], ciphertext[n:], []byte(purpose))
	if err != nil {
		return nil, ErrSecretCorrupt
	}
	return pt, nil
}

// RobotTokenPurpose binds a robot token's ciphertext to the robot.
func RobotTokenPurpose(robotName string) string { return "robot-token:" + robotName }

// ClientSecretPurpose binds an OAuth client secret's ciphertext to its client.
func ClientSecretPurpose(clientID string) string { return "oauth-client-secret:" + clientID }

// Alphabets for RandomString.
const (
	UpperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	MixedAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

// Generated secret lengths, as Quay makes them.
const (
	RobotTokenLen   = 64 // UpperAlnum
	AccessTokenLen  = 40 // MixedAlnum
	PasswordLen     = 32 // UpperAlnum
	ClientIDLen     = 20 // UpperAlnum
	ClientSecretLen = 40 // UpperAlnum
)

// RandomString returns n characters drawn uniformly from alphabet with
// crypto/rand (rejection sampling: no modulo bias).
func RandomString(n int, alphabet string) string {
	out := make([]byte, 0, n)
	limit := 256 - 256%len(alphabet)
	buf := make([]byte, n+n/2)
	for len(out) < n {
		_, _ = rand.Read(buf)
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out)
}

// HashToken is the hex SHA-256 under which access tokens and session ids are
// stored: they are long random strings, so a fast hash suffices.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return fmt.Sprintf("%x", sum)
}

// SecretEqual compares two secrets in constant time (for equal lengths).
func SecretEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
