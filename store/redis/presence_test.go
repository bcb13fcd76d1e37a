package redis_test

import (
	"slices"
	"testing"
	"time"

	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestPresence(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	newHub := func(id string, ttl time.Duration) *redis.Presence {
		p, err := redis.NewPresence(rdb, redis.PresenceConfig{HubID: id, Prefix: prefix, TTL: ttl, ClaimTTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := newHub("hub-a", 30*time.Second), newHub("hub-b", 30*time.Second)
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
	for _, p := range []*redis.Presence{a, b} {
		if err := p.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Add(ctx, []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(ctx, []int64{2}); err != nil {
		t.Fatal(err)
	}
	check("after add", []bool{true, true, false})
	if err := a.Remove(ctx, []int64{2}); err != nil {
		t.Fatal(err)
	}
	check("user 2 still on hub b", []bool{true, true, false})
	if err := b.Remove(ctx, []int64{2}); err != nil {
		t.Fatal(err)
	}
	check("user 2 gone from both", []bool{true, false, false})
	ttl, err := rdb.TTL(ctx, prefix+"presence:user:1").Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Errorf("user record TTL %s, %v: want within (0, 1m]", ttl, err)
	}

	// Hub c claims user 3 and dies: its heartbeat runs out and user 3 reads offline, with no clean-up.
	c := newHub("hub-c", 300*time.Millisecond)
	if err := c.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Add(ctx, []int64{3}); err != nil {
		t.Fatal(err)
	}
	check("user 3 on hub c", []bool{true, false, true})
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := a.Online(ctx, []int64{3})
		if err != nil {
			t.Fatal(err)
		}
		if !got[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("user 3 still online 5s after hub c's heartbeat ran out")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNewPresenceNeedsHubID(t *testing.T) {
	rdb, _ := storetest.NewRedis(t)
	if _, err := redis.NewPresence(rdb, redis.PresenceConfig{}); err == nil {
		t.Error("got no error without HubID")
	}
}

// Redis loses its data (a restart without persistence, a failover to a replica behind): the hub's next
// heartbeat finds its key gone and adds its users again, so they read online within one heartbeat.
func TestPresenceRebuildsAfterDataLoss(t *testing.T) {
	rdb, prefix := storetest.NewRedis(t)
	ctx := t.Context()
	p, err := redis.NewPresence(rdb, redis.PresenceConfig{HubID: "hub-a", Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(ctx, []int64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(ctx, []int64{2}); err != nil {
		t.Fatal(err)
	}
	online := func(step string, want []bool) {
		t.Helper()
		got, err := p.Online(ctx, []int64{1, 2, 3})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: online(1,2,3) got %v, want %v", step, got, want)
		}
	}
	online("before the loss", []bool{true, false, true})
	// A heartbeat with the key in place writes nothing else.
	if err := p.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := rdb.Keys(ctx, prefix+"presence:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	online("after the loss", []bool{false, false, false})
	if err := p.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	online("after the next heartbeat", []bool{true, false, true})
	ttl, err := rdb.TTL(ctx, prefix+"presence:user:3").Result()
	if err != nil || ttl <= 0 {
		t.Errorf("rebuilt record TTL %s, %v: want positive", ttl, err)
	}
}
