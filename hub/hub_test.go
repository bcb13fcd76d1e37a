package hub_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/hub"
)

// Users 1-4; creators 10 and 20 with drops 100 (of 10) and 200, 201 (of 20).
// User 1 follows 10, user 2 follows 20, user 3 follows both, user 4 nobody.
func seedGraph(e *env) {
	e.users(1, 2, 3, 4, 10, 20)
	e.creators(10, 20)
	e.follow(1, 10)
	e.follow(2, 20)
	e.follow(3, 10)
	e.follow(3, 20)
	e.drop(100, 10)
	e.drop(200, 20)
	e.drop(201, 20)
}

func TestDeliveryToFollowersOnly(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{})
	c1, c2, c3, c4 := n.dialWS(1, dialOpts{}), n.dialWS(2, dialOpts{}), n.dialWS(3, dialOpts{}), n.dialWS(4, dialOpts{})
	for _, c := range []*client{c1, c2, c3, c4} {
		h := c.hello()
		if h.Recovered != nil {
			t.Errorf("hello without resume carries recovered: %s", h.raw)
		}
		if !strings.Contains(h.raw, `"replay_window_s":600`) {
			t.Errorf("hello %s: want replay_window_s 600", h.raw)
		}
	}
	// users 1,2,3,4 subjects + creators 10 and 20
	if got := n.metric("livedrops_hub_subscriptions"); got != 6 {
		t.Errorf("subscriptions: got %v, want 6", got)
	}
	started := e.publish(creatorEvent(fanout.DropStarted, 10, 100))
	scheduled := e.publish(creatorEvent(fanout.DropScheduled, 20, 201))
	order := e.publish(userEvent(fanout.OrderConfirmed, 4, 20, 200))
	order1 := e.publish(userEvent(fanout.OrderConfirmed, 1, 10, 100))

	// Each socket gets exactly its own events, in order: the next frame after the expected ones is
	// the marker published last, so nothing else came in between.
	m := c1.expect(started)
	c1.expect(order1)
	c2.expect(scheduled)
	c3.expect(started)
	c3.expect(scheduled)
	c4.expect(order)
	marker := e.publish(creatorEvent(fanout.DropEnded, 20, 200))
	c2.expect(marker)
	c3.expect(marker)

	// The frame is the envelope of API.md.
	var env map[string]any
	if err := json.Unmarshal([]byte(m.raw), &env); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "type", "ts", "creator_id", "drop_id", "data"} {
		if _, ok := env[k]; !ok {
			t.Errorf("frame %s lacks %q", m.raw, k)
		}
	}
	if got := n.metric("livedrops_hub_events_written_total", "type", "drop.started"); got != 2 {
		t.Errorf("drop.started written: got %v, want 2", got)
	}
	if got := n.metric("livedrops_hub_delivery_seconds", "type", "drop.started"); got != 2 {
		t.Errorf("drop.started latency samples: got %v, want 2", got)
	}
}

func TestFollowChangesOpenSockets(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{})
	a, b := n.dialWS(4, dialOpts{}), n.dialWS(4, dialOpts{}) // two sockets of user 4, who follows nobody
	a.hello()
	b.hello()

	e.follow(4, 10)
	fc := e.publish(followChanged(4, 10, true))
	a.expect(fc)
	b.expect(fc)
	// From the follow.changed frame on, the creator's events reach both sockets.
	started := e.publish(creatorEvent(fanout.DropStarted, 10, 100))
	a.expect(started)
	b.expect(started)

	e.exec(`DELETE FROM follows WHERE follower_id = 4`)
	unf := e.publish(followChanged(4, 10, false))
	a.expect(unf)
	b.expect(unf)
	ended := e.publish(creatorEvent(fanout.DropEnded, 10, 100))
	marker := e.publish(userEvent(fanout.OrderConfirmed, 4, 20, 200))
	a.expect(marker) // and not ended
	b.expect(marker)

	// A new socket of the user shares the user's state: it does not follow 10 either.
	c := n.dialWS(4, dialOpts{})
	c.hello()
	e.publish(creatorEvent(fanout.DropSoldOut, 10, 100))
	marker = e.publish(userEvent(fanout.OrderFailed, 4, 20, 200))
	c.expect(marker)
	_ = ended

	// The subject of creator 10 is still held for users 1 and 3? None is connected: only user 4's.
	if got := n.metric("livedrops_hub_subscriptions"); got != 1 {
		t.Errorf("subscriptions: got %v, want 1 (ld.user.4)", got)
	}
}

