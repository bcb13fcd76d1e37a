package redis_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/livedrops/livedrops/fanout/push"
	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestPushDedupe(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	d := redis.NewPushDedupe(rdb, prefix)
	ctx := t.Context()
	claim := func(owner string, devices ...int64) []push.Claim {
		t.Helper()
		got, err := d.Claim(ctx, "ev", devices, owner, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := claim("a", 1, 2, 3); !slices.Equal(got, []push.Claim{push.Claimed, push.Claimed, push.Claimed}) {
		t.Fatalf("first claims %v", got)
	}
	if got := claim("b", 1, 4); !slices.Equal(got, []push.Claim{push.Busy, push.Claimed}) {
		t.Fatalf("b's claims %v, want 1 busy (a holds it) and 4 claimed", got)
	}
	if err := d.Finish(ctx, "ev", []int64{1}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := d.Release(ctx, "ev", []int64{2, 4}, "a"); err != nil { // 4 is b's: untouched
		t.Fatal(err)
	}
	if got := claim("c", 1, 2, 4); !slices.Equal(got, []push.Claim{push.Done, push.Claimed, push.Busy}) {
		t.Fatalf("c's claims %v, want done, claimed (released by a), busy (b's)", got)
	}
	// Extending keeps a claim past its lease; a lease that ends frees the pair.
	if err := d.Extend(ctx, "ev", []int64{3}, "a", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	if got := claim("d", 3, 4); !slices.Equal(got, []push.Claim{push.Busy, push.Claimed}) {
		t.Fatalf("d's claims %v, want 3 still a's (extended) and 4 free (b's lease ended)", got)
	}
	if got := claim("e", 5); !slices.Equal(got, []push.Claim{push.Claimed}) {
		t.Fatal(got)
	}
	if got, err := d.Claim(ctx, "other-event", []int64{1}, "e", time.Second); err != nil || got[0] != push.Claimed {
		t.Fatalf("another event's pair: %v %v", got, err)
	}
}

func TestPushLimiterIsSharedByWorkers(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	const rate = 200
	cfg := redis.PushLimiterConfig{Prefix: prefix, Rates: map[push.Provider]int{push.FCM: rate}}
	workers := []*redis.PushLimiter{redis.NewPushLimiter(rdb, cfg), redis.NewPushLimiter(rdb, cfg)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, l := range workers {
		for range 8 {
			wg.Go(func() {
				for l.Wait(ctx, push.FCM) == nil {
					n.Add(1)
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	// GCRA: a burst of rate/20 and then rate a second, over both workers.
	if max := rate*elapsed + rate/20 + 1; float64(n.Load()) > max || float64(n.Load()) < 0.8*rate*elapsed {
		t.Fatalf("%d requests in %.2f s over two workers, want about %d a second (at most %.0f)", n.Load(), elapsed, rate, max)
	}
	// A provider without a rate is not limited.
	for range 1000 {
		if err := workers[0].Wait(t.Context(), push.WebPush); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPushLimiterWithoutRedisKeepsAShare(t *testing.T) {
	down := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 50 * time.Millisecond})
	defer down.Close()
	l := redis.NewPushLimiter(down, redis.PushLimiterConfig{Rates: map[push.Provider]int{push.FCM: 400}, FallbackShare: 4})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n := 0
	for l.Wait(ctx, push.FCM) == nil {
		n++
	}
	// 400/4 = 100 a second in memory (a second's burst, then the rate): never the whole 400.
	if n < 50 || n > 210 {
		t.Fatalf("%d requests in a second with Redis down, want about 100-200 (a quarter of the rate, plus its burst)", n)
	}
}
