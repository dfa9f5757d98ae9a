package auth

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// passwordCost is bcrypt's work factor: about 50-80 ms per check on a
// current server core, which is why Authenticator caches successes.
const passwordCost = bcrypt.DefaultCost

// maxPasswordLen is bcrypt's input limit; longer passwords would be silently
// truncated by other implementations, so they are refused outright.
const maxPasswordLen = 72

// ErrPasswordTooLong is returned by HashPassword for passwords over 72 bytes.
var ErrPasswordTooLong = errors.New("password longer than 72 bytes")

// HashPassword returns a bcrypt hash of pw for Account.PasswordHash.
func HashPassword(pw string) (string, error) {
	if len(pw) > maxPasswordLen {
		return "", ErrPasswordTooLong
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), passwordCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether pw matches hash. The comparison is constant
// time; an empty or malformed hash (organizations, robots) never matches.
func CheckPassword(hash, pw string) bool {
	if hash == "" || len(pw) > maxPasswordLen {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}
