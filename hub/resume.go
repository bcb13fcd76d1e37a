package hub

import (
	"context"
	"errors"
	"math/rand/v2"
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
	select {
	case h.resumes <- struct{}{}:
		defer func() { <-h.resumes }()
	case <-ctx.Done():
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
	collect := func(_ uint64, data []byte) {
		f, _, err := parseFrame(data)
		if err != nil {
			h.m.dropped.WithLabelValues(dropMalformed).Inc()
			return
		}
		f.replay = true
		frames = append(frames, f)
	}
	complete, err := h.d.Replayer.Replay(ctx, seq, subjects, drops, h.cfg.ReplayLimit, collect)
	if err != nil {
		h.log.Warn("hub: resume: replay", "conn_id", c.id, "err", err)
		return false, nil
	}
	if !complete || len(frames) > h.cfg.ReplayLimit {
		outcome = resumeTooOld
		return false, nil
	}
	outcome = resumeRecovered
	return true, frames
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
