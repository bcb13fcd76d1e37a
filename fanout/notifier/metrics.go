package notifier

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/fanout/push"
)

// Metrics are the notifier's Prometheus metrics (the names CONTRACT-push-web.md fixes).
type Metrics struct {
	sent         *prometheus.CounterVec
	failed       *prometheus.CounterVec
	retried      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	removed      *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	skipped      prometheus.Counter
	deduplicated prometheus.Counter
	expired      prometheus.Counter
	lag          prometheus.Histogram
	request      *prometheus.HistogramVec
	inFlight     prometheus.Gauge
	pending      prometheus.Gauge
	pages        prometheus.Counter
	presence     prometheus.Histogram
}

// Reasons the failure counters are pre-created with (each provider's words; others appear when seen).
var knownReasons = map[push.Provider][]string{
	push.FCM: {"unavailable", "quota_exceeded", "network", "unregistered", "sender_id_mismatch", "invalid_token",
		"invalid_argument", "unauthenticated", "permission_denied", "third_party_auth_error", "oauth"},
	push.WebPush: {"unavailable", "rate_limited", "network", "gone", "payload_too_large", "vapid_rejected",
		"client_error", "bad_subscription"},
}

// NewMetrics registers on reg:
//
//	livedrops_push_sent_total{provider}                   counter: messages the provider accepted
//	livedrops_push_failed_total{provider,reason}          counter: failed answers, each attempt (retried or not)
//	livedrops_push_retried_total{provider}                counter: messages sent again after a transient failure
//	livedrops_push_dead_lettered_total{provider,reason}   counter: messages parked in the dead-letter stream
//	livedrops_push_devices_removed_total{provider}        counter: devices deleted because the provider said gone
//	livedrops_push_auth_failures_total{provider}          counter: our credentials refused (alert on any increase)
//	livedrops_push_skipped_online_total                   counter: followers not pushed because they were online
//	livedrops_push_deduplicated_total                     counter: devices already notified of the event (redelivery)
//	livedrops_push_expired_total                          counter: messages dropped because the drop had ended
//	livedrops_push_lag_seconds                            histogram: event ts → the provider's acceptance
//	livedrops_push_request_duration_seconds{provider}     histogram: one provider request
//	livedrops_push_in_flight                              gauge: provider requests in flight
//	livedrops_push_jobs_pending                           gauge: page jobs waiting or in progress (all workers)
//	livedrops_push_pages_total                            counter: follower pages processed
//	livedrops_push_presence_seconds                       histogram: one page's presence check
//
// provider is fcm or webpush; reason a fixed word of the provider package.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns, sub = "livedrops", "push"
	lagBuckets := []float64{.1, .25, .5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800}
	m := &Metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "sent_total",
			Help: "Push messages the provider accepted."}, []string{"provider"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "failed_total",
			Help: "Failed provider answers (every attempt), by reason."}, []string{"provider", "reason"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "retried_total",
			Help: "Push messages sent again after a transient failure."}, []string{"provider"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dead_lettered_total",
			Help: "Push messages given up on and parked in the dead-letter stream, by reason."}, []string{"provider", "reason"}),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "devices_removed_total",
			Help: "Devices deleted because the provider reported them gone."}, []string{"provider"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "auth_failures_total",
			Help: "Answers refusing our own credentials (OAuth token, service account, VAPID key): alert on any."}, []string{"provider"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "skipped_online_total",
			Help: "Followers not pushed because they had a socket open (at the page's check, or just before the send)."}),
		deduplicated: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "deduplicated_total",
			Help: "Devices already notified of the event when a job ran again."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "expired_total",
			Help: "Push messages dropped unsent because the drop had ended."}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "lag_seconds",
			Buckets: lagBuckets, Help: "Time from the event's ts to the provider's acceptance of the push."}),
		request: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "request_duration_seconds",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
			Help:    "Duration of one request to the provider."}, []string{"provider"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "in_flight",
			Help: "Provider requests in flight in this process."}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "jobs_pending",
			Help: "Push jobs (splits and follower pages) waiting or in progress, over all workers."}),
		pages: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pages_total",
			Help: "Follower pages processed by this process."}),
		presence: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "presence_seconds",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
			Help:    "Duration of one page's presence check in Redis."}),
	}
	for _, p := range push.Providers {
		pv := string(p)
		m.sent.WithLabelValues(pv)
		m.retried.WithLabelValues(pv)
		m.removed.WithLabelValues(pv)
		m.authFailures.WithLabelValues(pv)
		m.request.WithLabelValues(pv)
		for _, r := range knownReasons[p] {
			m.failed.WithLabelValues(pv, r)
		}
		for _, r := range []string{"max_attempts", "invalid_argument", "payload_too_large", "vapid_rejected", "client_error"} {
			m.deadLettered.WithLabelValues(pv, r)
		}
	}
	for _, c := range []prometheus.Collector{m.sent, m.failed, m.retried, m.deadLettered, m.removed, m.authFailures,
		m.skipped, m.deduplicated, m.expired, m.lag, m.request, m.inFlight, m.pending, m.pages, m.presence} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("notifier: register metrics: %w", err)
		}
	}
	return m, nil
}
