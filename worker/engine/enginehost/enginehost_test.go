package enginehost

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/sandbox"
)

func TestHostFromOptions(t *testing.T) {
	env := func(v string) engine.Options {
		return engine.Options{Logger: slog.Default(), Getenv: func(k string) string {
			if k == sandbox.AllowedNetworksEnv {
				return v
			}
			return ""
		}}
	}
	h, err := HostFromOptions(env("10.30.0.0/24,192.168.7.7"))
	if err != nil {
		t.Fatal(err)
	}
	if h.Logger != slog.Default() {
		t.Errorf("logger = %v, want the worker's", h.Logger)
	}
	if got := egress.FormatNetworks(h.Sandbox.AllowedNetworks); got != "10.30.0.0/24,192.168.7.7/32" {
		t.Errorf("allowed networks = %s", got)
	}
	if h, err := HostFromOptions(env("")); err != nil || len(h.Sandbox.AllowedNetworks) != 0 {
		t.Errorf("without exceptions: %v, %v", h, err)
	}
	if _, err := HostFromOptions(env("not-a-network")); err == nil || !strings.Contains(err.Error(), sandbox.AllowedNetworksEnv) {
		t.Errorf("a bad exception = %v, want an error naming %s", err, sandbox.AllowedNetworksEnv)
	}
}

// The zero Sandbox runs this executable's sandbox-init; a given Init and
// RootlessKit are kept.
func TestSandboxConfig(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Sandbox{}.Config("test", "/state")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Init) != 2 || c.Init[0] != self || c.Init[1] != "sandbox-init" || c.StateDir != "/state" {
		t.Errorf("default config = %+v", c)
	}
	c, err = Sandbox{Init: []string{"/bin/init"}, RootlessKit: "/bin/kit"}.Config("test", "/s")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Init) != 1 || c.Init[0] != "/bin/init" || c.RootlessKit != "/bin/kit" {
		t.Errorf("config = %+v", c)
	}
}

// The auth file holds the registry's credentials while fn runs and is gone
// after, whether fn fails or not.
func TestAuthFileWith(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	a := AuthFile{Engine: "test", Path: path, Logger: slog.Default(),
		Registry: engine.Registry{Host: "registry.test:5000", Username: "u", Password: "p"}}
	failed := errors.New("pull failed")
	err := a.With(context.Background(), func() error {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Auths map[string]struct{ Auth string } `json:"auths"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		if got := f.Auths["registry.test:5000"].Auth; got != "dTpw" {
			t.Errorf("auth = %q, want base64 of u:p", got)
		}
		return failed
	})
	if !errors.Is(err, failed) {
		t.Errorf("With = %v, want fn's error", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("auth file after With: %v", err)
	}
	// Without berth's registry the file names no registry.
	a.Registry = engine.Registry{}
	if err := a.With(context.Background(), func() error {
		data, _ := os.ReadFile(path)
		if string(data) != `{"auths":{}}` {
			t.Errorf("anonymous auth file = %s", data)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestBaseImageError(t *testing.T) {
	cause := errors.New("exit status 1")
	err := BaseImageError("r/app:1", "acme+puller", "manifest unknown", cause)
	var ue *engine.UserError
	if !errors.As(err, &ue) || ue.Code != engine.CodeBaseImage || !errors.Is(err, cause) {
		t.Fatalf("error = %#v", err)
	}
	for _, want := range []string{"r/app:1", "pull robot acme+puller", "(manifest unknown)"} {
		if !strings.Contains(ue.Message, want) {
			t.Errorf("message %q lacks %q", ue.Message, want)
		}
	}
	ue = BaseImageError("r/app:1", "", "", cause).(*engine.UserError)
	if !strings.Contains(ue.Message, "set pull_robot") || strings.Contains(ue.Message, "(") {
		t.Errorf("message without a robot or detail = %q", ue.Message)
	}
}

// A worker's engine is made on the host its options give, or not at all.
func TestFactory(t *testing.T) {
	type made struct{ engine.Engine }
	var got Host
	factory := Factory(func(h Host) engine.Engine { got = h; return made{} })
	env := map[string]string{sandbox.AllowedNetworksEnv: "10.1.0.0/16", workerpb.SlirpInPlaceEnv: "true"}
	opts := engine.Options{Logger: slog.Default(), Getenv: func(k string) string { return env[k] }}
	if e, err := factory(opts); err != nil || e == nil || egress.FormatNetworks(got.Sandbox.AllowedNetworks) != "10.1.0.0/16" || !got.Sandbox.SlirpInPlace {
		t.Errorf("factory = %v, %v on %+v", e, err, got)
	}
	for k, bad := range map[string]string{sandbox.AllowedNetworksEnv: "not-a-network", workerpb.SlirpInPlaceEnv: "maybe"} {
		env = map[string]string{k: bad}
		if e, err := factory(opts); err == nil || e != nil {
			t.Errorf("with %s=%s: %v, %v", k, bad, e, err)
		}
	}
}

func TestPushError(t *testing.T) {
	cause := errors.New("exit status 1")
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := PushError(ended, "test", "r/app:1", "denied", "denied", cause); !errors.Is(err, context.Canceled) {
		t.Errorf("after the context ended: %v", err)
	}
	var ue *engine.UserError
	err := PushError(context.Background(), "test", "r/app:1", "Error: Unauthorized\n", "unauthorized", cause)
	if !errors.As(err, &ue) || ue.Code != engine.CodePush || ue.Message != "pushing r/app:1 was denied (unauthorized)" || !errors.Is(err, cause) {
		t.Errorf("refused push: %#v", err)
	}
	err = PushError(context.Background(), "test", "r/app:1", "connection refused", "connection refused", cause)
	if errors.As(err, &ue) || !errors.Is(err, cause) || err.Error() != "test: push r/app:1: exit status 1: connection refused" {
		t.Errorf("failed push: %v", err)
	}
}

func TestReadDigest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "digest")
	if err := os.WriteFile(path, []byte("sha256:abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if d, err := ReadDigest("test", path); d != "sha256:abc" || err != nil {
		t.Errorf("ReadDigest = %q, %v", d, err)
	}
	if _, err := ReadDigest("test", path+"-missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing digest file: %v", err)
	}
}

// A build's sandbox state is a directory of its own, which Remove
// removes.
func TestNewState(t *testing.T) {
	st, err := Sandbox{Init: []string{"/bin/init"}}.NewState("test")
	if err != nil {
		t.Fatal(err)
	}
	if st.Config.StateDir != st.Dir || !strings.HasPrefix(filepath.Base(st.Dir), "berth-sandbox-") {
		t.Errorf("state %+v", st)
	}
	if fi, err := os.Stat(st.Dir); err != nil || !fi.IsDir() {
		t.Fatalf("state dir: %v", err)
	}
	st.Remove(slog.Default())
	if _, err := os.Stat(st.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Remove: %v", err)
	}
	State{}.Remove(slog.Default())
}

// As root RemoveAll removes the paths itself; unprivileged it runs rm
// after the unshare command (env here: it only passes on its arguments).
func TestRemoveAll(t *testing.T) {
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}
	for _, p := range paths {
		if err := os.MkdirAll(filepath.Join(p, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveAll(context.Background(), []string{"env"}, os.Environ(), paths); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after RemoveAll: %v", p, err)
		}
	}
	if os.Geteuid() != 0 {
		err := RemoveAll(context.Background(), []string{"sh", "-c", "echo refused >&2; exit 3", "sh"}, nil, paths)
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("a failing unshare: %v", err)
		}
	}
}
