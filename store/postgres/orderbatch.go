package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store"
)

// The batched mode. Each drop with orders in flight on this process has a lane: a queue and one
// goroutine that takes whatever is queued (up to MaxBatch) and serves it in two round trips, while up
// to two batches before it are still writing (flights):
//
//	read   BEGIN ISOLATION LEVEL REPEATABLE READ; the drop; the buyers' totals; the orders already
//	       under the batch's keys; the users; order ids; COMMIT (one snapshot, no lock). The flights
//	       it does not show yet (told by the stock: theirs chain, each planned against the one
//	       before) are counted as planned: their units, their buyers' totals
//	decide in Go: each order in queue order against the stock left and each buyer's total
//	write  BEGIN; pg_advisory_xact_lock(this batch) (its own round trip, so the next batch can wait
//	       on it); then, in one round trip: on a live drop, INSERT the order.confirmed rows (while
//	       the batch before still writes); wait for the transaction of the batch counted on to end
//	       (its advisory lock) and check that its first order is there (else 1/0); UPDATE the drop's
//	       stock only if it is what was decided against and the drop still live (the row lock);
//	       INSERT every accepted order (one multi-row INSERT); INSERT the drop's stock events (under
//	       the row lock: a drop's rows get ids in commit order); upsert the buyers' totals; COMMIT
//
// A batch commits only after, and only if, the batch it counted on committed as planned. A write
// whose snapshot turned out stale (the batch counted on did not commit as planned, another process
// sold or the drop ended meanwhile, a key was inserted concurrently, a buyer's total went over the
// limit) rolls back whole and the batch runs again under the row lock (batchTx): BEGIN; the same
// reads after SELECT ... FOR NO KEY UPDATE; decide; the same writes; COMMIT, deciding from rows read
// under the lock, without racing anyone. Either way the schema's CHECKs stay the last line: should
// one fail, the batch rolls back and its buyers get an error (never a 201), never an oversell. A
// batch is one transaction: all of it commits or none, so a process killed mid-batch leaves nothing
// half done, and its buyers, who got no answer, find their order or nothing when they retry. Buyers
// are answered only once their batch has committed; a batch that writes nothing (refusals, replays)
// answers once the batches it counted on have landed, and is read again if they did not commit as
// planned. An order under a key of a batch still writing waits for a later batch (a replay).
//
// Once PostgreSQL has said a drop is sold out or ended, which is final, the lane keeps that answer
// and the drop's orders by key (they can no longer change) and answers every later order from
// memory: a replay gets its order, anything else the refusal, without touching PostgreSQL.

// gateMaxOrders bounds the orders a lane keeps in memory for a sold-out or ended drop (about 100 bytes
// each). A drop with more answers its refusals from memory too, but looks each key up in PostgreSQL
// first.
const gateMaxOrders = 200_000

// lane is one drop's queue in batched mode.
type lane struct {
	dropID int64
	wake   chan struct{} // capacity 1: there is something queued

	// Guarded by Orders.mu.
	pending []*orderRequest
	gate    *gate  // set once the drop is known sold out or ended
	hits    uint64 // orders seen, to tell an idle lane
	missing bool   // the drop does not exist: stop once the queue is empty
}

// gate answers the orders of a drop that can take no more: refused is the final refusal; orders holds
// the drop's orders by key, or is nil when there were too many to keep.
type gate struct {
	refused error
	orders  map[orderKey]storedOrder
}

type orderKey struct {
	userID int64
	key    string
}

// orderRequest is one PlaceOrder waiting for its batch.
type orderRequest struct {
	ctx      context.Context
	req      store.PlaceOrder
	hash     [32]byte
	enqueued time.Time
	done     chan orderResult // capacity 1
	// waited is set once its queue wait is counted (an order put back for the next batch is not
	// counted twice). Only the lane's goroutine touches it.
	waited bool
}

type orderResult struct {
	placed store.Placed
	err    error
}

func (r *orderRequest) key() orderKey { return orderKey{r.req.UserID, r.req.IdempotencyKey} }

func (r *orderRequest) answer(placed store.Placed, err error) {
	r.done <- orderResult{placed, err}
}

func (o *Orders) placeBatched(ctx context.Context, req store.PlaceOrder) (store.Placed, error) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return store.Placed{}, fmt.Errorf("orders are closed: %w", store.ErrUnavailable)
	}
	l := o.lanes[req.DropID]
	if l == nil {
		l = &lane{dropID: req.DropID, wake: make(chan struct{}, 1)}
		o.lanes[req.DropID] = l
		o.batchers.Add(1)
		go o.serve(l)
	}
	l.hits++
	if g := l.gate; g != nil {
		// Most of a hot drop's requests come after it sold out: answered from memory, nothing queued.
		o.mu.Unlock()
		return o.answerFromGate(ctx, g, req)
	}
	r := &orderRequest{ctx: ctx, req: req, hash: req.Fingerprint(), enqueued: time.Now(), done: make(chan orderResult, 1)}
	l.pending = append(l.pending, r)
	o.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	select {
	case res := <-r.done:
		return res.placed, res.err
	case <-ctx.Done():
		// The order may still commit; a retry with the key will tell.
		return store.Placed{}, ctx.Err()
	}
}

