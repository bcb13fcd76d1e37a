package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livedrops/livedrops/store"
)

// Gaps in the live stream (issue 13). The hub hears events through core NATS subscriptions: what is
// published while its connection is down, or moving to another node, never reaches it. So when the
// bus's connection was re-established (Bus.Reconnects changed) the hub refills the gap from the stream:
//
//   - the first message deliver gets after a reconnection (the client library counts the reconnection
//     before it subscribes again, so no message of the new connection can come earlier), or the
//     keep-alive tick after it (checkGap), starts a refill; from then on the bus's messages wait in a
//     buffer, in their order;
//   - the refill looks up the stream sequence of the last event the hub delivered before (Sequences),
//     reads from the stream everything after it on every subject a local socket holds (Replayer), and
//     delivers it in stream order, each event once (the ids of the last events delivered are known:
//     recentIDs), then the buffered messages, and live delivery resumes;
//   - a socket that resumed is not given what its own replay already covered (conn.floor), so a refill
//     never repeats an event to a client nor goes back before its resume position.
//
// If the gap cannot be refilled whole (no earlier event to start from, the position is unknown, the
// stream no longer holds the gap or it is longer than Config.RefillLimit, a dependency fails), every
// socket is closed with CloseServerError: its client reconnects and resumes from its own position. A gap
// is never silent. livedrops_hub_stream_gaps_total counts the gaps by outcome.

// busMsg is a message of the bus waiting while a refill runs.
type busMsg struct {
	subject string
	data    []byte
}

type gapState struct {
	mu      sync.Mutex    // held by deliver while it delivers: the refill starts after that delivery
	epoch   atomic.Uint64 // the bus's reconnections the live stream is known to follow; set under mu
	filling bool          // a refill runs: the bus's messages wait in buf
	again   bool          // the bus reconnected again while filling
	over    bool          // buf overflowed: the refill must close every socket
	buf     []busMsg

	last atomic.Pointer[string] // id of the last event delivered
}

// Outcomes of a gap, the label of livedrops_hub_stream_gaps_total.
const (
	gapRefilled = "refilled"
	gapClosed   = "closed" // every socket closed with CloseServerError
)

// deliver is the Bus callback: one message of the live stream.
func (h *Hub) deliver(subject string, data []byte) {
	g := &h.gap
	g.mu.Lock()
	defer g.mu.Unlock()
	if r := h.flushes.busReconnects(); r != g.epoch.Load() {
		g.epoch.Store(r)
		h.beginGapLocked()
	}
	if g.filling {
		if len(g.buf) >= h.cfg.RefillLimit {
			g.over = true
			return
		}
		g.buf = append(g.buf, busMsg{subject, data})
		return
	}
	h.deliverNow(subject, data, 0)
}

// checkGap starts a refill when the bus reconnected and no message came since (deliver notices the
// reconnection with its first message; this does not wait for one). The keep-alive loop calls it every
// tick; it does not wait for a delivery in progress (the next tick will do).
func (h *Hub) checkGap() {
	g := &h.gap
	r := h.flushes.busReconnects()
	if r == g.epoch.Load() || !g.mu.TryLock() {
		return
	}
	if r != g.epoch.Load() {
		g.epoch.Store(r)
		h.beginGapLocked()
	}
	g.mu.Unlock()
}

// beginGapLocked starts a refill, or asks the running one to read again; the caller holds gap.mu.
func (h *Hub) beginGapLocked() {
	g := &h.gap
	if g.filling {
		g.again = true
		return
	}
	g.filling = true
	h.bg.Add(1)
	go h.refill(g.last.Load())
}

// refill fills the gap after the event id from (nil: none was delivered) and hands the live stream back.
func (h *Hub) refill(from *string) {
	defer h.bg.Done()
	g := &h.gap
	t0 := h.cfg.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.cfg.SetupTimeout)
	defer cancel()
	go func() {
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := h.refillLoop(ctx, from, t0)
	select {
	case <-h.stop:
		return // shutting down: every socket is closed already
	default:
	}
	if err == nil {
		return
	}
	// Cannot refill: every socket resumes by itself.
	conns := h.reg.allConns()
	h.log.Warn("hub: stream gap not refilled, closing every socket so that clients resume", "err", err,
		"sockets", len(conns))
	for _, c := range conns {
		c.closeWith(CloseServerError, "events missed: reconnect and resume", reasonGap, nil)
	}
	g.mu.Lock()
	g.buf, g.over, g.again, g.filling = nil, false, false, false
	g.mu.Unlock()
	h.m.gaps.WithLabelValues(gapClosed).Inc()
	h.m.refillSeconds.Observe(h.cfg.Now().Sub(t0).Seconds())
}

