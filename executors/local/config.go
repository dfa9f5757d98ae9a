package local

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/executors"
)

func init() {
	executors.Register(Kind, open)
	executors.Register("popen", open) // Quay's name for it
}

// open is the local executor's executors.Factory.
func open(ctx context.Context, name string, params map[string]any, deps executors.Deps) (executors.Executor, error) {
	cfg, err := ConfigFromMap(params, deps.DataDir)
	if err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = name
	}
	cfg.Logger = deps.Logger
	maps.Copy(cfg.Env, deps.WorkerEnv)
	// One build user per build that may run at once.
	cfg.Users = deps.MaxWorkers
	ex, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return ex, nil
}

// ConfigFromMap reads one entry of config.yaml's EXECUTORS list whose
// EXECUTOR is "local" (Quay's "popen"). Keys:
//
//	NAME                     executor name
//	WORKER_USER_PREFIX       names of the build users (default berth-build-: berth-build-1, …)
//	BUILD_ROOT               per-build directories (outside --data-dir)
//	BUILDER_BINARY_LOCATION  worker binary, run as "<it> worker" (Quay's key)
//	WORKER_COMMAND           full worker command line, a list (wins over the above)
//	MAX_LIFETIME_S           worker lifetime bound, seconds (Quay's key; 10800)
//	STOP_GRACE_S             SIGTERM to SIGKILL, seconds (10)
//	STORAGE_DRIVER           STORAGE_DRIVER for the worker (vfs)
//	HTTP_PROXY, HTTPS_PROXY, NO_PROXY  passed to the worker (Quay's keys)
//	ENV                      extra worker environment, a map
//	ENGINE                   build engine of this executor's workers: buildah (default) or buildkit
//
// Scheduling keys (SETUP_TIME, MINIMUM_RETRY_THRESHOLD, ...) belong to the
// build manager and are ignored here. dataDir is the server's --data-dir.
func ConfigFromMap(m map[string]any, dataDir string) (Config, error) {
	c := Config{DataDir: dataDir, Env: map[string]string{}}
	var err error
	str := func(key string, dst *string) {
		if v, ok := m[key]; ok && err == nil {
			s, isStr := v.(string)
			if !isStr {
				err = fmt.Errorf("local executor config: %s must be a string, not %T", key, v)
				return
			}
			*dst = s
		}
	}
	seconds := func(key string, dst *time.Duration) {
		v, ok := m[key]
		if !ok || err != nil {
			return
		}
		var n float64
		switch x := v.(type) {
		case int:
			n = float64(x)
		case int64:
			n = float64(x)
		case float64:
			n = x
		default:
			err = fmt.Errorf("local executor config: %s must be a number of seconds, not %T", key, v)
			return
		}
		if n <= 0 {
			err = fmt.Errorf("local executor config: %s must be positive", key)
			return
		}
		*dst = time.Duration(n * float64(time.Second))
	}
	str("NAME", &c.Name)
	if _, ok := m["WORKER_USER"]; ok {
		return Config{}, fmt.Errorf("local executor config: WORKER_USER is gone: every build runs as a user of its own; WORKER_USER_PREFIX names them")
	}
	str("WORKER_USER_PREFIX", &c.UserPrefix)
	str("BUILD_ROOT", &c.BuildRoot)
	str("STORAGE_DRIVER", &c.StorageDriver)
	var binary string
	str("BUILDER_BINARY_LOCATION", &binary)
	if binary != "" {
		c.Command = []string{binary, "worker"}
	}
	seconds("MAX_LIFETIME_S", &c.MaxLifetime)
	seconds("STOP_GRACE_S", &c.StopGrace)
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"} {
		var v string
		str(k, &v)
		if v != "" {
			c.Env[k] = v
		}
	}
	if err != nil {
		return Config{}, err
	}
	if v, ok := m["WORKER_COMMAND"]; ok {
		list, isList := v.([]any)
		if !isList || len(list) == 0 {
			return Config{}, fmt.Errorf("local executor config: WORKER_COMMAND must be a non-empty list")
		}
		c.Command = nil
		for _, a := range list {
			s, isStr := a.(string)
			if !isStr {
				return Config{}, fmt.Errorf("local executor config: WORKER_COMMAND entries must be strings, not %T", a)
			}
			c.Command = append(c.Command, s)
		}
	}
	if c.Engine, err = workerpb.ParseEngine(m); err != nil {
		return Config{}, fmt.Errorf("local executor config: %w", err)
	}
	if v, ok := m["ENV"]; ok {
		env, isMap := v.(map[string]any)
		if !isMap {
			return Config{}, fmt.Errorf("local executor config: ENV must be a map, not %T", v)
		}
		for k, val := range env {
			c.Env[k] = fmt.Sprint(val)
		}
	}
	return c, nil
}
