package postgres_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
)

// eventTypes lists the types of events, in order.
func eventTypes(events []fanout.Event) []fanout.Type {
	out := make([]fanout.Type, len(events))
	for i, ev := range events {
		out[i] = ev.Type
	}
	return out
}

// checkStartedFirst fails unless the drop's events hold exactly one drop.started, first of all, with
// the envelope and data the scheduler gives it: ts = start_time, data = the drop as store.Drop encodes
// it, live, with its whole stock.
func checkStartedFirst(tb testing.TB, w orderWorld, dropID int64, events []fanout.Event) {
	tb.Helper()
	if n := countEvents(events, fanout.DropStarted); n != 1 || len(events) == 0 || events[0].Type != fanout.DropStarted {
		tb.Fatalf("events of drop %d: %v; want one drop.started, first", dropID, eventTypes(events))
	}
	d, err := postgres.NewCatalog(w.pool, time.Now).Drop(testContext(tb), dropID)
	if err != nil {
		tb.Fatal(err)
	}
	d.Status, d.StockCount = store.DropLive, d.InitialStock
	want, err := json.Marshal(d)
	if err != nil {
		tb.Fatal(err)
	}
	started := events[0]
	if !started.TS.Equal(d.StartTime) || started.CreatorID != w.creatorID || started.DropID != dropID ||
		!jsonEqual(started.Data, want) {
		tb.Errorf("drop.started: got %+v data %s; want ts %v, creator %d, data %s", started, started.Data,
			d.StartTime, w.creatorID, want)
	}
}

// A drop whose start_time passed while no scheduler ran takes orders (buyers are served on time); the
// first one writes the drop's drop.started ahead of its own events and makes the drop live, or sold
// out, and a scheduler coming later finds nothing left to start.
func TestFirstOrderOfALateDropWritesDropStarted(t *testing.T) {
	tests := []struct {
		name       string
		stock      int
		quantity   int
		wantStatus store.DropStatus
		wantTypes  []fanout.Type
	}{
		{"stock left", 10, 2, store.DropLive,
			[]fanout.Type{fanout.DropStarted, fanout.OrderConfirmed, fanout.StockChanged}},
		{"sold out by its first order", 3, 3, store.DropSoldOut,
			[]fanout.Type{fanout.DropStarted, fanout.OrderConfirmed, fanout.StockChanged, fanout.StockLow, fanout.DropSoldOut}},
	}
	for _, mode := range orderModes {
		t.Run(string(mode), func(t *testing.T) {
			w := newOrderWorld(t)
			ctx := testContext(t)
			orders := newOrders(t, w.pool, postgres.OrdersConfig{Mode: mode})
			schedule := postgres.NewDropSchedule(w.pool)
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					dropID := w.drop(t, dropSpec{stock: tc.stock, start: time.Now().Add(-time.Minute),
						status: store.DropScheduled})
					buyer := w.users(t, 1)[0]
					if _, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: dropID,
						Quantity: tc.quantity, IdempotencyKey: "k"}); err != nil {
						t.Fatal(err)
					}
					if a := checkBooks(t, w.pool, dropID); a.status != tc.wantStatus {
						t.Errorf("status after the order: got %s, want %s", a.status, tc.wantStatus)
					}
					events := dropEvents(t, w.pool, dropID)
					if got := fmt.Sprint(eventTypes(events)); got != fmt.Sprint(tc.wantTypes) {
						t.Errorf("events: got %s, want %s", got, fmt.Sprint(tc.wantTypes))
					}
					checkStartedFirst(t, w, dropID, events)

					// The scheduler, back at last, finds the drop started.
					starts, err := schedule.StartDue(ctx, time.Now(), 100)
					if err != nil || len(starts) != 0 {
						t.Errorf("StartDue after the order: got %v, %v; want nothing started", starts, err)
					}
					if n := countEvents(dropEvents(t, w.pool, dropID), fanout.DropStarted); n != 1 {
						t.Errorf("drop.started after the scheduler ran: got %d, want 1", n)
					}
					// A second order on the now live drop writes no drop.started.
					if tc.wantStatus == store.DropLive {
						if _, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: dropID,
							Quantity: 1, IdempotencyKey: "k2"}); err != nil {
							t.Fatal(err)
						}
						if n := countEvents(dropEvents(t, w.pool, dropID), fanout.DropStarted); n != 1 {
							t.Errorf("drop.started after a second order: got %d, want 1", n)
						}
					}
				})
			}
		})
	}
}

// Buyers (through both order modes at once) and schedulers race on drops whose start_time has just
// passed: each drop gets exactly one drop.started, the first of its events, whoever moved it.
func TestLateDropStartsOnceUnderRacingOrdersAndSchedulers(t *testing.T) {
	w := newOrderWorld(t)
	ctx := testContext(t)
	single := newOrders(t, w.pool, postgres.OrdersConfig{Mode: postgres.OrderModeSingle})
	batched := newOrders(t, w.pool, postgres.OrdersConfig{Mode: postgres.OrderModeBatched})
	const drops, buyersPerDrop, stock = 6, 40, 25
	start := time.Now().Add(300 * time.Millisecond).Truncate(time.Millisecond)
	ids := make([]int64, drops)
	for i := range ids {
		ids[i] = w.drop(t, dropSpec{stock: stock, maxPerUser: 1, start: start, status: store.DropScheduled})
	}
	buyers := w.users(t, buyersPerDrop)
	time.Sleep(time.Until(start))

	var wg sync.WaitGroup
	for range 3 {
		s := postgres.NewDropSchedule(w.pool)
		wg.Go(func() {
			for range 20 {
				if _, err := s.StartDue(ctx, time.Now(), 2); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i, dropID := range ids {
		for j, buyer := range buyers {
			orders := single
			if (i+j)%2 == 0 {
				orders = batched
			}
			wg.Go(func() {
				_, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: buyer, DropID: dropID, Quantity: 1,
					IdempotencyKey: fmt.Sprint("drop-", dropID)})
				if err != nil && !isRefusal(err) {
					t.Errorf("drop %d buyer %d: %v", dropID, buyer, err)
				}
			})
		}
	}
	wg.Wait()
	for _, dropID := range ids {
		if a := checkBooks(t, w.pool, dropID); a.status != store.DropSoldOut || a.confirmed != stock {
			t.Errorf("drop %d: %+v; want sold out, %d confirmed", dropID, a, stock)
		}
		events := dropEvents(t, w.pool, dropID)
		checkStartedFirst(t, w, dropID, events)
		if n := countEvents(events, fanout.DropSoldOut); n != 1 {
			t.Errorf("drop %d: %d drop.soldout, want 1", dropID, n)
		}
	}
}

func isRefusal(err error) bool {
	for _, want := range []error{store.ErrSoldOut, store.ErrDropNotLive, store.ErrLimitExceeded} {
		if errors.Is(err, want) {
			return true
		}
	}
	return false
}
