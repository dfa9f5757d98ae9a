package buildmanager

import (
	"fmt"
	"net"
	"time"

	"github.com/berth-dev/berth/buildmanager/queue"
	"github.com/berth-dev/berth/buildmanager/workerpb"
)

// Config is the parsed BUILD_MANAGER key of config.yaml, Quay's shape:
//
//	BUILD_MANAGER:
//	- ephemeral
//	- ALLOWED_WORKER_COUNT: 1
//	  ORCHESTRATOR_PREFIX: buildman/production/
//	  ORCHESTRATOR: {REDIS_HOST: redis:6379, REDIS_PASSWORD: ..., REDIS_SSL: false}
//	  EXECUTORS:
//	  - {EXECUTOR: local, SETUP_TIME: 60, MINIMUM_RETRY_THRESHOLD: 0}
//	  - {EXECUTOR: local, NAME: kit, ENGINE: buildkit}  # berth: the build engine (buildah)
//	  BUILD_TIME_LIMIT: 3600              # berth: seconds a build may run
//	  MAXIMUM_QUEUED_BUILDS_COUNT: 0      # berth: unfinished builds per namespace (0: no limit)
//	  BUILD_LOG_MAX_BYTES: 10485760       # berth: output bytes kept per build log
//	  BUILD_LOG_MAX_LINES: 100000         # berth: lines kept per build log
//	  BUILD_LOG_MAX_LINE_BYTES: 65536     # berth: longer lines are cut
//	  WORKER_GRPC_LISTEN: ":55443"        # berth: where workers reach the manager (default loopback, any port)
type Config struct {
	AllowedWorkerCount int
	OrchestratorPrefix string
	// Redis is nil when no ORCHESTRATOR is configured: use the embedded server.
	Redis                 *queue.RedisConfig
	Executors             []ExecutorConfig
	TimeLimit             time.Duration
	MaxQueuedPerNamespace int
	LogLimits             LogLimits
	// WorkerListen is WORKER_GRPC_LISTEN: where the manager serves its
	// workers' gRPC ("": an ephemeral loopback port).
	WorkerListen string
}

// ExecutorConfig is one EXECUTORS entry. Params holds every key of the
// entry for the executor's own constructor.
type ExecutorConfig struct {
	// Kind is EXECUTOR ("local", "kubernetes", ...).
	Kind string
	// Name is NAME, or Kind when absent.
	Name                  string
	SetupTime             time.Duration
	MinimumRetryThreshold int
	// Engine is ENGINE, the build engine of the builds this executor runs
	// unless a build names its own (workerpb.Engines; default buildah).
	Engine string
	Params map[string]any
}

