package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

type drop struct {
	DropID    int64 `json:"drop_id"`
	CreatorID int64 `json:"creator_id"`
	Product   struct {
		ProductID  int64  `json:"product_id"`
		Title      string `json:"title"`
		PriceCents int64  `json:"price_cents"`
	} `json:"product"`
	StartTime    string `json:"start_time"`
	EndTime      string `json:"end_time"`
	InitialStock int    `json:"initial_stock"`
	StockCount   int    `json:"stock_count"`
	MaxPerUser   int    `json:"max_per_user"`
	Status       string `json:"status"`
}

func TestProducts(t *testing.T) {
	e := newEnv(t)
	creator, token := e.newCreator("maker")
	_, plainToken := e.newUser("plain")

	resp := e.do("POST", "/products", token, map[string]any{"title": "Hoodie", "description": "Warm\nand soft", "price_cents": 4900})
	resp.expect(t, http.StatusCreated, "")
	var p struct {
		ProductID int64 `json:"product_id"`
	}
	resp.decode(t, &p)
	want := fmt.Sprintf(`{"product_id":%d,"creator_id":%d,"title":"Hoodie","description":"Warm\nand soft","price_cents":4900}`, p.ProductID, creator)
	if strings.TrimSpace(string(resp.body)) != want {
		t.Fatalf("got %s, want %s", resp.body, want)
	}
	got := e.do("GET", fmt.Sprintf("/products/%d", p.ProductID), "", nil)
	got.expect(t, http.StatusOK, "")
	if strings.TrimSpace(string(got.body)) != want {
		t.Errorf("GET: got %s, want %s", got.body, want)
	}
	// The description may be left out.
	e.do("POST", "/products", token, map[string]any{"title": "Sticker", "price_cents": 0}).expect(t, http.StatusCreated, "")

	tests := []struct {
		name   string
		token  string
		body   any
		status int
		code   string
	}{
		{"not a creator", plainToken, map[string]any{"title": "x", "price_cents": 1}, 403, "forbidden"},
		{"no token", "", map[string]any{"title": "x", "price_cents": 1}, 401, "unauthorized"},
		{"negative price", token, map[string]any{"title": "x", "price_cents": -1}, 400, "invalid_argument"},
		{"price as a string", token, map[string]any{"title": "x", "price_cents": "100"}, 400, "invalid_argument"},
		{"fractional price", token, map[string]any{"title": "x", "price_cents": 1.5}, 400, "invalid_argument"},
		{"no price", token, map[string]any{"title": "x"}, 400, "invalid_argument"},
		{"title too long", token, map[string]any{"title": strings.Repeat("t", 201), "price_cents": 1}, 400, "invalid_argument"},
		{"description too long", token, map[string]any{"title": "t", "description": strings.Repeat("d", 5001), "price_cents": 1}, 400, "invalid_argument"},
		{"unknown field", token, map[string]any{"title": "t", "price_cents": 1, "stock": 3}, 400, "invalid_argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.do("POST", "/products", tc.token, tc.body).expect(t, tc.status, tc.code)
		})
	}

	for i := range 23 {
		e.newProduct(token, fmt.Sprint("P", i))
	}
	// 25 products.
	pages := []struct {
		query    string
		wantLen  int
		wantPage int
		wantPer  int
		wantMore bool
	}{
		{"", 20, 1, 20, true},
		{"?page=2", 5, 2, 20, false},
		{"?page=3", 0, 3, 20, false},
		{"?page=2&per_page=10", 10, 2, 10, true},
		{"?per_page=25", 25, 1, 25, false},
		{"?per_page=100", 25, 1, 100, false},
	}
	for _, tc := range pages {
		resp := e.do("GET", "/products"+tc.query, "", nil)
		resp.expect(t, http.StatusOK, "")
		var pp struct {
			Items []struct {
				ProductID int64 `json:"product_id"`
			} `json:"items"`
			Page    int  `json:"page"`
			PerPage int  `json:"per_page"`
			HasMore bool `json:"has_more"`
		}
		resp.decode(t, &pp)
		if len(pp.Items) != tc.wantLen || pp.Page != tc.wantPage || pp.PerPage != tc.wantPer || pp.HasMore != tc.wantMore {
			t.Errorf("GET /products%s: got %d items, page %d, per_page %d, has_more %v; want %d, %d, %d, %v",
				tc.query, len(pp.Items), pp.Page, pp.PerPage, pp.HasMore, tc.wantLen, tc.wantPage, tc.wantPer, tc.wantMore)
		}
	}
	for _, q := range []string{"?page=0", "?page=-1", "?page=x", "?per_page=0", "?per_page=101", "?page=100001"} {
		e.do("GET", "/products"+q, "", nil).expect(t, 400, "invalid_argument")
	}
	e.do("GET", fmt.Sprintf("/products/%d", p.ProductID+1000), "", nil).expect(t, 404, "not_found")
	e.do("GET", "/products/1.5", "", nil).expect(t, 400, "invalid_argument")
}

