package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

var orderModes = []postgres.OrderMode{postgres.OrderModeSingle, postgres.OrderModeBatched}

// orderWorld is a migrated database with a creator and a product to drop.
type orderWorld struct {
	pool      *pgxpool.Pool
	creatorID int64
	productID int64
}

func newOrderWorld(tb testing.TB) orderWorld {
	tb.Helper()
	w := orderWorld{pool: migrated(tb, storetest.NewMigratedDatabase(tb))}
	w.creatorID = w.users(tb, 1)[0]
	mustExec(tb, w.pool, `INSERT INTO creators (creator_id, profile_name) VALUES ($1, 'Creator')`, w.creatorID)
	if err := w.pool.QueryRow(testContext(tb), `INSERT INTO products (creator_id, title, price_cents)
VALUES ($1, 'Hoodie', 4900) RETURNING product_id`, w.creatorID).Scan(&w.productID); err != nil {
		tb.Fatal(err)
	}
	return w
}

// users creates n users and returns their ids.
func (w orderWorld) users(tb testing.TB, n int) []int64 {
	tb.Helper()
	rows, err := w.pool.Query(testContext(tb), `INSERT INTO users (name, email)
SELECT 'buyer ' || g, 'buyer-' || g || '-' || gen_random_uuid() || '@example.com' FROM generate_series(1, $1) AS g
RETURNING user_id`, n)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return ids
}

// dropSpec describes a drop to create; zero fields take the defaults of drop.
type dropSpec struct {
	stock, maxPerUser int
	start, end        time.Time
	status            store.DropStatus
}

// drop creates a drop, by default live since a minute with 10 units and 5 per buyer.
func (w orderWorld) drop(tb testing.TB, s dropSpec) int64 {
	tb.Helper()
	now := time.Now()
	if s.stock == 0 {
		s.stock = 10
	}
	if s.maxPerUser == 0 {
		s.maxPerUser = 5
	}
	if s.start.IsZero() {
		s.start = now.Add(-time.Minute)
	}
	if s.end.IsZero() {
		s.end = now.Add(time.Hour)
	}
	if s.status == "" {
		s.status = store.DropLive
	}
	var id int64
	if err := w.pool.QueryRow(testContext(tb), `INSERT INTO drops (creator_id, product_id, start_time, end_time,
       initial_stock, stock_count, max_per_user, status)
VALUES ($1, $2, $3, $4, $5, $5, $6, $7) RETURNING drop_id`,
		w.creatorID, w.productID, s.start, s.end, s.stock, s.maxPerUser, s.status).Scan(&id); err != nil {
		tb.Fatal(err)
	}
	return id
}

