// Package relay runs the worker jobs that turn committed changes into live events: the outbox relay
// (PostgreSQL outbox → JetStream, in order, deduplicated, refilling what NATS lost) with its
// coalescing of stock.changed, and the drop scheduler (scheduled → live → ended on time, each
// transition once). It depends on small interfaces it declares; store/postgres and fanout/jetstream
// implement them and cmd/livedrops wires them.
//
// # Relay
//
// One relay publishes at a time (Leadership: a PostgreSQL advisory lock); the others stand by and take
// over within seconds when it stops. The leader wakes on every outbox commit (LISTEN/NOTIFY) and polls
// as a fallback, reads the pending rows in id order (never "id > last published": ids are handed out at
// insert, not commit), and publishes them with Nats-Msg-Id = event id, then records each row's stream
// sequence. Per subject the events go out in the order their rows became visible, which for one drop is
// commit order (the writers hold the drop's row lock).
//
// PostgreSQL is the ledger, JetStream the fast copy: JetStream acknowledges before its data is safe on
// disk unless it syncs always, and a NATS that crashed can come back without its tail. So when the relay
// starts leading and whenever its NATS connection was re-established, it reads the stream's last
// messages and compares them with the outbox: rows the stream holds but the outbox did not record (the
// relay stopped between publish and record) are marked without publishing again; published rows of the
// replay window that the stream does not hold are queued again and published again, in order. Published
// rows stay in the outbox for the replay window (plus a margin) and are pruned after.
//
// A record that cannot be decoded is parked at once (parked_at, last_error, a metric, an error log); one
// the stream refuses (too large, ...) is retried with backoff and parked after MaxAttempts. Parking never
// blocks the rows behind it, of its subject or others: every event carries the whole state it reports
// (the drop, the stock count), so a later event is worth more to a client than a gap-free wait for an
// event that cannot come; the parked row stays for an operator to fix and re-queue. While NATS is down
// nothing is parked: transient failures are retried until it returns.
//
// stock.changed is coalesced per drop: at most StockRate per second per drop, always the newest value,
// never an older value after a newer one. Superseded rows are marked published with no stream sequence
// and counted as coalesced.
package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/livedrops/livedrops/fanout"
)

// Outbox is the relay's view of the outbox table (store/postgres.Outbox).
type Outbox interface {
	// Pending returns up to limit pending records in id order, without the ids in skip.
	Pending(ctx context.Context, limit int, skip []int64) ([]fanout.Record, error)
	// MarkPublished records that rows ids[i] are stored at stream sequence streamSeqs[i].
	MarkPublished(ctx context.Context, ids []int64, streamSeqs []uint64, at time.Time) error
	// MarkCoalesced records that pending rows were superseded and will never be sent.
	MarkCoalesced(ctx context.Context, ids []int64, at time.Time) error
	// RecordFailure counts a failed publication of row id, parking the row when park is true.
	RecordFailure(ctx context.Context, id int64, reason string, park bool, at time.Time) error
	// Adopt marks published the pending rows with event ids eventIDs[i], found at streamSeqs[i].
	Adopt(ctx context.Context, eventIDs []string, streamSeqs []uint64, at time.Time) (int64, error)
	// Requeue makes pending again the rows created since since that the stream lost: published after
	// last, or at a sequence in from..last where the tail (tailSeqs, tailIDs) holds another event.
	Requeue(ctx context.Context, since time.Time, from, last uint64, tailSeqs []uint64, tailIDs []string) (int64, error)
	// Prune deletes up to limit published or parked rows created before before.
	Prune(ctx context.Context, before time.Time, limit int) (int64, error)
	// Backlog counts the pending rows.
	Backlog(ctx context.Context) (int64, error)
	// Listen sends on wake at every commit of events until ctx ends (nil) or its connection fails.
	Listen(ctx context.Context, wake chan<- struct{}) error
}

// Stream is the JetStream stream the relay publishes to (fanout/jetstream.Publisher).
type Stream interface {
	// Ensure creates or updates the stream.
	Ensure(ctx context.Context) error
	// Publish sends events in order with Nats-Msg-Id = event id and returns the stream sequences of the
	// acknowledged prefix; with fewer sequences than events, the error is the failure of the next one.
	// An error with a method Rejected() bool reporting true means that event can never be published.
	Publish(ctx context.Context, events []fanout.Event) ([]uint64, error)
	// Tail returns the stream's last sequence and the event ids of its last n messages.
	Tail(ctx context.Context, n int) (last uint64, seqs []uint64, ids []string, err error)
	// Reconnects counts the reconnections of the NATS connection.
	Reconnects() uint64
}

