package postgres_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestProducts(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	catalog := postgres.NewCatalog(pool, nil)
	ctx := testContext(t)
	c := mustCreator(t, pool, "maker")
	plain := mustUser(t, postgres.NewUsers(pool), "plain")

	p, err := catalog.CreateProduct(ctx, c.ID, store.NewProduct{Title: "Hoodie", Description: "Warm", PriceCents: 4900})
	if err != nil {
		t.Fatal(err)
	}
	want := store.Product{ID: p.ID, CreatorID: c.ID, Title: "Hoodie", Description: "Warm", PriceCents: 4900}
	if p != want || p.ID <= 0 {
		t.Fatalf("got %+v, want %+v", p, want)
	}
	if got, err := catalog.Product(ctx, p.ID); err != nil || got != want {
		t.Fatalf("Product = %+v, %v; want %+v", got, err, want)
	}
	if _, err := catalog.Product(ctx, p.ID+1000); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown product: got %v, want ErrNotFound", err)
	}
	if _, err := catalog.CreateProduct(ctx, plain.ID, store.NewProduct{Title: "Nope", PriceCents: 1}); !errors.Is(err, store.ErrForbidden) {
		t.Errorf("not a creator: got %v, want ErrForbidden", err)
	}
	if _, err := catalog.CreateProduct(ctx, c.ID, store.NewProduct{Title: "Bad", PriceCents: -1}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("negative price: got %v, want ErrInvalid", err)
	}

	for i := range 44 {
		if _, err := catalog.CreateProduct(ctx, c.ID, store.NewProduct{Title: fmt.Sprint("P", i), PriceCents: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// 45 products in pages of 20: 20, 20, 5.
	tests := []struct {
		page, perPage, wantLen int
		wantMore               bool
	}{
		{1, 20, 20, true}, {2, 20, 20, true}, {3, 20, 5, false}, {4, 20, 0, false},
		{1, 0, 20, true}, {1, 45, 45, false}, {1, 44, 44, true}, {1, 1000, 45, false},
	}
	for _, tc := range tests {
		items, more, err := catalog.Products(ctx, tc.page, tc.perPage)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != tc.wantLen || more != tc.wantMore {
			t.Errorf("page %d per %d: got %d items, more %v; want %d, %v", tc.page, tc.perPage, len(items), more, tc.wantLen, tc.wantMore)
		}
		for i := 1; i < len(items); i++ {
			if items[i].ID <= items[i-1].ID {
				t.Errorf("page %d not in id order", tc.page)
			}
		}
	}
	if _, _, err := catalog.Products(ctx, 0, 20); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("page 0: got %v, want ErrInvalid", err)
	}
}

func TestCreateDrop(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	catalog := postgres.NewCatalog(pool, clock)
	ctx := testContext(t)
	c := mustCreator(t, pool, "maker")
	other := mustCreator(t, pool, "other")
	p, err := catalog.CreateProduct(ctx, c.ID, store.NewProduct{Title: "Hoodie", PriceCents: 4900})
	if err != nil {
		t.Fatal(err)
	}
	start := now.Add(time.Hour).Add(123456 * time.Microsecond) // sub-millisecond part is dropped
	nd := store.NewDrop{ProductID: p.ID, StartTime: start, EndTime: start.Add(time.Hour), StockCount: 100, MaxPerUser: 2}

	d, err := catalog.CreateDrop(ctx, c.ID, nd)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Drop{ID: d.ID, CreatorID: c.ID, Product: store.DropProduct{ID: p.ID, Title: "Hoodie", PriceCents: 4900},
		StartTime: start.Truncate(time.Millisecond), EndTime: start.Add(time.Hour).Truncate(time.Millisecond),
		InitialStock: 100, StockCount: 100, MaxPerUser: 2, Status: store.DropScheduled}
	if !sameDrop(d, want) {
		t.Fatalf("got %+v, want %+v", d, want)
	}
	if got, err := catalog.Drop(ctx, d.ID); err != nil || !sameDrop(got, want) {
		t.Fatalf("Drop = %+v, %v; want %+v", got, err, want)
	}

	// Its drop.scheduled event, in the same transaction, carries the drop as the API shows it.
	events, subjects := outboxEvents(t, pool)
	if len(events) != 1 {
		t.Fatalf("got %d events, want 1", len(events))
	}
	ev := events[0]
	if ev.Type != fanout.DropScheduled || ev.CreatorID != c.ID || ev.DropID != d.ID || !ev.TS.Equal(now) ||
		subjects[0] != fanout.CreatorSubject(c.ID) {
		t.Errorf("got event %+v on %s, want drop.scheduled of drop %d on %s", ev, subjects[0], d.ID, fanout.CreatorSubject(c.ID))
	}
	var data store.Drop
	if err := json.Unmarshal(ev.Data, &data); err != nil || !sameDrop(data, want) {
		t.Errorf("event data %s: got %+v (%v), want %+v", ev.Data, data, err, want)
	}

	failures := []struct {
		name    string
		creator int64
		edit    func(*store.NewDrop)
		want    error
	}{
		{"another creator's product", other.ID, func(*store.NewDrop) {}, store.ErrForbidden},
		{"unknown product", c.ID, func(d *store.NewDrop) { d.ProductID = p.ID + 1000 }, store.ErrNotFound},
		{"start in the past", c.ID, func(d *store.NewDrop) { d.StartTime = now.Add(-time.Minute) }, store.ErrInvalid},
		{"end before start", c.ID, func(d *store.NewDrop) { d.EndTime = d.StartTime.Add(-time.Second) }, store.ErrInvalid},
		{"no stock", c.ID, func(d *store.NewDrop) { d.StockCount = 0 }, store.ErrInvalid},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			in := nd
			tc.edit(&in)
			if _, err := catalog.CreateDrop(ctx, tc.creator, in); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM drops`); n != 1 {
		t.Errorf("got %d drops, want 1 (no partial write)", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM outbox`); n != 1 {
		t.Errorf("got %d events, want 1", n)
	}
}

func sameDrop(a, b store.Drop) bool {
	return a.ID == b.ID && a.CreatorID == b.CreatorID && a.Product == b.Product && a.StartTime.Equal(b.StartTime) &&
		a.EndTime.Equal(b.EndTime) && a.InitialStock == b.InitialStock && a.StockCount == b.StockCount &&
		a.MaxPerUser == b.MaxPerUser && a.Status == b.Status
}

func TestDropStatusAndLiveDrops(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	catalog := postgres.NewCatalog(pool, func() time.Time { return now })
	ctx := testContext(t)
	a := mustCreator(t, pool, "a")
	b := mustCreator(t, pool, "b")
	mustExec(t, pool, `INSERT INTO products (product_id, creator_id, title, price_cents) VALUES (1, $1, 'A', 1), (2, $2, 'B', 2)`, a.ID, b.ID)
	// Rows as the scheduler and orders leave them; ids chosen so the order is easy to read.
	mustExec(t, pool, `INSERT INTO drops (drop_id, creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user, status) VALUES
	(1, $1, 1, $3::timestamptz + interval '1 hour', $3::timestamptz + interval '2 hours', 10, 10, 1, 'scheduled'), -- future
	(2, $1, 1, $3::timestamptz - interval '1 minute', $3::timestamptz + interval '1 hour', 10, 10, 1, 'scheduled'), -- due, not flipped
	(3, $2, 2, $3::timestamptz - interval '1 hour', $3::timestamptz + interval '1 hour', 10, 4, 1, 'live'),
	(4, $1, 1, $3::timestamptz - interval '1 hour', $3::timestamptz + interval '1 hour', 10, 0, 1, 'live'), -- stock gone, not flipped
	(5, $1, 1, $3::timestamptz - interval '1 hour', $3::timestamptz + interval '1 hour', 10, 0, 1, 'sold_out'),
	(6, $2, 2, $3::timestamptz - interval '2 hours', $3::timestamptz - interval '1 minute', 10, 3, 1, 'live'), -- over, not flipped
	(7, $1, 1, $3::timestamptz - interval '2 hours', $3::timestamptz, 10, 3, 1, 'live'), -- ends right now
	(8, $1, 1, $3::timestamptz - interval '30 minutes', $3::timestamptz + interval '1 hour', 10, 10, 1, 'live')`, a.ID, b.ID, now)

	wantStatus := map[int64]store.DropStatus{1: store.DropScheduled, 2: store.DropLive, 3: store.DropLive,
		4: store.DropSoldOut, 5: store.DropSoldOut, 6: store.DropEnded, 7: store.DropEnded, 8: store.DropLive}
	for id, want := range wantStatus {
		d, err := catalog.Drop(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d.Status != want {
			t.Errorf("drop %d: got %s, want %s", id, d.Status, want)
		}
	}
	if _, err := catalog.Drop(ctx, 99); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown drop: got %v, want ErrNotFound", err)
	}

	tests := []struct {
		name    string
		creator int64
		limit   int
		want    []int64
	}{
		{"all", 0, 0, []int64{2, 3, 8}},
		{"all, one per page", 0, 1, []int64{2, 3, 8}},
		{"creator a", a.ID, 0, []int64{2, 8}},
		{"creator b", b.ID, 2, []int64{3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []int64
			req := store.PageRequest{Limit: tc.limit}
			for {
				page, err := catalog.LiveDrops(ctx, tc.creator, req)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range page.Items {
					if d.Status != store.DropLive {
						t.Errorf("drop %d listed as %s", d.ID, d.Status)
					}
					got = append(got, d.ID)
				}
				if page.Next == nil {
					break
				}
				next, err := store.ParseCursor(page.Next.String())
				if err != nil {
					t.Fatal(err)
				}
				req.After = &next
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
