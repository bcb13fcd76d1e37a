package hub

import (
	"context"
	"sync"
	"time"
)

// presenceTracker tells the Presence store which users have a socket here: changes within about a
// second, a heartbeat every Config.PresenceHeartbeat, and every user again each Config.PresenceRefresh.
type presenceTracker struct {
	h       *Hub
	mu      sync.Mutex
	changes map[int64]bool // user id -> online
}

func newPresenceTracker(h *Hub) *presenceTracker {
	return &presenceTracker{h: h, changes: map[int64]bool{}}
}

func (p *presenceTracker) online(userID int64)  { p.set(userID, true) }
func (p *presenceTracker) offline(userID int64) { p.set(userID, false) }

func (p *presenceTracker) set(userID int64, on bool) {
	if p.h.d.Presence == nil {
		return
	}
	p.mu.Lock()
	p.changes[userID] = on
	p.mu.Unlock()
}

const presenceBatch = 1000

func (p *presenceTracker) loop() {
	defer p.h.bg.Done()
	if p.h.d.Presence == nil {
		<-p.h.stop
		return
	}
	p.beat()
	flush := time.NewTicker(time.Second)
	defer flush.Stop()
	beat := time.NewTicker(p.h.cfg.PresenceHeartbeat)
	defer beat.Stop()
	refresh := time.NewTicker(p.h.cfg.PresenceRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-p.h.stop:
			p.flush()
			p.call("remove", p.h.d.Presence.Remove, p.h.reg.userIDs())
			return
		case <-flush.C:
			p.flush()
		case <-beat.C:
			p.beat()
		case <-refresh.C:
			p.flush()
			p.call("add", p.h.d.Presence.Add, p.h.reg.userIDs())
		}
	}
}

func (p *presenceTracker) beat() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.h.d.Presence.Heartbeat(ctx); err != nil {
		p.h.log.Warn("hub: presence heartbeat", "err", err)
	}
}

// flush sends the changes since the last flush.
func (p *presenceTracker) flush() {
	p.mu.Lock()
	changes := p.changes
	p.changes = map[int64]bool{}
	p.mu.Unlock()
	var on, off []int64
	for id, online := range changes {
		if online {
			on = append(on, id)
		} else {
			off = append(off, id)
		}
	}
	p.call("add", p.h.d.Presence.Add, on)
	p.call("remove", p.h.d.Presence.Remove, off)
}

func (p *presenceTracker) call(what string, f func(context.Context, []int64) error, ids []int64) {
	for len(ids) > 0 {
		n := min(len(ids), presenceBatch)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := f(ctx, ids[:n])
		cancel()
		if err != nil {
			p.h.log.Warn("hub: presence "+what, "users", n, "err", err)
		}
		ids = ids[n:]
	}
}