// Leadership elects the one relay that publishes (store/postgres.Leader).
type Leadership interface {
	// Lead blocks until this process leads or ctx ends; the returned context ends when leadership is
	// lost, and release gives it up.
	Lead(ctx context.Context) (leadCtx context.Context, release func(), err error)
}

// Config tunes the relay. Zero values are the documented defaults.
type Config struct {
	// ReplayWindow is how far back the relay republishes what the stream lost, and with PruneMargin how
	// long published rows are kept. Use the stream's replay window. 0 means 15 min; at least 10 min.
	ReplayWindow time.Duration
	// PruneMargin is kept beyond ReplayWindow before rows are pruned; 0 means 5 min.
	PruneMargin time.Duration
	// PruneInterval is how often old rows are pruned; 0 means 1 min.
	PruneInterval time.Duration
	// PruneBatch is how many rows one DELETE removes; 0 means 5,000.
	PruneBatch int
	// PollInterval is how often the outbox is read when no notification came; 0 means 500 ms.
	PollInterval time.Duration
	// BatchSize is how many rows one round reads and publishes; 0 means 500.
	BatchSize int
	// StockRate is how many stock.changed per second one drop may publish; 0 means 4.
	StockRate float64
	// MaxAttempts is how many refusals by the stream park a row; 0 means 5.
	MaxAttempts int
	// RetryBackoff is the wait before the first retry of a refused row, doubling after each; 0 means 1 s.
	RetryBackoff time.Duration
	// TailCheck is how many of the stream's last messages are compared with the outbox when the relay
	// starts leading or NATS reconnected; 0 means 2 × BatchSize. It must cover what one round publishes.
	TailCheck int
	// BacklogInterval is how often the backlog gauge is refreshed; 0 means 2 s.
	BacklogInterval time.Duration
	// Clock is the relay's time; nil means the system clock.
	Clock Clock
	// Logger receives the relay's log; nil discards it.
	Logger *slog.Logger
	// Metrics are updated when set (NewMetrics).
	Metrics *Metrics
}

func (c Config) withDefaults() (Config, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ReplayWindow, 15*time.Minute)
	def(&c.PruneMargin, 5*time.Minute)
	def(&c.PruneInterval, time.Minute)
	def(&c.PollInterval, 500*time.Millisecond)
	def(&c.RetryBackoff, time.Second)
	def(&c.BacklogInterval, 2*time.Second)
	if c.PruneBatch == 0 {
		c.PruneBatch = 5000
	}
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.StockRate == 0 {
		c.StockRate = 4
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.TailCheck == 0 {
		c.TailCheck = 2 * c.BatchSize
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if c.ReplayWindow < 10*time.Minute {
		errs = append(errs, fmt.Errorf("replay window %s is below 10m", c.ReplayWindow))
	}
	if c.PruneMargin < 0 || c.PruneInterval < 0 || c.PollInterval < 0 || c.RetryBackoff < 0 || c.BacklogInterval < 0 {
		errs = append(errs, errors.New("negative duration"))
	}
	if c.BatchSize < 1 || c.PruneBatch < 1 || c.MaxAttempts < 1 || c.TailCheck < c.BatchSize {
		errs = append(errs, fmt.Errorf("BatchSize %d, PruneBatch %d, MaxAttempts %d must be positive and TailCheck %d at least BatchSize",
			c.BatchSize, c.PruneBatch, c.MaxAttempts, c.TailCheck))
	}
	if c.StockRate < 0 {
		errs = append(errs, fmt.Errorf("negative StockRate %v", c.StockRate))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("relay: config: %w", err)
	}
	return c, nil
}

// Relay publishes the outbox to the stream. Build it with New and run it with Run.
type Relay struct {
	outbox Outbox
	stream Stream
	leader Leadership
	cfg    Config
	log    *slog.Logger
	m      *Metrics
}

// New returns a relay; it does nothing until Run.
func New(outbox Outbox, stream Stream, leader Leadership, cfg Config) (*Relay, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Relay{outbox: outbox, stream: stream, leader: leader, cfg: cfg,
		log: cfg.Logger.With("component", "relay"), m: cfg.Metrics.orDiscard()}, nil
}

// Run stands by until this process leads, then publishes until leadership is lost (and stands by again)
// or ctx ends. It returns nil when ctx ends; it never gives up before.
func (r *Relay) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		leadCtx, release, err := r.leader.Lead(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			r.log.Warn("relay cannot take part in the leader election", "err", err)
			r.sleep(ctx, r.cfg.PollInterval)
			continue
		}
		r.log.Info("relay leading: publishing the outbox")
		r.m.leader.Set(1)
		err = r.lead(leadCtx)
		r.m.leader.Set(0)
		r.m.backlog.Set(0)
		release()
		if ctx.Err() == nil {
			r.log.Warn("relay lost the leadership; standing by", "err", err, "cause", context.Cause(leadCtx))
		}
	}
	return nil
}

