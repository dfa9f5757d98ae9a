package local

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
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
		MaxLifetime: 2 * time.Hour, StopGrace: 2500 * time.Millisecond,
		Env: map[string]string{"HTTPS_PROXY": "http://proxy:3128", "GODEBUG": "x=1", "RETRIES": "3"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("ConfigFromMap =\n%+v\nwant\n%+v", c, want)
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
	} {
		if _, err := ConfigFromMap(m, ""); err == nil || !strings.Contains(err.Error(), "local executor config") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
