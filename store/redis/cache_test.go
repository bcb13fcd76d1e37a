package redis_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// fixture is a migrated database with a creator, a product and a live drop, and the stores on it.
type fixture struct {
	pool     *pgxpool.Pool
	users    *postgres.Users
	follows  *postgres.Follows
	catalog  *counting
	creator  int64
	product  int64
	drop     int64
	registry *prometheus.Registry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := testContext(t)
	pool, err := postgres.Open(ctx, storetest.NewMigratedDatabase(t), postgres.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f := &fixture{pool: pool, users: postgres.NewUsers(pool), follows: postgres.NewFollows(pool, nil),
		catalog: &counting{Catalog: postgres.NewCatalog(pool, nil)}, registry: prometheus.NewRegistry()}
	u, err := f.users.CreateUser(ctx, store.NewUser{Name: "maker", Email: "maker@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.users.CreateCreator(ctx, u.ID, "Maker"); err != nil {
		t.Fatal(err)
	}
	f.creator = u.ID
	p, err := f.catalog.CreateProduct(ctx, u.ID, store.NewProduct{Title: "Hoodie", PriceCents: 100})
	if err != nil {
		t.Fatal(err)
	}
	f.product = p.ID
	d, err := f.catalog.CreateDrop(ctx, u.ID, store.NewDrop{ProductID: p.ID, StartTime: time.Now(),
		EndTime: time.Now().Add(time.Hour), StockCount: 50, MaxPerUser: 5})
	if err != nil {
		t.Fatal(err)
	}
	f.drop = d.ID
	return f
}

func (f *fixture) cache(t *testing.T, rdb goredis.UniversalClient, prefix string, cfg redis.CacheConfig) *redis.Cache {
	t.Helper()
	cfg.Prefix = prefix
	c, err := redis.NewCache(rdb, cfg, f.registry)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) count(cache, result string) int {
	return counterValue(f.registry, "livedrops_cache_requests_total", map[string]string{"cache": cache, "result": result})
}

// counterValue reads one counter of reg by name and labels; 0 when it was never counted.
func counterValue(reg prometheus.Gatherer, name string, labels map[string]string) int {
	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return int(m.GetCounter().GetValue())
		}
	}
	return 0
}

// counting is the real catalogue store, counting the drop and product loads that reach PostgreSQL;
// gate, when set, holds every Drop load until it is closed.
type counting struct {
	*postgres.Catalog
	dropLoads, productLoads, pageLoads atomic.Int64
	gate                               chan struct{}
}

func (c *counting) Drop(ctx context.Context, id int64) (store.Drop, error) {
	c.dropLoads.Add(1)
	if c.gate != nil {
		<-c.gate
	}
	return c.Catalog.Drop(ctx, id)
}

func (c *counting) Product(ctx context.Context, id int64) (store.Product, error) {
	c.productLoads.Add(1)
	return c.Catalog.Product(ctx, id)
}

func (c *counting) Products(ctx context.Context, page, perPage int) ([]store.Product, bool, error) {
	c.pageLoads.Add(1)
	return c.Catalog.Products(ctx, page, perPage)
}

func TestDropCache(t *testing.T) {
	f := newFixture(t)
	rdb, prefix := storetest.NewRedis(t)
	cache := f.cache(t, rdb, prefix, redis.CacheConfig{DropTTL: time.Hour, LocalTTL: -1})
	drops := cache.Drops(f.catalog)
	ctx := testContext(t)

	for range 3 {
		d, err := drops.Drop(ctx, f.drop)
		if err != nil {
			t.Fatal(err)
		}
		if d.StockCount != 50 || d.Product.Title != "Hoodie" {
			t.Fatalf("got %+v, want the drop with 50 in stock", d)
		}
	}
	if got := f.catalog.dropLoads.Load(); got != 1 {
		t.Errorf("got %d database loads for 3 reads, want 1", got)
	}
	if hits, misses := f.count("drop", "hit"), f.count("drop", "miss"); hits != 2 || misses != 1 {
		t.Errorf("got %d hits and %d misses, want 2 and 1", hits, misses)
	}

	// An order commits (stock 50 → 47) and invalidates: the next read sees it.
	if _, err := f.pool.Exec(ctx, `UPDATE drops SET stock_count = 47 WHERE drop_id = $1`, f.drop); err != nil {
		t.Fatal(err)
	}
	if err := cache.InvalidateDrop(ctx, f.drop); err != nil {
		t.Fatal(err)
	}
	if d, err := drops.Drop(ctx, f.drop); err != nil || d.StockCount != 47 {
		t.Fatalf("after invalidation: got %+v, %v; want stock 47", d, err)
	}
	if _, err := drops.Drop(ctx, f.drop+100); err == nil {
		t.Error("unknown drop: got no error")
	}
}

