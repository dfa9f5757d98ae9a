package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	regauth "github.com/berth-dev/berth/registry/auth"
)

// ErrorCode is a code of the /v2 API's error body: one of the distribution
// spec's fourteen, or UNKNOWN for a failure of the server.
type ErrorCode string

// The codes the registry sends; codeStatus holds the status of each.
const (
	CodeBlobUnknown         ErrorCode = "BLOB_UNKNOWN"
	CodeBlobUploadInvalid   ErrorCode = "BLOB_UPLOAD_INVALID"
	CodeBlobUploadUnknown   ErrorCode = "BLOB_UPLOAD_UNKNOWN"
	CodeDigestInvalid       ErrorCode = "DIGEST_INVALID"
	CodeManifestBlobUnknown ErrorCode = "MANIFEST_BLOB_UNKNOWN"
	CodeManifestInvalid     ErrorCode = "MANIFEST_INVALID"
	CodeManifestUnknown     ErrorCode = "MANIFEST_UNKNOWN"
	CodeNameInvalid         ErrorCode = "NAME_INVALID"
	CodeNameUnknown         ErrorCode = "NAME_UNKNOWN"
	CodeSizeInvalid         ErrorCode = "SIZE_INVALID"
	CodeUnauthorized        ErrorCode = "UNAUTHORIZED"
	CodeDenied              ErrorCode = "DENIED"
	CodeUnsupported         ErrorCode = "UNSUPPORTED"
	CodeTooManyRequests     ErrorCode = "TOOMANYREQUESTS"
	// codeInternal is distribution's code for a server-side failure. The
	// spec's list binds only 4xx bodies, so a 500 may carry it.
	codeInternal ErrorCode = "UNKNOWN"
)

// codeStatus is the status each code is sent with. A call site names the
// code and a message; only the constructors below, each where the spec (or
// HTTP itself) asks for another status on that endpoint, override it.
var codeStatus = map[ErrorCode]int{
	CodeBlobUnknown:         http.StatusNotFound,
	CodeBlobUploadInvalid:   http.StatusBadRequest,
	CodeBlobUploadUnknown:   http.StatusNotFound,
	CodeDigestInvalid:       http.StatusBadRequest,
	CodeManifestBlobUnknown: http.StatusBadRequest,
	CodeManifestInvalid:     http.StatusBadRequest,
	CodeManifestUnknown:     http.StatusNotFound,
	CodeNameInvalid:         http.StatusBadRequest,
	CodeNameUnknown:         http.StatusNotFound,
	CodeSizeInvalid:         http.StatusBadRequest,
	CodeUnauthorized:        http.StatusUnauthorized,
	CodeDenied:              http.StatusForbidden,
	CodeUnsupported:         http.StatusMethodNotAllowed,
	CodeTooManyRequests:     http.StatusTooManyRequests,
	codeInternal:            http.StatusInternalServerError,
}

// Error is a registry error: a code, the HTTP status it is sent with and a
// message.
type Error struct {
	Code    ErrorCode
	Status  int
	Message string
	Detail  any
	// challenge is the WWW-Authenticate value sent with a refusal.
	challenge string
	// retryAfter is sent as Retry-After when set.
	retryAfter time.Duration
	// cause is kept for logs; it is never sent to the client.
	cause error
}

func (e *Error) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.cause)
	}
	return string(e.Code) + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.cause }

// withStatus sends e with status rather than its code's.
func (e *Error) withStatus(status int) *Error {
	e.Status = status
	return e
}

// newError is an error with its code's status.
func newError(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Status: codeStatus[code], Message: fmt.Sprintf(format, args...)}
}

func errBlobUnknown(dgst string) *Error {
	e := newError(CodeBlobUnknown, "blob unknown to registry")
	e.Detail = map[string]string{"digest": dgst}
	return e
}

func errNameUnknown(name string) *Error {
	e := newError(CodeNameUnknown, "repository name not known to registry")
	e.Detail = map[string]string{"name": name}
	return e
}

func errManifestUnknown(ref string) *Error {
	e := newError(CodeManifestUnknown, "manifest unknown")
	e.Detail = map[string]string{"reference": ref}
	return e
}

func errUploadUnknown() *Error {
	return newError(CodeBlobUploadUnknown, "blob upload unknown to registry")
}

func errDigestInvalid(format string, args ...any) *Error {
	return newError(CodeDigestInvalid, format, args...)
}

func errMethodNotAllowed() *Error {
	return newError(CodeUnsupported, "method not allowed")
}

func errInternal(cause error) *Error {
	return &Error{Code: codeInternal, Status: codeStatus[codeInternal], Message: "internal error", cause: cause}
}

// errNoEndpoint answers a path outside the API: 404, as for any resource a
// server does not have (and as the spec's /v2/ check expects of a server
// without the API).
func errNoEndpoint() *Error {
	return newError(CodeUnsupported, "no such endpoint").withStatus(http.StatusNotFound)
}

// errDigestUnsupported answers a well-formed digest of an algorithm berth
// lacks: a bad parameter of the request, 400, as the spec's endpoints that
// take a digest answer an invalid one.
func errDigestUnsupported(format string, args ...any) *Error {
	return newError(CodeUnsupported, format, args...).withStatus(http.StatusBadRequest)
}

// errPageSizeInvalid answers a list request whose n is not a count: a bad
// parameter, 400. Distribution sends PAGINATION_NUMBER_INVALID, but the spec
// allows only its own codes in a 4xx body, and clients know those.
func errPageSizeInvalid() *Error {
	return newError(CodeUnsupported, "n must be a non-negative integer").withStatus(http.StatusBadRequest)
}

// errRangeInvalid answers a chunk that does not continue the upload where it
// stands: the spec demands 416 for it.
func errRangeInvalid(format string, args ...any) *Error {
	return newError(CodeBlobUploadInvalid, format, args...).withStatus(http.StatusRequestedRangeNotSatisfiable)
}

// errRangeNotSatisfiable answers a blob read whose Range lies outside the
// blob: 416, as RFC 9110 has it.
func errRangeNotSatisfiable() *Error {
	return newError(CodeBlobUnknown, "requested range not satisfiable").withStatus(http.StatusRequestedRangeNotSatisfiable)
}

// errManifestTooLarge answers a manifest over the size limit: the spec asks
// for 413.
func errManifestTooLarge(format string, args ...any) *Error {
	return newError(CodeSizeInvalid, format, args...).withStatus(http.StatusRequestEntityTooLarge)
}

// authError turns a refusal of the Authorizer into the challenge the client
// is sent; any other failure is internal.
func authError(err error) *Error {
	var ce *regauth.ChallengeError
	if !errors.As(err, &ce) {
		return errInternal(err)
	}
	return &Error{Code: ErrorCode(ce.Code), Status: ce.Status, Message: ce.Message,
		challenge: ce.Header, retryAfter: ce.RetryAfter, cause: err}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	Detail  any       `json:"detail,omitempty"`
}

// writeError sends e as the spec's JSON error body, with its challenge or
// Retry-After when it has one.
func writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code, Message: e.Message, Detail: e.Detail}}})
	h := w.Header()
	if e.challenge != "" {
		h.Set("WWW-Authenticate", e.challenge)
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", regauth.RetryAfter(e.retryAfter))
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
