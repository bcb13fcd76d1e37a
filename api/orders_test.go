package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/api"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

// lateOrders lets a test build its order store once newEnv has made the database and the cache.
type lateOrders struct{ api.Orders }

// withOrders makes the API's orders those of mode, in front of the cache when *cache is set by then
// (put withCache first).
func withOrders(t *testing.T, mode postgres.OrderMode, cache **redis.Cache) (envOption, func(*env)) {
	late := &lateOrders{}
	opt := func(c *api.Config) { c.Orders = late }
	ready := func(e *env) {
		cfg := postgres.OrdersConfig{Mode: mode}
		if cache != nil && *cache != nil {
			cfg.Cache = *cache
		}
		o, err := postgres.NewOrders(e.pool, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = o.Close(context.Background()) })
		late.Orders = o
	}
	return opt, ready
}

// orderEnv is an API server whose orders run in mode, with a creator who has a live drop.
type orderEnv struct {
	*env
	creatorToken string
	productID    int64
}

func newOrderEnv(t *testing.T, mode postgres.OrderMode, opts ...envOption) *orderEnv {
	t.Helper()
	opt, ready := withOrders(t, mode, nil)
	e := newEnv(t, append(opts, opt)...)
	ready(e)
	_, token := e.newCreator("maker")
	return &orderEnv{env: e, creatorToken: token, productID: e.newProduct(token, "Hoodie")}
}

// newDrop creates a drop through the API, starting now, and returns its id.
func (e *orderEnv) newDrop(stock, maxPerUser int, start time.Time) int64 {
	e.t.Helper()
	resp := e.do("POST", "/drops", e.creatorToken, map[string]any{"product_id": e.productID,
		"start_time": start.UTC().Format(time.RFC3339Nano), "end_time": start.Add(time.Hour).UTC().Format(time.RFC3339Nano),
		"stock_count": stock, "max_per_user": maxPerUser})
	resp.expect(e.t, http.StatusCreated, "")
	var d struct {
		DropID int64 `json:"drop_id"`
	}
	resp.decode(e.t, &d)
	return d.DropID
}

type order struct {
	OrderID   int64  `json:"order_id"`
	UserID    int64  `json:"user_id"`
	DropID    int64  `json:"drop_id"`
	Quantity  int    `json:"quantity"`
	Status    string `json:"status"`
	CreatedAt string `json:"created_at"`
}

func orderBody(dropID int64, quantity int, key string) []byte {
	b, _ := json.Marshal(map[string]any{"drop_id": dropID, "quantity": quantity, "idempotency_key": key})
	return b
}