func TestWatchAndUnwatch(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{MaxWatches: 2})
	c := n.dialWS(1, dialOpts{}) // follows 10, not 20
	c.hello()
	c.send(`{"op":"watch","drop_id":200}`)
	if m := c.next(); m.Type != "watching" || m.DropID != 200 {
		t.Fatalf("got %s, want a watching ack", m.raw)
	}
	tick := e.publish(stockChanged(20, 200, 40))
	c.expect(tick)
	low := e.publish(creatorEvent(fanout.StockLow, 20, 200)) // creator event about the watched drop
	c.expect(low)
	e.publish(creatorEvent(fanout.DropScheduled, 20, 201)) // another drop of 20: not for c
	e.publish(stockChanged(20, 201, 1))                    // not watched
	marker := e.publish(userEvent(fanout.OrderConfirmed, 1, 20, 200))
	c.expect(marker)

	// Follower and watcher at once: a creator event about the drop arrives once.
	c.send(`{"op":"watch","drop_id":100}`)
	c.next()
	started := e.publish(creatorEvent(fanout.DropStarted, 10, 100))
	c.expect(started)
	marker = e.publish(userEvent(fanout.OrderConfirmed, 1, 20, 200))
	c.expect(marker)

	// Errors do not close the socket.
	c.send(`{"op":"watch","drop_id":999}`)
	if m := c.next(); m.Type != "error" || m.Code != "not_found" {
		t.Fatalf("watch of an unknown drop: got %s", m.raw)
	}
	c.send(`{"op":"watch","drop_id":201}`)
	if m := c.next(); m.Type != "error" || m.Code != "limit_exceeded" {
		t.Fatalf("watch past MaxWatches: got %s", m.raw)
	}
	c.send(`{"op":"ping"}`)
	if m := c.next(); m.Type != "pong" {
		t.Fatalf("ping: got %s", m.raw)
	}

	c.send(`{"op":"unwatch","drop_id":200}`)
	c.send(`{"op":"ping"}`) // the unwatch is done when the pong comes
	if m := c.next(); m.Type != "pong" {
		t.Fatalf("ping: got %s", m.raw)
	}
	e.publish(stockChanged(20, 200, 30))
	marker = e.publish(userEvent(fanout.OrderConfirmed, 1, 20, 200))
	c.expect(marker)
}

func TestBadFramesClose(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{ReadLimit: 256})
	tests := []struct {
		name  string
		frame string
		code  websocket.StatusCode
	}{
		{"not JSON", `hello`, hub.CloseBadFrame},
		{"unknown op", `{"op":"subscribe","drop_id":1}`, hub.CloseBadFrame},
		{"no drop id", `{"op":"watch"}`, hub.CloseBadFrame},
		{"negative drop id", `{"op":"watch","drop_id":-3}`, hub.CloseBadFrame},
		{"too big", `{"op":"ping","pad":"` + strings.Repeat("x", 300) + `"}`, websocket.StatusMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := n.dialWS(1, dialOpts{})
			c.hello()
			c.send(tt.frame)
			if code, _ := c.closed(); code != tt.code {
				t.Errorf("got close %d, want %d", code, tt.code)
			}
		})
	}
	waitFor(t, "every bad frame counted", func() bool {
		return n.metric("livedrops_hub_disconnects_total", "reason", "bad_frame") == float64(len(tests))
	})
}