// fromGate answers a queued order of a drop that can take no more.
func (o *Orders) fromGate(ctx context.Context, g *gate, r *orderRequest) (store.Placed, error) {
	return o.answerFromGate(ctx, g, r.req)
}

// answerFromGate answers an order of a drop that can take no more: the order under its key (the
// request's fingerprint is computed only then), else the refusal.
func (o *Orders) answerFromGate(ctx context.Context, g *gate, req store.PlaceOrder) (store.Placed, error) {
	if g.orders != nil {
		if s, ok := g.orders[orderKey{req.UserID, req.IdempotencyKey}]; ok {
			return s.replay(req.Fingerprint())
		}
		o.metrics.rejected(g.refused, "memory")
		return store.Placed{}, g.refused
	}
	s, found, err := findOrder(ctx, o.pool, req.UserID, req.IdempotencyKey)
	if err != nil {
		return store.Placed{}, err
	}
	if found {
		return s.replay(req.Fingerprint())
	}
	o.metrics.rejected(g.refused, "memory")
	return store.Placed{}, g.refused
}

// serve is the goroutine of lane l: it runs batches while orders are queued, and stops once the lane
// has been idle for IdleTimeout, or once Orders is closed and the queue is empty. Up to two batches
// may be writing (flights) while the next one reads.
func (o *Orders) serve(l *lane) {
	defer o.batchers.Done()
	idle := time.NewTimer(o.cfg.IdleTimeout)
	defer idle.Stop()
	var seen uint64
	var p pipeline
	for {
		batch, exit := o.take(l)
		if exit {
			o.landAll(l, &p)
			return
		}
		if len(batch) > 0 {
			o.runBatch(l, batch, &p)
			continue
		}
		if f := p.oldest(); f != nil {
			// Nothing queued: see the flights land (their answers are out already), unless orders come.
			select {
			case <-f.done:
				o.landOldest(l, &p)
			case <-l.wake:
			case <-o.closing:
			}
			continue
		}
		select {
		case <-l.wake:
		case <-o.closing:
		case <-idle.C:
			o.mu.Lock()
			if l.hits == seen && len(l.pending) == 0 {
				delete(o.lanes, l.dropID)
				o.mu.Unlock()
				return
			}
			seen = l.hits
			o.mu.Unlock()
			idle.Reset(o.cfg.IdleTimeout)
		}
	}
}

// take removes up to MaxBatch queued orders of l; exit says the lane is closed and empty.
func (o *Orders) take(l *lane) (batch []*orderRequest, exit bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(l.pending) == 0 {
		if o.closed || l.missing {
			delete(o.lanes, l.dropID)
			return nil, true
		}
		return nil, false
	}
	n := min(len(l.pending), o.cfg.MaxBatch)
	batch = l.pending[:n:n]
	l.pending = l.pending[n:]
	if len(l.pending) == 0 {
		l.pending = nil
	}
	return batch, false
}

// flight is a batch whose write transaction runs while the lane reads and writes the next one. The
// fields above done are set when it starts; those below, before done is closed, and read only after.
type flight struct {
	keys map[orderKey]bool // every key of the batch
	// What it plans to do to the drop (planned false: unknown, as for a batch run under the lock).
	planned       bool
	before, after int           // the stock it expects to find, and to leave
	adds          map[int64]int // the units it adds to each buyer's total
	firstID       int64         // the id of its first order: its witness, and its advisory lock
	locked        chan struct{} // closed once its transaction holds its advisory lock (or failed)
	done          chan struct{}

	committed bool // the transaction committed
	asPlanned bool // and did what it planned (not run again under the lock)
	news      dropNews
}

// pipeline is what a lane has in flight: the flights not landed yet, oldest first. Each planned
// against the one before it, so their stocks chain: flights[i].before == flights[i-1].after.
type pipeline struct{ flights []*flight }

// maxReadAhead is how many flights may be writing once a batch has started its own: up to two while
// it reads.
const maxReadAhead = 3

func (p *pipeline) oldest() *flight {
	if len(p.flights) == 0 {
		return nil
	}
	return p.flights[0]
}

func (p *pipeline) latest() *flight {
	if len(p.flights) == 0 {
		return nil
	}
	return p.flights[len(p.flights)-1]
}

// landOldest waits for the oldest flight and takes in what it learned.
func (o *Orders) landOldest(l *lane, p *pipeline) {
	f := p.flights[0]
	<-f.done
	o.learn(l, f.news)
	p.flights[0] = nil
	p.flights = p.flights[1:]
}

// landDone lands the flights that are done, oldest first, without waiting.
func (o *Orders) landDone(l *lane, p *pipeline) {
	for f := p.oldest(); f != nil; f = p.oldest() {
		select {
		case <-f.done:
			o.landOldest(l, p)
		default:
			return
		}
	}
}

