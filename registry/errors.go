package registry

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// ErrorCode is one of the distribution spec's error codes.
type ErrorCode string

// The distribution spec's error codes, with the status each is sent with.
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
	// codeRangeInvalid is sent as BLOB_UPLOAD_INVALID with 416.
	codeRangeInvalid ErrorCode = "RANGE_INVALID"
	// codeInternal is distribution's code for a server-side failure.
	codeInternal ErrorCode = "UNKNOWN"
)

// Error is a registry error: a spec code, an HTTP status and a message.
type Error struct {
	Code    ErrorCode
	Status  int
	Message string
	Detail  any
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

func newError(code ErrorCode, status int, format string, args ...any) *Error {
	return &Error{Code: code, Status: status, Message: fmt.Sprintf(format, args...)}
}

func errBlobUnknown(dgst string) *Error {
	return &Error{Code: CodeBlobUnknown, Status: http.StatusNotFound, Message: "blob unknown to registry", Detail: map[string]string{"digest": dgst}}
}

func errNameUnknown(name string) *Error {
	return &Error{Code: CodeNameUnknown, Status: http.StatusNotFound, Message: "repository name not known to registry", Detail: map[string]string{"name": name}}
}

func errManifestUnknown(ref string) *Error {
	return &Error{Code: CodeManifestUnknown, Status: http.StatusNotFound, Message: "manifest unknown", Detail: map[string]string{"reference": ref}}
}

func errUploadUnknown() *Error {
	return newError(CodeBlobUploadUnknown, http.StatusNotFound, "blob upload unknown to registry")
}

func errDigestInvalid(format string, args ...any) *Error {
	return newError(CodeDigestInvalid, http.StatusBadRequest, format, args...)
}

func errInternal(cause error) *Error {
	return &Error{Code: codeInternal, Status: http.StatusInternalServerError, Message: "internal error", cause: cause}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	Detail  any       `json:"detail,omitempty"`
}

// writeError sends e as the spec's JSON error body.
func writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	code := e.Code
	if code == codeRangeInvalid {
		code = CodeBlobUploadInvalid
	}
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: code, Message: e.Message, Detail: e.Detail}}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
