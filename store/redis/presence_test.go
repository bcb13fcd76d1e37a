package redis_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

// clock is a settable clock for the presence tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func TestPresence(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	clk := &clock{now: time.Now()}
	newHub := func(id string) *redis.Presence {
		p, err := redis.NewPresence(rdb, redis.PresenceConfig{HubID: id, Prefix: prefix, TTL: 30 * time.Second, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := newHub("hub-a"), newHub("hub-b")
	ctx := t.Context()
	check := func(step string, want []bool) {
		t.Helper()
		got, err := a.Online(ctx, []int64{1, 2, 3})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: online(1,2,3) got %v, want %v", step, got, want)
		}
	}
	check("nobody", []bool{false, false, false})
	if err := a.Refresh(ctx, []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, []int64{2}); err != nil {
		t.Fatal(err)
	}
	check("after refresh", []bool{true, true, false})
	if err := a.Remove(ctx, []int64{2}); err != nil {
		t.Fatal(err)
	}
	check("user 2 still on hub b", []bool{true, true, false})
	if err := b.Remove(ctx, []int64{2}); err != nil {
		t.Fatal(err)
	}
	check("user 2 gone from both", []bool{true, false, false})

	// Hub a dies: nobody refreshes user 1; the claim runs out with the TTL.
	clk.Add(29 * time.Second)
	check("just within the TTL", []bool{true, false, false})
	clk.Add(2 * time.Second)
	check("past the TTL", []bool{false, false, false})

	// The key itself expires in Redis too (TTL set on every refresh).
	ttl, err := rdb.PTTL(ctx, prefix+"presence:1").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > 30*time.Second {
		t.Errorf("key TTL %s, want within (0, 30s]", ttl)
	}

	// A refresh of another hub drops the run-out claim of the dead one.
	if err := b.Refresh(ctx, []int64{1}); err != nil {
		t.Fatal(err)
	}
	fields, err := rdb.HKeys(ctx, prefix+"presence:1").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fields, []string{"hub-b"}) {
		t.Errorf("claims on user 1: got %v, want [hub-b]", fields)
	}
	check("user 1 on hub b", []bool{true, false, false})
}

func TestNewPresenceNeedsHubID(t *testing.T) {
	rdb, _ := storetest.NewRedis(t)
	if _, err := redis.NewPresence(rdb, redis.PresenceConfig{}); err == nil {
		t.Error("got no error without HubID")
	}
}
