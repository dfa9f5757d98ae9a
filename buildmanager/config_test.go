package buildmanager

import (
	"fmt"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseConfig(t *testing.T) {
	var raw map[string]any
	err := yaml.Unmarshal([]byte(`
BUILD_MANAGER:
- ephemeral
- ALLOWED_WORKER_COUNT: 2
  ORCHESTRATOR_PREFIX: buildman/prod/
  ORCHESTRATOR:
    REDIS_HOST: redis.example:6380
    REDIS_PASSWORD: pw
    REDIS_SSL: true
  BUILD_TIME_LIMIT: 600
  BUILD_LOG_MAX_BYTES: 1048576
  BUILD_LOG_MAX_LINES: 5000
  BUILD_LOG_MAX_LINE_BYTES: 4096
  EXECUTORS:
  - EXECUTOR: kubernetes
    SETUP_TIME: 180
    MINIMUM_RETRY_THRESHOLD: 1
    BUILDER_NAMESPACE: builder
  - EXECUTOR: local
    ENGINE: buildkit
`), &raw)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig(raw["BUILD_MANAGER"])
	if err != nil {
		t.Fatal(err)
	}
	if c.AllowedWorkerCount != 2 || c.OrchestratorPrefix != "buildman/prod/" || c.TimeLimit != 10*time.Minute {
		t.Errorf("config %+v", c)
	}
	if want := (LogLimits{MaxBytes: 1 << 20, MaxLines: 5000, MaxLineBytes: 4096}); c.LogLimits != want {
		t.Errorf("log limits %+v, want %+v", c.LogLimits, want)
	}
	if c.Redis == nil || c.Redis.Host != "redis.example:6380" || c.Redis.Password != "pw" || !c.Redis.SSL {
		t.Errorf("redis %+v", c.Redis)
	}
	if len(c.Executors) != 2 || c.Executors[0].Name != "kubernetes" || c.Executors[0].SetupTime != 3*time.Minute ||
		c.Executors[0].MinimumRetryThreshold != 1 || c.Executors[0].Params["BUILDER_NAMESPACE"] != "builder" || c.Executors[1].Kind != "local" ||
		c.Executors[0].Engine != "buildah" || c.Executors[1].Engine != "buildkit" {
		t.Errorf("executors %+v", c.Executors)
	}

	d, err := ParseConfig(nil)
	if err != nil || d.Redis != nil || d.AllowedWorkerCount != 1 || len(d.Executors) != 1 || d.Executors[0].Kind != "local" ||
		d.Executors[0].Engine != "buildah" {
		t.Errorf("defaults %+v, %v", d, err)
	}
	if want := (LogLimits{MaxBytes: DefaultLogMaxBytes, MaxLines: DefaultLogMaxLines, MaxLineBytes: DefaultLogMaxLineBytes}); d.LogLimits != want {
		t.Errorf("default log limits %+v", d.LogLimits)
	}
	for _, bad := range []any{"ephemeral", []any{"external", map[string]any{}}, []any{"ephemeral", map[string]any{"ALLOWED_WORKER_COUNT": "x"}},
		[]any{"ephemeral", map[string]any{"BUILD_LOG_MAX_LINES": 0}},
		[]any{"ephemeral", map[string]any{"EXECUTORS": []any{map[string]any{"EXECUTOR": "local"}, map[string]any{"EXECUTOR": "local"}}}}} {
		if _, err := ParseConfig(bad); err == nil {
			t.Errorf("ParseConfig(%v) accepted", bad)
		}
	}
}

// An executor's ENGINE is buildah or buildkit; anything else stops the
// server with the key, the executor and the allowed values.
func TestParseConfigEngine(t *testing.T) {
	for _, bad := range []any{"kaniko", "", "BuildKit", 1, []any{"buildah"}} {
		_, err := ParseConfig([]any{"ephemeral", map[string]any{"EXECUTORS": []any{
			map[string]any{"EXECUTOR": "local"},
			map[string]any{"EXECUTOR": "local", "NAME": "kit", "ENGINE": bad},
		}}})
		want := "BUILD_MANAGER: EXECUTORS[1] (kit): ENGINE must be one of buildah, buildkit, not " + fmt.Sprint(bad)
		if err == nil || err.Error() != want {
			t.Errorf("ENGINE %#v: err = %v, want %q", bad, err, want)
		}
	}
}