func TestOrdersHTTP(t *testing.T) {
	for _, mode := range []postgres.OrderMode{postgres.OrderModeSingle, postgres.OrderModeBatched} {
		t.Run(string(mode), func(t *testing.T) {
			e := newOrderEnv(t, mode)
			buyer, token := e.newUser("buyer")
			other, otherToken := e.newUser("other")
			dropID := e.newDrop(10, 3, time.Now())

			resp := e.raw("POST", "/orders", token, orderBody(dropID, 2, "k1"))
			resp.expect(t, http.StatusCreated, "")
			var first order
			resp.decode(t, &first)
			if first.UserID != buyer || first.DropID != dropID || first.Quantity != 2 || first.Status != "confirmed" || first.OrderID <= 0 {
				t.Fatalf("got %s, want a confirmed order of 2 for user %d", resp.body, buyer)
			}
			if got := resp.header.Get("Location"); got != "/orders/"+strconv.FormatInt(first.OrderID, 10) {
				t.Errorf("Location %q", got)
			}
			if resp.header.Get(api.ReplayedHeader) != "" {
				t.Errorf("a new order says %s: %q", api.ReplayedHeader, resp.header.Get(api.ReplayedHeader))
			}

			noKey, _ := json.Marshal(map[string]any{"drop_id": dropID, "quantity": 2})
			replays := []struct {
				name   string
				body   []byte
				header []string
			}{
				{"same body", orderBody(dropID, 2, "k1"), nil},
				{"key in the header", noKey, []string{api.IdempotencyKeyHeader, "k1"}},
				{"key quoted in the header", noKey, []string{api.IdempotencyKeyHeader, `"k1"`}},
				{"key in both, agreeing", orderBody(dropID, 2, "k1"), []string{api.IdempotencyKeyHeader, "k1"}},
			}
			for _, tc := range replays {
				t.Run("replay/"+tc.name, func(t *testing.T) {
					resp := e.raw("POST", "/orders", token, tc.body, tc.header...)
					resp.expect(t, http.StatusCreated, "")
					var again order
					resp.decode(t, &again)
					if again != first || resp.header.Get(api.ReplayedHeader) != "true" {
						t.Fatalf("got %s with %s %q, want %+v replayed", resp.body, api.ReplayedHeader, resp.header.Get(api.ReplayedHeader), first)
					}
				})
			}

			later := e.newDrop(10, 3, time.Now().Add(time.Hour))
			soldOut := e.newDrop(1, 3, time.Now())
			e.raw("POST", "/orders", otherToken, orderBody(soldOut, 1, "x")).expect(t, http.StatusCreated, "")
			refusals := []struct {
				name   string
				token  string
				body   []byte
				header []string
				status int
				code   string
			}{
				{"mismatch", token, orderBody(dropID, 1, "k1"), nil, http.StatusUnprocessableEntity, "idempotency_mismatch"},
				{"body and header disagree", token, orderBody(dropID, 1, "k2"), []string{api.IdempotencyKeyHeader, "k3"}, http.StatusBadRequest, "invalid_argument"},
				{"no key", token, noKey, nil, http.StatusBadRequest, "invalid_argument"},
				{"no quantity", token, []byte(fmt.Sprintf(`{"drop_id":%d,"idempotency_key":"q"}`, dropID)), nil, http.StatusBadRequest, "invalid_argument"},
				{"no token", "", orderBody(dropID, 1, "k4"), nil, http.StatusUnauthorized, "unauthorized"},
				{"bad token", "nope", orderBody(dropID, 1, "k4"), nil, http.StatusUnauthorized, "unauthorized"},
				{"unknown drop", token, orderBody(dropID+1000, 1, "k5"), nil, http.StatusNotFound, "not_found"},
				{"over the limit", token, orderBody(dropID, 2, "k6"), nil, http.StatusConflict, "limit_exceeded"},
				{"not started", token, orderBody(later, 1, "k7"), nil, http.StatusConflict, "drop_not_live"},
				{"sold out", token, orderBody(soldOut, 1, "k8"), nil, http.StatusConflict, "sold_out"},
			}
			for _, tc := range refusals {
				t.Run("refused/"+tc.name, func(t *testing.T) {
					e.raw("POST", "/orders", tc.token, tc.body, tc.header...).expect(t, tc.status, tc.code)
				})
			}

			orderPath := "/orders/" + strconv.FormatInt(first.OrderID, 10)
			resp = e.do("GET", orderPath, token, nil)
			resp.expect(t, http.StatusOK, "")
			var got order
			resp.decode(t, &got)
			if got != first {
				t.Errorf("GET %s: got %+v, want %+v", orderPath, got, first)
			}
			e.do("GET", orderPath, otherToken, nil).expect(t, http.StatusNotFound, "not_found")
			e.do("GET", orderPath, "", nil).expect(t, http.StatusUnauthorized, "unauthorized")
			e.do("GET", "/orders/abc", token, nil).expect(t, http.StatusBadRequest, "invalid_argument")

			listPath := fmt.Sprintf("/users/%d/orders", buyer)
			resp = e.do("GET", listPath, token, nil)
			resp.expect(t, http.StatusOK, "")
			var list page[order]
			resp.decode(t, &list)
			if len(list.Items) != 1 || list.Items[0] != first || list.NextCursor != "" {
				t.Errorf("GET %s: got %s, want the one order", listPath, resp.body)
			}
			e.do("GET", listPath, otherToken, nil).expect(t, http.StatusForbidden, "forbidden")
			e.do("GET", fmt.Sprintf("/users/%d/orders?limit=0", other), otherToken, nil).expect(t, http.StatusBadRequest, "invalid_argument")
		})
	}
}

// TestOrdersHTTPConcurrentKey: one key sent many times at once makes one order; every answer is that
// order, all but one marked replayed.
func TestOrdersHTTPConcurrentKey(t *testing.T) {
	for _, mode := range []postgres.OrderMode{postgres.OrderModeSingle, postgres.OrderModeBatched} {
		t.Run(string(mode), func(t *testing.T) {
			e := newOrderEnv(t, mode)
			_, token := e.newUser("buyer")
			dropID := e.newDrop(100, 5, time.Now())
			const n = 20
			answers := make([]*response, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { answers[i] = e.raw("POST", "/orders", token, orderBody(dropID, 1, "once")) })
			}
			wg.Wait()
			var first order
			fresh := 0
			for i, resp := range answers {
				resp.expect(t, http.StatusCreated, "")
				var o order
				resp.decode(t, &o)
				if i == 0 {
					first = o
				}
				if o != first {
					t.Fatalf("answer %d is %+v, answer 0 %+v: want one order", i, o, first)
				}
				if resp.header.Get(api.ReplayedHeader) != "true" {
					fresh++
				}
			}
			if fresh != 1 {
				t.Errorf("%d answers not marked replayed, want 1", fresh)
			}
		})
	}
}

