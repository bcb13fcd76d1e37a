package hub

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/fanout"
)

// Reasons a socket ends, the label of livedrops_hub_disconnects_total.
const (
	reasonClient     = "client"      // the client closed or went away
	reasonSlowReader = "slow_reader" // its queue overflowed or its kernel buffer stalled
	reasonWriteError = "write_error"
	reasonKeepAlive  = "keepalive" // no pong in time
	reasonBadFrame   = "bad_frame"
	reasonDrain      = "drain"
	reasonSetup      = "setup_error" // follows could not be loaded
)

// Reasons an event does not reach a socket, the label of livedrops_hub_events_dropped_total.
const (
	dropCoalesced  = "coalesced"   // a newer stock.changed replaced it in a busy socket's queue
	dropSlowReader = "slow_reader" // queued for a socket closed as a slow reader (its client resumes)
	dropClosed     = "closed"      // queued for a socket that closed for another reason
	dropMalformed  = "malformed"   // the bus carried something that is not an event envelope
	dropDuplicate  = "duplicate"   // a live event a resume had already replayed
)

// Reasons a connection is refused, the label of livedrops_hub_refused_total.
const (
	refuseNoToken  = "no_token"
	refuseBadToken = "bad_token"
	refuseOrigin   = "origin"
	refuseOverCap  = "over_cap"
	refuseDraining = "draining"
	refuseBadWatch = "bad_watch"
)

// Outcomes of a resume, the label of livedrops_hub_resumes_total.
const (
	resumeRecovered = "recovered"
	resumeMalformed = "malformed"
	resumeUnknown   = "unknown_id"
	resumeTooOld    = "too_old" // past the window, or longer than ReplayLimit
	resumeError     = "error"
	resumeNoReplay  = "unavailable" // the hub has no replayer
)

// eventTypes are the label values of the per-type series, indexed by typeIndex.
var eventTypes = [...]fanout.Type{
	fanout.DropScheduled, fanout.DropStarted, fanout.StockChanged, fanout.StockLow, fanout.DropSoldOut,
	fanout.DropEnded, fanout.OrderConfirmed, fanout.OrderFailed, fanout.FollowChanged,
}

func typeIndex(t fanout.Type) int {
	for i, et := range eventTypes {
		if et == t {
			return i
		}
	}
	return -1
}

type metrics struct {
	sockets       *prometheus.GaugeVec
	subscriptions prometheus.Gauge
	queued        prometheus.Gauge
	slowSockets   prometheus.Gauge
	received      *prometheus.CounterVec
	written       [len(eventTypes)]prometheus.Counter
	latency       [len(eventTypes)]prometheus.Observer
	dropped       *prometheus.CounterVec
	disconnects   *prometheus.CounterVec
	refused       *prometheus.CounterVec
	resumes       *prometheus.CounterVec
	replayed      prometheus.Counter
	resumeSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "livedrops", "hub"
	m := &metrics{
		sockets: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sockets",
			Help: "Open sockets, by transport (ws, sse)."}, []string{"transport"}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "subscriptions",
			Help: "NATS subjects this hub holds a subscription on."}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "queued_frames",
			Help: "Frames waiting in the queues of busy sockets, all sockets together."}),
		slowSockets: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "slow_sockets",
			Help: "Sockets whose kernel buffer is full, each with a goroutine waiting for its peer."}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_received_total",
			Help: "Events received from the bus, by type."}, []string{"type"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_dropped_total",
			Help: "Event deliveries not written to a socket, by reason."}, []string{"reason"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "disconnects_total",
			Help: "Sockets ended, by reason."}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "refused_total",
			Help: "Connections refused, by reason."}, []string{"reason"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "resumes_total",
			Help: "Resumes asked for, by outcome."}, []string{"outcome"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "replayed_events_total",
			Help: "Events written to sockets by resumes."}),
		resumeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "resume_seconds",
			Help:    "Time to set a resuming socket up: position lookup and replay.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
	}
	written := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_written_total",
		Help: "Events written to sockets, by type."}, []string{"type"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "delivery_seconds",
		Help:    "Time from an event's ts to its write to a socket, by type.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30}}, []string{"type"})
	for i, t := range eventTypes {
		m.written[i] = written.WithLabelValues(string(t))
		m.latency[i] = latency.WithLabelValues(string(t))
		m.received.WithLabelValues(string(t))
	}
	for _, r := range []string{reasonClient, reasonSlowReader, reasonWriteError, reasonKeepAlive, reasonBadFrame, reasonDrain, reasonSetup} {
		m.disconnects.WithLabelValues(r)
	}
	for _, r := range []string{dropCoalesced, dropSlowReader, dropClosed, dropMalformed, dropDuplicate} {
		m.dropped.WithLabelValues(r)
	}
	for _, r := range []string{refuseNoToken, refuseBadToken, refuseOrigin, refuseOverCap, refuseDraining, refuseBadWatch} {
		m.refused.WithLabelValues(r)
	}
	for _, o := range []string{resumeRecovered, resumeMalformed, resumeUnknown, resumeTooOld, resumeError, resumeNoReplay} {
		m.resumes.WithLabelValues(o)
	}
	m.sockets.WithLabelValues("ws")
	m.sockets.WithLabelValues("sse")
	var errs []error
	for _, c := range []prometheus.Collector{m.sockets, m.subscriptions, m.queued, m.slowSockets, m.received, written,
		latency, m.dropped, m.disconnects, m.refused, m.resumes, m.replayed, m.resumeSeconds} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// wrote records n writes of an event type, the last at now.
func (m *metrics) wrote(typeIdx int, ts, now time.Time) {
	if typeIdx < 0 {
		return
	}
	m.written[typeIdx].Inc()
	m.latency[typeIdx].Observe(now.Sub(ts).Seconds())
}
