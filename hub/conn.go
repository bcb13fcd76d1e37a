package hub

import (
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/livedrops/livedrops/fanout"
)

// frame is one thing to write to sockets, shared by all its recipients.
type frame struct {
	typIdx int // index in eventTypes; -1 for control frames (hello, pong, error, keep-alive)
	typ    fanout.Type
	id     string // event id; "" for control frames
	ts     time.Time
	dropID int64
	replay bool   // written by a resume (never taken for a duplicate)
	seq    uint64 // stream sequence, when read from the stream (a resume, a refill); 0 when live

	ws      []byte                 // the WebSocket text message; nil: nothing to write on a WebSocket
	raw     []byte                 // a whole WebSocket control frame (ping, pong), written as it is
	wsFrame atomic.Pointer[[]byte] // the WebSocket frame of ws, built on first use
	sse     atomic.Pointer[[]byte] // the SSE record, built on first use
}

// wsBytes is the frame as it goes on a WebSocket, header and payload, built once and shared by every
// recipient: a server's frames are not masked, so every socket gets the same bytes. nil when the frame
// is SSE-only.
func (f *frame) wsBytes() []byte {
	if f.raw != nil {
		return f.raw
	}
	if p := f.wsFrame.Load(); p != nil {
		return *p
	}
	if f.ws == nil {
		return nil
	}
	b := appendTextFrame(make([]byte, 0, len(f.ws)+10), f.ws)
	f.wsFrame.Store(&b)
	return b
}

// appendTextFrame appends a final, unmasked WebSocket text frame carrying payload (RFC 6455 5.2).
func appendTextFrame(b, payload []byte) []byte {
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x81, byte(n))
	case n < 1<<16:
		b = append(b, 0x81, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x81, 127)
		for i := 7; i >= 0; i-- {
			b = append(b, byte(uint64(n)>>(8*i)))
		}
	}
	return append(b, payload...)
}

// rawFrame is a WebSocket control frame written byte for byte (WebSocket only).
func rawFrame(b []byte) *frame { return &frame{typIdx: -1, raw: b} }

// sseBytes is the frame as an SSE record: "id:" for events, so Last-Event-ID resumes; nil when the frame
// is WebSocket-only.
func (f *frame) sseBytes() []byte {
	if p := f.sse.Load(); p != nil {
		return *p
	}
	if f.ws == nil {
		return nil
	}
	b := make([]byte, 0, len(f.ws)+len(f.id)+16)
	if f.id != "" {
		b = append(b, "id: "...)
		b = append(b, f.id...)
		b = append(b, '\n')
	}
	b = append(b, "data: "...)
	b = append(b, f.ws...) // compact JSON: no newline inside
	b = append(b, "\n\n"...)
	f.sse.Store(&b)
	return b
}

func controlFrame(b []byte) *frame { return &frame{typIdx: -1, ws: b} }

// sseOnlyFrame is written on SSE sockets only (a comment, a retry field).
func sseOnlyFrame(b []byte) *frame {
	f := &frame{typIdx: -1}
	f.sse.Store(&b)
	return f
}

var keepAliveSSE = sseOnlyFrame([]byte(": keep-alive\n\n"))

// conn is one socket, WebSocket or SSE.
type conn struct {
	h      *Hub
	id     string
	seq    uint64
	userID int64
	u      *user
	sse    bool
	worker int32           // the fan-out worker that writes its events (dispatch.go)
	ws     *websocket.Conn // nil for SSE
	tr     *hijacked       // nil until the transport exists
	stamp  atomic.Uint64   // last event collected for this socket (fan-out dedupe)
	floor  atomic.Uint64   // stream sequence up to which its resume replayed its subjects (gap.go)

	mu      sync.Mutex
	closed  bool
	writing bool     // someone holds the writer role: writes in place or drains the queue
	queue   []*frame // frames waiting while writing
	extra   int      // replayed frames in queue, allowed beyond QueueLen
	skip    map[string]struct{}

	imu     sync.Mutex // watches and teardown
	gone    bool
	watches map[int64]int64 // drop id -> creator id
	gen     uint64          // highest subscription generation of the watched drops' subjects

	pingAt atomic.Int64 // unix ns of the last keep-alive ping, 0 before the first
	pongAt atomic.Int64 // unix ns of the last pong

	frames *rate.Limiter // the client's frames (Config.FrameRate); made at its first frame

	expires int64 // unix ns at which its token stops verifying; 0: not known (expiry.go)
	expIdx  int32 // its index in the hub's expiry heap, -1 when not in it
}

