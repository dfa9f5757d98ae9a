package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	regauth "github.com/berth-dev/berth/registry/auth"
)

// superuserMetrics serves metrics on the main listener to superusers only:
// build counts, outcomes and executor names are nobody else's business.
// A scraper authenticates as the registry does: Basic with a superuser's
// password, or "$oauthtoken" and an access token carrying super:user.
func superuserMetrics(metrics http.Handler, authz *regauth.Server, policy *auth.Policy, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := authz.AuthorizeBase(r)
		if err != nil {
			var ce *regauth.ChallengeError
			if errors.As(err, &ce) {
				regauth.WriteChallenge(w, ce)
				return
			}
			log.ErrorContext(r.Context(), "metrics authentication failed", "err", err)
			http.Error(w, "Internal Server Error", http.StatusInternalServerError)
			return
		}
		super, err := policy.IsSuperuser(r.Context(), who)
		if err != nil {
			log.ErrorContext(r.Context(), "metrics authorization failed", "err", err)
			http.Error(w, "Internal Server Error", http.StatusInternalServerError)
			return
		}
		if !super {
			http.Error(w, "metrics are for superusers", http.StatusForbidden)
			return
		}
		metrics.ServeHTTP(w, r)
	})
}

// metricsServer serves /metrics alone on its own listener (METRICS_LISTEN),
// without authentication: the address is meant to be one only the
// monitoring system reaches.
type metricsServer struct {
	srv  *http.Server
	addr net.Addr
	done chan error
}

func startMetricsServer(addr string, metrics http.Handler, log *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("METRICS_LISTEN: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics)
	m := &metricsServer{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		addr: ln.Addr(),
		done: make(chan error, 1),
	}
	go func() { m.done <- m.srv.Serve(ln) }()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return m, nil
}

// stop shuts the listener down, letting a scrape in progress finish.
func (m *metricsServer) stop(ctx context.Context) {
	_ = m.srv.Shutdown(ctx)
	<-m.done
}
