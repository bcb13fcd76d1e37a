package notifier

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/livedrops/livedrops/fanout/push"
)

// task is one message to one device, from its page's claim to its final answer. Waiting tasks are
// plain values in a queue (a retry waits on a timer), so a backlog of a hundred thousand costs a few
// megabytes, not a goroutine each.
type task struct {
	d       push.Device
	page    *pageRun
	attempt int
	last    push.Result
}

// pageRun is one page job's tasks: the job is acknowledged when every task is final.
type pageRun struct {
	ctx   context.Context
	notif *push.Notification
	keep  time.Duration
	owner string

	mu    sync.Mutex
	left  int
	final map[int64]bool
	done  chan struct{}
}

func (p *pageRun) report(id int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.final[id] {
		return
	}
	p.final[id] = true
	p.left--
	if p.left == 0 {
		close(p.done)
	}
}

// sendQueue is the FIFO of tasks ready to send, shared by a process's senders.
type sendQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []*task
	closed bool
}

func newSendQueue() *sendQueue {
	q := &sendQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *sendQueue) put(ts ...*task) {
	q.mu.Lock()
	q.items = append(q.items, ts...)
	q.mu.Unlock()
	if len(ts) == 1 {
		q.cond.Signal()
	} else {
		q.cond.Broadcast()
	}
}

// take waits for up to max tasks; nil once the queue is closed.
func (q *sendQueue) take(max int) []*task {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return nil
	}
	n := min(max, len(q.items))
	out := make([]*task, n)
	copy(out, q.items)
	clear(q.items[:n])
	q.items = q.items[n:]
	return out
}

func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// sendBatch is how many tasks a sender takes at once: one presence check for all of them.
const sendBatch = 32

// sender is one of the Concurrency loops: it takes a batch of tasks, checks again which of their users
// came online meanwhile (presence at send time: a socket opened since the page was read has the event),
// and sends the rest one by one.
func (n *Notifier) sender(ctx context.Context) {
	for {
		batch := n.queue.take(sendBatch)
		if batch == nil {
			return
		}
		live := batch[:0]
		for _, t := range batch {
			if t.page.ctx.Err() == nil {
				live = append(live, t)
			}
		}
		if len(live) == 0 {
			continue
		}
		users := make([]int64, len(live))
		for i, t := range live {
			users[i] = t.d.UserID
		}
		online, err := n.d.Presence.Online(ctx, users)
		if err != nil {
			online = nil // Redis failing: send (a push too many beats a push lost)
			n.log.Warn("push: presence at send time", "err", err)
		}
		for i, t := range live {
			if online != nil && online[i] {
				n.m.skipped.Inc()
				n.finish(t)
				continue
			}
			n.attempt(ctx, t)
		}
	}
}

// attempt sends t once and acts on the answer: final (sent, removed, parked, expired) or a retry later.
func (n *Notifier) attempt(ctx context.Context, t *task) {
	notif, d := t.page.notif, t.d
	pv := string(d.Provider)
	sender := n.d.Senders[d.Provider]
	if sender == nil {
		n.deadLetter(ctx, notif, d, "provider_off", t.attempt, errors.New("no sender configured for "+pv))
		n.finish(t)
		return
	}
	if !notif.Expires.After(n.cfg.Now()) {
		n.m.expired.Inc()
		n.finish(t)
		return
	}
	if err := n.waitProvider(t.page.ctx, d.Provider); err != nil {
		return // stopping: the page releases the claim
	}
	t.attempt++
	n.m.inFlight.Inc()
	start := time.Now()
	r := sender.Send(t.page.ctx, notif, d)
	n.m.request.WithLabelValues(pv).Observe(time.Since(start).Seconds())
	n.m.inFlight.Dec()
	if t.page.ctx.Err() != nil && r.Outcome != push.Sent {
		return
	}
	t.last = r
	if r.Credentials {
		n.m.authFailures.WithLabelValues(pv).Inc()
	}
	if r.Outcome != push.Sent {
		n.m.failed.WithLabelValues(pv, r.Reason).Inc()
	}
	switch r.Outcome {
	case push.Sent:
		n.m.sent.WithLabelValues(pv).Inc()
		if !notif.EventTS.IsZero() {
			n.m.lag.Observe(n.cfg.Now().Sub(notif.EventTS).Seconds())
		}
		n.finish(t)
		return
	case push.Gone:
		if _, err := n.d.Store.RemoveDevice(context.WithoutCancel(ctx), d.ID, d.Token); err != nil {
			n.log.Error("push: remove gone device", "device_id", d.ID, "err", err)
		} else {
			n.m.removed.WithLabelValues(pv).Inc()
		}
		n.finish(t)
		return
	case push.Rejected:
		if r.Reason == "expired" {
			n.m.expired.Inc()
		} else {
			n.deadLetter(ctx, notif, d, r.Reason, t.attempt, r.Err)
		}
		n.finish(t)
		return
	case push.AuthFailed:
		n.pause(d.Provider, n.cfg.AuthPause)
		n.log.Error("push: provider refused our credentials; pausing it", "provider", pv, "reason", r.Reason,
			"pause", n.cfg.AuthPause, "err", r.Err)
	}
	if t.attempt >= n.cfg.MaxAttempts {
		n.deadLetter(ctx, notif, d, "max_attempts", t.attempt, r.Err)
		n.finish(t)
		return
	}
	n.m.retried.WithLabelValues(pv).Inc()
	time.AfterFunc(n.backoff(t.attempt, r.RetryAfter), func() {
		if t.page.ctx.Err() == nil {
			n.queue.put(t)
		}
	})
}

