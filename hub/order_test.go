package hub_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/hub"
)

// Every socket receives its events in the order the bus delivered them (the stream's order), whatever
// the number of recipients of each: a burst of creator events (fanned out in chunks by several workers)
// mixed with user events (one recipient each, written at once) reaches each socket in order. Before the
// fix, chunks of consecutive events went to any worker and one socket could get a later event first.
func TestEventsReachEachSocketInBusOrder(t *testing.T) {
	e := newEnv(t)
	const users = 40
	var ids []int64
	for u := int64(1); u <= users; u++ {
		ids = append(ids, u)
	}
	e.users(append(ids, 1000, 1001)...)
	e.creators(1000, 1001)
	for _, u := range ids {
		e.follow(u, 1000)
		if u%2 == 0 {
			e.follow(u, 1001)
		}
	}
	n := e.startHub(hub.Config{Workers: 4, ChunkSize: 1, QueueLen: 100_000})
	cs := make([]*client, users)
	for i, u := range ids {
		cs[i] = n.dialWS(u, dialOpts{})
		cs[i].hello()
	}

	// The burst goes straight to core NATS, as fast as the connection takes it: ids are the order.
	const events = 3000
	want := make([][]string, users) // per socket, the ids it must get, in order
	for i := range events {
		var ev fanout.Event
		switch i % 4 {
		case 0, 1:
			ev = creatorEvent(fanout.DropScheduled, 1000, 7)
		case 2:
			ev = creatorEvent(fanout.DropStarted, 1001, 8)
		default:
			ev = userEvent(fanout.OrderConfirmed, int64(i%users)+1, 1000, 7)
		}
		ev.ID = strconv.Itoa(i + 1)
		ev.TS = time.Now()
		for j, u := range ids {
			switch {
			case ev.UserID == u, ev.CreatorID == 1000 && ev.UserID == 0, ev.CreatorID == 1001 && ev.UserID == 0 && u%2 == 0:
				want[j] = append(want[j], ev.ID)
			}
		}
		data, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.nc.Publish(ev.Subject(), data); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for j, c := range cs {
		var got []string
		for len(got) < len(want[j]) {
			m := c.next()
			if m.ID == "" {
				continue // a control frame (ping)
			}
			got = append(got, m.ID)
		}
		if i := firstDiff(got, want[j]); i < len(want[j]) {
			t.Fatalf("user %d: frame %d is event %s, want %s (%s)", ids[j], i, got[i], want[j][i],
				fmt.Sprint(got[max(0, i-3):min(len(got), i+3)]))
		}
	}
}
