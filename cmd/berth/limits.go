package main

import (
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/slowbody"
	"github.com/berth-dev/berth/registry"
	"github.com/berth-dev/berth/triggers/webhook"
)

// serveLimits are serve's defences against callers that hold resources:
// config keys that belong to no single part.
type serveLimits struct {
	// body paces every request body (REQUEST_BODY_MINIMUM_BYTES_PER_SECOND,
	// REQUEST_BODY_IDLE_TIMEOUT_SECONDS).
	body slowbody.Limits
	// uploadsPerAccount caps one account's blob uploads in flight
	// (MAXIMUM_CONCURRENT_UPLOADS_PER_ACCOUNT; negative: no cap).
	uploadsPerAccount int
	// webhookReplayWindow is how long a delivery's body is remembered to
	// refuse its replays (WEBHOOK_REPLAY_WINDOW_SECONDS; negative: not at
	// all).
	webhookReplayWindow time.Duration
	// metricsListen is METRICS_LISTEN: the address of a listener that
	// serves /metrics and nothing else. Empty: /metrics is on the main
	// listener, for superusers only.
	metricsListen string
}

// readServeLimits reads serveLimits from config.yaml's keys; a key set to
// 0 turns its limit off.
func readServeLimits(raw map[string]any) (serveLimits, error) {
	l := serveLimits{}
	rate, err := config.NonNegativeInt(raw, "REQUEST_BODY_MINIMUM_BYTES_PER_SECOND", slowbody.DefaultMinRate)
	if err != nil {
		return l, err
	}
	idle, err := config.NonNegativeInt(raw, "REQUEST_BODY_IDLE_TIMEOUT_SECONDS", int(slowbody.DefaultIdle/time.Second))
	if err != nil {
		return l, err
	}
	l.body = slowbody.Limits{MinRate: int64(rate), Idle: time.Duration(idle) * time.Second}
	uploads, err := config.NonNegativeInt(raw, "MAXIMUM_CONCURRENT_UPLOADS_PER_ACCOUNT", registry.DefaultMaxUploadsPerAccount)
	if err != nil {
		return l, err
	}
	l.uploadsPerAccount = uploads
	if uploads == 0 {
		l.uploadsPerAccount = -1
	}
	window, err := config.NonNegativeInt(raw, "WEBHOOK_REPLAY_WINDOW_SECONDS", int(webhook.DefaultReplayWindow/time.Second))
	if err != nil {
		return l, err
	}
	l.webhookReplayWindow = time.Duration(window) * time.Second
	if window == 0 {
		l.webhookReplayWindow = -1
	}
	if v, ok := raw["METRICS_LISTEN"]; ok && v != nil {
		s, ok := v.(string)
		if !ok {
			return l, fmt.Errorf("config key METRICS_LISTEN: want an address such as 127.0.0.1:9091, got %v", v)
		}
		l.metricsListen = s
	}
	return l, nil
}
