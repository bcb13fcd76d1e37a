package hub

import (
	"context"
	"time"
)

// keepAliveSlots spreads keep-alives: each tick handles the sockets of one slot, so a socket is pinged
// once per Config.KeepAlive and the pings of many sockets do not come at once.
const keepAliveSlots = 16

// keepAliveLoop pings WebSockets (a dead peer does not answer within PongTimeout and is closed) and
// writes a comment on SSE streams (a dead peer eventually fails the write).
func (h *Hub) keepAliveLoop() {
	defer h.bg.Done()
	t := time.NewTicker(h.cfg.KeepAlive / keepAliveSlots)
	defer t.Stop()
	var slot uint64
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
		slot = (slot + 1) % keepAliveSlots
		buf = h.reg.connsInSlot(slot, keepAliveSlots, buf[:0])
		for _, c := range buf {
			h.keepAlive(c)
		}
		clear(buf)
	}
}

func (h *Hub) keepAlive(c *conn) {
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
	if !c.pinging.CompareAndSwap(false, true) {
		return
	}
	h.conns.Add(1)
	go func() {
		defer h.conns.Done()
		defer c.pinging.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.PongTimeout)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			c.closeWith(CloseServerError, "keep-alive timeout", reasonKeepAlive, nil)
		}
	}()
}
