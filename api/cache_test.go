package api_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/api"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

// withCache puts the Redis cache in front of the stores, as cmd/livedrops does by default.
func withCache(t *testing.T, cache **redis.Cache) envOption {
	return func(c *api.Config) {
		rdb, prefix := storetest.NewRedis(t)
		rc, err := redis.NewCache(rdb, redis.CacheConfig{Prefix: prefix}, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		*cache = rc
		c.Creators = rc.Creators(c.Creators.(*postgres.Users))
		c.Follows = rc.Follows(c.Follows.(*postgres.Follows))
		c.Products = rc.Products(c.Products.(*postgres.Catalog))
		c.Drops = rc.Drops(c.Drops.(*postgres.Catalog))
	}
}

// TestCachedReadsSeeUpdates: behind the cache, every change is visible on the next read.
func TestCachedReadsSeeUpdates(t *testing.T) {
	var cache *redis.Cache
	e := newEnv(t, withCache(t, &cache))
	star, token := e.newCreator("star")
	creatorPath := fmt.Sprintf("/creators/%d", star)
	followersPath := creatorPath + "/followers"
	count := func() (listed int, followerCount int64) {
		t.Helper()
		resp := e.do("GET", followersPath, "", nil)
		resp.expect(t, http.StatusOK, "")
		var p page[follower]
		resp.decode(t, &p)
		resp = e.do("GET", creatorPath, "", nil)
		resp.expect(t, http.StatusOK, "")
		var c struct {
			FollowerCount int64 `json:"follower_count"`
		}
		resp.decode(t, &c)
		return len(p.Items), c.FollowerCount
	}
	for i := range 3 {
		if n, fc := count(); n != i || fc != int64(i) {
			t.Fatalf("after %d follows: got %d listed, follower_count %d", i, n, fc)
		}
		count() // cached now
		fan, fanToken := e.newUser(fmt.Sprint("fan", i))
		e.do("POST", fmt.Sprintf("/users/%d/follow/%d", fan, star), fanToken, nil).expect(t, 204, "")
	}

	// Products: the list and the product itself.
	e.do("GET", "/products", "", nil).expect(t, 200, "")
	id := e.newProduct(token, "Fresh")
	resp := e.do("GET", "/products", "", nil)
	var pp struct {
		Items []struct {
			ProductID int64 `json:"product_id"`
		} `json:"items"`
	}
	resp.decode(t, &pp)
	if len(pp.Items) != 1 || pp.Items[0].ProductID != id {
		t.Fatalf("got %s, want the new product listed", resp.body)
	}
	e.do("GET", "/products/"+strconv.FormatInt(id, 10), "", nil).expect(t, 200, "")

	// Drops: an order (issue 4) commits and invalidates; the next read has the new stock.
	resp = e.do("POST", "/drops", token, map[string]any{"product_id": id, "start_time": "2099-01-01T00:00:00Z",
		"end_time": "2099-01-02T00:00:00Z", "stock_count": 10, "max_per_user": 1})
	resp.expect(t, http.StatusCreated, "")
	var d drop
	resp.decode(t, &d)
	dropPath := fmt.Sprintf("/drops/%d", d.DropID)
	e.do("GET", dropPath, "", nil).expect(t, 200, "")
	if _, err := e.pool.Exec(t.Context(), `UPDATE drops SET stock_count = 4 WHERE drop_id = $1`, d.DropID); err != nil {
		t.Fatal(err)
	}
	if err := cache.InvalidateDrop(t.Context(), d.DropID); err != nil {
		t.Fatal(err)
	}
	resp = e.do("GET", dropPath, "", nil)
	resp.decode(t, &d)
	if d.StockCount != 4 {
		t.Errorf("after the order: got stock %d, want 4", d.StockCount)
	}
}

func TestRateLimits(t *testing.T) {
	e := newEnv(t, func(c *api.Config) {
		rdb, prefix := storetest.NewRedis(t)
		reg := prometheus.NewRegistry()
		var err error
		if c.UserLimiter, err = redis.NewLimiter(rdb, redis.LimiterConfig{Name: "user", Rate: 1, Period: time.Hour, Burst: 3, Prefix: prefix}, reg); err != nil {
			t.Fatal(err)
		}
		if c.IPLimiter, err = redis.NewLimiter(rdb, redis.LimiterConfig{Name: "ip", Rate: 1, Period: time.Hour, Burst: 7, Prefix: prefix}, reg); err != nil {
			t.Fatal(err)
		}
	})
	_, token := e.newCreator("maker") // 2 writes from this address
	// The user's budget: POST /creators spent one, 2 products spend the rest, the next is 429.
	for i := range 2 {
		e.do("POST", "/products", token, map[string]any{"title": fmt.Sprint("p", i), "price_cents": 1}).expect(t, 201, "")
	}
	resp := e.do("POST", "/products", token, map[string]any{"title": "one too many", "price_cents": 1})
	resp.expect(t, http.StatusTooManyRequests, "rate_limited")
	if ra, err := strconv.Atoi(resp.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("got Retry-After %q, want whole seconds >= 1", resp.header.Get("Retry-After"))
	}
	// Reads are not limited.
	for range 10 {
		e.do("GET", "/products", "", nil).expect(t, 200, "")
	}
	// The address's budget (7): 1 user + 1 creator + 3 products (the 429 counted too) = 5 spent.
	e.newUser("a")
	e.newUser("b")
	e.do("POST", "/users", "", map[string]string{"name": "c", "email": "c@example.com"}).expect(t, http.StatusTooManyRequests, "rate_limited")
}