// TestOrderRefreshesCachedDrop: behind the Redis cache, the drop read after an order shows its stock,
// long before the cached copy would expire.
func TestOrderRefreshesCachedDrop(t *testing.T) {
	var cache *redis.Cache
	withDropCache := func(c *api.Config) {
		rdb, prefix := storetest.NewRedis(t)
		rc, err := redis.NewCache(rdb, redis.CacheConfig{Prefix: prefix, DropTTL: time.Hour}, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		cache = rc
		c.Drops = rc.Drops(c.Drops.(*postgres.Catalog))
	}
	opt, ready := withOrders(t, postgres.OrderModeBatched, &cache)
	e := newEnv(t, withDropCache, opt)
	ready(e)
	_, creatorToken := e.newCreator("maker")
	oe := &orderEnv{env: e, creatorToken: creatorToken, productID: e.newProduct(creatorToken, "Hoodie")}
	_, token := e.newUser("buyer")
	dropID := oe.newDrop(10, 5, time.Now())
	dropPath := fmt.Sprintf("/drops/%d", dropID)
	stock := func() int {
		resp := e.do("GET", dropPath, "", nil)
		resp.expect(t, http.StatusOK, "")
		var d struct {
			StockCount int `json:"stock_count"`
		}
		resp.decode(t, &d)
		return d.StockCount
	}
	if got := stock(); got != 10 {
		t.Fatalf("got stock %d, want 10", got)
	}
	for i := 1; i <= 3; i++ {
		e.raw("POST", "/orders", token, orderBody(dropID, 1, fmt.Sprint("k", i))).expect(t, http.StatusCreated, "")
		// Invalidation runs right after the commit, in the background: poll.
		deadline := time.Now().Add(5 * time.Second)
		for stock() != 10-i {
			if time.Now().After(deadline) {
				t.Fatalf("after order %d the drop still shows stock %d, want %d", i, stock(), 10-i)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestParsePlaceOrderKey(t *testing.T) {
	body := func(key string) []byte {
		if key == "" {
			return []byte(`{"drop_id":1,"quantity":1}`)
		}
		return orderBody(1, 1, key)
	}
	tests := []struct {
		name    string
		body    []byte
		header  []string
		wantKey string // "" = refused
	}{
		{"body", body("k"), nil, "k"},
		{"header", body(""), []string{"k"}, "k"},
		{"header quoted", body(""), []string{`"k"`}, "k"},
		{"header quoted with escapes", body(""), []string{`"a\"b\\c"`}, `a"b\c`},
		{"both agree", body("k"), []string{"k"}, "k"},
		{"both agree, header quoted", body("k"), []string{`"k"`}, "k"},
		{"both differ", body("k"), []string{"j"}, ""},
		{"neither", body(""), nil, ""},
		{"header twice", body(""), []string{"k", "k"}, ""},
		{"header quote not closed", body(""), []string{`"k`}, ""},
		{"header text after the quote", body(""), []string{`"k"x`}, ""},
		{"header bad escape", body(""), []string{`"\k"`}, ""},
		{"header empty quoted", body(""), []string{`""`}, ""},
		{"header empty", body(""), []string{""}, ""},
		{"header too long", body(""), []string{string(make([]byte, 256))}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := api.ParsePlaceOrder(tc.body, tc.header)
			if tc.wantKey == "" {
				if status, _ := api.ErrorAnswer(err); err == nil || status != http.StatusBadRequest {
					t.Fatalf("got %+v, %v; want a 400", p, err)
				}
				return
			}
			if err != nil || p.IdempotencyKey != tc.wantKey || p.DropID != 1 || p.Quantity != 1 {
				t.Fatalf("got %+v, %v; want key %q", p, err, tc.wantKey)
			}
		})
	}
}

func FuzzPlaceOrderBody(f *testing.F) {
	seedBodies(f, `{"drop_id":42,"quantity":1,"idempotency_key":"k"}`, `{"drop_id":42,"quantity":0,"idempotency_key":"k"}`,
		`{"drop_id":9007199254740992,"quantity":1,"idempotency_key":"k"}`, `{"drop_id":1,"quantity":2147483648,"idempotency_key":"k"}`,
		`{"drop_id":1,"quantity":1.5,"idempotency_key":"k"}`, `{"drop_id":1,"quantity":1,"idempotency_key":"a\u0000b"}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, header := range [][]string{nil, {"k"}, {`"k"`}} {
			p, err := api.ParsePlaceOrder(body, header)
			checkDecoded(t, body, err)
			if err != nil {
				continue
			}
			p.UserID = 1
			if verr := p.Validate(); verr != nil {
				t.Fatalf("body %q, header %q accepted but invalid: %v", body, header, verr)
			}
		}
	})
}

func FuzzIdempotencyKeyHeader(f *testing.F) {
	for _, s := range []string{"k", `"k"`, `"a\"b"`, `"`, `""`, `"\`, "\x00", "é", `"é"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		p, err := api.ParsePlaceOrder([]byte(`{"drop_id":1,"quantity":1}`), []string{header})
		if err != nil {
			if status, ct := api.ErrorAnswer(err); status != http.StatusBadRequest || ct != "application/problem+json" {
				t.Fatalf("header %q: %v answered %d %s, want 400 problem", header, err, status, ct)
			}
			return
		}
		if p.IdempotencyKey == "" {
			t.Fatalf("header %q accepted as an empty key", header)
		}
		p.UserID = 1
		if verr := p.Validate(); verr != nil {
			t.Fatalf("header %q accepted but invalid: %v", header, verr)
		}
	})
}

// TestOrderWireFormats pins the JSON of the order answers (testdata/order*.golden; -update rewrites).
func TestOrderWireFormats(t *testing.T) {
	e := newEnv(t)
	for _, q := range []string{
		`INSERT INTO users (user_id, name, email) VALUES (7, 'DJ', 'dj@example.com'), (8, 'Fan', 'fan@example.com')`,
		`INSERT INTO creators (creator_id, profile_name) VALUES (7, 'DJ Drop')`,
		`INSERT INTO products (product_id, creator_id, title, description, price_cents) VALUES (3, 7, 'Hoodie', 'Warm', 4900)`,
		`INSERT INTO drops (drop_id, creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user, status)
		 VALUES (42, 7, 3, '2026-11-25T11:00:00.123Z', '2099-11-25T12:00:00Z', 2, 0, 2, 'sold_out')`,
		`INSERT INTO drop_purchases (drop_id, user_id, quantity, max_per_user) VALUES (42, 8, 2, 2)`,
		`INSERT INTO orders (order_id, user_id, drop_id, quantity, status, idempotency_key, request_hash, created_at)
		 VALUES (9, 8, 42, 2, 'confirmed', 'k', sha256('v1 drop_id=42 quantity=2'), '2026-11-25T11:00:00.456Z')`,
	} {
		if _, err := e.pool.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	token, err := e.tokens.Mint(8, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path string
		body               string
		status             int
	}{
		{"order", "GET", "/orders/9", "", http.StatusOK},
		{"orders", "GET", "/users/8/orders", "", http.StatusOK},
		{"order_replayed", "POST", "/orders", `{"drop_id":42,"quantity":2,"idempotency_key":"k"}`, http.StatusCreated},
		{"problem_sold_out", "POST", "/orders", `{"drop_id":42,"quantity":1,"idempotency_key":"new"}`, http.StatusConflict},
		{"problem_idempotency_mismatch", "POST", "/orders", `{"drop_id":42,"quantity":1,"idempotency_key":"k"}`, http.StatusUnprocessableEntity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.raw(tc.method, tc.path, token, []byte(tc.body))
			resp.expect(t, tc.status, "")
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, resp.body, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(resp.body, want) {
				t.Errorf("%s %s:\ngot  %s\nwant %s", tc.method, tc.path, resp.body, want)
			}
		})
	}
}

// FuzzOrderBodyFastPath: whenever the fast reader of the order body accepts a body, the full decoder
// accepts it too and reads the same three fields.
func FuzzOrderBodyFastPath(f *testing.F) {
	seedBodies(f, `{"drop_id":42,"quantity":1,"idempotency_key":"k"}`, ` { "quantity" : -0 , "drop_id":7 } `,
		`{"drop_id":null,"idempotency_key":null}`, `{"drop_id":1,"drop_id":2}`, `{}`, `{"Drop_ID":1}`,
		`{"drop_id":123456789012345678}`, `{"drop_id":01}`, `{"drop_id":1e3}`, `{"idempotency_key":"\u00e9"}`,
		`{"idempotency_key":"é"}`, `{"drop_id":1}x`, `{"drop_id":1,}`, `{"quantity":-}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		slow, fast, fastOK, slowErr := api.DecodeOrderBody(body)
		if !fastOK {
			return
		}
		if slowErr != nil {
			t.Fatalf("body %q: the fast reader accepted what decodeJSON refuses: %v", body, slowErr)
		}
		for i, name := range []string{"drop_id", "quantity", "idempotency_key"} {
			switch a, b := slow[i], fast[i]; {
			case (a == nil) != (b == nil):
				t.Fatalf("body %q: %s is %v one way, %v the other", body, name, a, b)
			case a != nil && *a != *b:
				t.Fatalf("body %q: %s is %q slowly, %q fast", body, name, *a, *b)
			}
		}
	})
}