func (o *Orders) landAll(l *lane, p *pipeline) {
	for p.oldest() != nil {
		o.landOldest(l, p)
	}
}

// advisoryClass is the first key of the transaction-level advisory locks by which a batch's write
// waits for the end of the write before it (the second key: the low 32 bits of the latter's first
// order id). The two-key form never meets the one-key locks of Leader and Migrate.
const advisoryClass = 0x4c44_4f52 // "LDOR"

// runBatch serves batch: it reads what the batch needs in a snapshot while the batches before (the
// flights) may still be writing, and counts the planned units of those the snapshot does not show
// yet; it decides each order; and it starts the write of what it accepted as the next flight, which
// commits only after, and only if, the batch before committed as planned. A batch that writes nothing
// answers once the batches it counted on have landed.
func (o *Orders) runBatch(l *lane, batch []*orderRequest, p *pipeline) {
	start := time.Now()
	work := make([]*orderRequest, 0, len(batch))
	var later []*orderRequest
	seen := make(map[orderKey]bool, len(batch))
	inFlight := func(k orderKey) bool {
		for _, f := range p.flights {
			if f.keys[k] {
				return true
			}
		}
		return false
	}
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.answer(store.Placed{}, err) // gone before its turn: nothing was done
			continue
		}
		if !r.waited {
			r.waited = true
			o.metrics.batchWait.Observe(start.Sub(r.enqueued).Seconds())
		}
		// A second order under a key already in this batch, or in one being written, waits for a
		// later batch, where it finds the first one's order (a replay) or nothing.
		if seen[r.key()] || inFlight(r.key()) {
			later = append(later, r)
			continue
		}
		seen[r.key()] = true
		work = append(work, r)
	}
	if len(later) > 0 {
		o.mu.Lock()
		l.pending = append(later, l.pending...)
		o.mu.Unlock()
	}
	if len(work) == 0 {
		if len(later) > 0 && p.oldest() != nil {
			// Only orders waiting for a flight: let it land first, or they would be taken again at once.
			o.landOldest(l, p)
		}
		return
	}
	if g := o.gateOf(l); g != nil { // queued before the drop was known to be over
		for _, r := range work {
			r.answer(o.fromGate(r.ctx, g, r))
		}
		return
	}
	// At most maxReadAhead flights may still be writing while this batch reads, all planned (what a
	// batch run under the lock does is known only once it is done).
	o.landDone(l, p)
	for len(p.flights) >= maxReadAhead || (len(p.flights) > 0 && !p.latest().planned) {
		o.landOldest(l, p)
	}

	o.metrics.batchSize.Observe(float64(len(work)))
	ctx, cancel := context.WithTimeout(o.base, o.cfg.TxTimeout)
	defer cancel()
	readStart := time.Now()
	st, err := o.readSnapshot(ctx, l.dropID, work)
	o.metrics.batchStage.WithLabelValues("read").Observe(time.Since(readStart).Seconds())
	// The flights the snapshot does not show yet are a tail of the chain: find where it starts by the
	// stock. counted is the latest of them, whose commit this batch's write waits for.
	var counted *flight
	if err == nil && st.d.found && len(p.flights) > 0 {
		visible := -1
		if st.d.stock == p.latest().after {
			visible = len(p.flights)
		}
		for i, f := range p.flights {
			if visible < 0 && st.d.stock == f.before {
				visible = i
			}
		}
		switch {
		case visible < 0: // someone else sold meanwhile too: read again once the flights are in
			waitStart := time.Now()
			o.landAll(l, p)
			o.metrics.batchStage.WithLabelValues("wait").Observe(time.Since(waitStart).Seconds())
			st, err = o.readSnapshot(ctx, l.dropID, work)
		case visible < len(p.flights):
			for _, f := range p.flights[visible:] {
				st.count(f)
			}
			counted = p.latest()
		}
	}
	if g := o.gateOf(l); g != nil {
		for _, r := range work {
			r.answer(o.fromGate(r.ctx, g, r))
		}
		return
	}
	if err != nil {
		// Nothing was written: the batch runs under the row lock, which reads again.
		o.logger.Info("order batch read failed; running it under the row lock", "drop_id", l.dropID, "err", err)
		o.landAll(l, p)
		f := o.newFlight(work, nil)
		o.fly(l, f, work, nil, nil)
		p.flights = append(p.flights, f)
		return
	}
	decideStart := time.Now()
	pl := st.decide(work)
	o.metrics.batchStage.WithLabelValues("decide").Observe(time.Since(decideStart).Seconds())
	if len(pl.accepted) == 0 {
		if counted != nil {
			// The refusals count on counted's units: answer them only once it has committed.
			waitStart := time.Now()
			for slices.Contains(p.flights, counted) {
				o.landOldest(l, p)
			}
			o.metrics.batchStage.WithLabelValues("wait").Observe(time.Since(waitStart).Seconds())
			if !counted.asPlanned {
				o.mu.Lock()
				l.pending = append(work, l.pending...)
				o.mu.Unlock()
				return
			}
		}
		for i, r := range work {
			if pl.results[i].err != nil {
				o.metrics.rejected(pl.results[i].err, "database")
			}
			r.answer(pl.results[i].placed, pl.results[i].err)
		}
		o.learn(l, pl.news)
		return
	}
	f := o.newFlight(work, &pl)
	go o.fly(l, f, work, &pl, counted)
	p.flights = append(p.flights, f)
}

