package hub

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/livedrops/livedrops/fanout"
)

// job is a chunk of recipients of one frame, for one worker.
type job struct {
	f     *frame
	conns []*conn
}

// parseFrame decodes an event envelope from the bus into a frame whose WebSocket bytes are data itself.
func parseFrame(data []byte) (*frame, fanout.Event, error) {
	var ev fanout.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, ev, err
	}
	if ev.ID == "" {
		return nil, ev, fanout.ErrInvalid
	}
	return &frame{typIdx: typeIndex(ev.Type), typ: ev.Type, id: ev.ID, ts: ev.TS, dropID: ev.DropID, ws: data}, ev, nil
}

// subject kinds
const (
	subjCreator = iota + 1
	subjDrop
	subjUser
)

func parseSubject(s string) (kind int, id int64, ok bool) {
	var rest string
	switch {
	case strings.HasPrefix(s, fanout.CreatorPrefix):
		kind, rest = subjCreator, s[len(fanout.CreatorPrefix):]
	case strings.HasPrefix(s, fanout.DropPrefix):
		kind, rest = subjDrop, s[len(fanout.DropPrefix):]
	case strings.HasPrefix(s, fanout.UserPrefix):
		kind, rest = subjUser, s[len(fanout.UserPrefix):]
	default:
		return 0, 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	return kind, id, err == nil && id > 0
}

// deliver is the Bus callback: one event, decoded once, to every local recipient.
func (h *Hub) deliver(subject string, data []byte) {
	kind, id, ok := parseSubject(subject)
	if ok && kind == subjCreator && !h.interest.wanted(subject) {
		// The creator wildcard brings every creator's events; nobody here follows this one.
		h.m.ignored.Inc()
		return
	}
	f, ev, err := parseFrame(data)
	if err != nil || !ok {
		h.m.dropped.WithLabelValues(dropMalformed).Inc()
		h.log.Warn("hub: not an event", "subject", subject, "err", err)
		return
	}
	if h.recent.seen(ev.ID) {
		// The relay published it again (after a failure): JetStream kept it once, but live subscribers
		// hear every publication.
		h.m.dropped.WithLabelValues(dropDuplicate).Inc()
		return
	}
	h.m.received.WithLabelValues(string(ev.Type)).Inc()
	seq := h.evSeq.Add(1)
	var rcpt []*conn
	switch kind {
	case subjCreator:
		rcpt = h.reg.followerConns(id, seq, nil)
		if f.dropID > 0 {
			rcpt = h.reg.watcherConns(f.dropID, seq, rcpt)
		}
	case subjDrop:
		rcpt = h.reg.watcherConns(id, seq, nil)
	case subjUser:
		if ev.Type == fanout.FollowChanged {
			var d struct {
				CreatorID int64 `json:"creator_id"`
				Following bool  `json:"following"`
			}
			if err := json.Unmarshal(ev.Data, &d); err == nil {
				if d.CreatorID == 0 {
					d.CreatorID = ev.CreatorID
				}
				if gen := h.applyFollow(id, d.CreatorID, d.Following); gen > 0 {
					// The user hears the change once the creator's subject is in force at the server:
					// from then on the creator's events reach them.
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					if err := h.flushes.confirm(ctx, gen); err != nil {
						h.log.Warn("hub: flush subscriptions", "err", err)
					}
					cancel()
				}
			}
		}
		rcpt = h.reg.userConns(id, seq, nil)
	}
	h.fanOut(f, rcpt)
}

// fanOut writes f to rcpt: a few sockets at once, more in chunks spread over the workers.
func (h *Hub) fanOut(f *frame, rcpt []*conn) {
	if len(rcpt) <= 2 {
		for _, c := range rcpt {
			c.offer(f)
		}
		return
	}
	h.lastFanOut.Store(h.cfg.Now().UnixNano())
	size := h.cfg.ChunkSize
	for i := 0; i < len(rcpt); i += size {
		j := min(i+size, len(rcpt))
		select {
		case h.jobs <- job{f: f, conns: rcpt[i:j]}:
		case <-h.stop:
			return
		}
	}
}

// worker writes the chunks it is given.
func (h *Hub) worker() {
	defer h.bg.Done()
	for {
		select {
		case j := <-h.jobs:
			for _, c := range j.conns {
				c.offer(j.f)
			}
		case <-h.stop:
			return
		}
	}
}

// recentIDs remembers the last ids the bus delivered, to drop a second publication of an event.
type recentIDs struct {
	mu   sync.Mutex
	ring []string
	next int
	set  map[string]struct{}
}

func newRecentIDs(n int) *recentIDs {
	return &recentIDs{ring: make([]string, n), set: make(map[string]struct{}, n)}
}

// seen records id and reports whether it was among the last ones.
func (r *recentIDs) seen(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[id]; ok {
		return true
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
	return false
}
