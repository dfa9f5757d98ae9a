// Package triggers turns a forge's webhook delivery into a prepared build.
//
// It is the provider layer only: one Provider per forge verifies a delivery,
// names it and parses it into Quay's prepared-build metadata; Prepare applies a
// trigger's config (skip directives, branch/tag regex, path filters, tag
// templates). It knows no store, queue or HTTP route: the webhook handler that
// owns those calls, in this order,
//
//	ReadPayload (size limit) → Provider.Verify (or CheckTokenAuth) →
//	Provider.DeliveryID (dedup) → Provider.Parse → Prepare
//
// and maps the errors with StatusCode.
//
// Each service registers itself (Register, from its provider file's init):
// its Provider and, for a forge, its ForgeAPI (config key, default web
// host, config parser whose config makes the forge's API client). Every
// lookup by service name (ForService, Forges, GitURL) reads that table, so
// a new forge is a provider file and a triggers/forge client, and edits no
// switch elsewhere. The trigger operations that need a store or a queue
// (activation, manual runs, the analyzer, submitting) are triggers/manage's.
package triggers

import (
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Service names, as Quay spells them in TriggerView.service.
const (
	ServiceGitHub    = "github"
	ServiceGitLab    = "gitlab"
	ServiceBitbucket = "bitbucket"
	ServiceCustomGit = "custom-git"
)

// MaxPayloadBytes is the largest delivery accepted. GitHub caps its own
// deliveries at 25 MB, so nothing legitimate is larger.
const MaxPayloadBytes = 25 << 20

// Errors a Provider returns; StatusCode maps them to the webhook's answer.
var (
	// ErrUnsigned: the delivery carries no signature, token or credentials
	// where they are required.
	ErrUnsigned = errors.New("triggers: delivery is not signed")
	// ErrBadSignature: the signature, token or credentials do not match the
	// trigger's secret.
	ErrBadSignature = errors.New("triggers: delivery signature does not match")
	// ErrMalformed: the body is not the JSON the event promises.
	ErrMalformed = errors.New("triggers: malformed payload")
	// ErrTooLarge: the body exceeds MaxPayloadBytes.
	ErrTooLarge = errors.New("triggers: payload too large")
)

// StatusCode is the HTTP status the webhook answers for an error from this
// package: 401 for authentication, 400 for a malformed body, 413 for an
// oversized one, 500 for anything else.
func StatusCode(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrUnsigned), errors.Is(err, ErrBadSignature):
		return http.StatusUnauthorized
	case errors.Is(err, ErrMalformed):
		return http.StatusBadRequest
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	default:
		return http.StatusInternalServerError
	}
}

// Provider is one forge's webhook dialect. Implementations are stateless and
// safe for concurrent use; the same value serves every trigger of its service.
type Provider interface {
	// Service is the Quay service name: github, gitlab, bitbucket, custom-git.
	Service() string
	// Verify checks the delivery's signature or token over the raw body with
	// the trigger's secret, in constant time. A missing signature where the
	// forge requires one is ErrUnsigned; a wrong one is ErrBadSignature.
	Verify(r *http.Request, body []byte, secret []byte) error
	// EventName is the forge's name of the delivery's event, for the
	// delivery record.
	EventName(r *http.Request) string
	// DeliveryID is the forge's unique id of this delivery, "" when the
	// delivery has none (then there is no replay protection).
	DeliveryID(r *http.Request) string
	// Parse turns the body into an Event: a push to build, or a skip with its
	// reason. It never reads r.Body; body is the raw payload. Bodies that
	// are not the JSON the event promises yield ErrMalformed.
	Parse(r *http.Request, body []byte) (Event, error)
}

// ReadPayload reads a delivery's body, refusing more than limit bytes with
// ErrTooLarge (limit <= 0 means MaxPayloadBytes). It reads at most limit+1
// bytes, so an oversized body costs no more than that.
func ReadPayload(r *http.Request, limit int64) ([]byte, error) {
	if limit <= 0 {
		limit = MaxPayloadBytes
	}
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes announced, limit %d", ErrTooLarge, r.ContentLength, limit)
	}
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("triggers: read payload: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: limit %d bytes", ErrTooLarge, limit)
	}
	return body, nil
}

// checkSize is Parse's own guard for callers that skipped ReadPayload.
func checkSize(body []byte) error {
	if len(body) > MaxPayloadBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(body), MaxPayloadBytes)
	}
	return nil
}
