// Package engine is the contract between the build worker and the programs
// that turn a Dockerfile and its context into pushed images (buildah now,
// BuildKit later). Every engine passes the shared suite in enginetest and
// registers itself by name (Register) from its package's init.
package engine

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/internal/builderr"
)

// Engine builds one image from a prepared context and pushes it to every tag.
type Engine interface {
	// Name is the engine's name as a Job names it ("buildah", "buildkit").
	Name() string
	// Build pulls req.BaseImages (reporting PhasePulling), builds
	// (PhaseBuilding) and pushes every tag (PhasePushing), writing the
	// programs' output to sink as it comes. Failures the user caused are
	// returned as *UserError; anything else is an infrastructure failure
	// worth another attempt. When ctx ends, Build stops every process it
	// started before it returns.
	Build(ctx context.Context, req Request, sink LogSink) (Result, error)
}

// Request is one build.
type Request struct {
	// ContextDir is the build context on disk.
	ContextDir string
	// DockerfilePath is the Dockerfile's path on disk (not necessarily
	// inside ContextDir).
	DockerfilePath string
	// Tags are full references (registry/namespace/repo:tag) to push to.
	Tags []string
	// BuildArgs are --build-arg values.
	BuildArgs map[string]string
	// Target is the stage to build ("" = the last).
	Target string
	// NoCache rebuilds every step.
	NoCache bool
	// Labels are added to the image.
	Labels map[string]string
	// Registry is berth's registry: credentials and transport for it.
	Registry Registry
	// StorageRoot holds the engine's image storage for this build;
	// RunRoot its runtime state; WorkDir is scratch space for config files
	// (auth file, CA, policy). All three are private to this build.
	StorageRoot string
	RunRoot     string
	WorkDir     string
	// BaseImages are the external images the Dockerfile starts from,
	// pulled before the build so that a missing one fails early and clearly.
	BaseImages []string
	// OnPhase, when set, is called as the build enters each phase. An error
	// from it ends the build with that error.
	OnPhase func(ctx context.Context, p Phase) error
}

// Registry describes berth's own registry for one build.
type Registry struct {
	// Host is host[:port] as it appears in image references.
	Host     string
	Username string
	Password string
	// Insecure: the registry speaks plain HTTP.
	Insecure bool
	// CAPEM is the PEM of a private CA the registry's certificate chains to.
	CAPEM []byte
	// PullRobot names the robot whose credentials pull base images, for
	// error messages ("" when the build names none).
	PullRobot string
	// Credentials, when set, returns the registry credentials to use now;
	// the engine calls it each time it hands credentials to a program
	// (before pulling, before pushing), so a worker that refreshes its
	// short-lived token gives out the fresh one. When nil, Username and
	// Password are used.
	Credentials func(ctx context.Context) (username, password string, err error)
}

// Login returns the credentials to use for the registry now.
func (r Registry) Login(ctx context.Context) (username, password string, err error) {
	if r.Credentials == nil {
		return r.Username, r.Password, nil
	}
	return r.Credentials(ctx)
}

// Result is what a successful build produced.
type Result struct {
	// Digests maps every tag of Request.Tags to its pushed manifest digest.
	Digests map[string]string
}

// Phase is a step of a build the manager shows to users.
type Phase int

// Phases an engine reports, in order.
const (
	PhasePulling Phase = iota + 1
	PhaseBuilding
	PhasePushing
)

func (p Phase) String() string {
	switch p {
	case PhasePulling:
		return "pulling"
	case PhaseBuilding:
		return "building"
	case PhasePushing:
		return "pushing"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// LineType classifies a log line.
type LineType int

// Line types, matching the build log's entry types.
const (
	LineOutput  LineType = iota // plain output
	LineCommand                 // a build step header
	LineError                   // an error explained to the user
	LinePhase                   // a phase change
)

// LogSink receives the build's log lines in order. Implementations must be
// safe for concurrent use: stdout and stderr are read concurrently.
type LogSink interface {
	Log(t LineType, message string)
}

// LogFunc adapts a function to LogSink.
type LogFunc func(t LineType, message string)

// Log calls f.
func (f LogFunc) Log(t LineType, message string) { f(t, message) }

// A user error is a failure the user must fix; engines return it as
// *UserError. Its type and codes live in internal/builderr, which the API and
// triggers share; these names keep the engine's contract readable in one place.
const (
	CodeDockerfile = builderr.CodeDockerfile
	CodeBuildStep  = builderr.CodeBuildStep
	CodeBaseImage  = builderr.CodeBaseImage
	CodePush       = builderr.CodePush
	CodeContext    = builderr.CodeContext
	CodeGit        = builderr.CodeGit
	CodeTimeout    = builderr.CodeTimeout
)

// UserError is a failure the user must fix (builderr.UserError).
type UserError = builderr.UserError

// Errorf returns a *UserError with a formatted message.
func Errorf(code, format string, args ...any) *UserError {
	return builderr.Errorf(code, format, args...)
}

// AsUserError returns the *UserError in err's chain, if any.
func AsUserError(err error) (*UserError, bool) { return builderr.AsUserError(err) }