func TestDrops(t *testing.T) {
	e := newEnv(t)
	creator, token := e.newCreator("maker")
	_, otherToken := e.newCreator("other")
	_, plainToken := e.newUser("plain")
	product := e.newProduct(token, "Hoodie")
	start := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Add(250 * time.Millisecond)
	body := func(edit func(map[string]any)) map[string]any {
		m := map[string]any{"product_id": product, "start_time": start.Format(time.RFC3339Nano),
			"end_time": start.Add(time.Hour).Format(time.RFC3339), "stock_count": 100, "max_per_user": 2}
		if edit != nil {
			edit(m)
		}
		return m
	}

	resp := e.do("POST", "/drops", token, body(nil))
	resp.expect(t, http.StatusCreated, "")
	var d drop
	resp.decode(t, &d)
	if d.DropID <= 0 || d.CreatorID != creator || d.Product.ProductID != product || d.Product.Title != "Hoodie" ||
		d.Product.PriceCents != 1500 || d.StartTime != start.Format("2006-01-02T15:04:05.000Z") ||
		d.InitialStock != 100 || d.StockCount != 100 || d.MaxPerUser != 2 || d.Status != "scheduled" {
		t.Fatalf("got %+v, want the scheduled drop", d)
	}
	got := e.do("GET", fmt.Sprintf("/drops/%d", d.DropID), "", nil)
	got.expect(t, http.StatusOK, "")
	if string(got.body) != string(resp.body) {
		t.Errorf("GET: got %s, want %s", got.body, resp.body)
	}
	var events int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM outbox WHERE type = 'drop.scheduled'`).Scan(&events); err != nil || events != 1 {
		t.Errorf("got %d drop.scheduled events (%v), want 1", events, err)
	}

	tests := []struct {
		name   string
		token  string
		body   any
		status int
		code   string
	}{
		{"end before start", token, body(func(m map[string]any) { m["end_time"] = start.Add(-time.Minute).Format(time.RFC3339) }), 400, "invalid_argument"},
		{"start in the past", token, body(func(m map[string]any) { m["start_time"] = time.Now().Add(-time.Hour).Format(time.RFC3339) }), 400, "invalid_argument"},
		{"no stock", token, body(func(m map[string]any) { m["stock_count"] = 0 }), 400, "invalid_argument"},
		{"stock above int32", token, body(func(m map[string]any) { m["stock_count"] = int64(1) << 31 }), 400, "invalid_argument"},
		{"max per user zero", token, body(func(m map[string]any) { m["max_per_user"] = 0 }), 400, "invalid_argument"},
		{"time not RFC 3339", token, body(func(m map[string]any) { m["start_time"] = "tomorrow" }), 400, "invalid_argument"},
		{"time as a number", token, body(func(m map[string]any) { m["start_time"] = 1764000000 }), 400, "invalid_argument"},
		{"missing end", token, body(func(m map[string]any) { delete(m, "end_time") }), 400, "invalid_argument"},
		{"another creator's product", otherToken, body(nil), 403, "forbidden"},
		{"not a creator", plainToken, body(nil), 403, "forbidden"},
		{"unknown product", token, body(func(m map[string]any) { m["product_id"] = product + 1000 }), 404, "not_found"},
		{"product id zero", token, body(func(m map[string]any) { m["product_id"] = 0 }), 400, "invalid_argument"},
		{"no token", "", body(nil), 401, "unauthorized"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.do("POST", "/drops", tc.token, tc.body).expect(t, tc.status, tc.code)
		})
	}
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM drops`).Scan(&events); err != nil || events != 1 {
		t.Errorf("got %d drops (%v), want 1: refused writes write nothing", events, err)
	}
	e.do("GET", fmt.Sprintf("/drops/%d", d.DropID+1000), "", nil).expect(t, 404, "not_found")
	e.do("GET", "/drops/abc", "", nil).expect(t, 400, "invalid_argument")
}

