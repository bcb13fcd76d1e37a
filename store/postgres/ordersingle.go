package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store"
)

// The single mode: one transaction per order, in two round trips once the key is known to be free.
//
//	(outside any lock) is the key taken? + an order id from the sequence
//	BEGIN; UPDATE drops ... WHERE live AND stock_count >= $n RETURNING ...       ← takes the row lock
//	upsert drop_purchases; INSERT orders; INSERT outbox; COMMIT                  ← one pipeline
//
// The row lock is held for one round trip and the commit. The buyer's total is checked by the
// schema (drop_purchases_within_limit): a violation aborts this one order's transaction, which is
// exactly the refusal wanted.

// singleTakeSQL takes $2 units of drop $1 when it is live and has them, and reports the drop as read
// before the lock (d) with the stock left after the decrement (u; NULL when nothing was taken).
const singleTakeSQL = `WITH d AS (
	SELECT creator_id, status, initial_stock, stock_count, max_per_user,
	       now() >= start_time AS started, now() < end_time AS not_ended
	FROM drops WHERE drop_id = $1
), u AS (
	UPDATE drops SET stock_count = stock_count - $2,
	       status = CASE WHEN stock_count = $2 THEN 'sold_out' ELSE status END
	WHERE drop_id = $1 AND stock_count >= $2 AND max_per_user >= $2 AND ` + liveCondition + `
	RETURNING stock_count, creator_id, initial_stock, max_per_user
)
SELECT d.creator_id, d.status, d.initial_stock, d.stock_count, d.max_per_user, d.started, d.not_ended,
       date_trunc('milliseconds', now()), u.stock_count, u.initial_stock, u.max_per_user
FROM d LEFT JOIN u ON true`

// dropStateSQL reads a drop the way the order transactions judge it.
const dropStateSQL = `SELECT creator_id, status, initial_stock, stock_count, max_per_user,
       now() >= start_time, now() < end_time, date_trunc('milliseconds', now())
FROM drops WHERE drop_id = $1`

func (o *Orders) placeSingle(ctx context.Context, req store.PlaceOrder) (store.Placed, error) {
	hash := req.Fingerprint()
	// Outside any lock: a replay is answered without touching the drop.
	var (
		orderID   int64
		s         storedOrder
		prevID    *int64
		prevDrop  *int64
		prevQty   *int
		prevStat  *string
		prevFail  *string
		prevAt    *time.Time
		prevHash  []byte
		takeTries int
	)
	err := o.pool.QueryRow(ctx, `SELECT nextval('orders_order_id_seq'), o.order_id, o.drop_id, o.quantity, o.status,
       o.failure_code, o.created_at, o.request_hash
FROM (VALUES (1)) AS one (x) LEFT JOIN orders o ON o.user_id = $1 AND o.idempotency_key = $2`,
		req.UserID, req.IdempotencyKey).Scan(&orderID, &prevID, &prevDrop, &prevQty, &prevStat, &prevFail, &prevAt, &prevHash)
	if err != nil {
		return store.Placed{}, err
	}
	if prevID != nil {
		s.order = store.Order{ID: *prevID, UserID: req.UserID, DropID: *prevDrop, Quantity: *prevQty,
			Status: store.OrderStatus(*prevStat), CreatedAt: prevAt.UTC()}
		if prevFail != nil {
			s.order.FailureCode = *prevFail
		}
		s.hash = prevHash
		return s.replay(hash)
	}

	// The transaction runs to its end even if the buyer goes away, so a retry finds its outcome.
	txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.TxTimeout)
	defer cancel()
	conn, err := o.pool.Acquire(txCtx)
	if err != nil {
		return store.Placed{}, err
	}
	defer conn.Release()
	defer endTx(conn)

	for {
		takeTries++
		d := dropState{id: req.DropID}
		var newStock, initial, maxPerUser *int
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue(singleTakeSQL, req.DropID, req.Quantity)
		lockStart := time.Now()
		br := conn.SendBatch(txCtx, b)
		_, err = br.Exec()
		if err == nil {
			err = br.QueryRow().Scan(&d.creatorID, &d.status, &d.initialStock, &d.stock, &d.maxPerUser, &d.started,
				&d.notEnded, &d.now, &newStock, &initial, &maxPerUser)
		}
		err = errors.Join(err, br.Close())
		o.metrics.lockWait.WithLabelValues(string(OrderModeSingle)).Observe(time.Since(lockStart).Seconds())
		d.found = !errors.Is(err, pgx.ErrNoRows)
		if err != nil && d.found {
			return store.Placed{}, err
		}
		d.now = d.now.UTC()
		if newStock != nil {
			d.initialStock, d.maxPerUser = *initial, *maxPerUser
			return o.commitSingle(txCtx, conn, req, hash, orderID, d, *newStock)
		}
		// Nothing taken. A request with the same key may have committed while this one waited for the
		// lock: its order is the answer then.
		s, found, err := rollbackAndFind(txCtx, conn, req.UserID, req.IdempotencyKey)
		if err != nil {
			return store.Placed{}, err
		}
		if found {
			return s.replay(hash)
		}
		// d was read before the row lock: if it says the order could have been served, another
		// transaction changed the drop meanwhile; read it again.
		if d.found && d.orderable(req.Quantity) {
			d = dropState{id: req.DropID}
			err := conn.QueryRow(txCtx, dropStateSQL, req.DropID).Scan(&d.creatorID, &d.status, &d.initialStock,
				&d.stock, &d.maxPerUser, &d.started, &d.notEnded, &d.now)
			d.found = !errors.Is(err, pgx.ErrNoRows)
			if err != nil && d.found {
				return store.Placed{}, err
			}
			if d.orderable(req.Quantity) && takeTries < 3 {
				continue // the drop moved under us, in our favour: take again
			}
		}
		err = d.refuse(req.Quantity)
		o.metrics.rejected(err, "database")
		return store.Placed{}, err
	}
}

