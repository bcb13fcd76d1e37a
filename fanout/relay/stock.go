package relay

import (
	"time"
)

// stockCoalescer keeps at most one stock.changed per drop waiting, and lets it out no more often than
// once per interval per drop. Rows of one drop are written in commit order (the writer holds the drop's
// row lock), so within a drop the larger row id is the newer value: a waiting row is replaced by a newer
// one, and a row older than one already sent is dropped, so a client never sees an older value after a
// newer one. The waiting rows stay pending in the outbox: another relay taking over finds them.
type stockCoalescer struct {
	interval time.Duration
	drops    map[string]*stockDrop // by subject
}

type stockDrop struct {
	lastSent time.Time
	lastSeq  int64 // outbox row id of the newest row sent
	waiting  *item
}

func newStockCoalescer(interval time.Duration) *stockCoalescer {
	return &stockCoalescer{interval: interval, drops: make(map[string]*stockDrop)}
}

// offer takes a stock.changed row; it returns the row that it supersedes (it or the one waiting before),
// which is then coalesced, or nil.
func (c *stockCoalescer) offer(it item) *item {
	d := c.drops[it.rec.Subject]
	if d == nil {
		d = &stockDrop{}
		c.drops[it.rec.Subject] = d
	}
	switch {
	case it.rec.Seq <= d.lastSeq:
		return &it
	case d.waiting == nil:
		d.waiting = &it
		return nil
	case d.waiting.rec.Seq < it.rec.Seq:
		old := d.waiting
		d.waiting = &it
		return old
	default:
		return &it
	}
}

// due removes and returns the waiting rows whose drop may send again at now.
func (c *stockCoalescer) due(now time.Time) []item {
	var out []item
	for _, d := range c.drops {
		if d.waiting != nil && !now.Before(d.lastSent.Add(c.interval)) {
			out = append(out, *d.waiting)
			d.waiting = nil
		}
	}
	return out
}

// next is the earliest moment a waiting row may go; ok is false when none waits.
func (c *stockCoalescer) next() (t time.Time, ok bool) {
	for _, d := range c.drops {
		if d.waiting == nil {
			continue
		}
		at := d.lastSent.Add(c.interval)
		if !ok || at.Before(t) {
			t, ok = at, true
		}
	}
	return t, ok
}

// sent records that the row seq of subject reached the stream at now.
func (c *stockCoalescer) sent(subject string, seq int64, now time.Time) {
	d := c.drops[subject]
	if d == nil {
		d = &stockDrop{}
		c.drops[subject] = d
	}
	d.lastSent = now
	d.lastSeq = max(d.lastSeq, seq)
}

// waitingSeqs lists the rows held back, which the next claim must skip.
func (c *stockCoalescer) waitingSeqs(dst []int64) []int64 {
	for _, d := range c.drops {
		if d.waiting != nil {
			dst = append(dst, d.waiting.rec.Seq)
		}
	}
	return dst
}

// forget drops the state of drops quiet for longer than keep, so the map does not grow with every drop
// ever sold.
func (c *stockCoalescer) forget(now time.Time, keep time.Duration) {
	for s, d := range c.drops {
		if d.waiting == nil && now.Sub(d.lastSent) > keep {
			delete(c.drops, s)
		}
	}
}
