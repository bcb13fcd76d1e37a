package hub

import (
	"time"
)

// Keep-alives are spread: each tick handles the sockets of one registry shard (Config.Shards of them, 64
// by default), so a socket is pinged once per Config.KeepAlive and a hub of 20,000 sockets pings about
// 300 every 0.4 s rather than all at once (a burst of pings amid a fan-out delays it).
//
// A ping costs no goroutine, timer or allocation (at 20,000 sockets, coder/websocket's blocking Ping made
// 2 MB of garbage a second, hence a collection a minute with most of the heap as headroom): the ping frame
// is written by the socket's writer like any frame, the pong is noted by coder/websocket's OnPongReceived,
// and the tick PongTimeout later checks that it came. Pings of the client are answered the same way, so
// every frame but the close goes through the socket's writer, one write system call each.

var (
	pingFrame = rawFrame([]byte{0x89, 0x00}) // WebSocket ping, empty payload (server frames are not masked)
)

// wsPong answers a client's ping with its payload (at most 125 bytes, as a control frame's).
func wsPong(payload []byte) *frame {
	b := make([]byte, 0, 2+len(payload))
	b = append(b, 0x8A, byte(len(payload)))
	return rawFrame(append(b, payload...))
}

// keepAliveLoop pings WebSockets (a dead peer does not answer within PongTimeout and is closed) and
// writes a comment on SSE streams (a dead peer eventually fails the write).
func (h *Hub) keepAliveLoop() {
	defer h.bg.Done()
	slots := len(h.reg.conns)
	tick := h.cfg.KeepAlive / time.Duration(slots)
	t := time.NewTicker(tick)
	defer t.Stop()
	// The shard pinged lag ticks ago is checked for pongs: PongTimeout after its pings.
	lag := min(slots-1, int((h.cfg.PongTimeout+tick-1)/tick))
	slot := 0
	var buf []*conn
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		if h.draining.Load() {
			continue
		}
		h.checkGap()
		slot = (slot + 1) % slots
		now := h.cfg.Now().UnixNano()
		buf = h.reg.shardConns((slot-lag+slots)%slots, buf[:0])
		for _, c := range buf {
			if ping := c.pingAt.Load(); ping != 0 && c.pongAt.Load() < ping && now-ping >= int64(h.cfg.PongTimeout) {
				c.closeWith(CloseServerError, "keep-alive timeout", reasonKeepAlive, nil)
			}
		}
		clear(buf)
		buf = h.reg.shardConns(slot, buf[:0])
		for _, c := range buf {
			h.keepAlive(c, now)
		}
		clear(buf)
	}
}

func (h *Hub) keepAlive(c *conn, now int64) {
	c.mu.Lock()
	live := c.tr != nil && !c.closed
	c.mu.Unlock()
	if !live {
		return
	}
	if c.sse {
		c.offer(keepAliveSSE)
		return
	}
	if ping := c.pingAt.Load(); ping != 0 && c.pongAt.Load() < ping {
		return // the last ping is still unanswered; its check closes the socket
	}
	c.pingAt.Store(now)
	c.offer(pingFrame)
}