func (o *Orders) newFlight(work []*orderRequest, pl *plan) *flight {
	f := &flight{keys: make(map[orderKey]bool, len(work)), locked: make(chan struct{}), done: make(chan struct{})}
	for _, r := range work {
		f.keys[r.key()] = true
	}
	if pl != nil {
		f.planned, f.before, f.after = true, pl.d.stock, pl.remaining
		f.adds = make(map[int64]int)
		for _, i := range pl.accepted {
			ord := pl.results[i].placed.Order
			f.adds[ord.UserID] += ord.Quantity
		}
		f.firstID = pl.results[pl.accepted[0]].placed.Order.ID
	}
	return f
}

// gateOf is l's gate, or nil while the drop may still sell.
func (o *Orders) gateOf(l *lane) *gate {
	o.mu.Lock()
	defer o.mu.Unlock()
	return l.gate
}

// learn takes in what a batch learned about its drop: that it can take no more (the gate closes), or
// that it does not exist.
func (o *Orders) learn(l *lane, news dropNews) {
	switch {
	case news.final != nil:
		if o.gateOf(l) == nil {
			o.closeGate(l, news.final)
		}
	case news.missing:
		// No such drop: let the lane go as soon as its queue is empty, so that orders for made-up
		// drop ids do not pile up idle goroutines.
		o.mu.Lock()
		l.missing = true
		o.mu.Unlock()
	}
}

// fly writes pl (decided from a snapshot, counting on after's units when after is not nil) in one
// transaction and answers the batch once it has committed. When the snapshot turns out stale (after
// did not commit as planned, another process sold meanwhile, the drop ended, a key was taken
// concurrently), or pl is nil, the batch runs again under the drop's row lock (batchTx), which
// decides from what it reads after taking the lock.
func (o *Orders) fly(l *lane, f *flight, work []*orderRequest, pl *plan, after *flight) {
	defer close(f.done)
	txStart := time.Now()
	var (
		results []orderResult
		sum     commitSummary
		err     error
	)
	if pl != nil {
		results, sum, err = o.writePlan(l.dropID, f, pl, after)
		f.asPlanned = err == nil
		if errors.Is(err, errRetry) {
			o.metrics.batchRetries.Inc()
			o.logger.Debug("order batch snapshot was stale; running it under the row lock", "drop_id", l.dropID, "err", err)
		}
	} else {
		close(f.locked)
	}
	if pl == nil || errors.Is(err, errRetry) {
		for attempt := 1; ; attempt++ {
			results, sum, err = o.batchTx(l.dropID, work)
			if !errors.Is(err, errRetry) || attempt == 3 {
				break
			}
			o.metrics.batchRetries.Inc()
			o.logger.Info("order batch run again", "drop_id", l.dropID, "attempt", attempt, "err", err)
		}
	}
	o.metrics.batchTx.Observe(time.Since(txStart).Seconds())
	if err != nil {
		o.logger.Error("order batch failed", "drop_id", l.dropID, "orders", len(work), "err", err)
		for _, r := range work {
			r.answer(store.Placed{}, err)
		}
		return
	}
	for i, r := range work {
		if results[i].err != nil {
			o.metrics.rejected(results[i].err, "database")
		}
		r.answer(results[i].placed, results[i].err)
	}
	f.committed, f.news = sum.committed, sum.news
	if sum.committed {
		o.invalidate(l.dropID)
	}
}

// dropNews is what a batch learned about its drop beyond its orders: final, the refusal every later
// order gets (sold out, ended), or that the drop does not exist.
type dropNews struct {
	final   error
	missing bool
}

