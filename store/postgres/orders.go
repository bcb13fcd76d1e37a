package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store"
)

// OrderMode chooses how Orders takes stock.
type OrderMode string

// The order modes.
const (
	// OrderModeBatched coalesces the concurrent orders of one drop that reach this process into one
	// transaction (group commit: one row lock, one conditional UPDATE, one multi-row INSERT, one
	// commit for the whole batch), and answers from memory once PostgreSQL has said a drop is sold out
	// or ended. The default.
	OrderModeBatched OrderMode = "batched"
	// OrderModeSingle runs one transaction per order, every buyer of a drop queueing on its row lock:
	// the plain baseline.
	OrderModeSingle OrderMode = "single"
)

// DropCache is told after each commit that changed a drop's stock, so a cached copy of the drop does
// not outlive the change by more than one call (store/redis's drop cache satisfies it).
type DropCache interface {
	InvalidateDrop(ctx context.Context, dropID int64) error
}

// OrdersConfig configures Orders. Zero values are the documented defaults.
type OrdersConfig struct {
	// Mode is OrderModeBatched or OrderModeSingle; "" means batched.
	Mode OrderMode
	// MaxBatch caps the orders of one batched transaction; 0 means 500.
	MaxBatch int
	// IdleTimeout is how long a drop's batcher goroutine outlives its last order (it keeps the drop's
	// sold-out or ended flag while it lives); 0 means 30 s.
	IdleTimeout time.Duration
	// TxTimeout bounds one order or batch transaction, the wait for the row lock included; 0 means
	// 15 s. The transaction runs to its end even when the buyer's request is cancelled, so a retry
	// with the same key finds the outcome.
	TxTimeout time.Duration
	// Cache, when not nil, is invalidated after every stock commit, in the background and coalesced
	// per drop (see DropCache).
	Cache DropCache
	// CacheTimeout bounds one invalidation; 0 means 1 s.
	CacheTimeout time.Duration
	// Logger receives failures that are not the caller's (invalidation errors, retried batches); nil
	// discards them.
	Logger *slog.Logger
	// Registerer receives the livedrops_order_* metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Orders places and reads orders. Every confirmed order commits, in one transaction, with its stock
// decrement (never below zero, only while the drop is live), its buyer's running total (never above
// max_per_user) and its events (order.confirmed, one stock.changed per transaction, stock.low and
// drop.soldout when the transaction crosses those lines); the drop's row lock orders them.
//
// Idempotency: an order is stored under UNIQUE (user_id, idempotency_key) with the SHA-256 of its
// canonical request (store.PlaceOrder.Fingerprint). A retry with the same request gets the stored
// order back (Placed.Replayed), with another request store.ErrIdempotencyMismatch; two requests with
// one key at the same moment create one order, the second waiting for the first. Keys live as long as
// their orders (at least 24 h is promised; orders are never pruned today).
//
// A refusal (sold out, not live, over the limit) is not stored under its key: nothing was created,
// and since stock only falls, a buyer's total only grows and time only advances, a retry is refused
// again, except a request refused before the drop started, which is then served as if sent anew.
//
// Orders is safe for concurrent use. Close it to stop the batchers.
type Orders struct {
	pool    *pgxpool.Pool
	cfg     OrdersConfig
	logger  *slog.Logger
	metrics *orderMetrics

	// base carries the batchers' transactions; cancelled when Close runs out of time.
	base   context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	lanes    map[int64]*lane // batched mode: one per drop with recent orders
	closed   bool
	closing  chan struct{} // closed by Close: the batchers drain their queues and stop
	batchers sync.WaitGroup

	inval     *invalidator  // nil without a Cache
	invalStop chan struct{} // closed by Close once the batchers are done
	invalDone chan struct{} // closed when the invalidator has stopped
}

// NewOrders returns the order store on pool.
func NewOrders(pool *pgxpool.Pool, cfg OrdersConfig) (*Orders, error) {
	switch cfg.Mode {
	case "":
		cfg.Mode = OrderModeBatched
	case OrderModeBatched, OrderModeSingle:
	default:
		return nil, fmt.Errorf("orders: unknown mode %q (want %q or %q)", cfg.Mode, OrderModeBatched, OrderModeSingle)
	}
	if cfg.MaxBatch < 0 || cfg.IdleTimeout < 0 || cfg.TxTimeout < 0 || cfg.CacheTimeout < 0 {
		return nil, errors.New("orders: negative setting")
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 500
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.TxTimeout == 0 {
		cfg.TxTimeout = 15 * time.Second
	}
	if cfg.CacheTimeout == 0 {
		cfg.CacheTimeout = time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	metrics, err := newOrderMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	o := &Orders{pool: pool, cfg: cfg, logger: logger, metrics: metrics, lanes: make(map[int64]*lane),
		closing: make(chan struct{}), invalStop: make(chan struct{}), invalDone: make(chan struct{})}
	o.base, o.cancel = context.WithCancel(context.Background())
	if cfg.Cache == nil {
		close(o.invalDone)
		return o, nil
	}
	o.inval = newInvalidator(cfg.Cache, cfg.CacheTimeout, logger, metrics)
	go func() {
		defer close(o.invalDone)
		o.inval.run(o.base, o.invalStop)
	}()
	return o, nil
}

// Mode is the mode o runs in.
func (o *Orders) Mode() OrderMode { return o.cfg.Mode }

// PlaceOrder takes req.Quantity units of req.DropID for req.UserID, or answers the order already
// stored under req.IdempotencyKey. Refusals wrap store.ErrSoldOut, store.ErrDropNotLive,
// store.ErrLimitExceeded, store.ErrNotFound (unknown drop or user), store.ErrIdempotencyMismatch or
// a *store.FieldError; after Close it is store.ErrUnavailable. An answer comes only after the commit,
// so a nil error means the order is durable; any other error means it may or may not have committed,
// and a retry with the same key tells which.
func (o *Orders) PlaceOrder(ctx context.Context, req store.PlaceOrder) (store.Placed, error) {
	start := time.Now()
	placed, err := o.placeOrder(ctx, req)
	o.metrics.observe(time.Since(start), placed, err)
	if err != nil {
		return store.Placed{}, fmt.Errorf("place order: %w", err)
	}
	return placed, nil
}

func (o *Orders) placeOrder(ctx context.Context, req store.PlaceOrder) (store.Placed, error) {
	if err := req.Validate(); err != nil {
		return store.Placed{}, err
	}
	if o.cfg.Mode == OrderModeSingle {
		o.mu.Lock()
		closed := o.closed
		o.mu.Unlock()
		if closed {
			return store.Placed{}, fmt.Errorf("orders are closed: %w", store.ErrUnavailable)
		}
		return o.placeSingle(ctx, req)
	}
	return o.placeBatched(ctx, req)
}

// Close stops taking orders (PlaceOrder answers store.ErrUnavailable), lets the orders already queued
// finish their transactions, stops the batchers, then sends the last cache invalidations. When ctx
// ends first, the transactions still running are cancelled (they roll back) and Close returns ctx's
// error. It does not wait for single-mode orders in flight: they end with their requests. Safe to
// call more than once.
func (o *Orders) Close(ctx context.Context) error {
	o.mu.Lock()
	first := !o.closed
	if first {
		o.closed = true
		close(o.closing)
	}
	o.mu.Unlock()
	batchersDone := make(chan struct{})
	go func() {
		o.batchers.Wait()
		close(batchersDone)
	}()
	var err error
	select {
	case <-batchersDone:
	case <-ctx.Done():
		err = fmt.Errorf("close orders: %w", ctx.Err())
		o.cancel()
		<-batchersDone
	}
	if first {
		close(o.invalStop)
	}
	select {
	case <-o.invalDone:
	case <-ctx.Done():
		o.cancel()
		<-o.invalDone
		if err == nil {
			err = fmt.Errorf("close orders: %w", ctx.Err())
		}
	}
	o.cancel()
	return err
}

// Order returns order orderID if userID placed it; anyone else's order, like a missing one, is
// store.ErrNotFound (no leak of what exists).
func (o *Orders) Order(ctx context.Context, userID, orderID int64) (store.Order, error) {
	row := o.pool.QueryRow(ctx, `SELECT order_id, user_id, drop_id, quantity, status, failure_code, created_at
FROM orders WHERE order_id = $1 AND user_id = $2`, orderID, userID)
	ord, err := scanOrder(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Order{}, fmt.Errorf("order %d: %w", orderID, store.ErrNotFound)
	}
	if err != nil {
		return store.Order{}, fmt.Errorf("order %d: %w", orderID, err)
	}
	return ord, nil
}

// UserOrders returns a page of userID's orders, newest first (by order id). The cursor's ID is the
// last order id seen.
func (o *Orders) UserOrders(ctx context.Context, userID int64, req store.PageRequest) (store.Page[store.Order], error) {
	limit := pageLimit(req.Limit)
	before := int64(store.MaxID) + 1
	if req.After != nil {
		before = req.After.ID
	}
	rows, err := o.pool.Query(ctx, `SELECT order_id, user_id, drop_id, quantity, status, failure_code, created_at
FROM orders WHERE user_id = $1 AND order_id < $2 ORDER BY order_id DESC LIMIT $3`, userID, before, limit+1)
	if err != nil {
		return store.Page[store.Order]{}, fmt.Errorf("orders of user %d: %w", userID, err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Order, error) { return scanOrder(row) })
	if err != nil {
		return store.Page[store.Order]{}, fmt.Errorf("orders of user %d: %w", userID, err)
	}
	return cut(items, limit, store.Order.Position), nil
}

func scanOrder(row pgx.Row) (store.Order, error) {
	var ord store.Order
	var failure *string
	err := row.Scan(&ord.ID, &ord.UserID, &ord.DropID, &ord.Quantity, &ord.Status, &failure, &ord.CreatedAt)
	if failure != nil {
		ord.FailureCode = *failure
	}
	ord.CreatedAt = ord.CreatedAt.UTC()
	return ord, err
}

// storedOrder is an order found under an idempotency key, with the fingerprint it was placed with.
type storedOrder struct {
	order store.Order
	hash  []byte
}

// replay answers a request whose key already holds an order.
func (s storedOrder) replay(hash [32]byte) (store.Placed, error) {
	if string(s.hash) != string(hash[:]) {
		return store.Placed{}, fmt.Errorf("key of order %d: %w", s.order.ID, store.ErrIdempotencyMismatch)
	}
	return store.Placed{Order: s.order, Replayed: true}, nil
}

// dropState is a drop's row as an order transaction read it, with the transaction's clock.
type dropState struct {
	id           int64
	found        bool
	creatorID    int64
	status       store.DropStatus
	initialStock int
	stock        int
	maxPerUser   int
	now          time.Time // the transaction's now(), to the millisecond: created_at and event times
	started      bool      // now() >= start_time
	notEnded     bool      // now() < end_time
}

// refusal is why no order of this drop can be served right now, or nil; terminal says the reason
// never goes away (sold out, ended), so it may be answered from memory from then on. The order of the
// checks is the precedence of the reasons.
func (d dropState) refusal() (terminal bool, err error) {
	switch {
	case !d.found:
		return false, fmt.Errorf("drop %d: %w", d.id, store.ErrNotFound)
	case d.status == store.DropEnded || !d.notEnded:
		return true, fmt.Errorf("drop %d has ended: %w", d.id, store.ErrDropNotLive)
	case d.status == store.DropSoldOut || d.stock <= 0:
		return true, fmt.Errorf("drop %d: %w", d.id, store.ErrSoldOut)
	case d.status == store.DropScheduled && !d.started:
		return false, fmt.Errorf("drop %d has not started: %w", d.id, store.ErrDropNotLive)
	case d.status != store.DropLive && d.status != store.DropScheduled:
		return false, fmt.Errorf("drop %d is %s: %w", d.id, d.status, store.ErrDropNotLive)
	}
	return false, nil
}

// take checks one order of quantity units against the drop's remaining stock and the buyer's
// current total.
func (d dropState) take(quantity, remaining, held int) error {
	switch {
	case remaining <= 0:
		return fmt.Errorf("drop %d: %w", d.id, store.ErrSoldOut)
	case quantity > d.maxPerUser || held+quantity > d.maxPerUser:
		return fmt.Errorf("drop %d allows %d per buyer, %d held: %w", d.id, d.maxPerUser, held, store.ErrLimitExceeded)
	case quantity > remaining:
		return fmt.Errorf("drop %d has %d left: %w", d.id, remaining, store.ErrSoldOut)
	}
	return nil
}

// liveCondition is the SQL form of "stock may be taken now" (dropState.refusal's live test).
const liveCondition = `(status = 'live' OR (status = 'scheduled' AND now() >= start_time)) AND now() < end_time`

// stockEvents are the events of one commit that took a drop's stock from old to new: stock.changed
// always, stock.low when it crossed 10% of the initial stock, drop.soldout when it reached 0.
func (d dropState) stockEvents(old, new int) []fanout.Event {
	ev := func(t fanout.Type, data string) fanout.Event {
		return fanout.Event{Type: t, TS: d.now, CreatorID: d.creatorID, DropID: d.id, Data: json.RawMessage(data)}
	}
	events := []fanout.Event{ev(fanout.StockChanged,
		fmt.Sprintf(`{"stock_count":%d,"sold":%d}`, new, d.initialStock-new))}
	if old*10 > d.initialStock && new*10 <= d.initialStock {
		events = append(events, ev(fanout.StockLow, fmt.Sprintf(`{"stock_count":%d}`, new)))
	}
	if old > 0 && new == 0 {
		events = append(events, ev(fanout.DropSoldOut, `{}`))
	}
	return events
}

// confirmedEvent is the order.confirmed event of ord.
func (d dropState) confirmedEvent(ord store.Order) (fanout.Event, error) {
	data, err := ord.MarshalJSON()
	if err != nil {
		return fanout.Event{}, err
	}
	return fanout.Event{Type: fanout.OrderConfirmed, TS: d.now, CreatorID: d.creatorID, DropID: d.id,
		UserID: ord.UserID, Data: data}, nil
}

// queue adapts a pgx.Batch to InsertEvents: the statement joins the batch (the same round trip as
// the rest of the transaction) instead of running at once; its result is read with the batch's.
type queue struct{ b *pgx.Batch }

func (q queue) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	q.b.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

// pgCode and pgConstraint describe a PostgreSQL error; both "" for other errors.
func pgError(err error) (code, constraint string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code, pgErr.ConstraintName
	}
	return "", ""
}

// endTx rolls back what a failed pipeline left open on conn, so the connection goes back to the pool
// clean (the pool destroys one still in a transaction).
func endTx(conn *pgxpool.Conn) {
	if conn.Conn().PgConn().TxStatus() == 'I' || conn.Conn().IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = conn.Exec(ctx, "ROLLBACK")
}

// findOrderSQL reads the order under (user_id $1, idempotency_key $2).
const findOrderSQL = `SELECT order_id, drop_id, quantity, status, failure_code, created_at, request_hash
FROM orders WHERE user_id = $1 AND idempotency_key = $2`

// findOrder looks up the order under (userID, key).
func findOrder(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, userID int64, key string) (storedOrder, bool, error) {
	return scanStored(q.QueryRow(ctx, findOrderSQL, userID, key), userID)
}

// rollbackAndFind ends the transaction on conn and looks up the order under (userID, key) in the same
// round trip: a refusal is answered only once it is sure no concurrent request with the same key
// committed an order meanwhile (that order is then the answer).
func rollbackAndFind(ctx context.Context, conn *pgxpool.Conn, userID int64, key string) (storedOrder, bool, error) {
	if conn.Conn().PgConn().TxStatus() == 'E' {
		// A failed transaction refuses even the preparation of a statement: end it first.
		if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
			return storedOrder{}, false, err
		}
		return findOrder(ctx, conn, userID, key)
	}
	b := &pgx.Batch{}
	b.Queue("ROLLBACK")
	b.Queue(findOrderSQL, userID, key)
	br := conn.SendBatch(ctx, b)
	_, err := br.Exec()
	var s storedOrder
	var found bool
	if err == nil {
		s, found, err = scanStored(br.QueryRow(), userID)
	}
	return s, found, errors.Join(err, br.Close())
}

func scanStored(row pgx.Row, userID int64) (storedOrder, bool, error) {
	var s storedOrder
	var failure *string
	err := row.Scan(&s.order.ID, &s.order.DropID, &s.order.Quantity, &s.order.Status, &failure, &s.order.CreatedAt, &s.hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return storedOrder{}, false, nil
	}
	if err != nil {
		return storedOrder{}, false, err
	}
	s.order.UserID = userID
	s.order.CreatedAt = s.order.CreatedAt.UTC()
	if failure != nil {
		s.order.FailureCode = *failure
	}
	return s, true, nil
}