func TestDropStatusFollowsTheClock(t *testing.T) {
	e := newEnv(t)
	creator, token := e.newCreator("maker")
	product := e.newProduct(token, "Hoodie")
	// Drops as the scheduler (not yet run) and orders leave them.
	if _, err := e.pool.Exec(t.Context(), `INSERT INTO drops (drop_id, creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user, status) VALUES
	(1, $1, $2, now() + interval '1 hour', now() + interval '2 hours', 10, 10, 1, 'scheduled'),
	(2, $1, $2, now() - interval '1 minute', now() + interval '1 hour', 10, 10, 1, 'scheduled'),
	(3, $1, $2, now() - interval '1 hour', now() + interval '1 hour', 10, 0, 1, 'live'),
	(4, $1, $2, now() - interval '2 hours', now() - interval '1 minute', 10, 5, 1, 'live'),
	(5, $1, $2, now() - interval '1 hour', now() + interval '1 hour', 10, 7, 1, 'live')`, creator, product); err != nil {
		t.Fatal(err)
	}
	want := map[int64]string{1: "scheduled", 2: "live", 3: "sold_out", 4: "ended", 5: "live"}
	for id, status := range want {
		resp := e.do("GET", fmt.Sprintf("/drops/%d", id), "", nil)
		resp.expect(t, http.StatusOK, "")
		var d drop
		resp.decode(t, &d)
		if d.Status != status {
			t.Errorf("drop %d: got %s, want %s", id, d.Status, status)
		}
	}

	resp := e.do("GET", "/drops/live?limit=1", "", nil)
	resp.expect(t, http.StatusOK, "")
	var first page[drop]
	resp.decode(t, &first)
	if len(first.Items) != 1 || first.Items[0].DropID != 2 || first.NextCursor == "" {
		t.Fatalf("got %+v, want drop 2 and a cursor", first)
	}
	resp = e.do("GET", "/drops/live?limit=1&cursor="+first.NextCursor, "", nil)
	resp.expect(t, http.StatusOK, "")
	var second page[drop]
	resp.decode(t, &second)
	if len(second.Items) != 1 || second.Items[0].DropID != 5 || second.Items[0].Status != "live" {
		t.Fatalf("got %+v, want drop 5", second)
	}
	resp = e.do("GET", fmt.Sprintf("/drops/live?creator_id=%d", creator), "", nil)
	resp.expect(t, http.StatusOK, "")
	var mine page[drop]
	resp.decode(t, &mine)
	if len(mine.Items) != 2 {
		t.Errorf("creator filter: got %d drops, want 2", len(mine.Items))
	}
	resp = e.do("GET", fmt.Sprintf("/drops/live?creator_id=%d", creator+1000), "", nil)
	resp.expect(t, http.StatusOK, "")
	if s := strings.TrimSpace(string(resp.body)); s != `{"items":[]}` {
		t.Errorf("other creator: got %s, want an empty list", s)
	}
	e.do("GET", "/drops/live?creator_id=abc", "", nil).expect(t, 400, "invalid_argument")
	e.do("GET", "/drops/live?cursor=!!", "", nil).expect(t, 400, "invalid_argument")
}
