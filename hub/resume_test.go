package hub_test

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/hub"
)

func TestResumeAfterDisconnect(t *testing.T) {
	for _, other := range []bool{false, true} {
		t.Run(fmt.Sprintf("other hub=%v", other), func(t *testing.T) {
			e := newEnv(t)
			seedGraph(e)
			n1 := e.startHub(hub.Config{})
			n2 := n1
			if other {
				n2 = e.startHub(hub.Config{})
			}
			c := n1.dialWS(3, dialOpts{query: q("watch", "200")})
			c.hello()
			e1 := e.publish(creatorEvent(fanout.DropScheduled, 10, 100))
			c.expect(e1)
			c.close()

			// Missed while away: some for user 3, some not.
			missed := []fanout.Event{
				e.publish(creatorEvent(fanout.DropStarted, 10, 100)),
				e.publish(userEvent(fanout.OrderConfirmed, 3, 10, 100)),
			}
			e.publish(userEvent(fanout.OrderConfirmed, 1, 10, 100)) // someone else's
			e.publish(stockChanged(20, 200, 45))                    // superseded below
			missed = append(missed, e.publish(creatorEvent(fanout.DropStarted, 20, 200)))
			missed = append(missed, e.publish(stockChanged(20, 200, 44))) // the newest tick of the watched drop

			r := n2.dialWS(3, dialOpts{query: q("since", e1.ID, "watch", "200")})
			h := r.hello()
			if h.Recovered == nil || !*h.Recovered {
				t.Fatalf("hello %s: want recovered true", h.raw)
			}
			for _, ev := range missed {
				r.expect(ev)
			}
			live := e.publish(creatorEvent(fanout.DropEnded, 10, 100))
			r.expect(live)
			if got := n2.metric("livedrops_hub_resumes_total", "outcome", "recovered"); got != 1 {
				t.Errorf("recovered resumes: got %v, want 1", got)
			}
		})
	}
}