// item is a record with its decoded event.
type item struct {
	rec fanout.Record
	ev  fanout.Event
}

// leader is the state of one term of leadership, owned by the publishing loop.
type leader struct {
	stock    *stockCoalescer
	retryAt  map[int64]time.Time // refused rows waiting for their next attempt
	failing  bool                // the last round failed transiently (logged once)
	lastTidy time.Time
	// unrecorded is set while a publication's outcome is not recorded in the outbox.
	unrecorded bool
}

// lead publishes until ctx ends; it returns the error that ended it, if any.
func (r *Relay) lead(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() { r.listen(ctx, wake) })
	wg.Go(func() { r.housekeeping(ctx) })
	defer wg.Wait()

	interval := time.Duration(float64(time.Second) / r.cfg.StockRate)
	if r.cfg.StockRate == 0 {
		interval = 0
	}
	st := &leader{stock: newStockCoalescer(interval), retryAt: make(map[int64]time.Time)}
	gen := r.stream.Reconnects()
	needRecover := true
	for ctx.Err() == nil {
		st.tidy(r.cfg.Clock.Now())
		if g := r.stream.Reconnects(); g != gen {
			gen, needRecover = g, true
			r.log.Info("nats reconnected: checking the stream against the outbox")
		}
		if needRecover {
			if err := r.recover(ctx); err != nil {
				r.transient(st, "recover", err)
				r.wait(ctx, wake, r.cfg.PollInterval)
				continue
			}
			needRecover = false
		}
		full, err := r.round(ctx, st)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			r.transient(st, "publish", err)
			// Events may have reached the stream unrecorded, or the stream may be gone (NATS restarted
			// empty): check the stream before the next round.
			needRecover = needRecover || st.unrecorded
			r.wait(ctx, wake, r.cfg.PollInterval)
			continue
		}
		if st.failing {
			st.failing = false
			r.log.Info("relay publishing again")
		}
		needRecover = st.unrecorded
		if full {
			continue
		}
		timeout := r.cfg.PollInterval
		now := r.cfg.Clock.Now()
		if at, ok := st.stock.next(); ok {
			timeout = min(timeout, max(at.Sub(now), time.Millisecond))
		}
		for _, at := range st.retryAt {
			timeout = min(timeout, max(at.Sub(now), time.Millisecond))
		}
		r.wait(ctx, wake, timeout)
	}
	return context.Cause(ctx)
}

// listen keeps a LISTEN connection open until ctx ends, reconnecting after failures.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	for failures := 0; ctx.Err() == nil; {
		began := time.Now()
		err := r.outbox.Listen(ctx, wake)
		if err == nil || ctx.Err() != nil {
			continue
		}
		if time.Since(began) > 10*time.Second {
			failures = 0 // it listened for a while: a new failure, worth a line
		}
		if failures++; failures == 1 {
			r.log.Warn("relay: listening for outbox commits failed; polling meanwhile", "err", err)
		}
		r.sleep(ctx, r.cfg.PollInterval)
	}
}

func (r *Relay) transient(st *leader, what string, err error) {
	r.m.failures.WithLabelValues("transient").Inc()
	if !st.failing {
		st.failing = true
		r.log.Warn("relay cannot "+what+"; retrying", "err", err)
	}
}

