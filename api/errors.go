package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/logctx"
)

// Error is an API error, sent in Quay's shape:
//
//	{"detail", "error_message", "error_type", "title", "type", "status"}
//
// where type is "<server>/api/v1/error/<error_type>". Message, when set,
// adds Quay's {"message": ...} key that a few endpoints answer with.
type Error struct {
	Status  int
	Type    string // Quay's error_type: not_found, invalid_request, ...
	Detail  string
	Message string
	// RetryAfter is sent as a header with 429.
	RetryAfter time.Duration
	// Err is the cause, for logs; never shown.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return strconv.Itoa(e.Status) + " " + e.Type + ": " + e.Detail + ": " + e.Err.Error()
	}
	return strconv.Itoa(e.Status) + " " + e.Type + ": " + e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

// NotFound is Quay's 404: exactly {"detail": "Not Found", "error_message":
// "Not Found", "error_type": "not_found", "title": "not_found", ...}. Use it
// for missing resources and for resources the caller may not see alike.
func NotFound() *Error {
	return &Error{Status: http.StatusNotFound, Type: "not_found", Detail: "Not Found"}
}

// notFoundMessage is a 404 that also carries Quay's {"message"} key.
func notFoundMessage(msg string) *Error {
	e := NotFound()
	e.Message = msg
	return e
}

// BadRequest is a 400 for invalid input.
func BadRequest(detail string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: "invalid_request", Detail: detail}
}

// Unauthorized is a 401: no credentials, or bad ones.
func Unauthorized() *Error {
	return &Error{Status: http.StatusUnauthorized, Type: "invalid_token", Detail: "Requires authentication"}
}

// Forbidden is a 403: valid credentials without the right (or a scope).
func Forbidden() *Error {
	return &Error{Status: http.StatusForbidden, Type: "insufficient_scope", Detail: "Unauthorized"}
}

// Internal is a 500; err goes to the log only.
func Internal(err error) *Error {
	return &Error{Status: http.StatusInternalServerError, Type: "internal_error", Detail: "Internal Server Error", Err: err}
}

type errorBody struct {
	Detail       string `json:"detail"`
	ErrorMessage string `json:"error_message"`
	ErrorType    string `json:"error_type"`
	Title        string `json:"title"`
	Type         string `json:"type"`
	Status       int    `json:"status"`
	Message      string `json:"message,omitempty"`
	// RequestID names the request in the server's log (and in its
	// X-Request-ID header), so a report of an error can be traced.
	RequestID string `json:"request_id,omitempty"`
}

// handleError is echo's error handler: every error leaves in Quay's shape.
func (a *API) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var e *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &e):
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			e = NotFound()
		case http.StatusMethodNotAllowed:
			e = &Error{Status: he.Code, Type: "invalid_request", Detail: "Method Not Allowed"}
		case http.StatusRequestEntityTooLarge:
			e = &Error{Status: he.Code, Type: "invalid_request", Detail: "Request body too large"}
		default:
			e = &Error{Status: he.Code, Type: "invalid_request", Detail: http.StatusText(he.Code)}
		}
	default:
		e = Internal(err)
	}
	r := c.Request()
	if e.Status >= 500 {
		a.log.ErrorContext(r.Context(), "api request failed", "method", r.Method, "path", r.URL.Path, "err", e)
	}
	if e.RetryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	body := errorBody{
		Detail: e.Detail, ErrorMessage: e.Detail, ErrorType: e.Type, Title: e.Type,
		Type: a.externalURL(r) + Prefix + "/error/" + e.Type, Status: e.Status, Message: e.Message,
		RequestID: logctx.RequestID(r.Context()),
	}
	if r.Method == http.MethodHead {
		_ = c.NoContent(e.Status)
		return
	}
	_ = c.JSON(e.Status, body)
}