func TestRefusedConnections(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{MaxSocketsPerUser: 2, AllowedOrigins: []string{"app.livedrops.test"}})
	tests := []struct {
		name       string
		opts       dialOpts
		wsCode     websocket.StatusCode
		sseStatus  int
		refusedFor string
	}{
		{"no token", dialOpts{noAuth: true}, hub.CloseUnauthorized, http.StatusUnauthorized, "no_token"},
		{"bad token", dialOpts{token: "not.a.jwt"}, hub.CloseUnauthorized, http.StatusUnauthorized, "bad_token"},
		{"foreign origin", dialOpts{origin: "https://evil.test"}, hub.CloseForbidden, http.StatusForbidden, "origin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := n.dialWS(1, tt.opts)
			if code, _ := c.closed(); code != tt.wsCode {
				t.Errorf("ws: got close %d, want %d", code, tt.wsCode)
			}
			_, resp := n.dialSSE(1, tt.opts)
			if resp == nil || resp.StatusCode != tt.sseStatus {
				t.Fatalf("sse: got %v, want status %d", resp, tt.sseStatus)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("sse refusal content type %q", ct)
			}
			if got := n.metric("livedrops_hub_refused_total", "reason", tt.refusedFor); got != 2 {
				t.Errorf("refused %s: got %v, want 2", tt.refusedFor, got)
			}
		})
	}
	t.Run("allowed origin", func(t *testing.T) {
		c := n.dialWS(1, dialOpts{origin: "https://app.livedrops.test"})
		c.hello()
		c.close()
	})
	t.Run("over the cap", func(t *testing.T) {
		a, b := n.dialWS(2, dialOpts{}), n.dialWS(2, dialOpts{})
		a.hello()
		b.hello()
		c := n.dialWS(2, dialOpts{})
		if code, _ := c.closed(); code != hub.CloseTooManySockets {
			t.Errorf("ws: got close %d, want %d", code, hub.CloseTooManySockets)
		}
		if _, resp := n.dialSSE(2, dialOpts{}); resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("sse: got %v, want 429", resp)
		}
		a.close()
		waitFor(t, "a slot freed", func() bool { return n.metric("livedrops_hub_sockets") == 1 })
		d := n.dialWS(2, dialOpts{})
		d.hello()
	})
	t.Run("not an upgrade", func(t *testing.T) {
		resp, err := http.Get(n.srv.URL + "/ws")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Errorf("got %d, want 426", resp.StatusCode)
		}
	})
}

// The token in the query string never reaches a log line.
func TestTokenNeverLogged(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{})
	tok := e.token(1)
	c := n.dialWS(1, dialOpts{noAuth: true, query: q("access_token", tok)})
	c.hello()
	c.close()
	s, resp := n.dialSSE(1, dialOpts{noAuth: true, query: q("access_token", tok)})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sse: status %d", resp.StatusCode)
	}
	s.hello()
	s.close()
	if _, resp := n.dialSSE(1, dialOpts{noAuth: true, query: q("access_token", "bad"+tok)}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("sse with a bad token: status %d", resp.StatusCode)
	}
	waitFor(t, "access lines", func() bool { return strings.Count(e.logs.String(), `"msg":"http request"`) >= 3 })
	if logs := e.logs.String(); strings.Contains(logs, tok) || strings.Contains(logs, "access_token") {
		t.Errorf("the token reached the log:\n%s", logs)
	}
}

func TestPresence(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{})
	online := func() []bool {
		got, err := e.redis.Online(e.ctx, []int64{1, 2})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	c := n.dialWS(1, dialOpts{})
	c.hello()
	waitFor(t, "user 1 online", func() bool { o := online(); return o[0] && !o[1] })
	c.close()
	waitFor(t, "user 1 offline", func() bool { o := online(); return !o[0] && !o[1] })
}

// A relay that publishes an event again (after a failure) reaches live subscribers twice; JetStream keeps
// one copy, and so does the socket.
func TestRepublishedEventOnce(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{})
	c := n.dialWS(1, dialOpts{})
	c.hello()
	ev := e.publish(creatorEvent(fanout.DropStarted, 10, 100))
	c.expect(ev)
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Publish(ev.Subject(), data); err != nil {
		t.Fatal(err)
	}
	marker := e.publish(userEvent(fanout.OrderConfirmed, 1, 10, 100))
	c.expect(marker)
	if got := n.metric("livedrops_hub_events_dropped_total", "reason", "duplicate"); got != 1 {
		t.Errorf("duplicates dropped: got %v, want 1", got)
	}
}

// Frames of every length encoding (7-bit, 16-bit and 64-bit payload lengths) reach WebSocket and SSE
// clients whole: the hub frames each event once and writes the same bytes to every socket.
func TestFramesOfEverySize(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{})
	ws := n.dialWS(1, dialOpts{})
	ws.hello()
	sse, _ := n.dialSSE(1, dialOpts{})
	sse.hello()
	for _, size := range []int{10, 200, 20_000, 100_000} {
		ev := creatorEvent(fanout.DropScheduled, 10, 100)
		ev.Data = json.RawMessage(`{"pad":"` + strings.Repeat("x", size) + `"}`)
		ev = e.publish(ev)
		for _, c := range []*client{ws, sse} {
			m := c.expect(ev)
			var d struct{ Pad string }
			if err := json.Unmarshal(m.Data, &d); err != nil || len(d.Pad) != size {
				t.Errorf("size %d: got a pad of %d bytes (%v)", size, len(d.Pad), err)
			}
		}
	}
}