func (r *Relay) wait(ctx context.Context, wake <-chan struct{}, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-wake:
	case <-r.cfg.Clock.After(d):
	}
}

func (r *Relay) sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-r.cfg.Clock.After(d):
	}
}

// recover compares the stream's tail with the outbox: it adopts the rows the stream holds but the
// outbox did not record, and re-queues the rows of the replay window that the stream lost.
func (r *Relay) recover(ctx context.Context) error {
	if err := r.stream.Ensure(ctx); err != nil {
		return err
	}
	last, seqs, ids, err := r.stream.Tail(ctx, r.cfg.TailCheck)
	if err != nil {
		return err
	}
	now := r.cfg.Clock.Now()
	adopted, err := r.outbox.Adopt(ctx, ids, seqs, now)
	if err != nil {
		return err
	}
	from := uint64(1)
	if last > uint64(r.cfg.TailCheck) {
		from = last - uint64(r.cfg.TailCheck) + 1
	}
	requeued, err := r.outbox.Requeue(ctx, now.Add(-r.cfg.ReplayWindow), from, last, seqs, ids)
	if err != nil {
		return err
	}
	r.m.recoveries.Inc()
	r.m.adopted.Add(float64(adopted))
	r.m.requeued.Add(float64(requeued))
	level := slog.LevelInfo
	if requeued > 0 {
		level = slog.LevelWarn
	}
	r.log.Log(ctx, level, "relay checked the stream against the outbox",
		"stream_last_seq", last, "adopted", adopted, "requeued", requeued)
	return nil
}

// round reads one batch of pending rows and publishes what is due. full reports a whole batch, so the
// caller goes on at once.
func (r *Relay) round(ctx context.Context, st *leader) (full bool, err error) {
	now := r.cfg.Clock.Now()
	skip := st.stock.waitingSeqs(nil)
	for seq, at := range st.retryAt {
		if now.Before(at) {
			skip = append(skip, seq)
		}
	}
	recs, err := r.outbox.Pending(ctx, r.cfg.BatchSize, skip)
	if err != nil {
		return false, err
	}
	var out []item
	var coalesced []item
	for _, rec := range recs {
		ev, err := Decode(rec)
		if err != nil {
			if err := r.park(ctx, rec, err, now); err != nil {
				return false, err
			}
			continue
		}
		it := item{rec: rec, ev: ev}
		if ev.Type == fanout.StockChanged && st.stock.interval > 0 {
			if old := st.stock.offer(it); old != nil {
				coalesced = append(coalesced, *old)
			}
			continue
		}
		out = append(out, it)
	}
	now = r.cfg.Clock.Now()
	out = append(out, st.stock.due(now)...)
	slices.SortFunc(out, func(a, b item) int { return cmp.Compare(a.rec.Seq, b.rec.Seq) })

	if len(coalesced) > 0 {
		ids := make([]int64, len(coalesced))
		for i, it := range coalesced {
			ids[i] = it.rec.Seq
		}
		if err := r.outbox.MarkCoalesced(ctx, ids, now); err != nil {
			return false, err
		}
		for _, it := range coalesced {
			r.m.coalesced.WithLabelValues(string(it.rec.Type)).Inc()
		}
	}
	if len(out) == 0 {
		return len(recs) == r.cfg.BatchSize, nil
	}
	events := make([]fanout.Event, len(out))
	for i, it := range out {
		events[i] = it.ev
	}
	st.unrecorded = true
	seqs, pubErr := r.stream.Publish(ctx, events)
	acked := time.Now()
	if len(seqs) > 0 {
		ids := make([]int64, len(seqs))
		for i := range seqs {
			ids[i] = out[i].rec.Seq
		}
		ackedAt := r.cfg.Clock.Now()
		if err := r.outbox.MarkPublished(ctx, ids, seqs, ackedAt); err != nil {
			return false, err
		}
		for _, it := range out[:len(seqs)] {
			r.m.published.WithLabelValues(string(it.rec.Type)).Inc()
			r.m.latency.Observe(acked.Sub(it.rec.CreatedAt).Seconds())
			if it.rec.Type == fanout.StockChanged {
				st.stock.sent(it.rec.Subject, it.rec.Seq, ackedAt)
			}
			delete(st.retryAt, it.rec.Seq)
		}
	}
	if pubErr == nil {
		st.unrecorded = false
		return len(recs) == r.cfg.BatchSize, nil
	}
	if rej, ok := errors.AsType[interface {
		error
		Rejected() bool
	}](pubErr); ok && rej.Rejected() && len(seqs) < len(out) {
		r.m.failures.WithLabelValues("rejected").Inc()
		if err := r.refused(ctx, st, out[len(seqs)].rec, pubErr); err != nil {
			return false, err
		}
		// The events after the refused one may have been stored unreported: compare the stream's tail
		// before publishing them again.
		return false, nil
	}
	return false, pubErr
}

