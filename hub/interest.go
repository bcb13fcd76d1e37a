package hub

import (
	"context"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livedrops/livedrops/fanout"
)

// interest holds the Bus subscriptions local sockets need, reference counted per subject. Creator
// subjects have two modes (issue 11, BENCHMARKS.md "Interest"): one subscription per creator a local user
// follows (few of the creators that publish have a local follower: the hub receives only what it
// needs), or one ld.creator.* subscription filtered here (most of them do: one subscription instead of
// thousands, cheaper per event, and no subscription to set up for a new socket). adapt switches between
// them with hysteresis; both subscriptions overlap during a switch (the hub drops the second copy of an
// event by its id), so no event is missed or doubled.
//
// Every subscription sent gets a generation number; a flush that starts after it confirms it (flushGroup
// keeps the highest confirmed), so a socket whose subjects are all confirmed is greeted without another
// round trip.
type interest struct {
	shards  []interestShard
	seed    maphash.Seed
	bus     Bus
	deliver func(subject string, data []byte)
	m       *metrics
	gen     atomic.Uint64 // generation of the last subscription sent

	switchMu sync.Mutex  // one switch at a time
	wild     atomic.Bool // creator subjects are covered by the wildcard
	wildGen  atomic.Uint64
	wildSub  func() error // unsubscribes the wildcard; under switchMu
}

type interestShard struct {
	mu   sync.Mutex
	subs map[string]*subRef
}

type subRef struct {
	n           int
	unsubscribe func() error // nil while the wildcard covers the subject
	gen         uint64       // generation of the subscription that covers it
}

// creatorWildcard is the subject of every creator's events.
var creatorWildcard = fanout.CreatorPrefix + "*"

func newInterest(n int, bus Bus, deliver func(string, []byte), m *metrics) *interest {
	in := &interest{shards: make([]interestShard, n), seed: maphash.MakeSeed(), bus: bus, deliver: deliver, m: m}
	for i := range in.shards {
		in.shards[i].subs = map[string]*subRef{}
	}
	return in
}

func (in *interest) shard(subject string) *interestShard {
	return &in.shards[maphash.String(in.seed, subject)%uint64(len(in.shards))]
}

func isCreatorSubject(subject string) bool { return strings.HasPrefix(subject, fanout.CreatorPrefix) }

// acquire takes one reference on subject, subscribing on the first, and returns the generation of the
// subscription that covers it.
func (in *interest) acquire(subject string) (uint64, error) {
	s := in.shard(subject)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ref := s.subs[subject]; ref != nil {
		ref.n++
		return ref.gen, nil
	}
	if isCreatorSubject(subject) && in.wild.Load() {
		gen := in.wildGen.Load()
		s.subs[subject] = &subRef{n: 1, gen: gen}
		return gen, nil
	}
	unsubscribe, err := in.bus.Subscribe(subject, in.deliver)
	if err != nil {
		return 0, fmt.Errorf("hub: subscribe %s: %w", subject, err)
	}
	gen := in.gen.Add(1)
	s.subs[subject] = &subRef{n: 1, unsubscribe: unsubscribe, gen: gen}
	in.m.subscriptions.Inc()
	return gen, nil
}

// release drops one reference on subject, unsubscribing with the last.
func (in *interest) release(subject string) {
	s := in.shard(subject)
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := s.subs[subject]
	if ref == nil {
		return
	}
	if ref.n--; ref.n > 0 {
		return
	}
	delete(s.subs, subject)
	if ref.unsubscribe != nil {
		in.m.subscriptions.Dec()
		_ = ref.unsubscribe()
	}
}

// wanted reports whether a local socket holds subject (the wildcard brings every creator's events).
func (in *interest) wanted(subject string) bool {
	s := in.shard(subject)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subs[subject] != nil
}

// creators returns the ids of the creator subjects held.
func (in *interest) creators() map[int64]struct{} {
	out := map[int64]struct{}{}
	for i := range in.shards {
		s := &in.shards[i]
		s.mu.Lock()
		for subject := range s.subs {
			if kind, id, ok := parseSubject(subject); ok && kind == subjCreator {
				out[id] = struct{}{}
			}
		}
		s.mu.Unlock()
	}
	return out
}

// toWildcard covers every creator subject with one ld.creator.* subscription: the wildcard first,
// confirmed, and only then the per-creator subscriptions go.
func (in *interest) toWildcard(ctx context.Context, confirm func(context.Context) error) error {
	in.switchMu.Lock()
	defer in.switchMu.Unlock()
	if in.wild.Load() {
		return nil
	}
	unsubscribe, err := in.bus.Subscribe(creatorWildcard, in.deliver)
	if err != nil {
		return fmt.Errorf("hub: subscribe %s: %w", creatorWildcard, err)
	}
	gen := in.gen.Add(1)
	if err := confirm(ctx); err != nil {
		_ = unsubscribe()
		return err
	}
	overlap(ctx)
	in.wildSub = unsubscribe
	in.m.subscriptions.Inc()
	in.wildGen.Store(gen)
	in.wild.Store(true)
	for i := range in.shards {
		s := &in.shards[i]
		s.mu.Lock()
		for subject, ref := range s.subs {
			if ref.unsubscribe != nil && isCreatorSubject(subject) {
				_ = ref.unsubscribe()
				ref.unsubscribe, ref.gen = nil, gen
				in.m.subscriptions.Dec()
			}
		}
		s.mu.Unlock()
	}
	return nil
}

