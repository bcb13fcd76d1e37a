package hub

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// deliverNow delivers one event, decoded once, to every local recipient, and reports whether it was
// new (not malformed, not one the hub delivered already). seq is the event's stream sequence when a
// refill read it from the stream (gap.go), 0 for the live stream: a refilled event does not go to a
// socket whose own resume covered it (conn.offer).
func (h *Hub) deliverNow(subject string, data []byte, seq uint64) bool {
	kind, id, ok := parseSubject(subject)
	if ok && kind == subjCreator && !h.interest.wanted(subject) {
		// The creator wildcard brings every creator's events; nobody here follows this one.
		h.m.ignored.Inc()
		return false
	}
	f, ev, err := parseFrame(data)
	if err != nil || !ok {
		h.m.dropped.WithLabelValues(dropMalformed).Inc()
		h.log.Warn("hub: not an event", "subject", subject, "err", err)
		return false
	}
	if h.recent.seen(ev.ID) {
		// The relay published it again (after a failure): JetStream kept it once, but live subscribers
		// hear every publication. Or a refill read what the hub had received.
		h.m.dropped.WithLabelValues(dropDuplicate).Inc()
		return false
	}
	h.gap.last.Store(&ev.ID)
	f.seq = seq
	h.m.received.WithLabelValues(string(ev.Type)).Inc()
	n := h.evSeq.Add(1)
	var rcpt []*conn
	switch kind {
	case subjCreator:
		rcpt = h.reg.followerConns(id, n, nil)
		if f.dropID > 0 {
			rcpt = h.reg.watcherConns(f.dropID, n, rcpt)
		}
	case subjDrop:
		rcpt = h.reg.watcherConns(id, n, nil)
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
		rcpt = h.reg.userConns(id, n, nil)
	}
	h.fanOut(f, rcpt)
	return true
}

// The order of events on a socket. The bus calls deliver one message at a time, in the order the
// messages arrived, which is the stream's order; each socket must get its events in that order (a
// client resumes from the last id it got, by stream sequence). So every socket belongs to one worker
// (conn.worker, fixed at its creation): each event's recipients are split by worker, and each worker
// writes its jobs in the order deliver queued them. A socket therefore gets its events in deliver's
// order whatever the number of recipients of each, and the writers still share a big fan-out.
//
// A small fan-out (at most two recipients: a user's own events) is written at once by deliver itself,
// saving a hand-off, but only to a socket whose worker has nothing queued (workerQueue.pending): anything
// queued there may be for that socket and must go first. deliver is the only producer of jobs (the
// bus calls it one message at a time), so nothing can be queued for that worker between the check and
// the write.

// workerQueue is one fan-out writer's jobs.
type workerQueue struct {
	jobs    chan job
	pending atomic.Int64 // jobs queued or being written
}

// fanOut writes f to rcpt: a few sockets at once, more in chunks handed to their sockets' workers.
func (h *Hub) fanOut(f *frame, rcpt []*conn) {
	if len(rcpt) <= 2 {
		for _, c := range rcpt {
			q := &h.queues[c.worker]
			if q.pending.Load() == 0 {
				c.offer(f)
				continue
			}
			h.send(q, job{f: f, conns: []*conn{c}})
		}
		return
	}
	h.lastFanOut.Store(h.cfg.Now().UnixNano())
	var bounds [maxWorkers + 1]int
	partitionByWorker(rcpt, len(h.queues), bounds[:len(h.queues)+1])
	size := h.cfg.ChunkSize
	for w := range h.queues {
		part := rcpt[bounds[w]:bounds[w+1]]
		for i := 0; i < len(part); i += size {
			if !h.send(&h.queues[w], job{f: f, conns: part[i:min(i+size, len(part))]}) {
				return
			}
		}
	}
}

// send queues j for the worker of q; false when the hub stops first.
func (h *Hub) send(q *workerQueue, j job) bool {
	q.pending.Add(1)
	select {
	case q.jobs <- j:
		return true
	case <-h.stop:
		q.pending.Add(-1)
		return false
	}
}

// maxWorkers bounds Config.Workers.
const maxWorkers = 256

// partitionByWorker reorders rcpt so that the sockets of worker w are rcpt[bounds[w]:bounds[w+1]], in
// place (one pass to count, one to swap: American flag sort). bounds has n+1 entries.
func partitionByWorker(rcpt []*conn, n int, bounds []int) {
	if n == 1 {
		bounds[0], bounds[1] = 0, len(rcpt)
		return
	}
	var next [maxWorkers]int
	for _, c := range rcpt {
		next[c.worker]++
	}
	bounds[0] = 0
	for w := range n {
		bounds[w+1] = bounds[w] + next[w]
		next[w] = bounds[w]
	}
	for w := range n {
		for next[w] < bounds[w+1] {
			c := rcpt[next[w]]
			d := c.worker
			if int(d) == w {
				next[w]++
				continue
			}
			rcpt[next[w]], rcpt[next[d]] = rcpt[next[d]], c
			next[d]++
		}
	}
}

// worker writes the jobs of its queue, in order.
func (h *Hub) worker(q *workerQueue) {
	defer h.bg.Done()
	for {
		select {
		case j := <-q.jobs:
			for _, c := range j.conns {
				c.offer(j.f)
			}
			q.pending.Add(-1)
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
