package redis_test

import (
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
	l, err := redis.NewLimiter(rdb, redis.LimiterConfig{Name: "ip", Rate: 1}, reg)
	if err != nil {
		t.Fatal(err)
	}
	wait, err := l.Allow(testContext(t), "127.0.0.1")
	if err == nil || wait != 0 {
		t.Fatalf("got wait %s, error %v; want no wait and an error (the caller lets the request through)", wait, err)
	}
	if got := counterValue(reg, "livedrops_ratelimit_requests_total", map[string]string{"limit": "ip", "result": "error"}); got != 1 {
		t.Errorf("got %d errors counted, want 1", got)
	}
}

func TestLimiterConfig(t *testing.T) {
	rdb, _ := storetest.NewRedis(t)
	for _, cfg := range []redis.LimiterConfig{{Rate: 1}, {Name: "x"}, {Name: "x", Rate: 1, Burst: -1}} {
		if _, err := redis.NewLimiter(rdb, cfg, prometheus.NewRegistry()); err == nil {
			t.Errorf("NewLimiter(%+v): got no error", cfg)
		}
	}
}