func newOrders(tb testing.TB, pool *pgxpool.Pool, cfg postgres.OrdersConfig) *postgres.Orders {
	tb.Helper()
	o, err := postgres.NewOrders(pool, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := o.Close(context.Background()); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return o
}

// dropAccount is what the database says a drop sold.
type dropAccount struct {
	initial, stock       int
	status               store.DropStatus
	confirmed, purchased int // sums of confirmed order quantities and of buyers' totals
	orders, duplicates   int // confirmed orders; keys holding more than one order
}

func account(tb testing.TB, pool *pgxpool.Pool, dropID int64) dropAccount {
	tb.Helper()
	var a dropAccount
	err := pool.QueryRow(testContext(tb), `SELECT d.initial_stock, d.stock_count, d.status,
       (SELECT coalesce(sum(quantity), 0) FROM orders WHERE drop_id = d.drop_id AND status = 'confirmed'),
       (SELECT coalesce(sum(quantity), 0) FROM drop_purchases WHERE drop_id = d.drop_id),
       (SELECT count(*) FROM orders WHERE drop_id = d.drop_id AND status = 'confirmed'),
       (SELECT count(*) FROM (SELECT 1 FROM orders GROUP BY user_id, idempotency_key HAVING count(*) > 1) AS x)
FROM drops d WHERE d.drop_id = $1`, dropID).Scan(&a.initial, &a.stock, &a.status, &a.confirmed, &a.purchased,
		&a.orders, &a.duplicates)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// checkBooks fails unless the drop's books balance: nothing oversold, every unit sold is in a confirmed
// order and in a buyer's total, no key holds two orders.
func checkBooks(tb testing.TB, pool *pgxpool.Pool, dropID int64) dropAccount {
	tb.Helper()
	a := account(tb, pool, dropID)
	if a.confirmed > a.initial {
		tb.Errorf("oversold: %d confirmed of %d", a.confirmed, a.initial)
	}
	if a.stock+a.confirmed != a.initial || a.purchased != a.confirmed {
		tb.Errorf("books do not balance: stock %d + confirmed %d != initial %d, or purchased %d != confirmed",
			a.stock, a.confirmed, a.initial, a.purchased)
	}
	if a.duplicates != 0 {
		tb.Errorf("got %d keys with two orders, want 0", a.duplicates)
	}
	if (a.stock == 0) != (a.status == store.DropSoldOut) {
		tb.Errorf("stock %d with status %s", a.stock, a.status)
	}
	return a
}

// dropEvents returns the outbox events about dropID, in id order.
func dropEvents(tb testing.TB, pool *pgxpool.Pool, dropID int64) []fanout.Event {
	tb.Helper()
	rows, err := pool.Query(testContext(tb), `SELECT subject, payload FROM outbox
WHERE (payload->>'drop_id')::bigint = $1 ORDER BY id`, dropID)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var events []fanout.Event
	for rows.Next() {
		var subject string
		var payload []byte
		if err := rows.Scan(&subject, &payload); err != nil {
			tb.Fatal(err)
		}
		var ev fanout.Event
		if err := json.Unmarshal(payload, &ev); err != nil {
			tb.Fatalf("outbox payload %s: %v", payload, err)
		}
		if want := ev.Subject(); ev.Type != fanout.OrderConfirmed && subject != want {
			tb.Errorf("%s on subject %s, want %s", ev.Type, subject, want)
		}
		events = append(events, ev)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return events
}

func countEvents(events []fanout.Event, t fanout.Type) int {
	n := 0
	for _, ev := range events {
		if ev.Type == t {
			n++
		}
	}
	return n
}

func TestPlaceOrder(t *testing.T) {
	for _, mode := range orderModes {
		t.Run(string(mode), func(t *testing.T) {
			w := newOrderWorld(t)
			ctx := testContext(t)
			orders := newOrders(t, w.pool, postgres.OrdersConfig{Mode: mode})
			buyer := w.users(t, 1)[0]
			dropID := w.drop(t, dropSpec{stock: 10, maxPerUser: 5})

			before := time.Now().Add(-time.Second)
			placed, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: dropID, Quantity: 2, IdempotencyKey: "k1"})
			if err != nil {
				t.Fatal(err)
			}
			got := placed.Order
			if placed.Replayed || got.ID <= 0 || got.UserID != buyer || got.DropID != dropID || got.Quantity != 2 ||
				got.Status != store.OrderConfirmed || got.CreatedAt.Before(before) || got.CreatedAt.Location() != time.UTC {
				t.Fatalf("got %+v, want a new confirmed order of 2", placed)
			}
			if !got.CreatedAt.Equal(got.CreatedAt.Truncate(time.Millisecond)) {
				t.Errorf("created_at %v has more than milliseconds", got.CreatedAt)
			}
			stored, err := orders.Order(ctx, buyer, got.ID)
			if err != nil || stored != got {
				t.Fatalf("Order = %+v, %v; want %+v (what was answered is what is stored)", stored, err, got)
			}
			a := checkBooks(t, w.pool, dropID)
			if a.stock != 8 || a.status != store.DropLive {
				t.Errorf("drop after the order: stock %d, %s; want 8, live", a.stock, a.status)
			}

			events := dropEvents(t, w.pool, dropID)
			if len(events) != 2 {
				t.Fatalf("got %d events, want order.confirmed and stock.changed: %+v", len(events), events)
			}
			confirmed, changed := events[0], events[1]
			wantData, _ := json.Marshal(got)
			if confirmed.Type != fanout.OrderConfirmed || confirmed.CreatorID != w.creatorID || confirmed.DropID != dropID ||
				!confirmed.TS.Equal(got.CreatedAt) || !jsonEqual(confirmed.Data, wantData) {
				t.Errorf("order.confirmed: got %+v data %s, want data %s", confirmed, confirmed.Data, wantData)
			}
			if changed.Type != fanout.StockChanged || !jsonEqual(changed.Data, []byte(`{"stock_count":8,"sold":2}`)) {
				t.Errorf("stock.changed: got %s %s, want {stock_count:8, sold:2}", changed.Type, changed.Data)
			}
			var subject string
			if err := w.pool.QueryRow(ctx, `SELECT subject FROM outbox WHERE type = 'order.confirmed'`).Scan(&subject); err != nil ||
				subject != fanout.UserSubject(buyer) {
				t.Errorf("order.confirmed subject %q, %v; want %s", subject, err, fanout.UserSubject(buyer))
			}
		})
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func TestPlaceOrderRefusals(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name     string
		spec     dropSpec
		held     int // units the buyer already holds (placed first, with another key)
		quantity int
		noDrop   bool
		noUser   bool
		want     error
	}{
		{name: "unknown drop", noDrop: true, quantity: 1, want: store.ErrNotFound},
		{name: "unknown user", noUser: true, quantity: 1, want: store.ErrNotFound},
		{name: "before start", spec: dropSpec{start: now.Add(time.Hour), end: now.Add(2 * time.Hour), status: store.DropScheduled},
			quantity: 1, want: store.ErrDropNotLive},
		{name: "after end, scheduler not run", spec: dropSpec{start: now.Add(-2 * time.Hour), end: now.Add(-time.Millisecond)},
			quantity: 1, want: store.ErrDropNotLive},
		{name: "ended", spec: dropSpec{status: store.DropEnded}, quantity: 1, want: store.ErrDropNotLive},
		{name: "scheduled in the future but flipped live early", spec: dropSpec{start: now.Add(time.Hour),
			end: now.Add(2 * time.Hour), status: store.DropLive}, quantity: 1},
		{name: "start passed, scheduler late", spec: dropSpec{start: now.Add(-time.Millisecond), status: store.DropScheduled},
			quantity: 1},
		{name: "more than max_per_user at once", spec: dropSpec{maxPerUser: 2}, quantity: 3, want: store.ErrLimitExceeded},
		{name: "over max_per_user with what is held", spec: dropSpec{maxPerUser: 3}, held: 2, quantity: 2, want: store.ErrLimitExceeded},
		{name: "up to max_per_user with what is held", spec: dropSpec{maxPerUser: 3}, held: 2, quantity: 1},
		{name: "more than the stock left", spec: dropSpec{stock: 3, maxPerUser: 5}, held: 2, quantity: 2, want: store.ErrSoldOut},
		{name: "the last units", spec: dropSpec{stock: 3, maxPerUser: 5}, held: 1, quantity: 2},
		{name: "sold out", spec: dropSpec{stock: 1, maxPerUser: 5}, held: 1, quantity: 1, want: store.ErrSoldOut},
		{name: "max_per_user above the stock", spec: dropSpec{stock: 2, maxPerUser: 5}, quantity: 4, want: store.ErrSoldOut},
	}
	for _, mode := range orderModes {
		t.Run(string(mode), func(t *testing.T) {
			w := newOrderWorld(t)
			ctx := testContext(t)
			orders := newOrders(t, w.pool, postgres.OrdersConfig{Mode: mode})
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					buyer := w.users(t, 1)[0]
					dropID := int64(1 << 40)
					if !tc.noDrop {
						// Drops that must refuse are created live-able first when the buyer holds units.
						spec := tc.spec
						dropID = w.drop(t, spec)
					}
					if tc.held > 0 {
						mustExec(t, w.pool, `UPDATE drops SET stock_count = stock_count - $2,
       status = CASE WHEN stock_count = $2 THEN 'sold_out' ELSE status END WHERE drop_id = $1`, dropID, tc.held)
						mustExec(t, w.pool, `INSERT INTO drop_purchases (drop_id, user_id, quantity, max_per_user)
SELECT drop_id, $2, $3, max_per_user FROM drops WHERE drop_id = $1`, dropID, buyer, tc.held)
						mustExec(t, w.pool, `INSERT INTO orders (user_id, drop_id, quantity, status, idempotency_key, request_hash)
VALUES ($2, $1, $3, 'confirmed', 'earlier', sha256('x'))`, dropID, buyer, tc.held)
					}
					if tc.noUser {
						buyer = 1 << 40
					}
					var before dropAccount
					if !tc.noDrop {
						before = account(t, w.pool, dropID)
					}
					placed, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: dropID, Quantity: tc.quantity, IdempotencyKey: "k"})
					if tc.want == nil {
						if err != nil || placed.Order.Status != store.OrderConfirmed {
							t.Fatalf("got %+v, %v; want a confirmed order", placed, err)
						}
						return
					}
					if !errors.Is(err, tc.want) {
						t.Fatalf("got %+v, %v; want %v", placed, err, tc.want)
					}
					if tc.noDrop {
						return
					}
					// Nothing written: no order under the key, no stock taken, no event.
					after := checkBooks(t, w.pool, dropID)
					if after != before {
						t.Errorf("refused order changed the drop: before %+v, after %+v", before, after)
					}
					if n := queryInt(t, w.pool, `SELECT count(*) FROM orders WHERE idempotency_key = 'k' AND drop_id = $1`, dropID); n != 0 {
						t.Errorf("got %d orders under the refused key, want 0", n)
					}
					if n := len(dropEvents(t, w.pool, dropID)); n != 0 {
						t.Errorf("got %d events for a refused order, want 0", n)
					}
				})
			}
		})
	}
}

