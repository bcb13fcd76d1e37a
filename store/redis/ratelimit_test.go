package redis_test

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestLimiter(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	reg := prometheus.NewRegistry()
	l, err := redis.NewLimiter(rdb, redis.LimiterConfig{Name: "user", Rate: 2, Burst: 3, Prefix: prefix}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	for i := range 3 {
		if wait, err := l.Allow(ctx, "7"); err != nil || wait != 0 {
			t.Fatalf("request %d of the burst: got wait %s, %v; want allowed", i, wait, err)
		}
	}
	wait, err := l.Allow(ctx, "7")
	if err != nil {
		t.Fatal(err)
	}
	if wait <= 0 || wait > time.Second {
		t.Fatalf("past the burst: got wait %s, want about 500ms (2 per second)", wait)
	}
	// Another key has its own budget.
	if wait, err := l.Allow(ctx, "8"); err != nil || wait != 0 {
		t.Fatalf("other key: got wait %s, %v; want allowed", wait, err)
	}
	// The budget refills at the rate: poll until the key is allowed again, within the wait it was told.
	told := time.Now().Add(wait)
	for {
		w, err := l.Allow(ctx, "7")
		if err != nil {
			t.Fatal(err)
		}
		if w == 0 {
			break
		}
		if time.Now().After(told.Add(time.Second)) {
			t.Fatalf("still limited %s after the Retry-After it gave", time.Since(told))
		}
		time.Sleep(w)
	}
	if got := counterValue(reg, "livedrops_ratelimit_requests_total", map[string]string{"limit": "user", "result": "limited"}); got < 1 {
		t.Errorf("got %d limited decisions counted, want at least 1", got)
	}
	if got := counterValue(reg, "livedrops_ratelimit_requests_total", map[string]string{"limit": "user", "result": "allowed"}); got < 5 {
		t.Errorf("got %d allowed decisions counted, want at least 5", got)
	}
	// A second limiter on the same registry shares the metric.
	if _, err := redis.NewLimiter(rdb, redis.LimiterConfig{Name: "ip", Rate: 1, Prefix: prefix}, reg); err != nil {
		t.Fatalf("second limiter: %v", err)
	}
}

func TestLimiterFailsOpen(t *testing.T) {
	rdb := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{"127.0.0.1:1"}, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	reg := prometheus.NewRegistry()
	l, err := redis.NewLimiter(rdb, redis.LimiterConfig{Name: "ip", Rate: 10}, reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		wait, err := l.Allow(testContext(t), "127.0.0.1")
		if err == nil || wait != 0 {
			t.Fatalf("request %d: got wait %s, error %v; want no wait and an error (the caller lets the request through)", i, wait, err)
		}
	}
	if got := counterValue(reg, "livedrops_ratelimit_requests_total", map[string]string{"limit": "ip", "result": "error"}); got != 3 {
		t.Errorf("got %d errors counted, want 3", got)
	}
	// The key fails open for the lease it asked for (its first: 4) without asking a Redis in trouble
	// again for each request.
	if got := redisCalls(reg, "ip"); got != 1 {
		t.Errorf("got %d Redis calls for 3 requests of one key, want 1", got)
	}
}

func TestLimiterConfig(t *testing.T) {
	rdb, _ := storetest.NewRedis(t)
	for _, cfg := range []redis.LimiterConfig{{Rate: 1}, {Name: "x"}, {Name: "x", Rate: 1, Burst: -1},
		{Name: "x", Rate: 1, MaxLease: -1}, {Name: "x", Rate: 1, LeaseTTL: -time.Second}, {Name: "x", Rate: 1, MaxKeys: -1}} {
		if _, err := redis.NewLimiter(rdb, cfg, prometheus.NewRegistry()); err == nil {
			t.Errorf("NewLimiter(%+v): got no error", cfg)
		}
	}
}

// clock is a settable clock for the leases' expiry (Redis keeps its own time for the budgets).
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func redisCalls(reg prometheus.Gatherer, name string) int {
	return counterValue(reg, "livedrops_ratelimit_redis_calls_total", map[string]string{"limit": name})
}

// spendAll asks l for key until it is limited and returns how many were allowed.
func spendAll(t *testing.T, l *redis.Limiter, key string) int {
	t.Helper()
	ctx := testContext(t)
	for n := 0; ; n++ {
		wait, err := l.Allow(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if wait > 0 {
			return n
		}
		if n > 100_000 {
			t.Fatal("never limited")
		}
	}
}

// TestLimiterLeasesABusyKey: a key busy on one process costs one Redis call per lease, the leases
// doubling up to MaxLease, and every request is still counted as allowed.
func TestLimiterLeasesABusyKey(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	reg := prometheus.NewRegistry()
	l, err := redis.NewLimiter(rdb, redis.LimiterConfig{Name: "user", Rate: 1000, Burst: 2000, MaxLease: 32,
		LeaseTTL: time.Minute, Prefix: prefix}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	for i := range 300 {
		if wait, err := l.Allow(ctx, "7"); err != nil || wait != 0 {
			t.Fatalf("request %d: got wait %s, %v; want allowed", i, wait, err)
		}
	}
	// Leases of 4, 8, 16 (28 requests), then 32 each: 3 + ceil(272/32) = 12 calls.
	if got := redisCalls(reg, "user"); got != 12 {
		t.Errorf("got %d Redis calls for 300 requests, want 12", got)
	}
	if got := counterValue(reg, "livedrops_ratelimit_requests_total", map[string]string{"limit": "user", "result": "allowed"}); got != 300 {
		t.Errorf("got %d allowed counted, want 300", got)
	}
}

// TestLimiterLeasesKeepTheSharedBound: two processes spending one key's budget through leases are
// together allowed no more than Redis's bucket holds.
func TestLimiterLeasesKeepTheSharedBound(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	// 10 a minute: the bucket barely refills while the test runs.
	cfg := redis.LimiterConfig{Name: "user", Rate: 10, Period: time.Minute, Burst: 60, MaxLease: 8,
		LeaseTTL: time.Minute, Prefix: prefix}
	a, err := redis.NewLimiter(rdb, cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	b, err := redis.NewLimiter(rdb, cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	allowed, limited := 0, 0
	for i := 0; limited < 10; i++ {
		l := a
		if i%3 == 0 {
			l = b
		}
		wait, err := l.Allow(ctx, "9")
		if err != nil {
			t.Fatal(err)
		}
		if wait > 0 {
			limited++
			continue
		}
		allowed++
	}
	// The burst, plus at most one refilled while the test ran.
	if allowed > 61 || allowed < 60-2*8 {
		t.Errorf("two processes were allowed %d requests of a bucket of 60; want at most 61 (and not less than 60 - the leases they hold)", allowed)
	}
}

// TestLimiterLeasesAdapt: a key that asks again before its lease expires gets a bigger one; a lease
// that expires unspent is followed by a lease of what was spent; a key asking slowly leases one at a
// time after its first lease, so it wastes no more of its budget than that first lease.
func TestLimiterLeasesAdapt(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	reg := prometheus.NewRegistry()
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	cfg := redis.LimiterConfig{Name: "user", Rate: 10, Period: time.Minute, Burst: 100, MaxLease: 8,
		LeaseTTL: time.Second, Prefix: prefix, Now: clk.Now}
	l, err := redis.NewLimiter(rdb, cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	allow := func(key string) {
		t.Helper()
		if wait, err := l.Allow(ctx, key); err != nil || wait != 0 {
			t.Fatalf("%s: got wait %s, %v; want allowed", key, wait, err)
		}
	}
	steps := []struct {
		name      string
		requests  int
		advance   time.Duration // after the requests
		wantCalls int           // in all, after the requests
	}{
		{"busy: leases of 4 and 8", 12, 0, 2},
		{"the lease of 8 is spent: another 8", 1, 2 * time.Second, 3},
		{"expired with 7 left: a lease of 1", 1, 0, 4},
		{"busy again: 2", 2, 0, 5},
	}
	for _, s := range steps {
		for range s.requests {
			allow("hot")
		}
		clk.Add(s.advance)
		if got := redisCalls(reg, "user"); got != s.wantCalls {
			t.Fatalf("%s: got %d Redis calls, want %d", s.name, got, s.wantCalls)
		}
	}

	// A slow key: one request per lease lifetime, one Redis call each; after the first lease of 4,
	// leases of 1.
	before := redisCalls(reg, "user")
	for range 5 {
		allow("slow")
		clk.Add(2 * time.Second)
	}
	if got := redisCalls(reg, "user") - before; got != 5 {
		t.Errorf("slow key: got %d Redis calls for 5 requests, want 5", got)
	}
	exact, err := redis.NewLimiter(rdb, redis.LimiterConfig{Name: "user", Rate: 10, Period: time.Minute, Burst: 100,
		MaxLease: 1, Prefix: prefix}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if left := spendAll(t, exact, "slow"); left < 92 || left > 93 {
		t.Errorf("slow key: %d of the bucket of 100 left after 5 requests, want 92 (4 + 1 + 1 + 1 + 1 taken; 93 with a refill)", left)
	}
}

// TestLimiterConcurrentLeases: many requests of one key at once share its leases (one Redis call at a
// time) and are allowed no more than the bucket holds.
func TestLimiterConcurrentLeases(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	reg := prometheus.NewRegistry()
	l, err := redis.NewLimiter(rdb, redis.LimiterConfig{Name: "user", Rate: 10, Period: time.Minute, Burst: 500,
		MaxLease: 32, LeaseTTL: time.Minute, Prefix: prefix}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 20 {
				wait, err := l.Allow(ctx, "42")
				if err != nil {
					t.Error(err)
					return
				}
				if wait == 0 {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got > 501 || got < 500-32 {
		t.Errorf("got %d of 1280 requests allowed on a bucket of 500, want 500 (at most one refilled, less the lease held)", got)
	}
	if got := redisCalls(reg, "user"); got > 500/8 {
		t.Errorf("got %d Redis calls, want far fewer than the 500 requests allowed", got)
	}
}

// TestLimiterBoundsItsKeys: the leases kept are bounded by MaxKeys, however many keys come.
func TestLimiterBoundsItsKeys(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	l, err := redis.NewLimiter(rdb, redis.LimiterConfig{Name: "ip", Rate: 100, MaxKeys: 64, Prefix: prefix},
		prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	for i := range 1000 {
		if _, err := l.Allow(ctx, strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := redis.LeaseKeys(l); got > 64 {
		t.Errorf("%d keys kept, want at most 64", got)
	}
}
