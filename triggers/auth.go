package triggers

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// TokenUsername is the basic-auth user of Quay's webhook URLs
// (http(s)://$token:<secret>@host/webhooks/push/trigger/<uuid>).
const TokenUsername = "$token"

// CheckTokenAuth checks the `$token:<secret>` basic auth that custom-git
// webhook URLs carry. No credentials → ErrUnsigned; another user or a wrong
// secret → ErrBadSignature. The secret is compared in constant time.
func CheckTokenAuth(r *http.Request, secret []byte) error {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return ErrUnsigned
	}
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(TokenUsername))
	passOK := subtle.ConstantTimeCompare([]byte(pass), secret)
	if userOK&passOK != 1 || len(secret) == 0 {
		return ErrBadSignature
	}
	return nil
}

// SignSHA256 is the `sha256=<hex>` signature of body with secret that
// GitHub, Bitbucket Cloud and berth's custom-git webhooks carry.
func SignSHA256(body, secret []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// verifySHA256 checks a `sha256=<hex>` header value against body. An empty
// header is ErrUnsigned; anything else that is not the right MAC (another
// algorithm, bad hex, wrong MAC, empty secret) is ErrBadSignature.
func verifySHA256(header string, body, secret []byte) error {
	if header == "" {
		return ErrUnsigned
	}
	if len(secret) == 0 {
		// A trigger without a secret can verify nothing; refusing beats
		// accepting an HMAC anyone can compute with the empty key.
		return fmt.Errorf("%w: trigger has no secret", ErrBadSignature)
	}
	algo, sig, ok := strings.Cut(header, "=")
	if !ok || algo != "sha256" {
		return fmt.Errorf("%w: want a sha256= signature", ErrBadSignature)
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w: signature is not hex", ErrBadSignature)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return ErrBadSignature
	}
	return nil
}

// verifyToken compares a shared-token header (GitLab) in constant time.
func verifyToken(header string, secret []byte) error {
	if header == "" {
		return ErrUnsigned
	}
	if len(secret) == 0 || subtle.ConstantTimeCompare([]byte(header), secret) != 1 {
		return ErrBadSignature
	}
	return nil
}