func TestPlaceOrderInvalid(t *testing.T) {
	w := newOrderWorld(t)
	orders := newOrders(t, w.pool, postgres.OrdersConfig{})
	ok := store.PlaceOrder{UserID: 1, DropID: 1, Quantity: 1, IdempotencyKey: "k"}
	tests := []struct {
		name  string
		edit  func(*store.PlaceOrder)
		field string
	}{
		{"no key", func(p *store.PlaceOrder) { p.IdempotencyKey = "" }, "idempotency_key"},
		{"NUL in key", func(p *store.PlaceOrder) { p.IdempotencyKey = "a\x00b" }, "idempotency_key"},
		{"zero quantity", func(p *store.PlaceOrder) { p.Quantity = 0 }, "quantity"},
		{"no drop", func(p *store.PlaceOrder) { p.DropID = 0 }, "drop_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := ok
			tc.edit(&req)
			_, err := orders.PlaceOrder(testContext(t), req)
			var fe *store.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("got %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
}

func TestNewOrdersRefusesBadConfig(t *testing.T) {
	w := newOrderWorld(t)
	for _, cfg := range []postgres.OrdersConfig{{Mode: "fast"}, {MaxBatch: -1}, {TxTimeout: -time.Second}} {
		if _, err := postgres.NewOrders(w.pool, cfg); err == nil {
			t.Errorf("NewOrders(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestPlaceOrderIdempotency(t *testing.T) {
	for _, mode := range orderModes {
		t.Run(string(mode), func(t *testing.T) {
			w := newOrderWorld(t)
			ctx := testContext(t)
			orders := newOrders(t, w.pool, postgres.OrdersConfig{Mode: mode})
			buyer := w.users(t, 1)[0]
			dropID := w.drop(t, dropSpec{stock: 100, maxPerUser: 10})
			other := w.drop(t, dropSpec{stock: 100, maxPerUser: 10})
			req := store.PlaceOrder{UserID: buyer, DropID: dropID, Quantity: 2, IdempotencyKey: "same"}
			first, err := orders.PlaceOrder(ctx, req)
			if err != nil {
				t.Fatal(err)
			}

			t.Run("replay", func(t *testing.T) {
				again, err := orders.PlaceOrder(ctx, req)
				if err != nil || !again.Replayed || again.Order != first.Order {
					t.Fatalf("got %+v, %v; want %+v replayed", again, err, first.Order)
				}
			})
			mismatches := []struct {
				name string
				edit func(*store.PlaceOrder)
			}{
				{"other quantity", func(p *store.PlaceOrder) { p.Quantity = 3 }},
				{"other drop", func(p *store.PlaceOrder) { p.DropID = other }},
			}
			for _, tc := range mismatches {
				t.Run(tc.name, func(t *testing.T) {
					r := req
					tc.edit(&r)
					if got, err := orders.PlaceOrder(ctx, r); !errors.Is(err, store.ErrIdempotencyMismatch) {
						t.Fatalf("got %+v, %v; want ErrIdempotencyMismatch", got, err)
					}
				})
			}
			t.Run("same key, other user", func(t *testing.T) {
				r := req
				r.UserID = w.users(t, 1)[0]
				got, err := orders.PlaceOrder(ctx, r)
				if err != nil || got.Replayed || got.Order.ID == first.Order.ID {
					t.Fatalf("got %+v, %v; want a new order (keys are per user)", got, err)
				}
			})

			t.Run("concurrent", func(t *testing.T) {
				const n = 40
				r := store.PlaceOrder{UserID: buyer, DropID: dropID, Quantity: 1, IdempotencyKey: "burst"}
				results := make([]store.Placed, n)
				errs := make([]error, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() { results[i], errs[i] = orders.PlaceOrder(ctx, r) })
				}
				wg.Wait()
				created := 0
				for i := range n {
					if errs[i] != nil {
						t.Fatalf("request %d: %v", i, errs[i])
					}
					if results[i].Order.ID != results[0].Order.ID {
						t.Fatalf("request %d got order %d, request 0 order %d: want one order", i, results[i].Order.ID, results[0].Order.ID)
					}
					if !results[i].Replayed {
						created++
					}
				}
				if created != 1 {
					t.Errorf("%d answers said created, want 1 (the rest replayed)", created)
				}
			})

			t.Run("concurrent, for the last unit", func(t *testing.T) {
				// The requests that lose the race for the lock find the stock gone: they must still
				// answer the order their key got, not sold_out.
				for round := range 5 {
					last := w.drop(t, dropSpec{stock: 1, maxPerUser: 1})
					const n = 20
					r := store.PlaceOrder{UserID: buyer, DropID: last, Quantity: 1, IdempotencyKey: fmt.Sprint("last", round)}
					results := make([]store.Placed, n)
					errs := make([]error, n)
					var wg sync.WaitGroup
					for i := range n {
						wg.Go(func() { results[i], errs[i] = orders.PlaceOrder(ctx, r) })
					}
					wg.Wait()
					for i := range n {
						if errs[i] != nil || results[i].Order.ID != results[0].Order.ID {
							t.Fatalf("round %d, request %d: got %+v, %v; want order %d", round, i, results[i], errs[i], results[0].Order.ID)
						}
					}
				}
			})

			t.Run("concurrent, one key on two drops", func(t *testing.T) {
				// Each transaction looks for the key before the other has inserted it; the schema's
				// unique key decides, and the loser answers the mismatch.
				for round := range 10 {
					a, b := w.drop(t, dropSpec{}), w.drop(t, dropSpec{})
					key := fmt.Sprint("two drops ", round)
					var errA, errB error
					var wg sync.WaitGroup
					wg.Go(func() {
						_, errA = orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: a, Quantity: 1, IdempotencyKey: key})
					})
					_, errB = orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: b, Quantity: 1, IdempotencyKey: key})
					wg.Wait()
					if (errA == nil) == (errB == nil) || !errors.Is(errors.Join(errA, errB), store.ErrIdempotencyMismatch) {
						t.Fatalf("round %d: got %v and %v; want one order and one ErrIdempotencyMismatch", round, errA, errB)
					}
					checkBooks(t, w.pool, a)
					checkBooks(t, w.pool, b)
				}
			})

			t.Run("refusals are not remembered", func(t *testing.T) {
				later := w.drop(t, dropSpec{start: time.Now().Add(time.Hour), end: time.Now().Add(2 * time.Hour), status: store.DropScheduled})
				r := store.PlaceOrder{UserID: buyer, DropID: later, Quantity: 1, IdempotencyKey: "early"}
				if _, err := orders.PlaceOrder(ctx, r); !errors.Is(err, store.ErrDropNotLive) {
					t.Fatalf("before start: got %v, want ErrDropNotLive", err)
				}
				mustExec(t, w.pool, `UPDATE drops SET start_time = now() - interval '1 second' WHERE drop_id = $1`, later)
				got, err := orders.PlaceOrder(ctx, r)
				if err != nil || got.Replayed {
					t.Fatalf("same key once live: got %+v, %v; want a new order", got, err)
				}
			})
			checkBooks(t, w.pool, dropID)
		})
	}
}

// TestNoOversell: hundreds of buyers, each ordering again and again until refused for good, on a drop
// of 50 units.
func TestNoOversell(t *testing.T) {
	for _, mode := range orderModes {
		t.Run(string(mode), func(t *testing.T) {
			w := newOrderWorld(t)
			ctx := testContext(t)
			orders := newOrders(t, w.pool, postgres.OrdersConfig{Mode: mode})
			const stock, buyers = 50, 300
			dropID := w.drop(t, dropSpec{stock: stock, maxPerUser: 3})
			users := w.users(t, buyers)

			var mu sync.Mutex
			confirmed := 0
			var wg sync.WaitGroup
			for i, u := range users {
				wg.Go(func() {
					for attempt := 0; ; attempt++ {
						q := 1 + (i+attempt)%3
						placed, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: u, DropID: dropID, Quantity: q,
							IdempotencyKey: fmt.Sprint("a", attempt)})
						switch {
						case err == nil:
							mu.Lock()
							confirmed += placed.Order.Quantity
							mu.Unlock()
						case errors.Is(err, store.ErrLimitExceeded) && q > 1:
						case errors.Is(err, store.ErrSoldOut) && q > 1:
						case errors.Is(err, store.ErrSoldOut), errors.Is(err, store.ErrLimitExceeded):
							return
						default:
							t.Errorf("buyer %d: %v", u, err)
							return
						}
					}
				})
			}
			wg.Wait()
			a := checkBooks(t, w.pool, dropID)
			if a.confirmed != stock || confirmed != stock || a.stock != 0 || a.status != store.DropSoldOut {
				t.Errorf("got %d confirmed in the database, %d answered, stock %d %s; want %d, %d, 0 sold_out",
					a.confirmed, confirmed, a.stock, a.status, stock, stock)
			}
			events := dropEvents(t, w.pool, dropID)
			if got := countEvents(events, fanout.OrderConfirmed); got != a.orders {
				t.Errorf("got %d order.confirmed events, want one per order (%d)", got, a.orders)
			}
			changed := countEvents(events, fanout.StockChanged)
			if changed < 1 || (mode == postgres.OrderModeSingle && changed != a.orders) {
				t.Errorf("got %d stock.changed for %d orders, want one per transaction", changed, a.orders)
			}
			if mode == postgres.OrderModeBatched && changed >= a.orders {
				t.Errorf("got %d transactions for %d orders from %d concurrent buyers, want batches", changed, a.orders, buyers)
			}
			if got := countEvents(events, fanout.StockLow); got != 1 {
				t.Errorf("got %d stock.low, want 1", got)
			}
			if got := countEvents(events, fanout.DropSoldOut); got != 1 {
				t.Errorf("got %d drop.soldout, want 1", got)
			}
			checkStockEvents(t, events, stock)
		})
	}
}

