package local

import (
	"context"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/executors"
)

func TestConfigFromMap(t *testing.T) {
	var doc struct {
		Executors []map[string]any `yaml:"EXECUTORS"`
	}
	src := `
EXECUTORS:
  - EXECUTOR: local
    NAME: here
    SETUP_TIME: 30
    MINIMUM_RETRY_THRESHOLD: 0
    WORKER_USER_PREFIX: builder-
    BUILD_ROOT: /srv/builds
    BUILDER_BINARY_LOCATION: /usr/local/bin/berth
    MAX_LIFETIME_S: 7200
    STOP_GRACE_S: 2.5
    HTTPS_PROXY: http://proxy:3128
    ENV: {GODEBUG: "x=1", RETRIES: 3}
    ENGINE: buildkit
`
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	c, err := ConfigFromMap(doc.Executors[0], "/var/lib/berth")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Name: "here", UserPrefix: "builder-", BuildRoot: "/srv/builds", DataDir: "/var/lib/berth",
		Command:     []string{"/usr/local/bin/berth", "worker"},
		MaxLifetime: 2 * time.Hour, StopGrace: 2500 * time.Millisecond, Engine: "buildkit",
		Env: map[string]string{"HTTPS_PROXY": "http://proxy:3128", "GODEBUG": "x=1", "RETRIES": "3"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("ConfigFromMap =\n%+v\nwant\n%+v", c, want)
	}
	if c, err := ConfigFromMap(map[string]any{"EXECUTOR": "local"}, ""); err != nil || c.Engine != "buildah" {
		t.Errorf("ConfigFromMap without ENGINE: engine %q, %v; want buildah", c.Engine, err)
	}
}

func TestConfigFromMapErrors(t *testing.T) {
	for name, m := range map[string]map[string]any{
		"name type":     {"NAME": 3},
		"lifetime type": {"MAX_LIFETIME_S": "long"},
		"lifetime sign": {"MAX_LIFETIME_S": -1},
		"command":       {"WORKER_COMMAND": "berth worker"},
		"command entry": {"WORKER_COMMAND": []any{"berth", 1}},
		"env":           {"ENV": []any{"A=1"}},
		"old user key":  {"WORKER_USER": "berth-worker"},
		"engine":        {"ENGINE": "kaniko"},
		"engine type":   {"ENGINE": true},
	} {
		if _, err := ConfigFromMap(m, ""); err == nil || !strings.Contains(err.Error(), "local executor config") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestConfigFromMapEngineError(t *testing.T) {
	_, err := ConfigFromMap(map[string]any{"ENGINE": "kaniko"}, "")
	if want := "local executor config: ENGINE must be one of buildah, buildkit, not kaniko"; err == nil || err.Error() != want {
		t.Errorf("ENGINE kaniko: err = %v, want %q", err, want)
	}
}

// EXECUTOR: popen (Quay's name) makes a local executor through the
// registry: its entry's keys, the server's worker environment over the
// entry's ENV, the entry's name, a build user per build that may run.
func TestNewFromEntry(t *testing.T) {
	root, err := os.MkdirTemp("/var/tmp", "berth-builds-entry-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	params := map[string]any{
		"EXECUTOR":                "popen",
		"BUILD_ROOT":              root,
		"BUILDER_BINARY_LOCATION": "/bin/true",
		"ENV":                     map[string]any{"FROM_ENTRY": "entry", "SHARED": "entry"},
	}
	deps := executors.Deps{DataDir: t.TempDir(), WorkerEnv: map[string]string{"SHARED": "server"}, MaxWorkers: 3,
		Logger: slog.New(slog.DiscardHandler)}
	ex, err := executors.New(context.Background(), "popen", "builder", params, deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ex.(executors.Closer).Close(context.Background()) })
	e := ex.(*Executor)
	if e.Name() != "builder" || e.cfg.Users != 3 || e.cfg.BuildRoot != root || e.cfg.Command[0] != "/bin/true" {
		t.Errorf("executor = %+v", e.cfg)
	}
	if e.cfg.Env["FROM_ENTRY"] != "entry" || e.cfg.Env["SHARED"] != "server" {
		t.Errorf("worker env = %v, want the entry's ENV with the server's over it", e.cfg.Env)
	}
	if deps.WorkerEnv["FROM_ENTRY"] != "" {
		t.Error("the factory changed the server's shared worker environment")
	}
}

func TestNewFromEntryErrors(t *testing.T) {
	deps := executors.Deps{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}
	if _, err := executors.New(context.Background(), Kind, "builder", map[string]any{"WORKER_USER": "x"}, deps); err == nil || !strings.Contains(err.Error(), "WORKER_USER") {
		t.Errorf("a bad entry = %v", err)
	}
	if _, err := executors.New(context.Background(), "kubernetes", "k8s", map[string]any{}, deps); err == nil ||
		!strings.Contains(err.Error(), `kind "kubernetes" is not supported`) || !strings.Contains(err.Error(), "local, popen") {
		t.Errorf("an unknown kind = %v, want an error naming it and the kinds built in", err)
	}
}