// refillLoop reads the gap once the bus is connected again (and again after each further
// reconnection), delivers it, then what waited in the buffer, and hands the live stream back.
func (h *Hub) refillLoop(ctx context.Context, from *string, t0 time.Time) error {
	g := &h.gap
	if err := h.waitConnected(ctx); err != nil {
		return err
	}
	h.followEpoch() // whatever the outcome, the reconnections so far are this gap's
	var after uint64
	switch {
	case from == nil:
		return errors.New("no event delivered before the gap: no position to refill from")
	case h.d.Sequences == nil || h.d.Replayer == nil:
		return errors.New("no replayer")
	}
	after, err := h.gapPosition(ctx, *from)
	if err != nil {
		return err
	}
	filled := 0
	for {
		// Read on the connection as it is now: a reconnection after this point is another gap.
		if err := h.waitConnected(ctx); err != nil {
			return err
		}
		h.followEpoch()
		n, last, err := h.refillFrom(ctx, after)
		if errors.Is(err, errGapTooOld) {
			return err
		}
		if err != nil {
			h.log.Warn("hub: stream gap: read", "err", err)
			select {
			case <-ctx.Done():
				return err
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		filled += n
		after = last
		for {
			g.mu.Lock()
			if g.over {
				g.mu.Unlock()
				return errors.New("more live messages waited for the refill than RefillLimit")
			}
			if g.again {
				g.mu.Unlock()
				break // read again from the last sequence read: the new gap is after it
			}
			if len(g.buf) == 0 {
				g.filling = false // live delivery resumes with the next message
				g.mu.Unlock()
				h.m.gaps.WithLabelValues(gapRefilled).Inc()
				h.m.refillSeconds.Observe(h.cfg.Now().Sub(t0).Seconds())
				h.log.Info("hub: stream gap refilled", "events", filled,
					"duration_ms", h.cfg.Now().Sub(t0).Milliseconds())
				return nil
			}
			buf := g.buf
			g.buf = nil
			g.mu.Unlock()
			for _, m := range buf {
				h.deliverNow(m.subject, m.data, 0)
			}
		}
	}
}

// followEpoch makes the bus's reconnections so far part of the running refill: a read that starts
// after this covers them, and only a later reconnection asks for another read.
func (h *Hub) followEpoch() {
	g := &h.gap
	g.mu.Lock()
	g.epoch.Store(h.flushes.busReconnects())
	g.again = false
	g.mu.Unlock()
}

// connState is a Bus that knows whether its connection is up (fanout/jetstream.Subscriber).
type connState interface{ Connected() bool }

// waitConnected returns once the bus's connection is up.
func (h *Hub) waitConnected(ctx context.Context) error {
	cs, ok := h.d.Bus.(connState)
	if !ok {
		return nil
	}
	for !cs.Connected() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("hub: stream gap: bus not connected again: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

var errGapTooOld = errors.New("the stream no longer holds the gap, or it is longer than RefillLimit")

// gapPosition is the stream sequence of event id, waiting a little for the relay to record it (the
// hub may hear an event before the relay has its acknowledgement).
func (h *Hub) gapPosition(ctx context.Context, id string) (uint64, error) {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		seq, err := h.d.Sequences.StreamSeq(ctx, id)
		if err == nil {
			return seq, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			h.log.Warn("hub: stream gap: position", "event_id", id, "err", err)
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(wait):
		}
	}
}

// refillFrom delivers what the stream holds after sequence after on the subjects local sockets hold;
// it returns how many events it delivered that the hub had not, and the last sequence read.
func (h *Hub) refillFrom(ctx context.Context, after uint64) (n int, last uint64, err error) {
	subjects, drops := h.interest.held()
	type stored struct {
		seq     uint64
		subject string
		data    []byte
	}
	var msgs []stored
	complete, err := h.d.Replayer.Replay(ctx, after, subjects, drops, h.cfg.RefillLimit,
		func(seq uint64, subject string, data []byte) {
			msgs = append(msgs, stored{seq, subject, data})
		})
	if err != nil {
		return 0, after, err
	}
	if !complete {
		return 0, after, errGapTooOld
	}
	last = after
	for _, m := range msgs {
		if h.deliverNow(m.subject, m.data, m.seq) {
			n++
			h.m.refilled.Inc()
		}
		last = max(last, m.seq)
	}
	return n, last, nil
}

// held lists the subjects local sockets hold: creators and users, and drops (stock ticks, of which only
// the newest counts).
func (in *interest) held() (subjects, drops []string) {
	for i := range in.shards {
		s := &in.shards[i]
		s.mu.Lock()
		for subject := range s.subs {
			if kind, _, ok := parseSubject(subject); ok && kind == subjDrop {
				drops = append(drops, subject)
			} else {
				subjects = append(subjects, subject)
			}
		}
		s.mu.Unlock()
	}
	return subjects, drops
}
