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
	reasonGap        = "stream_gap"  // events were missed and could not be refilled (gap.go)
	reasonFrameRate  = "frame_rate"  // the client sent frames faster than Config.FrameRate
	reasonExpired    = "token_expired"
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
	refuseBusy     = "busy" // no place in the setup stage within Config.AdmitTimeout
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

// Results of a drop lookup (a watch), the label of livedrops_hub_drop_lookups_total.
const (
	lookupHit        = iota // the creator was cached
	lookupMissCached        // the drop is known not to exist (Config.NotFoundTTL)
	lookupFound             // the store found it
	lookupNotFound          // the store did not
	lookupError             // the store failed
)

var lookupResults = [...]string{"hit", "miss_cached", "found", "not_found", "error"}

// Client frames, the label of livedrops_hub_client_frames_total.
const (
	frameWatch   = iota // {"op":"watch"}
	frameUnwatch        // {"op":"unwatch"}
	framePing           // {"op":"ping"}
	frameWSPing         // a WebSocket ping frame
	frameBad            // anything the protocol does not allow
)

var frameKinds = [...]string{"watch", "unwatch", "ping", "ws_ping", "bad"}

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
	sockets          *prometheus.GaugeVec
	subscriptions    prometheus.Gauge
	queued           prometheus.Gauge
	slowSockets      prometheus.Gauge
	received         *prometheus.CounterVec
	written          [len(eventTypes)]prometheus.Counter
	latency          [len(eventTypes)]prometheus.Observer
	dropped          *prometheus.CounterVec
	disconnects      *prometheus.CounterVec
	refused          *prometheus.CounterVec
	resumes          *prometheus.CounterVec
	replayed         prometheus.Counter
	resumeSeconds    prometheus.Histogram
	setup            [len(setupStages)]prometheus.Observer
	settingUp        prometheus.Gauge
	stageWorkers     prometheus.Gauge
	flushes          prometheus.Counter
	flushWaiters     prometheus.Histogram
	loadBatch        prometheus.Histogram
	loadsWaiting     prometheus.Gauge
	replayBatch      prometheus.Histogram
	confirmSkipped   prometheus.Counter
	ignored          prometheus.Counter
	interestMode     prometheus.Gauge
	interestShare    prometheus.Gauge
	interestSwitches *prometheus.CounterVec
	collections      *prometheus.CounterVec
	bursts           prometheus.Counter
	gaps             *prometheus.CounterVec
	dropLookups      [len(lookupResults)]prometheus.Counter
	frames           [len(frameKinds)]prometheus.Counter
	refilled         prometheus.Counter
	refillSeconds    prometheus.Histogram
}

// Stages of a socket's setup, the label of livedrops_hub_setup_seconds.
const (
	stageAdmit   = iota // waiting for a place in the setup stage
	stageFollows        // loading the user's follow list (cache, then the store)
	stageConfirm        // the subscriptions confirmed by the NATS server
	stageTotal          // from the request to the hello
)

