package api_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/api"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

// BenchmarkPlaceOrderSoldOut is the CPU and the allocations of one POST /orders of a sold-out drop
// through the router and every middleware, the real stores behind: token check, the per-user limit
// (Redis), the body, the store's answer from memory and the problem+json. It is most of a hot
// drop's requests (BENCHMARKS.md, bench-orders); the network is left out.
func BenchmarkPlaceOrderSoldOut(b *testing.B) {
	rdb, prefix := storetest.NewRedis(b)
	limiter, err := redis.NewLimiter(rdb, redis.LimiterConfig{Name: "user", Rate: 1_000_000, Prefix: prefix}, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	var orders *postgres.Orders
	e := newEnv(b, func(c *api.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c.UserLimiter = limiter
		orders = c.Orders.(*postgres.Orders)
	})
	_ = orders
	_, creator := e.newCreator("maker")
	product := e.newProduct(creator, "Hoodie")
	start := time.Now().Add(-time.Second)
	resp := e.do("POST", "/drops", creator, map[string]any{"product_id": product,
		"start_time": start.UTC().Format(time.RFC3339Nano), "end_time": start.Add(time.Hour).UTC().Format(time.RFC3339Nano),
		"stock_count": 1, "max_per_user": 1})
	resp.expect(b, http.StatusCreated, "")
	var d struct {
		DropID int64 `json:"drop_id"`
	}
	resp.decode(b, &d)
	_, buyer := e.newUser("first")
	e.raw("POST", "/orders", buyer, orderBody(d.DropID, 1, "k")).expect(b, http.StatusCreated, "")
	tokens := make([]string, 64)
	for i := range tokens {
		_, tokens[i] = e.newUser("buyer" + strconv.Itoa(i))
		tokens[i] = "Bearer " + tokens[i]
	}
	e.raw("POST", "/orders", tokens[0][len("Bearer "):], orderBody(d.DropID, 1, "warm")).expect(b, http.StatusConflict, "sold_out")

	bodies := make([][]byte, 256)
	for i := range bodies {
		bodies[i] = orderBody(d.DropID, 1, fmt.Sprintf("key-%d", i))
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/orders", bytes.NewReader(bodies[i%len(bodies)]))
			req.Header.Set("Authorization", tokens[i%len(tokens)])
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			e.handler.ServeHTTP(w, req)
			if w.Code != http.StatusConflict {
				b.Fatalf("got %d %s, want 409", w.Code, w.Body)
			}
		}
	})
}