// toPerCreator subscribes every creator subject held on its own, confirms them, and only then drops the
// wildcard.
func (in *interest) toPerCreator(ctx context.Context, confirm func(context.Context) error) error {
	in.switchMu.Lock()
	defer in.switchMu.Unlock()
	if !in.wild.Load() {
		return nil
	}
	in.wild.Store(false) // from here on acquire subscribes per creator
	var errs int
	for i := range in.shards {
		s := &in.shards[i]
		s.mu.Lock()
		for subject, ref := range s.subs {
			if ref.unsubscribe != nil || !isCreatorSubject(subject) {
				continue
			}
			unsubscribe, err := in.bus.Subscribe(subject, in.deliver)
			if err != nil {
				errs++
				continue
			}
			ref.unsubscribe, ref.gen = unsubscribe, in.gen.Add(1)
			in.m.subscriptions.Inc()
		}
		s.mu.Unlock()
	}
	if err := confirm(ctx); err != nil || errs > 0 {
		// The wildcard stays until every creator is covered on its own; adapt tries again.
		in.wild.Store(true)
		if err == nil {
			err = fmt.Errorf("hub: %d creator subscriptions failed", errs)
		}
		return err
	}
	overlap(ctx)
	_ = in.wildSub()
	in.wildSub = nil
	in.m.subscriptions.Dec()
	return nil
}

// switchOverlap is how long both subscriptions stay after the new one is confirmed. A flush confirms
// that the server holds the new subscription, but a publication the server matched just before it may
// still be on its way to us on the old subscription only (its delivery is queued after the flush's
// answer): dropping the old subscription at once would lose it. The second copies that arrive meanwhile
// are dropped by id.
const switchOverlap = 250 * time.Millisecond

func overlap(ctx context.Context) {
	t := time.NewTimer(switchOverlap)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// releaseAll unsubscribes from everything (shutdown).
func (in *interest) releaseAll() {
	in.switchMu.Lock()
	defer in.switchMu.Unlock()
	for i := range in.shards {
		s := &in.shards[i]
		s.mu.Lock()
		for subject, ref := range s.subs {
			if ref.unsubscribe != nil {
				_ = ref.unsubscribe()
				in.m.subscriptions.Dec()
			}
			delete(s.subs, subject)
		}
		s.mu.Unlock()
	}
	if in.wildSub != nil {
		_ = in.wildSub()
		in.wildSub = nil
		in.m.subscriptions.Dec()
	}
}

// Activity names the creators that published lately (fanout/jetstream.Replayer: the creators with
// events in the stream, i.e. within the replay window).
type Activity interface {
	ActiveCreators(ctx context.Context) ([]int64, error)
}

// adaptLoop measures, every Config.InterestCheck, which share of the creators that published lately has
// a local follower, and switches to the wildcard at Config.WildcardAbove or more, back to per-creator
// subscriptions at Config.WildcardBelow or less (in between the mode stays: hysteresis).
func (h *Hub) adaptLoop() {
	defer h.bg.Done()
	t := time.NewTicker(h.cfg.InterestCheck)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.adapt()
	}
}

func (h *Hub) adapt() {
	ctx, cancel := context.WithTimeout(context.Background(), max(h.cfg.InterestCheck, 10*time.Second))
	defer cancel()
	active, err := h.d.Activity.ActiveCreators(ctx)
	if err != nil {
		h.log.Warn("hub: active creators", "err", err)
		return
	}
	local := h.interest.creators()
	hit := 0
	for _, id := range active {
		if _, ok := local[id]; ok {
			hit++
		}
	}
	share := 0.0
	if len(active) > 0 {
		share = float64(hit) / float64(len(active))
	}
	h.m.interestShare.Set(share)
	wild := h.interest.wild.Load()
	switch {
	case !wild && len(active) >= h.cfg.WildcardMinCreators && share >= h.cfg.WildcardAbove:
		if err := h.interest.toWildcard(ctx, h.flushes.flush); err != nil {
			h.log.Warn("hub: switch to the creator wildcard", "err", err)
			return
		}
		h.m.interestSwitches.WithLabelValues("wildcard").Inc()
		h.m.interestMode.Set(1)
		h.log.Info("hub: creator events through one wildcard subscription", "active_creators", len(active),
			"with_local_followers", hit)
	case wild && (share <= h.cfg.WildcardBelow || len(active) < h.cfg.WildcardMinCreators):
		if err := h.interest.toPerCreator(ctx, h.flushes.flush); err != nil {
			h.log.Warn("hub: switch to per-creator subscriptions", "err", err)
			return
		}
		h.m.interestSwitches.WithLabelValues("per_creator").Inc()
		h.m.interestMode.Set(0)
		h.log.Info("hub: creator events through one subscription per creator", "active_creators", len(active),
			"with_local_followers", hit)
	}
}