// TestNoOversellAcrossProcesses: three order stores on their own pools, as three API processes would
// be (two batched, one single: a rollout between modes), sell one drop together; nothing is oversold,
// every buyer keeps to the limit, and each store learns on its own that the drop is sold out.
func TestNoOversellAcrossProcesses(t *testing.T) {
	w := newOrderWorld(t)
	ctx := testContext(t)
	url := w.pool.Config().ConnString()
	var stores []*postgres.Orders
	for _, mode := range []postgres.OrderMode{postgres.OrderModeBatched, postgres.OrderModeBatched, postgres.OrderModeSingle} {
		pool, err := postgres.Open(ctx, url, postgres.PoolConfig{MaxConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		stores = append(stores, newOrders(t, pool, postgres.OrdersConfig{Mode: mode}))
	}
	const stock, buyers = 200, 300
	dropID := w.drop(t, dropSpec{stock: stock, maxPerUser: 2})
	users := w.users(t, buyers)
	var mu sync.Mutex
	confirmed := 0
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				orders := stores[(i+attempt)%len(stores)]
				_, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: u, DropID: dropID, Quantity: 1,
					IdempotencyKey: fmt.Sprint("a", attempt)})
				switch {
				case err == nil:
					mu.Lock()
					confirmed++
					mu.Unlock()
				case errors.Is(err, store.ErrSoldOut), errors.Is(err, store.ErrLimitExceeded):
					return
				default:
					t.Errorf("buyer %d: %v", u, err)
					return
				}
			}
		})
	}
	wg.Wait()
	a := checkBooks(t, w.pool, dropID)
	if a.confirmed != stock || confirmed != stock {
		t.Errorf("got %d confirmed in the database, %d answered; want %d", a.confirmed, confirmed, stock)
	}
	if n := queryInt(t, w.pool, `SELECT count(*) FROM drop_purchases WHERE drop_id = $1 AND quantity > 2`, dropID); n != 0 {
		t.Errorf("%d buyers above max_per_user", n)
	}
	for i, orders := range stores {
		if _, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: users[0], DropID: dropID, Quantity: 1, IdempotencyKey: "late"}); !errors.Is(err, store.ErrSoldOut) {
			t.Errorf("store %d after the sale: got %v, want ErrSoldOut", i, err)
		}
	}
}

