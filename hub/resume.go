package hub

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/livedrops/livedrops/store"
)

// resume replays to c what its client missed since event id since, on every subject c hears. It runs
// while c is joined but not yet live: its live events are queued, and start drops from that queue the
// ones the replay already wrote. recovered is false when the gap cannot be filled whole: since is
// malformed, unknown or older than the stream keeps, the gap is longer than Config.ReplayLimit, or a
// dependency failed; the client then reloads its state over REST (a resume is never partial).
//
// No gap: c's subscriptions are in force at the server (start flushed them) before the replay reads the
// stream, so an event is either stored before the read, or delivered live (an event routed to live
// subscribers a moment before the stream stored it is caught by the Replayer's second pass). No
// duplicate: the ids the replay wrote are skipped in the live queue.
func (h *Hub) resume(ctx context.Context, c *conn, since string) (recovered bool, frames []*frame) {
	start := h.cfg.Now()
	outcome := resumeError
	defer func() {
		h.m.resumes.WithLabelValues(outcome).Inc()
		h.m.resumeSeconds.Observe(h.cfg.Now().Sub(start).Seconds())
	}()
	switch {
	case since == "":
		outcome = resumeMalformed
		return false, nil
	case h.d.Sequences == nil || h.d.Replayer == nil:
		outcome = resumeNoReplay
		return false, nil
	}
	seq, err := h.seqCache.lookup(ctx, since, h.d.Sequences)
	if errors.Is(err, store.ErrNotFound) {
		outcome = resumeUnknown
		return false, nil
	}
	if err != nil {
		h.log.Warn("hub: resume: position", "conn_id", c.id, "err", err)
		return false, nil
	}
	subjects, drops := h.subjectsOf(c)
	req := &replayReq{after: seq, subjects: subjects, drops: drops, done: make(chan replayResult, 1)}
	select {
	case h.replays <- req:
	case <-ctx.Done():
		return false, nil
	}
	var res replayResult
	select {
	case res = <-req.done:
	case <-ctx.Done():
		return false, nil
	}
	if res.err != nil {
		h.log.Warn("hub: resume: replay", "conn_id", c.id, "err", res.err)
		return false, nil
	}
	if !res.complete || len(res.frames) > h.cfg.ReplayLimit {
		outcome = resumeTooOld
		return false, nil
	}
	outcome = resumeRecovered
	floor := seq
	for _, f := range res.frames {
		floor = max(floor, f.seq)
	}
	c.floor.Store(floor)
	return true, res.frames
}

// The replay stage. A reconnect storm brings thousands of sockets resuming from the same event at once,
// each hearing its own user's subject and mostly the same creators'. Each replayer takes every resume
// waiting (up to Config.ReplayBatch) and reads, for each position among them, the union of their
// subjects with one Replay (a few reads of the stream: the user subjects as one ld.user.* read), then
// gives each socket the messages of its own subjects. Every socket's subscriptions were confirmed before
// it asked, and the read starts after every ask of its batch, so the promise of the single resume holds
// for each: no gap between what the replay gives and what arrives live, no duplicate.

// replayReq is one socket's resume: its position and subjects.
type replayReq struct {
	after    uint64
	subjects []string // replayed whole
	drops    []string // only the newest message of each
	done     chan replayResult
}

type replayResult struct {
	complete bool
	frames   []*frame
	err      error
}

// replayer serves the replay stage (Config.MaxResumes of them).
func (h *Hub) replayer() {
	defer h.bg.Done()
	batch := make([]*replayReq, 0, h.cfg.ReplayBatch)
	for {
		select {
		case r := <-h.replays:
			batch = append(batch[:0], r)
		case <-h.stop:
			return
		}
	more:
		for len(batch) < h.cfg.ReplayBatch {
			select {
			case r := <-h.replays:
				batch = append(batch, r)
			default:
				break more
			}
		}
		groups := map[uint64][]*replayReq{}
		for _, r := range batch {
			groups[r.after] = append(groups[r.after], r)
		}
		for after, g := range groups {
			h.replayGroup(after, g)
		}
		clear(batch)
	}
}

// replayed is one message a replay read.
type replayed struct {
	seq     uint64
	subject string
	f       *frame
}

// replayGroup reads what the resumes of g (one position) missed, in one Replay, and answers each.
func (h *Hub) replayGroup(after uint64, g []*replayReq) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SetupTimeout)
	defer cancel()
	h.m.replayBatch.Observe(float64(len(g)))
	var subjects, drops []string
	if len(g) == 1 {
		subjects, drops = g[0].subjects, g[0].drops
	} else {
		seen := map[string]bool{}
		for _, r := range g {
			for _, s := range r.subjects {
				if !seen[s] {
					seen[s] = true
					subjects = append(subjects, s)
				}
			}
			for _, s := range r.drops {
				if !seen[s] {
					seen[s] = true
					drops = append(drops, s)
				}
			}
		}
		slices.Sort(subjects)
		slices.Sort(drops)
	}
	limit := min(h.cfg.ReplayLimit*len(g), 100_000)
	var msgs []replayed
	complete, err := h.d.Replayer.Replay(ctx, after, subjects, drops, limit, func(seq uint64, subject string, data []byte) {
		f, _, err := parseFrame(data)
		if err != nil {
			h.m.dropped.WithLabelValues(dropMalformed).Inc()
			return
		}
		f.replay, f.seq = true, seq
		msgs = append(msgs, replayed{seq: seq, subject: subject, f: f})
	})
	if err == nil && !complete && len(g) > 1 {
		// Too much for the batch's limit, or the position is gone: the first is per socket, so ask each.
		for _, r := range g {
			h.replayGroup(after, []*replayReq{r})
		}
		return
	}
	for _, r := range g {
		res := replayResult{complete: complete, err: err}
		if err == nil && complete {
			for _, m := range msgs {
				if len(g) == 1 || slices.Contains(r.subjects, m.subject) || slices.Contains(r.drops, m.subject) {
					res.frames = append(res.frames, m.f)
				}
			}
		}
		r.done <- res
	}
}

// seqCache remembers event id -> stream sequence, so that a reconnect storm, whose clients mostly resume
// from the same few events, asks the store once per event.
type seqCache struct {
	group singleflight.Group
	mu    sync.Mutex
	m     map[string]uint64
	size  int
}

func newSeqCache(size int) *seqCache { return &seqCache{m: map[string]uint64{}, size: size} }

func (c *seqCache) lookup(ctx context.Context, id string, seqs Sequences) (uint64, error) {
	c.mu.Lock()
	seq, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return seq, nil
	}
	v, err, _ := c.group.Do(id, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return seqs.StreamSeq(ctx, id)
	})
	if err != nil {
		return 0, err
	}
	seq = v.(uint64)
	c.mu.Lock()
	if len(c.m) >= c.size {
		for k := range c.m { // evict one at random
			delete(c.m, k)
			break
		}
	}
	c.m[id] = seq
	c.mu.Unlock()
	return seq, nil
}

// jitter is a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}