// closeGate records that l's drop can take no more orders, with its orders by key when they are few
// enough to keep. On a read error the gate stays open: the next batch learns it again.
func (o *Orders) closeGate(l *lane, refused error) {
	ctx, cancel := context.WithTimeout(o.base, o.cfg.TxTimeout)
	defer cancel()
	g := &gate{refused: refused, orders: make(map[orderKey]storedOrder)}
	rows, err := o.pool.Query(ctx, `SELECT user_id, idempotency_key, order_id, quantity, status, failure_code,
       created_at, request_hash
FROM orders WHERE drop_id = $1 LIMIT $2`, l.dropID, gateMaxOrders+1)
	if err == nil {
		var (
			k       orderKey
			s       storedOrder
			failure *string
		)
		_, err = pgx.ForEachRow(rows, []any{&k.userID, &k.key, &s.order.ID, &s.order.Quantity, &s.order.Status,
			&failure, &s.order.CreatedAt, &s.hash}, func() error {
			s.order.UserID, s.order.DropID, s.order.CreatedAt = k.userID, l.dropID, s.order.CreatedAt.UTC()
			s.order.FailureCode = ""
			if failure != nil {
				s.order.FailureCode = *failure
			}
			if g.orders != nil {
				g.orders[k] = s
			}
			if len(g.orders) > gateMaxOrders {
				g.orders = nil
			}
			return nil
		})
	}
	if err != nil {
		o.logger.Warn("could not load a finished drop's orders; it is judged by PostgreSQL meanwhile",
			"drop_id", l.dropID, "err", err)
		return
	}
	o.mu.Lock()
	l.gate = g
	o.mu.Unlock()
}

// errRetry marks a batch that rolled back for a reason that running it again resolves: a key of the
// batch inserted by a concurrent transaction after the batch looked (the next run sees that order),
// a deadlock PostgreSQL broke, or a snapshot that another transaction made stale.
var errRetry = errors.New("batch to run again")

// dropRowSQL reads a drop and the clock of the statement's transaction; batchLockSQL also takes the
// drop's row lock.
const (
	dropRowSQL = `SELECT creator_id, status, initial_stock, stock_count, max_per_user,
       now() >= start_time, now() < end_time, date_trunc('milliseconds', now())
FROM drops WHERE drop_id = $1`
	batchLockSQL = dropRowSQL + ` FOR NO KEY UPDATE`
)

// batchState is what a batch needs to decide: its drop, its buyers' totals, the orders already under
// its keys, which of its buyers exist, and an order id for each of its orders.
type batchState struct {
	d        dropState
	held     map[int64]int
	existing map[orderKey]storedOrder
	known    map[int64]bool
	ids      []int64
}

// queueReads queues the reads of a batch's state: the drop's row (with its row lock when lock is set),
// then the rest.
func queueReads(b *pgx.Batch, lock bool, dropID int64, reqs []*orderRequest) {
	n := len(reqs)
	userIDs := make([]int64, n)
	keys := make([]string, n)
	for i, r := range reqs {
		userIDs[i], keys[i] = r.req.UserID, r.req.IdempotencyKey
	}
	if lock {
		b.Queue(batchLockSQL, dropID)
	} else {
		b.Queue(dropRowSQL, dropID)
	}
	// One primary-key probe per buyer. Not user_id = ANY($2): under a generic plan (a prepared
	// statement run more than five times) ANY over a parameter is tested row by row against the whole
	// array for every row of the drop, dead versions included (9 ms a batch of 470 in a sale of
	// 10,000); nor a join on the array, which the planner may run as a hash join over every row of
	// the drop, once per batch however small.
	b.Queue(`SELECT u.user_id, (SELECT p.quantity FROM drop_purchases p WHERE p.drop_id = $1 AND p.user_id = u.user_id)
FROM unnest($2::bigint[]) AS u (user_id)`, dropID, userIDs)
	// One probe of the unique (user_id, idempotency_key) index per key (LIMIT 1 keeps the planner from
	// turning it into a join over every order).
	b.Queue(`SELECT o.user_id, o.idempotency_key, o.order_id, o.drop_id, o.quantity, o.status, o.failure_code,
       o.created_at, o.request_hash
FROM unnest($1::bigint[], $2::text[]) AS k (user_id, key)
CROSS JOIN LATERAL (SELECT * FROM orders o WHERE o.user_id = k.user_id AND o.idempotency_key = k.key LIMIT 1) AS o`, userIDs, keys)
	b.Queue(`SELECT user_id FROM users WHERE user_id = ANY($1)`, userIDs)
	b.Queue(`SELECT nextval('orders_order_id_seq') FROM generate_series(1, $1)`, n)
}

// scanReads reads the results of queueReads.
func scanReads(br pgx.BatchResults, dropID int64, n int, afterDrop func()) (batchState, error) {
	st := batchState{d: dropState{id: dropID, found: true}, held: make(map[int64]int),
		existing: make(map[orderKey]storedOrder), known: make(map[int64]bool, n), ids: make([]int64, 0, n)}
	d := &st.d
	err := br.QueryRow().Scan(&d.creatorID, &d.status, &d.initialStock, &d.stock, &d.maxPerUser, &d.started,
		&d.notEnded, &d.now)
	if afterDrop != nil {
		afterDrop()
	}
	if errors.Is(err, pgx.ErrNoRows) {
		d.found = false
	} else if err != nil {
		return st, err
	}
	d.now = d.now.UTC()
	var userID int64
	var qty *int
	rows, _ := br.Query()
	if _, err := pgx.ForEachRow(rows, []any{&userID, &qty}, func() error {
		if qty != nil {
			st.held[userID] = *qty
		}
		return nil
	}); err != nil {
		return st, err
	}
	var (
		k       orderKey
		s       storedOrder
		failure *string
	)
	rows, _ = br.Query()
	_, err = pgx.ForEachRow(rows, []any{&k.userID, &k.key, &s.order.ID, &s.order.DropID, &s.order.Quantity,
		&s.order.Status, &failure, &s.order.CreatedAt, &s.hash}, func() error {
		s.order.UserID, s.order.CreatedAt, s.order.FailureCode = k.userID, s.order.CreatedAt.UTC(), ""
		if failure != nil {
			s.order.FailureCode = *failure
		}
		st.existing[k] = s
		return nil
	})
	if err != nil {
		return st, err
	}
	rows, _ = br.Query()
	if _, err := pgx.ForEachRow(rows, []any{&userID}, func() error { st.known[userID] = true; return nil }); err != nil {
		return st, err
	}
	var id int64
	rows, _ = br.Query()
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error { st.ids = append(st.ids, id); return nil })
	return st, err
}