// checkStockEvents checks the stock events' data: stock.changed counts down without going back up,
// stock.low comes once at the first level at or below 10%, drop.soldout after the last unit.
func checkStockEvents(t *testing.T, events []fanout.Event, initial int) {
	t.Helper()
	last := initial
	var low, soldOut bool
	for _, ev := range events {
		switch ev.Type {
		case fanout.StockChanged:
			var d struct{ StockCount, Sold int }
			if err := json.Unmarshal(ev.Data, &struct {
				StockCount *int `json:"stock_count"`
				Sold       *int `json:"sold"`
			}{&d.StockCount, &d.Sold}); err != nil {
				t.Fatalf("stock.changed %s: %v", ev.Data, err)
			}
			if d.StockCount >= last || d.StockCount+d.Sold != initial {
				t.Errorf("stock.changed %s after level %d", ev.Data, last)
			}
			last = d.StockCount
		case fanout.StockLow:
			var d struct {
				StockCount int `json:"stock_count"`
			}
			_ = json.Unmarshal(ev.Data, &d)
			if low || d.StockCount != last || d.StockCount*10 > initial {
				t.Errorf("stock.low %s at level %d (seen before: %v)", ev.Data, last, low)
			}
			low = true
		case fanout.DropSoldOut:
			if soldOut || last != 0 {
				t.Errorf("drop.soldout at level %d (seen before: %v)", last, soldOut)
			}
			soldOut = true
		}
	}
}

