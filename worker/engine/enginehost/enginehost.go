// Package enginehost holds what every build engine does the same way on
// the worker's host around its build: the sandbox a build runs in, the
// registry auth file that exists only while a pull or push runs, and the
// user error for a base image that cannot be pulled.
package enginehost

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/buildhost"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/sandbox"
)

// Sandbox configures the sandbox an engine's build runs in. The zero value
// is berth's own: this program's `sandbox-init` and the default network
// policy.
type Sandbox struct {
	// Init runs inside the sandbox before the engine's program (default:
	// this executable followed by "sandbox-init").
	Init []string
	// RootlessKit is the rootlesskit program ("rootlesskit" on PATH when
	// empty).
	RootlessKit string
	// AllowedNetworks are the exceptions to sandbox.DefaultPolicy, for
	// builds that must reach a mirror on a private network.
	AllowedNetworks []netip.Prefix
	// SlirpInPlace is sandbox.Config.SlirpInPlace.
	SlirpInPlace bool
}

// Config is the sandbox of one build, whose rootlesskit state lives in
// dir. Errors name the engine (name).
func (s Sandbox) Config(name, dir string) (sandbox.Config, error) {
	init := s.Init
	if len(init) == 0 {
		self, err := os.Executable()
		if err != nil {
			return sandbox.Config{}, fmt.Errorf("%s: sandbox init: %w", name, err)
		}
		init = []string{self, "sandbox-init"}
	}
	policy, err := sandbox.DefaultPolicy(s.AllowedNetworks)
	if err != nil {
		return sandbox.Config{}, err
	}
	return sandbox.Config{RootlessKit: s.RootlessKit, Init: init, StateDir: dir, Network: policy, SlirpInPlace: s.SlirpInPlace}, nil
}

// Host is what an engine holds of the worker's host: its logger and the
// sandbox its builds run in.
type Host struct {
	// Logger receives the engine's own diagnostics (nil: slog.Default()).
	Logger *slog.Logger
	// Sandbox is where the engine's build runs.
	Sandbox Sandbox
}

// Log is the logger of the engine's own diagnostics.
func (h Host) Log() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.Default()
}

// Factory is the engine.Factory of an engine newEngine makes on the host
// HostFromOptions gives.
func Factory(newEngine func(Host) engine.Engine) engine.Factory {
	return func(opts engine.Options) (engine.Engine, error) {
		h, err := HostFromOptions(opts)
		if err != nil {
			return nil, err
		}
		return newEngine(h), nil
	}
}

// HostFromOptions is the host of an engine a worker makes: logging to the
// worker's logger, in berth's own sandbox with the network exceptions the
// executor handed down (sandbox.AllowedNetworksEnv: comma-separated CIDRs)
// and the way of running slirp4netns it asked for (workerpb.SlirpInPlaceEnv).
func HostFromOptions(opts engine.Options) (Host, error) {
	h := Host{Logger: opts.Logger}
	if v := opts.Getenv(workerpb.SlirpInPlaceEnv); v != "" {
		inPlace, err := strconv.ParseBool(v)
		if err != nil {
			return Host{}, fmt.Errorf("%s: %w", workerpb.SlirpInPlaceEnv, err)
		}
		h.Sandbox.SlirpInPlace = inPlace
	}
	if v := opts.Getenv(sandbox.AllowedNetworksEnv); v != "" {
		allowed, err := egress.ParseList(v)
		if err != nil {
			return Host{}, fmt.Errorf("%s: %w", sandbox.AllowedNetworksEnv, err)
		}
		h.Sandbox.AllowedNetworks = allowed
	}
	return h, nil
}

// AuthFile is a build's registry auth file (containers-auth.json), which
// holds berth's registry credentials only while With runs.
type AuthFile struct {
	// Engine names the engine in errors.
	Engine string
	// Path is where the file is written.
	Path string
	// Registry is berth's registry, whose credentials the file holds.
	Registry engine.Registry
	// Logger receives the failure to remove the file.
	Logger *slog.Logger
}