// While events keep coming, a client that reconnects with since= gets each of its events exactly once,
// in order: the replay and the live stream meet without a gap or a duplicate.
func TestResumeNoGapNoDuplicateUnderLoad(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n1, n2 := e.startHub(hub.Config{}), e.startHub(hub.Config{})

	var mu sync.Mutex
	var mine []string // ids of user 1's events, in publish order
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			var ev fanout.Event
			switch i % 3 {
			case 0:
				ev = e.publish(creatorEvent(fanout.StockLow, 10, 100)) // user 1 follows 10
			case 1:
				ev = e.publish(creatorEvent(fanout.DropScheduled, 20, 200)) // not user 1's
				continue
			case 2:
				ev = e.publish(userEvent(fanout.OrderConfirmed, 1, 10, 100))
			}
			mu.Lock()
			mine = append(mine, ev.ID)
			mu.Unlock()
		}
	}()
	var got []string
	read := func(c *client, until string) {
		for {
			m := c.next()
			got = append(got, m.ID)
			if m.ID == until {
				return
			}
		}
	}
	nodes := []*node{n1, n2, n1, n2, n2, n1}
	last := ""
	for i, n := range nodes {
		opts := dialOpts{}
		if last != "" {
			opts.query = q("since", last)
		}
		c := n.dialWS(1, opts)
		h := c.hello()
		if last != "" && (h.Recovered == nil || !*h.Recovered) {
			t.Fatalf("reconnect %d: hello %s, want recovered", i, h.raw)
		}
		k := 0
		if last == "" {
			// The first socket is promised what happens after its hello: events published before may or
			// may not come, and come first. mine[k] may be in flight as the hello arrives (it is listed
			// once its publication returned), so the count starts after it.
			mu.Lock()
			k = len(mine) + 1
			mu.Unlock()
		}
		waitFor(t, "a few events", func() bool { mu.Lock(); defer mu.Unlock(); return len(mine) >= k+20*(i+1) })
		mu.Lock()
		until := mine[len(mine)-1]
		mu.Unlock()
		if last == "" {
			for {
				m := c.next()
				mu.Lock()
				at := slices.Index(mine, m.ID)
				mu.Unlock()
				if at >= k {
					mu.Lock()
					mine = mine[k:]
					mu.Unlock()
					got = append(got, m.ID)
					break
				}
			}
		}
		read(c, until)
		last = got[len(got)-1]
		c.close()
	}
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	want := mine[:slices.Index(mine, last)+1]
	if !slices.Equal(got, want) {
		t.Fatalf("got %d events, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
	}
	if d := n1.metric("livedrops_hub_events_dropped_total", "reason", "duplicate") + n2.metric("livedrops_hub_events_dropped_total", "reason", "duplicate"); d > 0 {
		t.Logf("live duplicates skipped after replays: %v", d)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestResumeNotRecovered(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{ReplayLimit: 3})
	old := e.publish(creatorEvent(fanout.DropScheduled, 10, 100))
	after := e.publish(creatorEvent(fanout.DropScheduled, 10, 100))
	for range 4 {
		e.publish(creatorEvent(fanout.StockLow, 10, 100))
	}
	pending := "999999" // never written
	tests := []struct {
		name    string
		since   string
		outcome string
	}{
		{"malformed", "12abc", "malformed"},
		{"leading zero", "0" + old.ID, "malformed"},
		{"unknown", pending, "unknown_id"},
		{"longer than the replay limit", old.ID, "too_old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := n.metric("livedrops_hub_resumes_total", "outcome", tt.outcome)
			c := n.dialWS(1, dialOpts{query: q("since", tt.since)})
			h := c.hello()
			if h.Recovered == nil || *h.Recovered {
				t.Fatalf("hello %s: want recovered false", h.raw)
			}
			live := e.publish(creatorEvent(fanout.DropStarted, 10, 100))
			c.expect(live) // the socket stays open with the live stream, nothing replayed
			if got := n.metric("livedrops_hub_resumes_total", "outcome", tt.outcome) - before; got != 1 {
				t.Errorf("resumes %s: got %v more, want 1", tt.outcome, got)
			}
		})
	}
	t.Run("older than the stream keeps", func(t *testing.T) {
		js, err := natsjs.New(e.nc)
		if err != nil {
			t.Fatal(err)
		}
		st, err := js.Stream(e.ctx, jetstream.DefaultStreamName)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Purge(e.ctx, natsjs.WithPurgeSequence(info.State.LastSeq)); err != nil {
			t.Fatal(err)
		}
		c := n.dialWS(1, dialOpts{query: q("since", after.ID)})
		if h := c.hello(); h.Recovered == nil || *h.Recovered {
			t.Fatalf("hello %s: want recovered false", h.raw)
		}
		if got := n.metric("livedrops_hub_resumes_total", "outcome", "too_old"); got != 2 {
			t.Errorf("too_old resumes: got %v, want 2", got)
		}
	})
}

// SSE carries the same frames as WebSocket, and resumes with Last-Event-ID.
func TestSSEParity(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{})
	ws := n.dialWS(3, dialOpts{query: q("watch", "200")})
	sse, resp := n.dialSSE(3, dialOpts{query: q("watch", "200")})
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id on the stream")
	}
	ws.hello()
	sse.hello()
	events := []fanout.Event{
		e.publish(creatorEvent(fanout.DropStarted, 10, 100)),
		e.publish(stockChanged(20, 200, 10)),
		e.publish(userEvent(fanout.OrderConfirmed, 3, 20, 200)),
	}
	for _, ev := range events {
		w, s := ws.expect(ev), sse.expect(ev)
		if w.raw != s.raw || s.sseID != ev.ID {
			t.Errorf("ws %s\nsse id %q %s", w.raw, s.sseID, s.raw)
		}
	}
	sse.close()
	missed := e.publish(creatorEvent(fanout.DropEnded, 10, 100))
	h := http.Header{}
	h.Set("Last-Event-ID", events[2].ID)
	again, resp := n.dialSSE(3, dialOpts{header: h, query: q("watch", "200")})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if hl := again.hello(); hl.Recovered == nil || !*hl.Recovered {
		t.Fatalf("hello %s: want recovered", hl.raw)
	}
	again.expect(missed)
	ws.expect(missed)
}

