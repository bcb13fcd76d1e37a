package hub_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/hub"
)

// countingDrops counts the lookups that reach the store.
type countingDrops struct {
	hub.Drops
	n atomic.Int64
}

func (d *countingDrops) DropCreator(ctx context.Context, dropID int64) (int64, error) {
	d.n.Add(1)
	return d.Drops.DropCreator(ctx, dropID)
}

// One socket that floods the hub with watch frames for drops that do not exist is closed with 4408
// once over its frame bucket (after a burst of 40), costs the store a lookup for at most those few
// frames, and does not slow the deliveries to the other sockets.
func TestFrameFloodClosesOnlyTheAbuser(t *testing.T) {
	e := newEnv(t)
	const users = 20
	var ids []int64
	for u := int64(1); u <= users; u++ {
		ids = append(ids, u)
	}
	e.users(append(ids, 99, 500)...)
	e.creators(500)
	for _, u := range ids {
		e.follow(u, 500)
	}
	drops := &countingDrops{}
	n := e.startHubWith(hub.Config{}, func(d *hub.Deps) { drops.Drops = d.Drops; d.Drops = drops })
	cs := make([]*client, users)
	for i, u := range ids {
		cs[i] = n.dialWS(u, dialOpts{})
		cs[i].hello()
	}
	abuser := n.dialWS(99, dialOpts{})
	abuser.hello()

	// The flood, and events for the others at the same time.
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	floodStart := time.Now()
	go func() {
		defer wg.Done()
		for i := range 5000 {
			frame := fmt.Sprintf(`{"op":"watch","drop_id":%d}`, 1_000_000+i)
			if err := abuser.ws.Write(context.Background(), websocket.MessageText, []byte(frame)); err != nil {
				return // closed by the hub
			}
			sent.Add(1)
		}
	}()
	var events []fanout.Event
	for range 50 {
		events = append(events, e.publish(creatorEvent(fanout.DropScheduled, 500, 7)))
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	floodTook := time.Since(floodStart)

	if code, _ := abuser.closed(); code != hub.CloseTooManyFrames {
		t.Fatalf("abuser closed with %d, want %d", code, hub.CloseTooManyFrames)
	}
	// The bucket: a burst of 40, then 20 a second.
	allowed := 40 + int64(20*floodTook.Seconds()) + 1
	if got := drops.n.Load(); got > allowed {
		t.Errorf("store lookups: got %d for %d frames sent in %s, want at most %d", got, sent.Load(), floodTook, allowed)
	}
	t.Logf("abuser sent %d frames in %s before its close; the store saw %d lookups", sent.Load(), floodTook, drops.n.Load())
	if got := n.metric("livedrops_hub_disconnects_total", "reason", "frame_rate"); got != 1 {
		t.Errorf("disconnects for the frame rate: got %v, want 1", got)
	}

	// Every other socket got every event, in order, and well within the latency promise.
	var lat []time.Duration
	for j, c := range cs {
		for _, ev := range events {
			m := c.next()
			for m.ID == "" {
				m = c.next()
			}
			if m.ID != ev.ID {
				t.Fatalf("user %d: got %s, want event %s", ids[j], m.raw, ev.ID)
			}
			lat = append(lat, m.at.Sub(mustTime(t, m.TS)))
		}
	}
	slices.Sort(lat)
	worst := lat[len(lat)-1]
	t.Logf("delivery to the others during the flood: p50 %s, p99 %s, max %s", lat[len(lat)/2],
		lat[len(lat)*99/100], worst)
	if worst > time.Second {
		t.Errorf("slowest delivery to another socket during the flood: %s, want at most 1s", worst)
	}
}

// A drop that does not exist is looked up once, then known not to exist for a while (Config.NotFoundTTL),
// so watching it again costs the store nothing; lookups of one drop at once share one query.
func TestUnknownDropLookupsCached(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	drops := &countingDrops{}
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	n := e.startHubWith(hub.Config{NotFoundTTL: time.Minute, Now: clock}, func(d *hub.Deps) { drops.Drops = d.Drops; d.Drops = drops })
	c := n.dialWS(1, dialOpts{})
	c.hello()
	for range 10 {
		c.send(`{"op":"watch","drop_id":999}`)
		if m := c.next(); m.Type != "error" || m.Code != "not_found" {
			t.Fatalf("watch of an unknown drop: got %s, want a not_found error", m.raw)
		}
	}
	if got := drops.n.Load(); got != 1 {
		t.Errorf("store lookups for 10 watches of one unknown drop: got %d, want 1", got)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	c.send(`{"op":"watch","drop_id":999}`)
	c.next()
	if got := drops.n.Load(); got != 2 {
		t.Errorf("store lookups after the TTL: got %d, want 2", got)
	}
	// A known drop is cached for good.
	for range 3 {
		c.send(`{"op":"watch","drop_id":100}`)
		if m := c.next(); m.Type != "watching" {
			t.Fatalf("watch of drop 100: got %s", m.raw)
		}
	}
	if got := drops.n.Load(); got != 3 {
		t.Errorf("store lookups after watching a known drop thrice: got %d, want 3", got)
	}
	if got := n.metric("livedrops_hub_drop_lookups_total", "result", "miss_cached"); got != 9 {
		t.Errorf("cached misses: got %v, want 9", got)
	}
}