// readSnapshot reads a batch's state without the row lock, in one REPEATABLE READ snapshot (the
// drop, the totals and the keys as of one moment), in one round trip.
func (o *Orders) readSnapshot(ctx context.Context, dropID int64, reqs []*orderRequest) (batchState, error) {
	conn, err := o.pool.Acquire(ctx)
	if err != nil {
		return batchState{}, err
	}
	defer conn.Release()
	defer endTx(conn)
	b := &pgx.Batch{}
	b.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ")
	queueReads(b, false, dropID, reqs)
	b.Queue("COMMIT")
	br := conn.SendBatch(ctx, b)
	st, err := func() (batchState, error) {
		if _, err := br.Exec(); err != nil {
			return batchState{}, err
		}
		st, err := scanReads(br, dropID, len(reqs), nil)
		if err != nil {
			return st, err
		}
		_, err = br.Exec()
		return st, err
	}()
	return st, errors.Join(err, br.Close())
}

// count adds to a snapshot the units f plans to take, which it does not show yet.
func (st *batchState) count(f *flight) {
	st.d.stock = f.after
	if f.after == 0 {
		st.d.status = store.DropSoldOut
	}
	for u, q := range f.adds {
		st.held[u] += q
	}
}

// plan is what a batch decided: each order's result, the orders to write (indexes into the batch),
// and the stock expected before and left after.
type plan struct {
	d         dropState
	reqs      []*orderRequest
	results   []orderResult
	accepted  []int
	remaining int
	news      dropNews
}

// decide judges reqs in queue order against st: replays of the orders already under their keys, the
// drop's state, unknown buyers, each buyer's total and the stock left.
func (st *batchState) decide(reqs []*orderRequest) plan {
	d := st.d
	p := plan{d: d, reqs: reqs, results: make([]orderResult, len(reqs)), remaining: d.stock}
	final, dropErr := d.refusal()
	if final {
		p.news.final = dropErr
	}
	p.news.missing = !d.found
	for i, r := range reqs {
		if s, ok := st.existing[r.key()]; ok {
			p.results[i].placed, p.results[i].err = s.replay(r.hash)
			continue
		}
		err := dropErr
		if err == nil && !st.known[r.req.UserID] {
			err = fmt.Errorf("user %d: %w", r.req.UserID, store.ErrNotFound)
		}
		if err == nil {
			err = d.take(r.req.Quantity, p.remaining, st.held[r.req.UserID])
		}
		if err != nil {
			p.results[i].err = err
			continue
		}
		p.remaining -= r.req.Quantity
		st.held[r.req.UserID] += r.req.Quantity
		p.results[i].placed.Order = store.Order{ID: st.ids[len(p.accepted)], UserID: r.req.UserID, DropID: d.id,
			Quantity: r.req.Quantity, Status: store.OrderConfirmed, CreatedAt: d.now}
		p.accepted = append(p.accepted, i)
	}
	return p
}

// commitSummary is what a committed batch did to its drop, for the batch read while it was written.
type commitSummary struct {
	committed     bool
	before, after int
	added         map[int64]int
	news          dropNews
}

