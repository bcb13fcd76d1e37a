package hub_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/hub"
)

func TestGracefulDrain(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	spread := 2 * time.Second
	n := e.startHub(hub.Config{DrainSpread: spread})
	var ws []*client
	for i := range 10 {
		c := n.dialWS(int64(1+i%4), dialOpts{})
		c.hello()
		ws = append(ws, c)
	}
	var sse []*client
	for range 3 {
		c, _ := n.dialSSE(3, dialOpts{})
		c.hello()
		sse = append(sse, c)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- n.h.Shutdown(ctx)
	}()
	hints := map[int64]bool{}
	for _, c := range ws {
		code, reason := c.closed()
		if code != hub.CloseDraining {
			t.Fatalf("close %d %q, want %d", code, reason, hub.CloseDraining)
		}
		ms, ok := strings.CutPrefix(reason, "retry_after_ms=")
		v, err := strconv.ParseInt(ms, 10, 64)
		if !ok || err != nil || v < 0 || v >= spread.Milliseconds() {
			t.Fatalf("close reason %q: want retry_after_ms in [0, %d)", reason, spread.Milliseconds())
		}
		hints[v] = true
	}
	if len(hints) < 5 {
		t.Errorf("reconnect hints not spread: %v", hints)
	}
	for _, c := range sse {
		m := c.next()
		v, err := strconv.ParseInt(m.retry, 10, 64)
		if m.event != "close" || m.Type != "close" || err != nil || v < 0 || v >= spread.Milliseconds() {
			t.Fatalf("SSE goodbye %+v: want a close event with a retry within the spread", m)
		}
		if !strings.Contains(m.raw, `"code":4000`) {
			t.Errorf("SSE goodbye %s: want code 4000", m.raw)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := n.metric("livedrops_hub_disconnects_total", "reason", "drain"); got != 13 {
		t.Errorf("drain disconnects: got %v, want 13", got)
	}
	if got := n.metric("livedrops_hub_sockets"); got != 0 {
		t.Errorf("open sockets after the drain: %v", got)
	}
	if got := n.metric("livedrops_hub_subscriptions"); got != 0 {
		t.Errorf("subscriptions after the drain: %v", got)
	}
	// A socket that arrives during or after the drain is sent elsewhere at once.
	late := n.dialWS(1, dialOpts{})
	if code, _ := late.closed(); code != hub.CloseDraining {
		t.Errorf("late socket: got close %d, want %d", code, hub.CloseDraining)
	}
}

// Sockets that end, in any way, leave no goroutine behind and give their subscriptions back.
func TestNoGoroutineLeftAfterSocketsClose(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{KeepAlive: 160 * time.Millisecond, QueueLen: 4, WriteTimeout: 300 * time.Millisecond})
	ignore := goleak.IgnoreCurrent()

	var clients []*client
	for u := int64(1); u <= 4; u++ {
		c := n.dialWS(u, dialOpts{query: q("watch", "100")})
		c.hello()
		s, _ := n.dialSSE(u, dialOpts{query: q("watch", "100")})
		s.hello()
		clients = append(clients, c, s)
	}
	bad := n.dialWS(1, dialOpts{})
	bad.hello()
	bad.send(`{"op":"nope"}`)
	slow := n.dialRaw(3)
	ev := e.publish(creatorEvent(fanout.DropStarted, 10, 100))
	for _, c := range clients {
		for m := c.next(); m.ID != ev.ID; m = c.next() {
		}
	}
	time.Sleep(400 * time.Millisecond) // a few keep-alive rounds, on purpose
	for _, c := range clients {
		c.close()
	}
	bad.closed()
	slow.Close()
	waitFor(t, "every socket gone", func() bool {
		return n.metric("livedrops_hub_sockets") == 0 && n.metric("livedrops_hub_subscriptions") == 0
	})
	waitFor(t, "no goroutine left", func() bool { return goleak.Find(ignore) == nil })
}

// A peer that stops answering pings is closed PongTimeout after the unanswered ping; one that answers
// stays.
func TestKeepAliveClosesDeadPeers(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{KeepAlive: 400 * time.Millisecond, PongTimeout: 1500 * time.Millisecond})
	alive := n.dialWS(1, dialOpts{}) // coder/websocket answers pings while it reads
	alive.hello()
	dead := n.dialRaw(2) // reads nothing, answers nothing
	waitFor(t, "the dead peer closed", func() bool {
		return n.metric("livedrops_hub_disconnects_total", "reason", "keepalive") == 1
	})
	time.Sleep(2 * time.Second) // more keep-alive rounds than the pong timeout
	if got := n.metric("livedrops_hub_disconnects_total", "reason", "keepalive"); got != 1 {
		t.Errorf("keep-alive closes: %v, want 1 (the peer that answers stays)", got)
	}
	ev := e.publish(creatorEvent(fanout.DropStarted, 10, 100))
	alive.expect(ev)
	dead.Close()
}