// allowFrame takes a token of the socket's frame bucket; false means the client is over its rate. Called
// by the socket's reader only (its messages, and its pings from within the read).
func (c *conn) allowFrame(kind int) bool {
	c.h.m.frames[kind].Inc()
	if c.h.cfg.FrameRate < 0 {
		return true
	}
	if c.frames == nil {
		c.frames = rate.NewLimiter(rate.Limit(c.h.cfg.FrameRate), c.h.cfg.FrameBurst)
	}
	return c.frames.Allow()
}

// isClosed reports whether c is closed (or closing).
func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// newConn returns a socket in setup: it holds the writer role, so events queue until serve releases it.
func (h *Hub) newConn(userID int64, sse bool) *conn {
	seq := h.connSeq.Add(1)
	return &conn{h: h, id: newConnID(seq), seq: seq, userID: userID, sse: sse, writing: true,
		worker: int32(seq % uint64(len(h.queues))), expIdx: -1}
}

// attach gives c its transport once the connection is taken over. A socket closed meanwhile (a drain)
// is closed on the wire at once.
func (c *conn) attach(tr *hijacked, ws *websocket.Conn, code int, reason string) bool {
	c.mu.Lock()
	c.tr, c.ws = tr, ws
	closed := c.closed
	c.mu.Unlock()
	if closed {
		c.closeTransport(code, reason)
		return false
	}
	c.h.m.sockets.WithLabelValues(c.transport()).Inc()
	return true
}

func (c *conn) transport() string {
	if c.sse {
		return "sse"
	}
	return "ws"
}

// offer hands f to c: written in place when c is idle, queued when it is busy. Called by the fan-out
// workers and by c's own reader; it never waits for the peer.
func (c *conn) offer(f *frame) {
	c.mu.Lock()
	if c.closed || f.seq > 0 && !f.replay && c.floor.Load() >= f.seq {
		// Closed, or a refilled event that the socket's own resume covered (start sets the floor,
		// then drops such events from the queue, both before it takes c.mu).
		c.mu.Unlock()
		return
	}
	if c.writing {
		ok := c.enqueueLocked(f)
		c.mu.Unlock()
		if !ok {
			c.closeWith(CloseSlowReader, "slow reader: reconnect and resume", reasonSlowReader, nil)
		}
		return
	}
	c.writing = true
	c.mu.Unlock()
	if c.tr.nb == nil {
		c.h.conns.Add(1)
		go func() {
			defer c.h.conns.Done()
			c.run(f)
		}()
		return
	}
	c.run(f)
}

// enqueueLocked queues f for a busy socket: a stock tick replaces an older one of the same drop; anything
// else that finds the queue full reports false (a slow reader).
func (c *conn) enqueueLocked(f *frame) bool {
	if f.typ == fanout.StockChanged {
		for i := len(c.queue) - 1; i >= 0; i-- {
			if q := c.queue[i]; q.typ == fanout.StockChanged && q.dropID == f.dropID && !q.replay {
				c.queue[i] = f
				c.h.m.dropped.WithLabelValues(dropCoalesced).Inc()
				return true
			}
		}
	}
	if len(c.queue)-c.extra >= c.h.cfg.QueueLen {
		return false
	}
	c.queue = append(c.queue, f)
	c.h.m.queued.Inc()
	return true
}

// run holds the writer role: it writes f (if any), then the queue until it is empty. When the kernel
// cannot take a write at once, the role passes to runSlow on a goroutine of its own.
func (c *conn) run(f *frame) {
	for {
		if f != nil {
			if err := c.write(f); err != nil {
				c.release()
				c.closeWith(CloseServerError, "write failed", reasonWriteError, nil)
				return
			}
			if c.tr.nb != nil && c.tr.nb.backlogged() {
				c.h.conns.Add(1)
				c.h.m.slowSockets.Inc()
				go c.runSlow()
				return
			}
		}
		c.mu.Lock()
		if c.closed || len(c.queue) == 0 {
			c.writing = false
			c.queue = nil
			c.mu.Unlock()
			return
		}
		f = c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		if f.replay {
			c.extra--
		}
		dup := false
		if c.skip != nil && !f.replay {
			_, dup = c.skip[f.id]
		}
		c.mu.Unlock()
		c.h.m.queued.Dec()
		if dup {
			c.h.m.dropped.WithLabelValues(dropDuplicate).Inc()
			f = nil
		}
	}
}

func (c *conn) release() {
	c.mu.Lock()
	c.writing = false
	c.mu.Unlock()
}