// finish hands t to the marker: its pair is marked done (so no redelivery sends it again), then it is
// reported to its page.
func (n *Notifier) finish(t *task) { n.marks <- t }

// markEvery bounds how long a final answer waits for its done mark: marks are written in batches, one
// pipeline for up to markBatch of them, so a worker killed in that moment may send those again.
const (
	markEvery = 2 * time.Millisecond
	markBatch = 256
)

// marker writes the done marks of finished tasks in batches until n.marks is closed and drained.
func (n *Notifier) marker() {
	batch := make([]*task, 0, markBatch)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		type group struct {
			key  string
			keep time.Duration
		}
		ids := map[group][]int64{}
		for _, t := range batch {
			g := group{dedupeKey(t.page.notif), t.page.keep}
			ids[g] = append(ids[g], t.d.ID)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for g, devs := range ids {
			if err := n.d.Dedupe.Finish(ctx, g.key, devs, g.keep); err != nil {
				// The answers are final; only a redelivery could send them again. Log and go on.
				n.log.Error("push: mark done", "event", g.key, "devices", len(devs), "err", err)
			}
		}
		cancel()
		for _, t := range batch {
			t.page.report(t.d.ID)
		}
		clear(batch)
		batch = batch[:0]
	}
	tick := time.NewTicker(markEvery)
	defer tick.Stop()
	for {
		select {
		case t, ok := <-n.marks:
			if !ok {
				flush()
				return
			}
			batch = append(batch, t)
			if len(batch) == markBatch {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// sendAll queues notif for devices (claimed by this page run) and waits until every one is final. On
// ctx's end it waits for the senders to stop, releases the claims of the devices not final and
// returns ctx's error.
func (n *Notifier) sendAll(ctx context.Context, notif *push.Notification, devices []push.Device, keep time.Duration, owner string) error {
	if len(devices) == 0 {
		return nil
	}
	p := &pageRun{ctx: ctx, notif: notif, keep: keep, owner: owner, left: len(devices),
		final: make(map[int64]bool, len(devices)), done: make(chan struct{})}
	ids := make([]int64, len(devices))
	tasks := make([]*task, len(devices))
	for i, d := range devices {
		ids[i] = d.ID
		tasks[i] = &task{d: d, page: p}
	}
	n.queue.put(tasks...)
	// Keep the claims while answers are awaited (retries may wait minutes).
	t := time.NewTicker(n.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return nil
		case <-t.C:
			if err := n.d.Dedupe.Extend(ctx, dedupeKey(notif), ids, owner, n.cfg.Lease); err != nil && ctx.Err() == nil {
				n.log.Warn("push: extend claims", "err", err)
			}
		case <-ctx.Done():
			<-n.sendersDone
			p.mu.Lock()
			var unfinished []int64
			for _, id := range ids {
				if !p.final[id] {
					unfinished = append(unfinished, id)
				}
			}
			p.mu.Unlock()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := n.d.Dedupe.Release(rctx, dedupeKey(notif), unfinished, owner); err != nil {
				n.log.Warn("push: release claims", "err", err)
			}
			return fmt.Errorf("push: stopping with %d devices of the page unfinished: %w", len(unfinished), ctx.Err())
		}
	}
}