// A socket that stops reading is closed as a slow reader and counted; the others keep their latency.
func TestSlowReader(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{QueueLen: 16, WriteTimeout: time.Second})
	fast := n.dialWS(1, dialOpts{})
	fast.hello()
	slow := n.dialRaw(1) // reads its hello, then never again

	pad := make([]byte, 16<<10)
	for i := range pad {
		pad[i] = 'x'
	}
	var worst time.Duration
	for i := 0; i < 400 && n.metric("livedrops_hub_disconnects_total", "reason", "slow_reader") == 0; i++ {
		ev := creatorEvent(fanout.StockLow, 10, 100)
		ev.Data = []byte(fmt.Sprintf(`{"pad":"%s"}`, pad))
		ev = e.publish(ev)
		m := fast.expect(ev)
		if d := m.at.Sub(mustTime(t, m.TS)); d > worst {
			worst = d
		}
	}
	waitFor(t, "the slow reader closed", func() bool {
		return n.metric("livedrops_hub_disconnects_total", "reason", "slow_reader") == 1
	})
	if worst > time.Second {
		t.Errorf("the fast reader waited up to %s for an event", worst)
	}
	slow.Close()
	// The fast one carries on.
	ev := e.publish(creatorEvent(fanout.DropEnded, 10, 100))
	fast.expect(ev)
	t.Logf("worst latency of the fast reader: %s", worst)
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// A reconnect storm: sockets resuming from the same event at once share replay reads, and each still
// gets exactly what it missed: the creator's events, its own user's events and no one else's, its
// watched drop's newest tick only.
func TestResumeStormSharesReads(t *testing.T) {
	e := newEnv(t)
	const fans = 30
	e.users(10)
	e.creators(10)
	e.drop(100, 10)
	for u := int64(1); u <= fans; u++ {
		e.users(100 + u)
		e.follow(100+u, 10)
	}
	first := e.publish(creatorEvent(fanout.DropScheduled, 10, 100))
	// Missed: one creator event, one order per fan, two ticks of the drop that odd fans watch.
	started := e.publish(creatorEvent(fanout.DropStarted, 10, 100))
	orders := map[int64]fanout.Event{}
	for u := int64(1); u <= fans; u++ {
		orders[100+u] = e.publish(userEvent(fanout.OrderConfirmed, 100+u, 10, 100))
	}
	e.publish(stockChanged(10, 100, 45))
	tick := e.publish(stockChanged(10, 100, 44))

	follows := &gatedFollows{gate: make(chan struct{})}
	n := e.startHubWith(hub.Config{}, func(d *hub.Deps) {
		follows.Follows = d.Follows
		d.Follows = follows
	})
	var wg sync.WaitGroup
	clients := make([]*client, fans)
	for i := range fans {
		u := int64(101 + i)
		query := q("since", first.ID)
		if u%2 == 1 {
			query = q("since", first.ID, "watch", "100")
		}
		wg.Go(func() { clients[i] = n.dialWS(u, dialOpts{query: query}) })
	}
	wg.Wait()
	// Every socket in setup at once, then all resume together.
	waitFor(t, "every fan in setup", func() bool { return n.metric("livedrops_hub_setups_in_progress") == fans })
	close(follows.gate)
	for i, c := range clients {
		u := int64(101 + i)
		if h := c.hello(); h.Recovered == nil || !*h.Recovered {
			t.Fatalf("fan %d: hello %s, want recovered true", u, h.raw)
		}
		// In stream order: drop.started, the fan's own order, then (watchers) the newest tick.
		c.expect(started)
		c.expect(orders[u])
		if u%2 == 1 {
			c.expect(tick)
		}
	}
	live := e.publish(creatorEvent(fanout.DropEnded, 10, 100))
	for _, c := range clients {
		c.expect(live) // nothing else came in between
	}
	reads := n.metric("livedrops_hub_replay_batch_resumes")
	if got := n.histSum("livedrops_hub_replay_batch_resumes"); got != fans {
		t.Errorf("resumes over the replay reads: %v, want %d", got, fans)
	}
	if reads >= fans {
		t.Errorf("%v replay reads for %d resumes arriving together: not shared", reads, fans)
	}
	t.Logf("%d resumes in %v replay reads", fans, reads)
}
