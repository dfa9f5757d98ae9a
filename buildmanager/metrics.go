package buildmanager

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the build manager's Prometheus metrics, on a registry of
// their own that the server mounts (or gathers with others) at /metrics.
type metrics struct {
	reg       *prometheus.Registry
	queueTime prometheus.Histogram
	duration  *prometheus.HistogramVec
	failovers *prometheus.CounterVec
	retries   *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		queueTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "berth_build_queue_duration_seconds",
			Help:    "Time from a build being queued to its first worker being scheduled.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_build_duration_seconds",
			Help:    "Time from a build's first scheduling to its end, by result phase and executor.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13),
		}, []string{"result", "executor"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_build_executor_failover_total",
			Help: "Worker starts that failed on an executor, so that the next one was tried.",
		}, []string{"executor"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_build_attempts_failed_total",
			Help: "Build attempts that failed for infrastructure reasons, by outcome (retried or internalerror).",
		}, []string{"outcome"}),
	}
	m.reg.MustRegister(m.queueTime, m.duration, m.failovers, m.retries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Metrics is the registry holding the build manager's metrics (and the Go
// runtime's): serve it with promhttp.HandlerFor.
func (m *Manager) Metrics() *prometheus.Registry { return m.metrics.reg }