// orderable reports whether an order of quantity units passes the drop-level checks (the buyer's own
// total aside).
func (d dropState) orderable(quantity int) bool {
	if _, err := d.refusal(); err != nil {
		return false
	}
	return d.take(quantity, d.stock, 0) == nil
}

// refuse is the refusal of an order of quantity units the drop could not serve.
func (d dropState) refuse(quantity int) error {
	if _, err := d.refusal(); err != nil {
		return err
	}
	if err := d.take(quantity, d.stock, 0); err != nil {
		return err
	}
	return fmt.Errorf("drop %d: no stock could be taken: %w", d.id, store.ErrSoldOut)
}

// commitSingle writes the rest of an order whose stock is taken, and commits, in one round trip.
func (o *Orders) commitSingle(ctx context.Context, conn *pgxpool.Conn, req store.PlaceOrder, hash [32]byte,
	orderID int64, d dropState, newStock int) (store.Placed, error) {
	ord := store.Order{ID: orderID, UserID: req.UserID, DropID: req.DropID, Quantity: req.Quantity,
		Status: store.OrderConfirmed, CreatedAt: d.now}
	confirmed, err := d.confirmedEvent(ord)
	if err != nil {
		return store.Placed{}, err
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO drop_purchases AS p (drop_id, user_id, quantity, max_per_user) VALUES ($1, $2, $3, $4)
ON CONFLICT (drop_id, user_id) DO UPDATE SET quantity = p.quantity + excluded.quantity`,
		req.DropID, req.UserID, req.Quantity, d.maxPerUser)
	b.Queue(`INSERT INTO orders (order_id, user_id, drop_id, quantity, status, idempotency_key, request_hash, created_at)
VALUES ($1, $2, $3, $4, 'confirmed', $5, $6, $7)`, orderID, req.UserID, req.DropID, req.Quantity,
		req.IdempotencyKey, hash[:], d.now)
	events := append([]fanout.Event{confirmed}, d.stockEvents(newStock+req.Quantity, newStock)...)
	if err := InsertEvents(ctx, queue{b}, events...); err != nil {
		return store.Placed{}, err
	}
	b.Queue("COMMIT")
	err = execBatch(ctx, conn, b)
	if err == nil {
		o.invalidate(req.DropID)
		return store.Placed{Order: ord}, nil
	}
	// The transaction failed. A request with the same key that committed first (the unique violation,
	// or a limit reached by that very order) makes its order the answer.
	s, found, ferr := rollbackAndFind(ctx, conn, req.UserID, req.IdempotencyKey)
	if ferr != nil {
		return store.Placed{}, errors.Join(err, ferr)
	}
	if found {
		return s.replay(hash)
	}
	switch _, constraint := pgError(err); {
	case constraint == ConstraintPurchaseWithinLimit:
		err = fmt.Errorf("drop %d allows %d per buyer: %w", req.DropID, d.maxPerUser, store.ErrLimitExceeded)
		o.metrics.rejected(err, "database")
		return store.Placed{}, err
	case constraint == ConstraintPurchaseUser || constraint == ConstraintOrderUser:
		return store.Placed{}, fmt.Errorf("user %d: %w", req.UserID, store.ErrNotFound)
	}
	return store.Placed{}, err
}

// execBatch runs a batch of statements whose results are not needed and returns the first error. A
// batch ending in COMMIT must report COMMIT: PostgreSQL answers ROLLBACK to a COMMIT of a failed
// transaction.
func execBatch(ctx context.Context, conn *pgxpool.Conn, b *pgx.Batch) error {
	n := b.Len()
	last := ""
	if n > 0 {
		last = b.QueuedQueries[n-1].SQL
	}
	br := conn.SendBatch(ctx, b)
	var err error
	for i := 0; i < n && err == nil; i++ {
		var tag pgconn.CommandTag
		tag, err = br.Exec()
		if err == nil && i == n-1 && last == "COMMIT" && tag.String() != "COMMIT" {
			err = fmt.Errorf("commit answered %q", tag.String())
		}
	}
	return errors.Join(err, br.Close())
}