// runSlow waits for a slow peer to take the backlog, then goes on with the queue.
func (c *conn) runSlow() {
	defer c.h.conns.Done()
	defer c.h.m.slowSockets.Dec()
	if err := c.tr.nb.flush(c.h.cfg.WriteTimeout); err != nil {
		c.release()
		c.closeWith(CloseSlowReader, "slow reader: reconnect and resume", reasonSlowReader, nil)
		return
	}
	c.run(nil)
}

// write writes f to the transport, in place.
func (c *conn) write(f *frame) error {
	var err error
	if c.tr.nb == nil {
		_ = c.tr.conn.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
	}
	// Every frame is one write of bytes built once per event (no framing, lock or context per socket),
	// so frames never interleave on the wire, also with the close frame coder/websocket writes itself
	// (one write too: its reasons fit its 64-byte buffer).
	var b []byte
	if c.sse {
		b = f.sseBytes()
	} else {
		b = f.wsBytes()
	}
	if b == nil {
		return nil
	}
	_, err = c.tr.conn.Write(b)
	if err != nil {
		return err
	}
	if f.typIdx >= 0 {
		if f.replay {
			c.h.m.replayed.Inc()
		}
		c.h.m.wrote(f.typIdx, f.ts, c.h.cfg.Now())
	}
	return nil
}

// closeWith ends c: it leaves the registry at once and its transport is closed on a goroutine (a
// WebSocket close handshake may take seconds). sem, when not nil, bounds the handshakes in flight.
func (c *conn) closeWith(code int, reason, why string, sem chan struct{}) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	n := len(c.queue)
	c.queue = nil
	tr := c.tr
	c.mu.Unlock()
	if n > 0 {
		c.h.m.queued.Sub(float64(n))
		if why == reasonSlowReader {
			c.h.m.dropped.WithLabelValues(dropSlowReader).Add(float64(n))
		} else {
			c.h.m.dropped.WithLabelValues(dropClosed).Add(float64(n))
		}
	}
	c.h.m.disconnects.WithLabelValues(why).Inc()
	c.h.unregister(c)
	if tr == nil {
		return // attach closes it
	}
	c.h.m.sockets.WithLabelValues(c.transport()).Dec()
	if why != reasonClient && why != reasonDrain {
		c.h.log.Debug("hub: socket closed", "conn_id", c.id, "user_id", c.userID, "reason", why)
	}
	c.h.conns.Add(1)
	go func() {
		defer c.h.conns.Done()
		if sem != nil {
			sem <- struct{}{}
			defer func() { <-sem }()
		}
		c.closeTransport(code, reason)
	}()
}

// closeTransport says goodbye on the wire and closes the connection.
func (c *conn) closeTransport(code int, reason string) {
	if c.sse {
		rec := sseCloseRecord(code, reason)
		_, _ = c.tr.conn.Write(rec)
		if c.tr.nb != nil {
			_ = c.tr.nb.flush(time.Second)
		}
		_ = c.tr.conn.Close()
		return
	}
	_ = c.ws.Close(websocket.StatusCode(code), reason)
}

// sseCloseRecord tells an SSE client why the stream ends and when to come back: the retry field sets
// EventSource's reconnection delay, the close event carries the code for clients that read it.
func sseCloseRecord(code int, reason string) []byte {
	retry := int64(1000)
	if code == CloseDraining {
		if ms, ok := retryAfter(reason); ok {
			retry = ms
		}
	}
	data, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}{"close", code, reason})
	b := []byte("retry: " + strconv.FormatInt(retry, 10) + "\nevent: close\ndata: ")
	b = append(b, data...)
	return append(b, "\n\n"...)
}

func retryAfter(reason string) (int64, bool) {
	const p = "retry_after_ms="
	if len(reason) <= len(p) || reason[:len(p)] != p {
		return 0, false
	}
	ms, err := strconv.ParseInt(reason[len(p):], 10, 64)
	return ms, err == nil
}

// cut closes the connection without a goodbye (shutdown past its deadline).
func (c *conn) cut() {
	c.closeWith(CloseDraining, "", reasonDrain, nil)
	c.mu.Lock()
	tr := c.tr
	c.mu.Unlock()
	if tr != nil {
		_ = tr.conn.Close()
	}
}

// unregister takes c out of every index and drops its interest. Safe to call twice.
func (h *Hub) unregister(c *conn) {
	if c.expires != 0 {
		h.expiries.untrack(c)
	}
	c.imu.Lock()
	if c.gone {
		c.imu.Unlock()
		return
	}
	c.gone = true
	watches := c.watches
	c.watches = nil
	c.imu.Unlock()
	for drop, creator := range watches {
		h.reg.removeWatcher(drop, c)
		h.interest.release(fanout.DropSubject(drop))
		h.interest.release(fanout.CreatorSubject(creator))
	}
	h.leave(c)
}