// queueWrites queues the writes of p: the order.confirmed rows (which wait for no one), then what
// wait queues (nil: nothing), then the stock (the drop's row lock; a stale snapshot fails here, with
// drops_stock_nonnegative), then the orders, then the drop's stock events (under the row lock, so a
// drop's rows get their ids in commit order, as the relay's coalescing of stock.changed counts on),
// then the buyers' totals (after the row lock, as in batchTx, so the two never wait for each other's
// rows in opposite orders). It returns the units it adds to each buyer's total.
func queueWrites(ctx context.Context, b *pgx.Batch, p *plan, wait func(*pgx.Batch)) (map[int64]int, error) {
	d, reqs, results := p.d, p.reqs, p.results
	accepted := slices.Clone(p.accepted)
	m := len(accepted)
	events := make([]fanout.Event, 0, m+3)
	for _, i := range accepted {
		ev, err := d.confirmedEvent(results[i].placed.Order)
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
	}
	// Rows in key order: batches of two drops that share keys (a key reused across drops) then take
	// the keys' index locks in the same order and cannot deadlock; and two batches that share buyers
	// lock their totals in the same order.
	slices.SortFunc(accepted, func(a, b int) int {
		return cmp.Or(cmp.Compare(reqs[a].req.UserID, reqs[b].req.UserID),
			strings.Compare(reqs[a].req.IdempotencyKey, reqs[b].req.IdempotencyKey))
	})
	orderIDs, buyers, quantities := make([]int64, m), make([]int64, m), make([]int32, m)
	orderKeys, hashes := make([]string, m), make([][]byte, m)
	var totalUsers []int64 // the buyers' totals, one row per buyer, in user order
	var totalQty []int32
	added := make(map[int64]int)
	for j, i := range accepted {
		ord := results[i].placed.Order
		orderIDs[j], buyers[j], quantities[j] = ord.ID, ord.UserID, int32(ord.Quantity)
		orderKeys[j], hashes[j] = reqs[i].req.IdempotencyKey, reqs[i].hash[:]
		added[ord.UserID] += ord.Quantity
		if n := len(totalUsers); n > 0 && totalUsers[n-1] == ord.UserID {
			totalQty[n-1] += int32(ord.Quantity)
		} else {
			totalUsers, totalQty = append(totalUsers, ord.UserID), append(totalQty, int32(ord.Quantity))
		}
	}
	taken := d.stock - p.remaining

	// The order.confirmed rows, one per order, on their buyers' subjects, need no order among batches:
	// on a live drop they are written before the row lock, while the batch before may still write. On a
	// drop still 'scheduled' (its scheduler late), the UPDATE below starts it and the database writes its
	// drop.started (00013), which must come first: then they follow the UPDATE.
	early := d.status == store.DropLive
	if early {
		if err := InsertEvents(ctx, queue{b}, events...); err != nil {
			return nil, err
		}
	}
	if wait != nil {
		wait(b)
	}
	// The stock must still be what the decisions were made against, and the drop still live; else
	// -1 breaks drops_stock_nonnegative and the whole batch rolls back (under the row lock of batchTx
	// nothing can have changed; after a snapshot, someone else may have sold meanwhile).
	b.Queue(`UPDATE drops SET stock_count = CASE WHEN `+liveCondition+` AND stock_count = $3 THEN stock_count - $2 ELSE -1 END,
       status = CASE WHEN stock_count = $3 AND $2 = $3 THEN 'sold_out' ELSE status END
WHERE drop_id = $1`, d.id, taken, d.stock)
	// The orders under the row lock: the foreign key check of each row then finds the drop's row locked
	// by this transaction already (a check while another batch holds it builds a multixact of the two
	// lockers and reads it back, row by row: 3 us an order instead of 9 to 19 in PostgreSQL).
	b.Queue(`INSERT INTO orders (order_id, user_id, drop_id, quantity, status, idempotency_key, request_hash, created_at)
SELECT o.id, o.user_id, $1, o.quantity, 'confirmed', o.key, o.hash, $2
FROM unnest($3::bigint[], $4::bigint[], $5::int[], $6::text[], $7::bytea[]) AS o (id, user_id, quantity, key, hash)`,
		d.id, d.now, orderIDs, buyers, quantities, orderKeys, hashes)
	// The drop's stock events under the row lock: a drop's rows get their ids in commit order, as the
	// relay's coalescing of stock.changed counts on.
	stock := d.stockEvents(d.stock, p.remaining)
	if !early {
		stock = append(events, stock...)
	}
	if err := InsertEvents(ctx, queue{b}, stock...); err != nil {
		return nil, err
	}
	b.Queue(`INSERT INTO drop_purchases AS p (drop_id, user_id, quantity, max_per_user)
SELECT $1, t.user_id, t.quantity, $2 FROM unnest($3::bigint[], $4::int[]) AS t (user_id, quantity)
ON CONFLICT (drop_id, user_id) DO UPDATE SET quantity = p.quantity + excluded.quantity`,
		d.id, d.maxPerUser, totalUsers, totalQty)
	return added, nil
}

// summary is what p did once committed.
func (p *plan) summary(added map[int64]int) commitSummary {
	s := commitSummary{committed: true, before: p.d.stock, after: p.remaining, added: added, news: p.news}
	if p.remaining == 0 {
		s.news.final = fmt.Errorf("drop %d: %w", p.d.id, store.ErrSoldOut)
	}
	return s
}

