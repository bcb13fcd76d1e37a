package hub_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/hub"
)

// A hub moves its creator interest to one ld.creator.* subscription when most creators that publish have
// a local follower, and back to one subscription per creator when few have, while events stream on
// every creator: the sockets that stay connected throughout get every event of their creator once, in
// order, across both switches.
func TestInterestSwitchesBothWaysWithoutLossOrDuplicate(t *testing.T) {
	e := newEnv(t)
	const creators = 10
	for c := int64(1); c <= creators; c++ {
		e.users(c, 100+c)
		e.creators(c)
		e.drop(1000+c, c)
		e.follow(100+c, c)                                       // user 100+c follows creator c
		e.publish(creatorEvent(fanout.DropScheduled, c, 1000+c)) // every creator published lately
	}
	n := e.startHub(hub.Config{InterestCheck: 20 * time.Millisecond, WildcardMinCreators: 1})
	wildcard := func() float64 { return n.metric("livedrops_hub_interest_wildcard") }
	switches := func(to string) float64 { return n.metric("livedrops_hub_interest_switches_total", "to", to) }

	// Three of ten creators have a local follower: 0.3, below 1/3, per creator.
	stay := make([]*client, 3)
	for i := range stay {
		stay[i] = n.dialWS(101+int64(i), dialOpts{})
		stay[i].hello()
	}
	waitFor(t, "a share measured", func() bool { return n.metric("livedrops_hub_interest_share") > 0.29 })
	if wildcard() != 0 || n.metric("livedrops_hub_subscriptions") != 6 {
		t.Fatalf("at 0.3: wildcard %v, subscriptions %v; want per creator, 6", wildcard(), n.metric("livedrops_hub_subscriptions"))
	}

	// Events stream on every creator from now on, straight to JetStream as the relay sends them.
	var mu sync.Mutex
	sent := map[int64][]string{}
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- func() error {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return nil
				default:
				}
				c := int64(i%creators) + 1
				id := strconv.Itoa(1_000_000 + i)
				ev := fanout.Event{ID: id, Type: fanout.StockLow, TS: time.Now(), CreatorID: c, DropID: 1000 + c,
					Data: json.RawMessage(`{"stock_count":1}`)}
				m := nats.NewMsg(ev.Subject())
				m.Data, _ = json.Marshal(ev)
				m.Header.Set(nats.MsgIdHdr, id)
				if _, err := e.js.PublishMsg(e.ctx, m); err != nil {
					return err
				}
				mu.Lock()
				sent[c] = append(sent[c], id)
				mu.Unlock()
			}
		}()
	}()

	// published waits until n more events went out, so each switch happens amid the stream.
	published := func(n int) {
		t.Helper()
		total := func() int {
			mu.Lock()
			defer mu.Unlock()
			k := 0
			for _, ids := range sent {
				k += len(ids)
			}
			return k
		}
		target := total() + n
		waitFor(t, fmt.Sprintf("%d more events published", n), func() bool { return total() >= target })
	}
	published(100)
	// All ten get a local follower: 1.0, the wildcard.
	var more []*client
	for c := int64(4); c <= creators; c++ {
		cl := n.dialWS(100+c, dialOpts{})
		cl.hello()
		more = append(more, cl)
	}
	waitFor(t, "switch to the wildcard", func() bool { return wildcard() == 1 && switches("wildcard") == 1 })
	// 10 users' subjects and the wildcard.
	waitFor(t, "per-creator subscriptions gone", func() bool { return n.metric("livedrops_hub_subscriptions") == 11 })
	published(100)

	// Back to three of ten: per creator again.
	for _, cl := range more {
		cl.close()
	}
	waitFor(t, "switch back", func() bool { return wildcard() == 0 && switches("per_creator") == 1 })
	waitFor(t, "wildcard gone", func() bool { return n.metric("livedrops_hub_subscriptions") == 6 })
	published(100)
	close(stop)
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}

	// A last event per creator marks the end of each stream.
	for i, cl := range stay {
		c := int64(i) + 1
		marker := e.publish(creatorEvent(fanout.DropEnded, c, 1000+c))
		var got []string
		for {
			m := cl.next()
			if m.ID == marker.ID {
				break
			}
			if m.Type != string(fanout.StockLow) || m.CreatorID != c {
				t.Fatalf("creator %d's follower got %s", c, m.raw)
			}
			got = append(got, m.ID)
		}
		mu.Lock()
		want := sent[c]
		mu.Unlock()
		if !slices.Equal(got, want) {
			t.Errorf("creator %d: got %d events, want %d; first difference at %d", c, len(got), len(want), firstDiff(got, want))
		}
	}
	t.Logf("second copies dropped while both subscriptions overlapped: %v",
		n.metric("livedrops_hub_events_dropped_total", "reason", "duplicate"))
}
