package hub_test

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/hub"
)

// tcpProxy forwards connections to target; cut closes every one and refuses new ones for a while (a
// NATS connection moving to another node, as far as the client can tell).
type tcpProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	refuse  time.Time
	wg      sync.WaitGroup
	stopped bool
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.stopped || time.Now().Before(p.refuse) {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// cut closes every connection and refuses new ones for d.
func (p *tcpProxy) cut(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = time.Now().Add(d)
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *tcpProxy) close() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.ln.Close()
	p.cut(0)
	p.wg.Wait()
}

// proxiedHub starts a hub whose NATS connection goes through a proxy.
func (e *env) proxiedHub(cfg hub.Config) (*node, *tcpProxy, *nats.Conn) {
	e.t.Helper()
	p := newTCPProxy(e.t, e.nats.ClientURL()[len("nats://"):])
	nc, err := jetstream.Connect(e.ctx, p.url(), "hub-proxied", slog.New(slog.DiscardHandler))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	n := e.startHubWith(cfg, func(d *hub.Deps) {
		sub := jetstream.NewSubscriber(nc, slog.New(slog.DiscardHandler), jetstream.SubscriberConfig{})
		e.t.Cleanup(sub.Close)
		rep, err := jetstream.NewReplayer(nc, jetstream.ReplayerConfig{})
		if err != nil {
			e.t.Fatal(err)
		}
		d.Bus, d.Replayer, d.Activity = sub, rep, rep
	})
	return n, p, nc
}

// waitReconnected waits until nc has been re-established since it had before reconnections.
func waitReconnected(t *testing.T, nc *nats.Conn, before uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for nc.Stats().Reconnects <= before || !nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatalf("NATS connection not re-established within 20s (%s)", nc.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Events published while the hub's NATS connection is down reach every socket after it is back, in
// stream order, once each, before what comes after; the hub tells no socket to go.
func TestGapRefilledAfterReconnect(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n, proxy, nc := e.proxiedHub(hub.Config{})
	c1, c3 := n.dialWS(1, dialOpts{}), n.dialWS(3, dialOpts{})
	c1.hello()
	c3.hello()
	before := e.publish(creatorEvent(fanout.DropScheduled, 10, 100))
	c1.expect(before)
	c3.expect(before)

	reconnects := nc.Stats().Reconnects
	proxy.cut(time.Second)
	var lost []fanout.Event
	for _, ev := range []fanout.Event{
		creatorEvent(fanout.DropStarted, 10, 100),
		userEvent(fanout.OrderConfirmed, 1, 10, 100),
		creatorEvent(fanout.DropStarted, 20, 200),
		creatorEvent(fanout.StockLow, 10, 100),
		userEvent(fanout.OrderConfirmed, 3, 20, 200),
	} {
		lost = append(lost, e.publish(ev))
	}
	waitReconnected(t, nc, reconnects)
	after := e.publish(creatorEvent(fanout.DropSoldOut, 10, 100))

	c1.expect(lost[0])
	c1.expect(lost[1])
	c1.expect(lost[3])
	c1.expect(after)
	c3.expect(lost[0])
	c3.expect(lost[2])
	c3.expect(lost[3])
	c3.expect(lost[4])
	c3.expect(after)
	// Nothing twice: the next frame of each is the marker published last.
	marker := e.publish(creatorEvent(fanout.DropEnded, 10, 100))
	c1.expect(marker)
	c3.expect(marker)
	if got := n.metric("livedrops_hub_stream_gaps_total", "outcome", "refilled"); got != 1 {
		t.Errorf("gaps refilled: got %v, want 1", got)
	}
	// The five lost, and the one after them when the stream had it by the time of the refill's read.
	if got := n.metric("livedrops_hub_refilled_events_total"); got != 5 && got != 6 {
		t.Errorf("events refilled: got %v, want 5 or 6", got)
	}
	if got := n.metric("livedrops_hub_disconnects_total", "reason", "stream_gap"); got != 0 {
		t.Errorf("sockets closed for the gap: got %v, want 0", got)
	}
}

// A gap the hub cannot refill (here: it had delivered no event before it, so it knows no position) is
// not silent: every socket is closed with 4002, and its client resumes from its own position.
func TestGapNotRefillableClosesSockets(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n, proxy, nc := e.proxiedHub(hub.Config{})
	c1 := n.dialWS(1, dialOpts{})
	c1.hello()
	reconnects := nc.Stats().Reconnects
	proxy.cut(time.Second)
	e.publish(creatorEvent(fanout.DropStarted, 10, 100))
	waitReconnected(t, nc, reconnects)
	if code, _ := c1.closed(); code != hub.CloseServerError {
		t.Fatalf("close code %d, want %d", code, hub.CloseServerError)
	}
	if got := n.metric("livedrops_hub_stream_gaps_total", "outcome", "closed"); got != 1 {
		t.Errorf("gaps closed: got %v, want 1", got)
	}
	// The hub serves again: a new socket gets what comes next.
	c := n.dialWS(1, dialOpts{})
	c.hello()
	ev := e.publish(creatorEvent(fanout.DropEnded, 10, 100))
	c.expect(ev)
}