// refused counts a refusal by the stream, parking the row after MaxAttempts and otherwise deferring it.
func (r *Relay) refused(ctx context.Context, st *leader, rec fanout.Record, cause error) error {
	now := r.cfg.Clock.Now()
	attempts := rec.Attempts + 1
	if attempts >= r.cfg.MaxAttempts {
		delete(st.retryAt, rec.Seq)
		return r.park(ctx, rec, cause, now)
	}
	if err := r.outbox.RecordFailure(ctx, rec.Seq, cause.Error(), false, now); err != nil {
		return err
	}
	backoff := r.cfg.RetryBackoff << min(attempts-1, 10)
	st.retryAt[rec.Seq] = now.Add(backoff)
	r.log.Warn("relay: the stream refused an event; retrying later", "event_id", rec.EventID,
		"type", string(rec.Type), "attempts", attempts, "retry_in", backoff, "err", cause)
	return nil
}

func (r *Relay) park(ctx context.Context, rec fanout.Record, cause error, now time.Time) error {
	if err := r.outbox.RecordFailure(ctx, rec.Seq, cause.Error(), true, now); err != nil {
		return err
	}
	r.m.parked.WithLabelValues(typeLabel(rec.Type)).Inc()
	r.log.Error("relay parked an outbox row; it will not be published", "row_id", rec.Seq,
		"event_id", rec.EventID, "subject", rec.Subject, "type", string(rec.Type), "err", cause)
	return nil
}

// tidy forgets stale per-drop and retry state, once a minute.
func (st *leader) tidy(now time.Time) {
	if now.Sub(st.lastTidy) < time.Minute {
		return
	}
	st.lastTidy = now
	st.stock.forget(now, time.Minute)
	for seq, at := range st.retryAt {
		if now.Sub(at) > time.Hour {
			delete(st.retryAt, seq)
		}
	}
}

// housekeeping refreshes the backlog gauge and prunes old rows, beside the publishing loop so that
// neither waits for the other, until ctx ends.
func (r *Relay) housekeeping(ctx context.Context) {
	var lastCount, lastPrune time.Time
	for ctx.Err() == nil {
		now := r.cfg.Clock.Now()
		if now.Sub(lastCount) >= r.cfg.BacklogInterval {
			lastCount = now
			if n, err := r.outbox.Backlog(ctx); err == nil {
				r.m.backlog.Set(float64(n))
			} else if ctx.Err() == nil {
				r.log.Debug("relay: count the outbox backlog", "err", err)
			}
		}
		if now.Sub(lastPrune) >= r.cfg.PruneInterval {
			lastPrune = now
			r.prune(ctx, now.Add(-r.cfg.ReplayWindow-r.cfg.PruneMargin))
		}
		r.sleep(ctx, min(r.cfg.BacklogInterval, r.cfg.PruneInterval))
	}
}

// prune deletes the published and parked rows created before before, a batch at a time.
func (r *Relay) prune(ctx context.Context, before time.Time) {
	var total int64
	for ctx.Err() == nil {
		n, err := r.outbox.Prune(ctx, before, r.cfg.PruneBatch)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("relay: prune the outbox", "err", err)
			}
			break
		}
		total += n
		if n < int64(r.cfg.PruneBatch) {
			break
		}
	}
	r.m.pruned.Add(float64(total))
	if total > 0 {
		r.log.Info("relay pruned the outbox", "rows", total, "created_before", before)
	}
}

// typeLabel bounds the type label to the known types.
func typeLabel(t fanout.Type) string {
	if t.Known() {
		return string(t)
	}
	return "unknown"
}
