package relay

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/fanout"
)

// Metrics are the relay's and the scheduler's Prometheus metrics. Build them once with NewMetrics and
// give the same value to Config.Metrics and SchedulerConfig.Metrics.
type Metrics struct {
	backlog     prometheus.Gauge
	leader      prometheus.Gauge
	latency     prometheus.Histogram
	published   *prometheus.CounterVec
	coalesced   *prometheus.CounterVec
	parked      *prometheus.CounterVec
	failures    *prometheus.CounterVec
	requeued    prometheus.Counter
	adopted     prometheus.Counter
	pruned      prometheus.Counter
	recoveries  prometheus.Counter
	schedLag    *prometheus.HistogramVec
	transitions *prometheus.CounterVec
}

// NewMetrics registers on reg:
//
//	livedrops_outbox_backlog                         gauge: pending outbox rows (set by the leading relay, 0 elsewhere)
//	livedrops_relay_leader                           gauge: 1 while this process's relay publishes
//	livedrops_relay_publish_latency_seconds          histogram: outbox row written → stream acknowledgement
//	livedrops_relay_published_total{type}            counter: events published
//	livedrops_relay_coalesced_total{type}            counter: superseded stock.changed rows never sent
//	livedrops_relay_parked_total{type}               counter: rows given up on
//	livedrops_relay_publish_failures_total{reason}   counter: failed publications (rejected, transient)
//	livedrops_relay_recoveries_total                 counter: checks of the stream against the outbox
//	livedrops_relay_requeued_total                   counter: rows published again because the stream lost them
//	livedrops_relay_adopted_total                    counter: rows found in the stream but not marked
//	livedrops_relay_pruned_total                     counter: old rows deleted
//	livedrops_scheduler_lag_seconds{transition}      histogram: start_time (end_time) → its transition committed
//	livedrops_scheduler_transitions_total{transition} counter: drops started or ended by this process
//
// Labels are bounded: type is one of the nine event types, reason and transition are fixed words.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	latencyBuckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	m := newMetrics(latencyBuckets)
	for _, c := range []prometheus.Collector{m.backlog, m.leader, m.latency, m.published, m.coalesced,
		m.parked, m.failures, m.requeued, m.adopted, m.pruned, m.recoveries, m.schedLag, m.transitions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("relay: register metrics: %w", err)
		}
	}
	return m, nil
}

func newMetrics(buckets []float64) *Metrics {
	const ns = "livedrops"
	m := &Metrics{
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "outbox", Name: "backlog",
			Help: "Outbox rows waiting for publication, as the leading relay last counted them (0 on other processes)."}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "relay", Name: "leader",
			Help: "1 while this process's outbox relay is the one publishing."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: "relay",
			Name: "publish_latency_seconds", Buckets: buckets,
			Help: "Time from an outbox row's insertion to the stream's acknowledgement of its event."}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "relay",
			Name: "published_total", Help: "Events published to the stream, by type."}, []string{"type"}),
		coalesced: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "relay",
			Name: "coalesced_total", Help: "Events superseded by a newer one of the same drop and never sent, by type."}, []string{"type"}),
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "relay",
			Name: "parked_total", Help: "Outbox rows given up on (undecodable, or refused by the stream too often), by type."}, []string{"type"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "relay",
			Name: "publish_failures_total", Help: "Failed publications: rejected (the message itself) or transient."}, []string{"reason"}),
		recoveries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "relay",
			Name: "recoveries_total", Help: "Checks of the stream's tail against the outbox (at leadership and after NATS reconnects)."}),
		requeued: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "relay",
			Name: "requeued_total", Help: "Published rows queued again because the stream had lost them."}),
		adopted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "relay",
			Name: "adopted_total", Help: "Rows the stream held but the outbox had not marked, marked without publishing again."}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "relay",
			Name: "pruned_total", Help: "Published or parked outbox rows deleted after the replay window."}),
		schedLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "scheduler",
			Name: "lag_seconds", Buckets: buckets,
			Help: "Time from a drop's start_time (end_time) to the commit of its start (end), by transition."}, []string{"transition"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "scheduler",
			Name: "transitions_total", Help: "Drops this process started or ended, by transition."}, []string{"transition"}),
	}
	// Every known label value exists at 0 from the start, so rules and dashboards see the series
	// before the first event of its kind.
	for _, t := range []fanout.Type{fanout.DropScheduled, fanout.DropStarted, fanout.StockChanged, fanout.StockLow,
		fanout.DropSoldOut, fanout.DropEnded, fanout.OrderConfirmed, fanout.OrderFailed, fanout.FollowChanged} {
		m.published.WithLabelValues(string(t))
		m.parked.WithLabelValues(string(t))
	}
	m.coalesced.WithLabelValues(string(fanout.StockChanged))
	m.failures.WithLabelValues("transient")
	m.failures.WithLabelValues("rejected")
	for _, tr := range []string{"start", "end"} {
		m.schedLag.WithLabelValues(tr)
		m.transitions.WithLabelValues(tr)
	}
	return m
}

// orDiscard returns m, or metrics registered nowhere when m is nil.
func (m *Metrics) orDiscard() *Metrics {
	if m != nil {
		return m
	}
	return newMetrics(prometheus.DefBuckets)
}