// staleOrRetry classifies the error of a batch's write: errRetry when running the batch again under
// the row lock resolves it (a deadlock, a key taken meanwhile, and, after a snapshot, the stock or a
// buyer's total changed by someone else).
func staleOrRetry(err error, fromSnapshot bool) error {
	code, constraint := pgError(err)
	switch {
	case code == "40P01", code == "23505" && constraint == ConstraintOrderUserIdempotencyKey:
		return fmt.Errorf("%w: %w", errRetry, err)
	case fromSnapshot && code == "22012":
		// 1/0: the batch counted on did not commit as planned.
		return fmt.Errorf("%w: %w", errRetry, err)
	case fromSnapshot && code == "23514" && (constraint == ConstraintStockNonNegative ||
		constraint == ConstraintDropSoldOutHasNoStock || constraint == ConstraintPurchaseWithinLimit):
		// The -1 of a stale stock breaks drops_stock_nonnegative, or first drops_sold_out_has_no_stock
		// when someone else sold the drop out meanwhile.
		return fmt.Errorf("%w: %w", errRetry, err)
	}
	return err
}

// writePlan writes pl, decided from a snapshot, in one transaction: a first round trip takes f's
// advisory lock (its successor waits on it), the second does the rest. Counting on after's units, it
// inserts its orders, then waits for after's transaction to end and checks that its first order is
// there (else 1/0, and the batch runs again under the row lock), then takes the row lock with the
// stock check, then the outbox rows and the totals, then commits.
func (o *Orders) writePlan(dropID int64, f *flight, pl *plan, after *flight) ([]orderResult, commitSummary, error) {
	ctx, cancel := context.WithTimeout(o.base, o.cfg.TxTimeout)
	defer cancel()
	lockedOnce := func() {
		select {
		case <-f.locked:
		default:
			close(f.locked)
		}
	}
	defer lockedOnce()
	conn, err := o.pool.Acquire(ctx)
	if err != nil {
		return nil, commitSummary{}, err
	}
	defer conn.Release()
	defer endTx(conn)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SELECT pg_advisory_xact_lock($1, $2)", int32(advisoryClass), int32(f.firstID))
	if err := execBatch(ctx, conn, b); err != nil {
		return nil, commitSummary{}, err
	}
	lockedOnce()

	var wait func(b *pgx.Batch)
	if after != nil {
		wait = func(b *pgx.Batch) {
			b.Queue("SELECT pg_advisory_xact_lock_shared($1, $2)", int32(advisoryClass), int32(after.firstID))
			b.Queue(`SELECT 1 / (SELECT count(*)::int FROM orders WHERE order_id = $1)`, after.firstID)
		}
		// Its transaction must hold its lock before this one asks for it.
		select {
		case <-after.locked:
		case <-ctx.Done():
			return nil, commitSummary{}, ctx.Err()
		}
	}
	b = &pgx.Batch{}
	added, err := queueWrites(ctx, b, pl, wait)
	if err != nil {
		return nil, commitSummary{}, err
	}
	b.Queue("COMMIT")
	writeStart := time.Now()
	err = execBatch(ctx, conn, b)
	o.metrics.batchStage.WithLabelValues("write").Observe(time.Since(writeStart).Seconds())
	o.metrics.lockWait.WithLabelValues(string(OrderModeBatched)).Observe(time.Since(writeStart).Seconds())
	if err != nil {
		return nil, commitSummary{}, staleOrRetry(err, true)
	}
	return pl.results, pl.summary(added), nil
}

// batchTx serves reqs (distinct keys, one drop) in one transaction of two round trips under the
// drop's row lock, and returns each one's result and what it did to the drop. err is for the whole
// batch.
func (o *Orders) batchTx(dropID int64, reqs []*orderRequest) ([]orderResult, commitSummary, error) {
	ctx, cancel := context.WithTimeout(o.base, o.cfg.TxTimeout)
	defer cancel()
	conn, err := o.pool.Acquire(ctx)
	if err != nil {
		return nil, commitSummary{}, err
	}
	defer conn.Release()
	defer endTx(conn)

	b := &pgx.Batch{}
	b.Queue("BEGIN")
	queueReads(b, true, dropID, reqs)
	lockStart := time.Now()
	br := conn.SendBatch(ctx, b)
	st, err := func() (batchState, error) {
		if _, err := br.Exec(); err != nil {
			return batchState{}, err
		}
		return scanReads(br, dropID, len(reqs), func() {
			o.metrics.lockWait.WithLabelValues(string(OrderModeBatched)).Observe(time.Since(lockStart).Seconds())
		})
	}()
	if err = errors.Join(err, br.Close()); err != nil {
		return nil, commitSummary{}, err
	}
	p := st.decide(reqs)
	if len(p.accepted) == 0 {
		_, err := conn.Exec(ctx, "ROLLBACK")
		return p.results, commitSummary{before: st.d.stock, after: st.d.stock, news: p.news}, err
	}
	b = &pgx.Batch{}
	added, err := queueWrites(ctx, b, &p, nil)
	if err != nil {
		return nil, commitSummary{}, err
	}
	b.Queue("COMMIT")
	if err := execBatch(ctx, conn, b); err != nil {
		return nil, commitSummary{}, staleOrRetry(err, false)
	}
	return p.results, p.summary(added), nil
}