// With writes the auth file for berth's registry, runs fn and removes the
// file: it exists only while a pull or push runs, never while a RUN step
// does. Images elsewhere are pulled anonymously.
func (a AuthFile) With(ctx context.Context, fn func() error) error {
	reg := a.Registry
	auths := map[string]any{}
	if reg.Host != "" {
		user, pass, err := reg.Login(ctx)
		if err != nil {
			return fmt.Errorf("%s: registry credentials: %w", a.Engine, err)
		}
		if user != "" {
			auths[reg.Host] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
		}
	}
	authJSON, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		return fmt.Errorf("%s: auth file: %w", a.Engine, err)
	}
	if err := os.WriteFile(a.Path, authJSON, 0o600); err != nil {
		return fmt.Errorf("%s: write auth file: %w", a.Engine, err)
	}
	defer func() {
		if err := os.Remove(a.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.Logger.Error("remove auth file", "err", err)
		}
	}()
	return fn()
}

// BaseImageError is the user's error for a base image img that cannot be
// pulled with the credentials of pullRobot (none: anonymously); detail is
// the puller's last line of output, err its failure.
func BaseImageError(img, pullRobot, detail string, err error) error {
	msg := fmt.Sprintf("the base image %s cannot be pulled: it does not exist or is not readable", img)
	if pullRobot != "" {
		msg += fmt.Sprintf(" with the credentials of the pull robot %s; check the image name and that %s may read it", pullRobot, pullRobot)
	} else {
		msg += "; check the image name, and for a private image set pull_robot to a robot account that may read it"
	}
	if detail != "" {
		msg += " (" + detail + ")"
	}
	return &engine.UserError{Code: engine.CodeBaseImage, Message: msg, Err: err}
}

// PushError explains a failed push to tag by engine name: the end of ctx
// when it ended; the user's error when the pusher's output out tells of a
// refusal; else err, with detail (out's last line).
func PushError(ctx context.Context, name, tag, out, detail string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	low := strings.ToLower(out)
	if strings.Contains(low, "denied") || strings.Contains(low, "unauthorized") || strings.Contains(low, "authentication required") {
		return &engine.UserError{Code: engine.CodePush, Message: fmt.Sprintf("pushing %s was denied (%s)", tag, detail), Err: err}
	}
	return fmt.Errorf("%s: push %s: %w: %s", name, tag, err, detail)
}

// ReadDigest reads the digest a pull or push wrote to path; what names
// the pull or push in errors.
func ReadDigest(what, path string) (string, error) {
	d, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: read digest: %w", what, err)
	}
	return strings.TrimSpace(string(d)), nil
}

// Preflight checks that the engine's programs and the sandbox's are
// installed and that the sandbox starts on this machine
// (sandbox.Preflight), with its state under dir, scratch space of the
// caller's.
func (s Sandbox) Preflight(ctx context.Context, name string, programs []string, dir string) error {
	cfg, err := s.Config(name, filepath.Join(dir, "sandbox-check"))
	if err != nil {
		return err
	}
	return sandbox.Preflight(ctx, cfg, programs, nil)
}

// State is one build's sandbox: its configuration and the state
// directory NewState made for it, which is not under the build's WorkDir
// or TMPDIR (see buildhost.SandboxStateParent).
type State struct {
	// Dir is the state directory ("" before NewState).
	Dir    string
	Config sandbox.Config
}

// NewState makes the state directory of one build's sandbox and the
// sandbox's configuration with it; State.Remove removes it.
func (s Sandbox) NewState(name string) (State, error) {
	dir, err := os.MkdirTemp(buildhost.SandboxStateParent, "berth-sandbox-")
	if err != nil {
		return State{}, fmt.Errorf("%s: sandbox state dir: %w", name, err)
	}
	cfg, err := s.Config(name, dir)
	if err != nil {
		os.RemoveAll(dir)
		return State{}, err
	}
	return State{Dir: dir, Config: cfg}, nil
}

// Remove removes the state directory (none before NewState), logging a
// failure to log.
func (st State) Remove(log *slog.Logger) {
	if st.Dir == "" {
		return
	}
	if err := os.RemoveAll(st.Dir); err != nil {
		log.Warn("remove sandbox state", "dir", st.Dir, "err", err)
	}
}

// RemoveAll removes paths. Files a rootless build left are owned by
// subordinate ids that only its user namespace may delete, so an
// unprivileged worker runs `rm -rf` in one: unshare is the command that
// enters it (followed by rm's arguments), run with env (nil: this
// process's).
func RemoveAll(ctx context.Context, unshare, env, paths []string) error {
	if os.Geteuid() == 0 {
		var err error
		for _, p := range paths {
			err = errors.Join(err, os.RemoveAll(p))
		}
		return err
	}
	args := append(append(unshare[1:len(unshare):len(unshare)], "rm", "-rf"), paths...)
	cmd := exec.CommandContext(ctx, unshare[0], args...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}