// TestMaxPerUserUnderConcurrency: one buyer's parallel orders (distinct keys) never pass the limit
// together.
func TestMaxPerUserUnderConcurrency(t *testing.T) {
	for _, mode := range orderModes {
		t.Run(string(mode), func(t *testing.T) {
			w := newOrderWorld(t)
			ctx := testContext(t)
			orders := newOrders(t, w.pool, postgres.OrdersConfig{Mode: mode})
			tests := []struct {
				name          string
				max, quantity int
				parallel      int
				wantConfirmed int
			}{
				{"twenty of one unit, limit 3", 3, 1, 20, 3},
				{"two of two units, limit 3", 3, 2, 2, 1},
				{"ten of two units, limit 5", 5, 2, 10, 2},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					buyer := w.users(t, 1)[0]
					dropID := w.drop(t, dropSpec{stock: 100, maxPerUser: tc.max})
					var wg sync.WaitGroup
					errs := make([]error, tc.parallel)
					for i := range tc.parallel {
						wg.Go(func() {
							_, errs[i] = orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: dropID,
								Quantity: tc.quantity, IdempotencyKey: fmt.Sprint("p", i)})
						})
					}
					wg.Wait()
					confirmed := 0
					for _, err := range errs {
						switch {
						case err == nil:
							confirmed++
						case !errors.Is(err, store.ErrLimitExceeded):
							t.Errorf("got %v, want a confirmation or ErrLimitExceeded", err)
						}
					}
					a := checkBooks(t, w.pool, dropID)
					if confirmed != tc.wantConfirmed || a.orders != tc.wantConfirmed {
						t.Errorf("got %d confirmed (%d in the database), want %d", confirmed, a.orders, tc.wantConfirmed)
					}
				})
			}
		})
	}
}

func TestUserOrders(t *testing.T) {
	w := newOrderWorld(t)
	ctx := testContext(t)
	orders := newOrders(t, w.pool, postgres.OrdersConfig{})
	users := w.users(t, 2)
	buyer, stranger := users[0], users[1]
	var placed []store.Order
	for i := range 5 {
		dropID := w.drop(t, dropSpec{})
		p, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: dropID, Quantity: 1, IdempotencyKey: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		placed = append(placed, p.Order)
	}
	if _, err := orders.Order(ctx, stranger, placed[0].ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("someone else's order: got %v, want ErrNotFound", err)
	}
	if _, err := orders.Order(ctx, buyer, placed[4].ID+1000); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing order: got %v, want ErrNotFound", err)
	}

	var got []store.Order
	var after *store.Cursor
	for pages := 0; ; pages++ {
		page, err := orders.UserOrders(ctx, buyer, store.PageRequest{Limit: 2, After: after})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page.Items...)
		if page.Next == nil {
			if pages != 2 {
				t.Errorf("got %d pages, want 3", pages+1)
			}
			break
		}
		after = page.Next
	}
	if len(got) != len(placed) {
		t.Fatalf("got %d orders, want %d", len(got), len(placed))
	}
	for i, ord := range got {
		if want := placed[len(placed)-1-i]; ord != want {
			t.Errorf("item %d: got %+v, want %+v (newest first)", i, ord, want)
		}
	}
	if page, err := orders.UserOrders(ctx, stranger, store.PageRequest{}); err != nil || len(page.Items) != 0 || page.Next != nil {
		t.Errorf("a user without orders: got %+v, %v; want an empty last page", page, err)
	}
}

// TestSoldOutGate: once a drop is sold out, batched mode answers from memory: refusals, replays and
// mismatches alike, even while PostgreSQL could not serve the drop at all.
func TestSoldOutGate(t *testing.T) {
	w := newOrderWorld(t)
	ctx := testContext(t)
	reg := prometheus.NewRegistry()
	orders := newOrders(t, w.pool, postgres.OrdersConfig{Registerer: reg})
	buyers := w.users(t, 3)
	dropID := w.drop(t, dropSpec{stock: 2, maxPerUser: 2})
	first, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyers[0], DropID: dropID, Quantity: 2, IdempotencyKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyers[1], DropID: dropID, Quantity: 1, IdempotencyKey: "k"}); !errors.Is(err, store.ErrSoldOut) {
		t.Fatalf("after the last unit: got %v, want ErrSoldOut", err)
	}

	// Hold the drop's row lock: anything that reaches PostgreSQL for this drop now waits.
	locker, err := w.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Rollback(ctx)
	if _, err := locker.Exec(ctx, `SELECT 1 FROM drops WHERE drop_id = $1 FOR UPDATE`, dropID); err != nil {
		t.Fatal(err)
	}
	quick, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		_, err := orders.PlaceOrder(quick, store.PlaceOrder{UserID: buyers[2], DropID: dropID, Quantity: 1, IdempotencyKey: "k"})
		if !errors.Is(err, store.ErrSoldOut) {
			return fmt.Errorf("got %v, want ErrSoldOut", err)
		}
		return nil
	})
	memoryBefore := metricValue(t, reg, "livedrops_order_rejections_total", map[string]string{"reason": "sold_out", "source": "memory"})
	tests := []struct {
		name string
		req  store.PlaceOrder
		want error
		ord  store.Order
	}{
		{"refusal", store.PlaceOrder{UserID: buyers[2], DropID: dropID, Quantity: 1, IdempotencyKey: "new"}, store.ErrSoldOut, store.Order{}},
		{"replay", store.PlaceOrder{UserID: buyers[0], DropID: dropID, Quantity: 2, IdempotencyKey: "k"}, nil, first.Order},
		{"mismatch", store.PlaceOrder{UserID: buyers[0], DropID: dropID, Quantity: 1, IdempotencyKey: "k"}, store.ErrIdempotencyMismatch, store.Order{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := orders.PlaceOrder(quick, tc.req)
			if !errors.Is(err, tc.want) || got.Order != tc.ord || (tc.want == nil) != got.Replayed {
				t.Fatalf("got %+v, %v; want %+v, %v", got, err, tc.ord, tc.want)
			}
		})
	}
	if got := metricValue(t, reg, "livedrops_order_rejections_total", map[string]string{"reason": "sold_out", "source": "memory"}); got != memoryBefore+1 {
		t.Errorf("memory rejections went from %v to %v, want one more", memoryBefore, got)
	}
	checkBooks(t, w.pool, dropID)
}

