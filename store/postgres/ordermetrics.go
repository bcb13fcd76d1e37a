package postgres

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/store"
)

// orderMetrics are the livedrops_order_* metrics. Their labels are closed sets (outcome, reason,
// source, mode), never ids.
type orderMetrics struct {
	duration      *prometheus.HistogramVec // outcome
	lockWait      *prometheus.HistogramVec // mode
	batchWait     prometheus.Histogram
	batchSize     prometheus.Histogram
	batchTx       prometheus.Histogram
	batchStage    *prometheus.HistogramVec // stage
	rejections    *prometheus.CounterVec   // reason, source
	batchRetries  prometheus.Counter
	invalidations *prometheus.CounterVec // result
}

func newOrderMetrics(reg prometheus.Registerer) (*orderMetrics, error) {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &orderMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "livedrops", Subsystem: "order", Name: "duration_seconds",
			Help:    "Time to answer an order, by outcome (confirmed, replayed, or the refusal's code, canceled, error).",
			Buckets: latency,
		}, []string{"outcome"}),
		lockWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "livedrops", Subsystem: "order", Name: "lock_wait_seconds",
			Help: "Time for the round trip that waits for the drop's row lock: the first of an order's " +
				"transaction (single), the write of a batch (batched): the database contention.",
			Buckets: latency,
		}, []string{"mode"}),
		batchWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "livedrops", Subsystem: "order", Name: "batch_wait_seconds",
			Help:    "Time an order waited in its drop's queue for its batch to start (batched mode).",
			Buckets: latency,
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "livedrops", Subsystem: "order", Name: "batch_size",
			Help:    "Orders per batched transaction.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500},
		}),
		batchTx: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "livedrops", Subsystem: "order", Name: "batch_tx_seconds",
			Help:    "Time of one batched transaction, from taking the connection to the commit's answer (both round trips and the commit's flush).",
			Buckets: latency,
		}),
		batchStage: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "livedrops", Subsystem: "order", Name: "batch_stage_seconds",
			Help: "Time of each stage of a batch: read (one round trip, a snapshot of the drop, the buyers' totals, " +
				"the keys, the users, and order ids, while the previous batch may still be writing), wait (for " +
				"the previous batch to commit), decide (in Go), write (one round trip: the stock under the " +
				"row lock, the orders, the outbox, the totals, the commit's flush).",
			Buckets: latency,
		}, []string{"stage"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "livedrops", Subsystem: "order", Name: "rejections_total",
			Help: "Orders refused, by reason (sold_out, drop_not_live, limit_exceeded, not_found, ...) and by " +
				"source (database: a transaction decided; memory: the drop was known sold out or ended).",
		}, []string{"reason", "source"}),
		batchRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "livedrops", Subsystem: "order", Name: "batch_retries_total",
			Help: "Batches rolled back and run again: a key taken by a concurrent transaction meanwhile, or a deadlock.",
		}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "livedrops", Subsystem: "order", Name: "cache_invalidations_total",
			Help: "Drop cache invalidations after stock commits, by result (ok, error).",
		}, []string{"result"}),
	}
	// The usual label values exist at 0 from the start, so rules and dashboards see the series before
	// the first order.
	for _, outcome := range []string{"confirmed", "replayed", store.Code(store.ErrSoldOut), "error"} {
		m.duration.WithLabelValues(outcome)
	}
	m.lockWait.WithLabelValues(string(OrderModeSingle))
	m.lockWait.WithLabelValues(string(OrderModeBatched))
	for _, stage := range []string{"read", "wait", "decide", "write"} {
		m.batchStage.WithLabelValues(stage)
	}
	m.rejections.WithLabelValues(store.Code(store.ErrSoldOut), "database")
	m.rejections.WithLabelValues(store.Code(store.ErrSoldOut), "memory")
	m.invalidations.WithLabelValues("ok")
	m.invalidations.WithLabelValues("error")
	if reg == nil {
		return m, nil
	}
	return m, errors.Join(reg.Register(m.duration), reg.Register(m.lockWait), reg.Register(m.batchWait),
		reg.Register(m.batchSize), reg.Register(m.batchTx), reg.Register(m.batchStage), reg.Register(m.rejections), reg.Register(m.batchRetries),
		reg.Register(m.invalidations))
}

// observe records one answered order.
func (m *orderMetrics) observe(d time.Duration, placed store.Placed, err error) {
	outcome := "confirmed"
	switch code := store.Code(err); {
	case err == nil && placed.Replayed:
		outcome = "replayed"
	case err == nil:
	case code != "":
		outcome = code
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		outcome = "canceled"
	default:
		outcome = "error"
	}
	m.duration.WithLabelValues(outcome).Observe(d.Seconds())
}

// rejected counts one refusal.
func (m *orderMetrics) rejected(err error, source string) {
	m.rejections.WithLabelValues(store.Code(err), source).Inc()
}

// invalidator tells the drop cache about stock commits in the background, coalescing the commits of
// one drop that happen while a call is running into one more call: a cached drop is stale for at
// most one invalidation after a commit, and a slow or lost Redis never holds an order back.
type invalidator struct {
	cache   DropCache
	timeout time.Duration
	logger  *slog.Logger
	metrics *orderMetrics

	mu    sync.Mutex
	dirty map[int64]struct{}
	wake  chan struct{} // capacity 1
}

func newInvalidator(cache DropCache, timeout time.Duration, logger *slog.Logger, m *orderMetrics) *invalidator {
	return &invalidator{cache: cache, timeout: timeout, logger: logger, metrics: m,
		dirty: make(map[int64]struct{}), wake: make(chan struct{}, 1)}
}

// mark queues an invalidation of dropID.
func (v *invalidator) mark(dropID int64) {
	v.mu.Lock()
	v.dirty[dropID] = struct{}{}
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// run invalidates what is marked until stop is closed, then once more.
func (v *invalidator) run(ctx context.Context, stop <-chan struct{}) {
	for {
		select {
		case <-v.wake:
			v.flush(ctx)
		case <-stop:
			v.flush(ctx)
			return
		}
	}
}

func (v *invalidator) flush(ctx context.Context) {
	v.mu.Lock()
	dirty := v.dirty
	v.dirty = make(map[int64]struct{})
	v.mu.Unlock()
	for id := range dirty {
		callCtx, cancel := context.WithTimeout(ctx, v.timeout)
		err := v.cache.InvalidateDrop(callCtx, id)
		cancel()
		if err != nil {
			v.metrics.invalidations.WithLabelValues("error").Inc()
			v.logger.Warn("drop cache invalidation failed; the cached drop expires by its TTL",
				"drop_id", id, "err", err)
			continue
		}
		v.metrics.invalidations.WithLabelValues("ok").Inc()
	}
}

// invalidate marks dropID's cached copy stale after a stock commit.
func (o *Orders) invalidate(dropID int64) {
	if o.inval != nil {
		o.inval.mark(dropID)
	}
}