// ParseConfig reads the BUILD_MANAGER value (nil: defaults, one local
// executor and the embedded Redis).
func ParseConfig(raw any) (*Config, error) {
	c := &Config{AllowedWorkerCount: 1, TimeLimit: DefaultTimeLimit, LogLimits: LogLimits{}.withDefaults()}
	if raw == nil {
		c.Executors = []ExecutorConfig{{Kind: "local", Name: "local", Engine: workerpb.DefaultEngine, Params: map[string]any{}}}
		return c, nil
	}
	pair, ok := raw.([]any)
	if !ok || len(pair) != 2 {
		return nil, fmt.Errorf("BUILD_MANAGER: want [\"ephemeral\", {settings}]")
	}
	if kind, _ := pair[0].(string); kind != "ephemeral" {
		return nil, fmt.Errorf("BUILD_MANAGER: unsupported manager %v (only ephemeral)", pair[0])
	}
	m, ok := pair[1].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("BUILD_MANAGER[1]: want a map of settings")
	}
	var err error
	if c.AllowedWorkerCount, err = intKey(m, "ALLOWED_WORKER_COUNT", 1); err != nil {
		return nil, err
	}
	if c.AllowedWorkerCount < 1 {
		return nil, fmt.Errorf("BUILD_MANAGER: ALLOWED_WORKER_COUNT must be at least 1")
	}
	if v, ok := m["ORCHESTRATOR_PREFIX"]; ok {
		if c.OrchestratorPrefix, ok = v.(string); !ok {
			return nil, fmt.Errorf("BUILD_MANAGER: ORCHESTRATOR_PREFIX must be a string")
		}
	}
	secs, err := intKey(m, "BUILD_TIME_LIMIT", int(DefaultTimeLimit/time.Second))
	if err != nil {
		return nil, err
	}
	c.TimeLimit = time.Duration(secs) * time.Second
	if c.MaxQueuedPerNamespace, err = intKey(m, "MAXIMUM_QUEUED_BUILDS_COUNT", 0); err != nil {
		return nil, err
	}
	maxBytes, err := intKey(m, "BUILD_LOG_MAX_BYTES", DefaultLogMaxBytes)
	if err != nil {
		return nil, err
	}
	c.LogLimits.MaxBytes = int64(maxBytes)
	if c.LogLimits.MaxLines, err = intKey(m, "BUILD_LOG_MAX_LINES", DefaultLogMaxLines); err != nil {
		return nil, err
	}
	if c.LogLimits.MaxLineBytes, err = intKey(m, "BUILD_LOG_MAX_LINE_BYTES", DefaultLogMaxLineBytes); err != nil {
		return nil, err
	}
	if c.LogLimits.MaxBytes < 1 || c.LogLimits.MaxLines < 1 || c.LogLimits.MaxLineBytes < 1 {
		return nil, fmt.Errorf("BUILD_MANAGER: BUILD_LOG_MAX_BYTES, BUILD_LOG_MAX_LINES and BUILD_LOG_MAX_LINE_BYTES must be at least 1")
	}
	if v, ok := m["WORKER_GRPC_LISTEN"]; ok && v != nil {
		addr, isStr := v.(string)
		if _, _, err := net.SplitHostPort(addr); !isStr || err != nil {
			return nil, fmt.Errorf("BUILD_MANAGER: WORKER_GRPC_LISTEN must be host:port (\":55443\" for every address), got %v", v)
		}
		c.WorkerListen = addr
	}
	if o, ok := m["ORCHESTRATOR"]; ok && o != nil {
		om, ok := o.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("BUILD_MANAGER: ORCHESTRATOR must be a map")
		}
		host, _ := om["REDIS_HOST"].(string)
		if host == "" {
			return nil, fmt.Errorf("BUILD_MANAGER: ORCHESTRATOR needs REDIS_HOST")
		}
		pw, _ := om["REDIS_PASSWORD"].(string)
		ssl, _ := om["REDIS_SSL"].(bool)
		c.Redis = &queue.RedisConfig{Host: host, Password: pw, SSL: ssl}
	}
	list, _ := m["EXECUTORS"].([]any)
	names := map[string]bool{}
	for i, e := range list {
		em, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("BUILD_MANAGER: EXECUTORS[%d] must be a map", i)
		}
		x := ExecutorConfig{Params: em}
		x.Kind, _ = em["EXECUTOR"].(string)
		if x.Kind == "" {
			return nil, fmt.Errorf("BUILD_MANAGER: EXECUTORS[%d] needs EXECUTOR", i)
		}
		x.Name, _ = em["NAME"].(string)
		if x.Name == "" {
			x.Name = x.Kind
		}
		if names[x.Name] {
			return nil, fmt.Errorf("BUILD_MANAGER: two executors are named %q (set NAME)", x.Name)
		}
		names[x.Name] = true
		setup, err := intKey(em, "SETUP_TIME", 0)
		if err != nil {
			return nil, fmt.Errorf("EXECUTORS[%d]: %w", i, err)
		}
		x.SetupTime = time.Duration(setup) * time.Second
		if x.MinimumRetryThreshold, err = intKey(em, "MINIMUM_RETRY_THRESHOLD", 0); err != nil {
			return nil, fmt.Errorf("EXECUTORS[%d]: %w", i, err)
		}
		if x.Engine, err = workerpb.ParseEngine(em); err != nil {
			return nil, fmt.Errorf("BUILD_MANAGER: EXECUTORS[%d] (%s): %w", i, x.Name, err)
		}
		c.Executors = append(c.Executors, x)
	}
	if len(c.Executors) == 0 {
		c.Executors = []ExecutorConfig{{Kind: "local", Name: "local", Engine: workerpb.DefaultEngine, Params: map[string]any{}}}
	}
	return c, nil
}

func intKey(m map[string]any, key string, def int) (int, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return def, nil
	}
	n, ok := v.(int)
	if !ok || n < 0 {
		return 0, fmt.Errorf("BUILD_MANAGER: %s must be a whole number >= 0, got %v", key, v)
	}
	return n, nil
}