// metricValue is the value of the sample of name whose labels include labels (a histogram's sample
// count), or 0 when there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

// checkFor polls f every sleep until it returns nil, and fails with its last error after total.
func checkFor(tb testing.TB, total, sleep time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(sleep)
	}
}

func TestOrderMetrics(t *testing.T) {
	w := newOrderWorld(t)
	ctx := testContext(t)
	reg := prometheus.NewRegistry()
	orders := newOrders(t, w.pool, postgres.OrdersConfig{Registerer: reg})
	buyer := w.users(t, 1)[0]
	dropID := w.drop(t, dropSpec{stock: 5, maxPerUser: 1})
	req := store.PlaceOrder{UserID: buyer, DropID: dropID, Quantity: 1, IdempotencyKey: "k"}
	for range 2 {
		if _, err := orders.PlaceOrder(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	req.IdempotencyKey = "k2"
	if _, err := orders.PlaceOrder(ctx, req); !errors.Is(err, store.ErrLimitExceeded) {
		t.Fatalf("got %v, want ErrLimitExceeded", err)
	}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"livedrops_order_duration_seconds", map[string]string{"outcome": "confirmed"}, 1},
		{"livedrops_order_duration_seconds", map[string]string{"outcome": "replayed"}, 1},
		{"livedrops_order_duration_seconds", map[string]string{"outcome": "limit_exceeded"}, 1},
		{"livedrops_order_rejections_total", map[string]string{"reason": "limit_exceeded", "source": "database"}, 1},
		{"livedrops_order_batch_size", nil, 3},
		{"livedrops_order_batch_wait_seconds", nil, 3},
		// Every batch reads a snapshot; only the one that wrote took the drop's row lock (the replay and
		// the refusal wrote nothing).
		{"livedrops_order_batch_stage_seconds", map[string]string{"stage": "read"}, 3},
		{"livedrops_order_batch_stage_seconds", map[string]string{"stage": "write"}, 1},
		{"livedrops_order_lock_wait_seconds", map[string]string{"mode": "batched"}, 1},
		{"livedrops_order_batch_tx_seconds", nil, 1},
	}
	for _, tc := range tests {
		if got := metricValue(t, reg, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v: got %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

// TestOrdersClose: Close answers what is queued, then refuses; no goroutine outlives it.
func TestOrdersClose(t *testing.T) {
	w := newOrderWorld(t)
	ctx := testContext(t)
	dropID := w.drop(t, dropSpec{stock: 1000, maxPerUser: 1})
	users := w.users(t, 200)
	ignore := goleak.IgnoreCurrent()
	orders, err := postgres.NewOrders(w.pool, postgres.OrdersConfig{Cache: nopCache{}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(users))
	for _, u := range users {
		wg.Go(func() {
			_, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: u, DropID: dropID, Quantity: 1, IdempotencyKey: "k"})
			errs <- err
		})
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := queryInt(t, w.pool, `SELECT count(*) FROM orders WHERE drop_id = $1`, dropID); n == 0 {
			return errors.New("no order committed yet")
		}
		return nil
	})
	if err := orders.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	answered := 0
	for err := range errs {
		switch {
		case err == nil:
			answered++
		case !errors.Is(err, store.ErrUnavailable):
			t.Errorf("got %v, want a confirmation or ErrUnavailable", err)
		}
	}
	if a := checkBooks(t, w.pool, dropID); a.orders != answered {
		t.Errorf("got %d orders in the database, %d confirmed to buyers; want the same", a.orders, answered)
	}
	if _, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: users[0], DropID: dropID, Quantity: 1, IdempotencyKey: "late"}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("after Close: got %v, want ErrUnavailable", err)
	}
	if err := orders.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	goleak.VerifyNone(t, ignore, goleak.IgnoreAnyFunction("github.com/jackc/puddle/v2.(*Pool[...]).createIdleResources"))
}

type nopCache struct{}

func (nopCache) InvalidateDrop(context.Context, int64) error { return nil }

