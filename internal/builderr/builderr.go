// Package builderr is the error a build's user must fix, shared by the worker
// that reports it and by the API and triggers that read Dockerfiles and git
// sources themselves (to analyze a trigger, to resolve a ref).
package builderr

import (
	"errors"
	"fmt"
)

// Error codes of user errors; they are BuildError codes of the worker
// protocol.
const (
	CodeDockerfile = "dockerfile" // the Dockerfile cannot be parsed or is missing
	CodeBuildStep  = "build-step" // a step of the build failed
	CodeBaseImage  = "base-image" // a base image is missing or not readable
	CodePush       = "push"       // pushing was denied
	CodeContext    = "context"    // the build context is unusable
	CodeGit        = "git"        // the git source cannot be fetched
	CodeTimeout    = "timeout"    // the build ran out of time
)

// UserError is a failure the user must fix: retrying would fail the same
// way. Message is shown to the user as it is.
type UserError struct {
	Code    string
	Message string
	// Err is the underlying error, kept for logs; it is not shown.
	Err error
}

func (e *UserError) Error() string { return e.Message }

// Unwrap returns the underlying error.
func (e *UserError) Unwrap() error { return e.Err }

// Errorf returns a *UserError with a formatted message.
func Errorf(code, format string, args ...any) *UserError {
	return &UserError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsUserError returns the *UserError in err's chain, if any.
func AsUserError(err error) (*UserError, bool) {
	var ue *UserError
	ok := errors.As(err, &ue)
	return ue, ok
}