var setupStages = [...]string{"admit", "follows", "confirm", "total"}

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
	setup := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "setup_seconds",
		Help: "Time a socket's setup spends per stage: admit (waiting for the setup stage), follows (the follow " +
			"list), confirm (subscriptions confirmed by NATS), total (request to hello).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"stage"})
	m.settingUp = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "setups_in_progress",
		Help: "Sockets in the setup stage (authenticated, subscribing, not yet greeted)."})
	m.stageWorkers = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "setup_goroutines",
		Help: "Goroutines of the setup stage, which run the setups (at most the stage's places; idle ones end after a second without a setup)."})
	m.flushes = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "confirmations_total",
		Help: "Round trips to the NATS server confirming subscriptions (each serves every socket waiting)."})
	m.flushWaiters = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "confirmation_waiters",
		Help: "Callers served by one confirmation round trip.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}})
	m.loadsWaiting = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "follow_loads_waiting",
		Help: "Users waiting for a loader to read their follow list."})
	m.replayBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "replay_batch_resumes",
		Help: "Resumes one replay read of the stream served.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}})
	m.loadBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "follow_load_batch_users",
		Help: "Users whose follow lists one read fetched.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}})
	m.confirmSkipped = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "confirmations_skipped_total",
		Help: "Sockets and watches greeted without a round trip: an earlier confirmation covered their subscriptions."})
	m.ignored = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_ignored_total",
		Help: "Events the creator wildcard brought for creators without a local follower."})
	m.interestMode = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "interest_wildcard",
		Help: "1 while creator events come through one ld.creator.* subscription, 0 while one per creator."})
	m.interestShare = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "interest_share",
		Help: "Share of the creators that published lately with a local follower, at the last check."})
	m.interestSwitches = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "interest_switches_total",
		Help: "Switches of the creator interest, by the mode switched to (wildcard, per_creator)."}, []string{"to"})
	m.collections = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "gc_forced_total",
		Help: "Garbage collections the hub ran itself, by why: burst (a connect burst ended: memory returned to " +
			"the OS), quiet (the heap grew and no fan-out ran)."}, []string{"why"})
	m.bursts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "connect_bursts_total",
		Help: "Connect bursts that filled the setup stage, during which GOGC was raised."})
	m.gaps = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "stream_gaps_total",
		Help: "Gaps in the live stream (the NATS connection was re-established), by outcome: refilled from the " +
			"stream, or closed (every socket closed so that its client resumes)."}, []string{"outcome"})
	m.refilled = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "refilled_events_total",
		Help: "Events a gap refill delivered from the stream (a live copy that came meanwhile is then dropped as a duplicate)."})
	m.refillSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "refill_seconds",
		Help:    "Time from a gap's discovery to live delivery again.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}})
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "drop_lookups_total",
		Help: "Lookups of a watched drop's creator, by result: hit (cached), miss_cached (known not to exist), " +
			"found, not_found (asked the store), error."}, []string{"result"})
	for i, r := range lookupResults {
		m.dropLookups[i] = lookups.WithLabelValues(r)
	}
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "client_frames_total",
		Help: "Frames clients sent on WebSockets, by kind (watch, unwatch, ping, ws_ping, bad)."}, []string{"kind"})
	for i, k := range frameKinds {
		m.frames[i] = frames.WithLabelValues(k)
	}
	m.gaps.WithLabelValues(gapRefilled)
	m.gaps.WithLabelValues(gapClosed)
	m.collections.WithLabelValues("burst")
	m.collections.WithLabelValues("quiet")
	m.interestSwitches.WithLabelValues("wildcard")
	m.interestSwitches.WithLabelValues("per_creator")
	for i, st := range setupStages {
		m.setup[i] = setup.WithLabelValues(st)
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
	for _, r := range []string{reasonClient, reasonSlowReader, reasonWriteError, reasonKeepAlive, reasonBadFrame, reasonDrain, reasonSetup, reasonGap, reasonFrameRate, reasonExpired} {
		m.disconnects.WithLabelValues(r)
	}
	for _, r := range []string{dropCoalesced, dropSlowReader, dropClosed, dropMalformed, dropDuplicate} {
		m.dropped.WithLabelValues(r)
	}
	for _, r := range []string{refuseNoToken, refuseBadToken, refuseOrigin, refuseOverCap, refuseDraining, refuseBadWatch, refuseBusy} {
		m.refused.WithLabelValues(r)
	}
	for _, o := range []string{resumeRecovered, resumeMalformed, resumeUnknown, resumeTooOld, resumeError, resumeNoReplay} {
		m.resumes.WithLabelValues(o)
	}
	m.sockets.WithLabelValues("ws")
	m.sockets.WithLabelValues("sse")
	var errs []error
	for _, c := range []prometheus.Collector{m.sockets, m.subscriptions, m.queued, m.slowSockets, m.received, written,
		latency, m.dropped, m.disconnects, m.refused, m.resumes, m.replayed, m.resumeSeconds, setup,
		m.settingUp, m.stageWorkers, m.flushes, m.flushWaiters, m.loadBatch, m.loadsWaiting, m.replayBatch, m.confirmSkipped, m.ignored, m.interestMode,
		m.interestShare, m.interestSwitches, m.collections, m.bursts, m.gaps, m.refilled, m.refillSeconds, lookups, frames} {
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