// TestLaneForMissingDrop: orders for a drop that does not exist leave no batcher behind.
func TestLaneForMissingDrop(t *testing.T) {
	w := newOrderWorld(t)
	ctx := testContext(t)
	buyer := w.users(t, 1)[0]
	ignore := goleak.IgnoreCurrent()
	orders := newOrders(t, w.pool, postgres.OrdersConfig{IdleTimeout: time.Hour})
	for i := range 20 {
		_, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: int64(1000 + i), Quantity: 1, IdempotencyKey: "k"})
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		return goleak.Find(ignore, goleak.IgnoreAnyFunction("github.com/jackc/puddle/v2.(*Pool[...]).createIdleResources"))
	})
}

// TestLaneIdles: a drop's batcher stops after IdleTimeout without orders, and a new one serves the
// next order.
func TestLaneIdles(t *testing.T) {
	w := newOrderWorld(t)
	ctx := testContext(t)
	dropID := w.drop(t, dropSpec{stock: 10, maxPerUser: 5})
	buyer := w.users(t, 1)[0]
	ignore := goleak.IgnoreCurrent()
	orders := newOrders(t, w.pool, postgres.OrdersConfig{IdleTimeout: 50 * time.Millisecond})
	for i := range 3 {
		if _, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: dropID, Quantity: 1, IdempotencyKey: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			return goleak.Find(ignore, goleak.IgnoreAnyFunction("github.com/jackc/puddle/v2.(*Pool[...]).createIdleResources"))
		})
	}
}

// TestPipelinedKeysAcrossProcesses: two batched stores (two API processes) sell one drop while each
// buyer sends every key to both at once, and again after the answer: each key holds one order, both
// copies answer it (one of them as a replay), a retry answers what the key got, a refusal stays a
// refusal, and nothing is oversold. The pipelines of both stores see each other's commits as stale
// snapshots and run those batches again under the row lock.
func TestPipelinedKeysAcrossProcesses(t *testing.T) {
	w := newOrderWorld(t)
	ctx := testContext(t)
	url := w.pool.Config().ConnString()
	var stores []*postgres.Orders
	first := prometheus.NewRegistry()
	reg := first
	for range 2 {
		pool, err := postgres.Open(ctx, url, postgres.PoolConfig{MaxConns: 6})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		stores = append(stores, newOrders(t, pool, postgres.OrdersConfig{Registerer: reg}))
		reg = prometheus.NewRegistry()
	}
	const stock, buyers = 150, 120
	dropID := w.drop(t, dropSpec{stock: stock, maxPerUser: 2})
	users := w.users(t, buyers)
	type outcome struct {
		placed store.Placed
		err    error
	}
	var mu sync.Mutex
	sold := map[int64]bool{} // order ids answered
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Go(func() {
			for attempt := 0; attempt < 4; attempt++ {
				req := store.PlaceOrder{UserID: u, DropID: dropID, Quantity: 1, IdempotencyKey: fmt.Sprint("k", attempt)}
				var both [2]outcome
				var pair sync.WaitGroup
				for i := range stores {
					pair.Go(func() {
						p, err := stores[i].PlaceOrder(ctx, req)
						both[i] = outcome{p, err}
					})
				}
				pair.Wait()
				a, b := both[0], both[1]
				switch {
				case a.err == nil && b.err == nil:
					if a.placed.Order.ID != b.placed.Order.ID || a.placed.Replayed == b.placed.Replayed {
						t.Errorf("user %d key %s: answered %+v and %+v, want one order, one of them replayed", u, req.IdempotencyKey, a.placed, b.placed)
						return
					}
				case a.err == nil || b.err == nil:
					t.Errorf("user %d key %s: one copy ordered (%v), the other refused (%v)", u, req.IdempotencyKey, a, b)
					return
				case store.Code(a.err) == "" || store.Code(a.err) != store.Code(b.err):
					t.Errorf("user %d key %s: refusals %v and %v", u, req.IdempotencyKey, a.err, b.err)
					return
				}
				// A retry answers what the key got.
				again, err := stores[attempt%2].PlaceOrder(ctx, req)
				switch {
				case a.err == nil && (err != nil || again.Order.ID != a.placed.Order.ID || !again.Replayed):
					t.Errorf("user %d key %s: retry answered %+v, %v; want order %d replayed", u, req.IdempotencyKey, again, err, a.placed.Order.ID)
					return
				case a.err != nil && err == nil:
					t.Errorf("user %d key %s: refused with %v, then ordered on retry (%+v)", u, req.IdempotencyKey, a.err, again)
					return
				}
				if a.err == nil {
					mu.Lock()
					sold[a.placed.Order.ID] = true
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	a := checkBooks(t, w.pool, dropID)
	if a.confirmed != len(sold) || a.confirmed > stock {
		t.Errorf("the database holds %d confirmed units, buyers were told of %d orders, stock %d", a.confirmed, len(sold), stock)
	}
	if n := queryInt(t, w.pool, `SELECT count(*) FROM (SELECT 1 FROM orders WHERE drop_id = $1
GROUP BY user_id, idempotency_key HAVING count(*) > 1) AS x`, dropID); n != 0 {
		t.Errorf("%d keys hold more than one order", n)
	}
	if n := queryInt(t, w.pool, `SELECT count(*) FROM drop_purchases WHERE drop_id = $1 AND quantity > 2`, dropID); n != 0 {
		t.Errorf("%d buyers above max_per_user", n)
	}
	t.Logf("batches run again under the row lock in the first store: %v", metricValue(t, first, "livedrops_order_batch_retries_total", nil))
}