func TestDropCacheStalenessIsBoundedByTTL(t *testing.T) {
	f := newFixture(t)
	rdb, prefix := storetest.NewRedis(t)
	ttl, localTTL := 300*time.Millisecond, 100*time.Millisecond
	drops := f.cache(t, rdb, prefix, redis.CacheConfig{DropTTL: ttl, LocalTTL: localTTL}).Drops(f.catalog)
	ctx := testContext(t)
	if _, err := drops.Drop(ctx, f.drop); err != nil {
		t.Fatal(err)
	}
	// A write nobody invalidated (a racing fill) shows within the TTL.
	if _, err := f.pool.Exec(ctx, `UPDATE drops SET stock_count = 10 WHERE drop_id = $1`, f.drop); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	for {
		d, err := drops.Drop(ctx, f.drop)
		if err != nil {
			t.Fatal(err)
		}
		if d.StockCount == 10 {
			break
		}
		if time.Since(changed) > ttl+localTTL+200*time.Millisecond {
			t.Fatalf("stock still %d %s after the change, TTLs %s + %s", d.StockCount, time.Since(changed), ttl, localTTL)
		}
		time.Sleep(10 * time.Millisecond) // poll
	}
}

func TestExpiredKeyIsRebuiltOnce(t *testing.T) {
	f := newFixture(t)
	rdb, prefix := storetest.NewRedis(t)
	drops := f.cache(t, rdb, prefix, redis.CacheConfig{}).Drops(f.catalog)
	f.catalog.gate = make(chan struct{})
	const readers = 40
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			if d, err := drops.Drop(testContext(t), f.drop); err != nil || d.ID != f.drop {
				t.Errorf("got %+v, %v", d, err)
			}
		})
	}
	// Every reader has missed before the one load is let through.
	deadline := time.Now().Add(10 * time.Second)
	for f.count("drop", "miss") < readers {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d readers missed", f.count("drop", "miss"), readers)
		}
		time.Sleep(time.Millisecond)
	}
	close(f.catalog.gate)
	wg.Wait()
	// One load; a reader preempted between its miss and joining the flight may load once more.
	if got := f.catalog.dropLoads.Load(); got > 2 {
		t.Errorf("%d readers of an expired key loaded it %d times, want once", readers, got)
	}
}

func TestProductCache(t *testing.T) {
	f := newFixture(t)
	rdb, prefix := storetest.NewRedis(t)
	products := f.cache(t, rdb, prefix, redis.CacheConfig{LocalTTL: -1}).Products(f.catalog)
	ctx := testContext(t)

	// Written through at creation: the first read is a hit.
	p, err := products.CreateProduct(ctx, f.creator, store.NewProduct{Title: "Cap", PriceCents: 900})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := products.Product(ctx, p.ID); err != nil || got != p {
		t.Fatalf("got %+v, %v; want %+v", got, err, p)
	}
	if n := f.catalog.productLoads.Load(); n != 0 {
		t.Errorf("got %d loads of a written-through product, want 0", n)
	}

	items, more, err := products.Products(ctx, 1, 20)
	if err != nil || len(items) != 2 || more {
		t.Fatalf("page 1: got %d items, more %v, %v; want 2", len(items), more, err)
	}
	if _, _, err := products.Products(ctx, 1, 20); err != nil {
		t.Fatal(err)
	}
	if n := f.catalog.pageLoads.Load(); n != 1 {
		t.Errorf("got %d page loads for 2 reads, want 1", n)
	}
	// A new product is on the next read of the page.
	if _, err := products.CreateProduct(ctx, f.creator, store.NewProduct{Title: "Mug", PriceCents: 1200}); err != nil {
		t.Fatal(err)
	}
	items, _, err = products.Products(ctx, 1, 20)
	if err != nil || len(items) != 3 || items[2].Title != "Mug" {
		t.Fatalf("after a new product: got %+v, %v; want 3 ending with Mug", items, err)
	}
	items, more, err = products.Products(ctx, 5, 20)
	if err != nil || len(items) != 0 || items == nil || more {
		t.Errorf("page past the end: got %#v, %v, %v; want an empty page", items, more, err)
	}
}

