package relay_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/relay"
	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
)

// Every worker is down across a drop's start_time, and buyers sell the drop out meanwhile (orders are
// served once start_time has passed, scheduler or not). When the workers come back, their relays and
// schedulers together put drop.started on the stream exactly once, before that drop's stock.low and
// drop.soldout; a drop that only took some orders meanwhile, and one nobody bought, start once too.
func TestAllWorkersDownAcrossStartTime(t *testing.T) {
	leakCheck(t)
	e := newEnv(t, jetstream.StreamConfig{})
	ctx := testContext(t)
	const creator = 7
	for _, q := range []string{
		`INSERT INTO users (user_id, name, email) SELECT g, 'U', 'u' || g || '@example.com' FROM generate_series(1, 100) AS g`,
		`INSERT INTO creators (creator_id, profile_name) VALUES (7, 'Shop')`,
		`INSERT INTO products (product_id, creator_id, title, price_cents) VALUES (1, 7, 'Tee', 2500)`,
	} {
		mustExecIn(t, e, q)
	}
	startAt := time.Now().Add(200 * time.Millisecond).Truncate(time.Millisecond)
	newDrop := func(stock int) int64 {
		var id int64
		if err := e.pool.QueryRow(ctx, `INSERT INTO drops (creator_id, product_id, start_time, end_time, initial_stock,
			stock_count, max_per_user) VALUES (7, 1, $1, $2, $3, $3, 1) RETURNING drop_id`,
			startAt, startAt.Add(time.Hour), stock).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	soldOut, someSold, unsold := newDrop(20), newDrop(50), newDrop(5)

	// No worker runs: the api alone serves the buyers once the drops have started.
	time.Sleep(time.Until(startAt))
	for _, mode := range []postgres.OrderMode{postgres.OrderModeBatched, postgres.OrderModeSingle} {
		orders, err := postgres.NewOrders(e.pool, postgres.OrdersConfig{Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		for buyer := int64(1); buyer <= 30; buyer++ {
			req := store.PlaceOrder{UserID: buyer, DropID: soldOut, Quantity: 1, IdempotencyKey: fmt.Sprint("a", buyer)}
			if mode == postgres.OrderModeSingle {
				req = store.PlaceOrder{UserID: buyer, DropID: someSold, Quantity: 1, IdempotencyKey: fmt.Sprint("b", buyer)}
			}
			if _, err := orders.PlaceOrder(ctx, req); err != nil && !errors.Is(err, store.ErrSoldOut) {
				t.Fatalf("%s order of buyer %d: %v", mode, buyer, err)
			}
		}
		if err := orders.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.count(`SELECT count(*) FROM drops WHERE drop_id = $1 AND status = 'sold_out'`, soldOut); n != 1 {
		t.Fatalf("drop %d is not sold out", soldOut)
	}

	// Two workers come back, each with its relay and its scheduler.
	for range 2 {
		e.runRelay(relayConfig(t, nil), nil)
		s, err := relay.NewScheduler(postgres.NewDropSchedule(e.pool), relay.SchedulerConfig{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		start(t, s.Run)
	}
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := e.count(`SELECT count(*) FROM drops WHERE status = 'scheduled'`); n != 0 {
			return fmt.Errorf("%d drops still scheduled", n)
		}
		if n := e.pending(); n != 0 {
			return fmt.Errorf("%d outbox rows pending", n)
		}
		return nil
	})
	e.checkStream(e.eventIDs("stream_seq IS NOT NULL"))

	// The creator's subject, per drop: one drop.started, first; stock.low and drop.soldout once, after.
	lifecycle := make(map[int64][]fanout.Type)
	for _, m := range e.streamMessages() {
		if m.subject == fanout.CreatorSubject(creator) {
			lifecycle[m.ev.DropID] = append(lifecycle[m.ev.DropID], m.ev.Type)
		}
	}
	want := map[int64][]fanout.Type{
		soldOut:  {fanout.DropStarted, fanout.StockLow, fanout.DropSoldOut},
		someSold: {fanout.DropStarted},
		unsold:   {fanout.DropStarted},
	}
	for id, w := range want {
		if got := fmt.Sprint(lifecycle[id]); got != fmt.Sprint(w) {
			t.Errorf("drop %d on %s: got %s, want %s", id, fanout.CreatorSubject(creator), got, fmt.Sprint(w))
		}
	}
	if n := e.count(`SELECT count(*) FROM drops WHERE drop_id = $1 AND status = 'live'`, someSold); n != 1 {
		t.Errorf("drop %d is not live", someSold)
	}
}