func TestFollowerCacheInvalidation(t *testing.T) {
	f := newFixture(t)
	rdb, prefix := storetest.NewRedis(t)
	cache := f.cache(t, rdb, prefix, redis.CacheConfig{CreatorTTL: time.Hour, PageTTL: time.Hour, LocalTTL: -1})
	follows := cache.Follows(f.follows)
	creators := cache.Creators(f.users)
	ctx := testContext(t)

	var fans []int64
	for i := range 5 {
		u, err := f.users.CreateUser(ctx, store.NewUser{Name: fmt.Sprint("fan", i), Email: fmt.Sprintf("fan%d@x.io", i)})
		if err != nil {
			t.Fatal(err)
		}
		fans = append(fans, u.ID)
	}
	for _, id := range fans[:3] {
		if _, err := follows.Follow(ctx, id, f.creator); err != nil {
			t.Fatal(err)
		}
	}
	check := func(want int) {
		t.Helper()
		page, err := follows.Followers(ctx, f.creator, store.PageRequest{Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		n := len(page.Items)
		for page.Next != nil {
			page, err = follows.Followers(ctx, f.creator, store.PageRequest{Limit: 2, After: page.Next})
			if err != nil {
				t.Fatal(err)
			}
			n += len(page.Items)
		}
		c, err := creators.Creator(ctx, f.creator)
		if err != nil {
			t.Fatal(err)
		}
		if n != want || c.FollowerCount != int64(want) {
			t.Fatalf("got %d followers listed and follower_count %d, want %d", n, c.FollowerCount, want)
		}
	}
	check(3)
	check(3) // from the cache now
	if f.count("followers", "hit") < 2 || f.count("creator", "hit") < 1 {
		t.Errorf("got %d follower page hits and %d creator hits, want the second walk cached",
			f.count("followers", "hit"), f.count("creator", "hit"))
	}
	if _, err := follows.Follow(ctx, fans[3], f.creator); err != nil {
		t.Fatal(err)
	}
	check(4) // visible on the next read
	if _, err := follows.Unfollow(ctx, fans[0], f.creator); err != nil {
		t.Fatal(err)
	}
	check(3)
	// Following twice changes nothing and keeps the cache.
	before := f.count("followers", "hit")
	if _, err := follows.Follow(ctx, fans[1], f.creator); err != nil {
		t.Fatal(err)
	}
	check(3)
	if f.count("followers", "hit") <= before {
		t.Error("a follow that changed nothing invalidated the pages")
	}
}

// TestLocalTier: a process answers hot keys from its memory; its own changes show at once, another
// process's within LocalTTL.
func TestLocalTier(t *testing.T) {
	f := newFixture(t)
	rdb, prefix := storetest.NewRedis(t)
	localTTL := 200 * time.Millisecond
	cfg := redis.CacheConfig{CreatorTTL: time.Hour, PageTTL: time.Hour, DropTTL: time.Hour, LocalTTL: localTTL}
	a := f.cache(t, rdb, prefix, cfg) // two API processes on one Redis
	b := f.cache(t, rdb, prefix, cfg)
	ctx := testContext(t)

	dropsA := a.Drops(f.catalog)
	for range 5 {
		if _, err := dropsA.Drop(ctx, f.drop); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.count("drop", "hit_local"); got != 4 {
		t.Errorf("got %d in-process hits of 5 reads, want 4", got)
	}
	if got := f.catalog.dropLoads.Load(); got != 1 {
		t.Errorf("got %d loads, want 1", got)
	}
	// The same process's invalidation clears its memory at once.
	if _, err := f.pool.Exec(ctx, `UPDATE drops SET stock_count = 20 WHERE drop_id = $1`, f.drop); err != nil {
		t.Fatal(err)
	}
	if err := a.InvalidateDrop(ctx, f.drop); err != nil {
		t.Fatal(err)
	}
	if d, err := dropsA.Drop(ctx, f.drop); err != nil || d.StockCount != 20 {
		t.Fatalf("after invalidation: got %+v, %v; want stock 20", d, err)
	}

	// A follow through process b reaches process a within LocalTTL.
	followsA, followsB := a.Follows(f.follows), b.Follows(f.follows)
	u, err := f.users.CreateUser(ctx, store.NewUser{Name: "fan", Email: "fan@x.io"})
	if err != nil {
		t.Fatal(err)
	}
	if page, err := followsA.Followers(ctx, f.creator, store.PageRequest{}); err != nil || len(page.Items) != 0 {
		t.Fatalf("got %+v, %v; want no followers", page, err)
	}
	if _, err := followsB.Follow(ctx, u.ID, f.creator); err != nil {
		t.Fatal(err)
	}
	if page, err := followsB.Followers(ctx, f.creator, store.PageRequest{}); err != nil || len(page.Items) != 1 {
		t.Fatalf("process b: got %+v, %v; want the follow at once", page, err)
	}
	changed := time.Now()
	for {
		page, err := followsA.Followers(ctx, f.creator, store.PageRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) == 1 {
			break
		}
		if time.Since(changed) > localTTL+200*time.Millisecond {
			t.Fatalf("process a still lists %d followers %s after the change", len(page.Items), time.Since(changed))
		}
		time.Sleep(10 * time.Millisecond) // poll
	}
}

// TestRedisDown: with Redis unreachable every read still answers from PostgreSQL, writes still
// commit, and the failures are counted.
func TestRedisDown(t *testing.T) {
	f := newFixture(t)
	rdb := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{closedAddr(t)}, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	cache := f.cache(t, rdb, "down:", redis.CacheConfig{})
	ctx := testContext(t)

	if d, err := cache.Drops(f.catalog).Drop(ctx, f.drop); err != nil || d.ID != f.drop {
		t.Fatalf("drop: got %+v, %v", d, err)
	}
	products := cache.Products(f.catalog)
	if p, err := products.Product(ctx, f.product); err != nil || p.ID != f.product {
		t.Fatalf("product: got %+v, %v", p, err)
	}
	if items, _, err := products.Products(ctx, 1, 10); err != nil || len(items) != 1 {
		t.Fatalf("products: got %v, %v", items, err)
	}
	if c, err := cache.Creators(f.users).Creator(ctx, f.creator); err != nil || c.ID != f.creator {
		t.Fatalf("creator: got %+v, %v", c, err)
	}
	u, err := f.users.CreateUser(ctx, store.NewUser{Name: "fan", Email: "fan@x.io"})
	if err != nil {
		t.Fatal(err)
	}
	follows := cache.Follows(f.follows)
	if changed, err := follows.Follow(ctx, u.ID, f.creator); err != nil || !changed {
		t.Fatalf("follow with Redis down: got %v, %v; want it committed", changed, err)
	}
	if page, err := follows.Followers(ctx, f.creator, store.PageRequest{}); err != nil || len(page.Items) != 1 {
		t.Fatalf("followers: got %+v, %v", page, err)
	}
	for _, c := range []string{"drop", "product", "products", "creator", "followers"} {
		if f.count(c, "error") == 0 {
			t.Errorf("cache %s: no error counted", c)
		}
	}
	if err := cache.InvalidateDrop(ctx, f.drop); err == nil {
		t.Error("InvalidateDrop with Redis down: got no error")
	}
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:1"
}
