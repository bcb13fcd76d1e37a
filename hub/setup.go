package hub

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livedrops/livedrops/fanout"
)

// The setup stage (issue 11). A socket is set up in a bounded stage: at most Config.MaxSetups sockets at
// once, the others wait for a place (a connect burst queues instead of growing the heap with every
// half-built socket: memory per socket does not depend on how fast clients arrive). Inside the stage the
// slow steps are shared by the sockets that arrive together:
//
//   - follow lists: the first socket of a user hands its user to a loader; each loader takes whatever
//     users wait (up to Config.SetupBatch) and reads their lists with one call to Follows (the cache,
//     then one query for the misses);
//   - confirmations: a socket is greeted only once its subscriptions are in force at the NATS server
//     (Bus.Flush); a flush confirms every subscription sent before it, so one flush serves every socket
//     waiting when it starts (flushGroup).
//
// Order inside a user's load: the user's own subject is subscribed and confirmed before the list is read,
// so a follow.changed committed after the read reaches the hub live (and waits in user.pending).

// errSetupBusy: no place in the setup stage within Config.AdmitTimeout.
var errSetupBusy = errors.New("hub: setup stage full")

// admit waits for a place in the setup stage, at most Config.AdmitTimeout; release gives it back.
func (h *Hub) admit(ctx context.Context) (release func(), err error) {
	t0 := h.cfg.Now()
	select {
	case h.setups <- struct{}{}:
	default:
		t := time.NewTimer(h.cfg.AdmitTimeout)
		defer t.Stop()
		select {
		case h.setups <- struct{}{}:
		case <-t.C:
			h.m.setup[stageAdmit].Observe(h.cfg.Now().Sub(t0).Seconds())
			return nil, errSetupBusy
		case <-ctx.Done():
			h.m.setup[stageAdmit].Observe(h.cfg.Now().Sub(t0).Seconds())
			return nil, errSetupBusy
		case <-h.stop:
			return nil, errSetupBusy
		}
	}
	h.m.setup[stageAdmit].Observe(h.cfg.Now().Sub(t0).Seconds())
	h.m.settingUp.Inc()
	if h.cfg.BurstGCPercent > 0 && len(h.setups) == cap(h.setups) && h.burst.CompareAndSwap(false, true) {
		// A connect burst that fills the stage (sockets queue: the hub is bound by its CPU): its heap
		// only grows (new sockets) while its garbage is short-lived, so collections now cost much and
		// free little; releaseLoop restores the setting after it.
		h.gcPercent.Store(int64(debug.SetGCPercent(h.cfg.BurstGCPercent)))
		h.m.bursts.Inc()
	}
	return func() {
		h.m.settingUp.Dec()
		h.setupsDone.Add(1)
		<-h.setups
	}, nil
}

// inStage runs f on one of the setup stage's goroutines and returns once f returned (a panic in f is
// raised again here); the caller holds a place in the stage.
//
// net/http serves each connection on a goroutine of its own that starts on the smallest stack, and a
// socket's setup (the token, the upgrade and its hijack, the follow list) needs several times that: on
// net/http's goroutine every socket grew its stack twice or three times, each time copying it (12% of a
// hub's CPU in a connect burst, BENCHMARKS.md issue 11). The stage's goroutines keep the stack they grew
// from one setup to the next. They are started when a setup finds none idle, at most Config.MaxSetups
// of them (one per place); those idle through a second without a setup end (releaseLoop).
func (h *Hub) inStage(f func()) {
	done := make(chan any, 1)
	job := func() {
		defer func() { done <- recover() }()
		f()
	}
	select {
	case h.stage.jobs <- job: // an idle goroutine of the stage takes it
	default:
		if !h.startStageWorker(job) {
			select {
			case h.stage.jobs <- job: // every goroutine the stage may have exists: the next free one
			case <-h.stop:
				job() // the hub is stopping: here
			}
		}
	}
	if p := <-done; p != nil {
		panic(p)
	}
}

// stagePool is the setup stage's goroutines.
type stagePool struct {
	jobs chan func()

	mu      sync.Mutex
	n       int  // goroutines started
	stopped bool // no more are started (Shutdown)
}

// startStageWorker starts a goroutine of the stage with job, unless the stage has all it may have or the
// hub is stopping.
func (h *Hub) startStageWorker(job func()) bool {
	h.stage.mu.Lock()
	defer h.stage.mu.Unlock()
	if h.stage.stopped || h.stage.n >= h.cfg.MaxSetups {
		return false
	}
	h.stage.n++
	h.m.stageWorkers.Inc()
	h.bg.Add(1)
	go h.stageWorker(job)
	return true
}

func (h *Hub) stageWorker(job func()) {
	defer h.bg.Done()
	defer h.m.stageWorkers.Dec()
	for job != nil { // nil: idle through a quiet second, it ends (endIdleStageWorkers)
		job()
		select {
		case job = <-h.stage.jobs:
		case <-h.stop:
			return
		}
	}
}

// endIdleStageWorkers ends the goroutines of the stage that wait for a setup.
func (h *Hub) endIdleStageWorkers() {
	h.stage.mu.Lock()
	defer h.stage.mu.Unlock()
	for {
		select {
		case h.stage.jobs <- nil:
			h.stage.n--
		default:
			return
		}
	}
}

// releaseLoop keeps the hub's memory near what its sockets need, and its collections away from
// fan-outs; after a second without a setup it ends the setup stage's idle goroutines. (During a connect
// burst admit raises GOGC to Config.BurstGCPercent; the first quiet second after it restores the
// process's own setting.) Once a second it checks two things:
//
//   - a connect burst is over (no setup for a second after at least Config.ReleaseAfter of them): the
//     buffers, tokens and queries of thousands of setups would otherwise stay in the RSS until the heap
//     grows into them, so the memory a hub holds for its sockets would depend on how fast they came. It
//     collects and returns the free memory to the operating system (debug.FreeOSMemory).
//   - the heap has grown by Config.GCGrowth of its live size since the last collection, and no event was
//     fanned out for a second: it collects now (runtime.GC), at a quiet moment, instead of letting the
//     garbage of idle sockets (coder/websocket allocates on every pong) pile up to GOGC's goal, where a
//     collection would come in the middle of some fan-out and the RSS would hold the garbage until then.
//     (A hub's goroutine stacks count in GOGC's goal: at 20,000 sockets the goal is over twice the live
//     heap.) GOGC stays the backstop for a hub that is never quiet.
func (h *Hub) releaseLoop() {
	defer h.bg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	samples := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	var released, prev uint64
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		n := h.setupsDone.Load()
		quiet := h.cfg.Now().UnixNano()-h.lastFanOut.Load() > int64(time.Second)
		burstOver := n == prev && len(h.setups) == 0
		if burstOver {
			h.endIdleStageWorkers()
		}
		if burstOver && h.burst.Load() {
			debug.SetGCPercent(int(h.gcPercent.Load())) // before the collection below sets the next goal
			h.burst.Store(false)
		}
		switch {
		case h.cfg.ReleaseAfter > 0 && burstOver && n-released >= uint64(h.cfg.ReleaseAfter):
			start := h.cfg.Now()
			debug.FreeOSMemory()
			h.m.collections.WithLabelValues("burst").Inc()
			h.log.Debug("hub: connect burst over, memory returned", "setups", n-released,
				"duration_ms", h.cfg.Now().Sub(start).Milliseconds())
			released = n
		case h.cfg.GCGrowth > 0 && quiet && len(h.setups) == 0:
			rtmetrics.Read(samples)
			live, objects := samples[0].Value.Uint64(), samples[1].Value.Uint64()
			if live > 0 && float64(objects-min(objects, live)) >= h.cfg.GCGrowth*float64(live) {
				runtime.GC()
				h.m.collections.WithLabelValues("quiet").Inc()
			}
		}
		prev = n
	}
}

// flushGroup coalesces Bus.Flush calls: a caller joins the next flush, which starts once the running one
// (if any) is done, so it confirms everything the caller subscribed before joining. At most one flush is
// in flight.
type flushGroup struct {
	bus     Bus
	timeout time.Duration
	m       *metrics
	gen     *atomic.Uint64 // generation of the last subscription sent (interest.gen)

	confirmed  atomic.Uint64 // every subscription up to this generation is in force at the server
	reconnects atomic.Uint64 // the bus's reconnect count when confirmed was set

	mu      sync.Mutex
	running bool
	next    *flushCall
	wg      sync.WaitGroup // the loop, while it runs
}

type flushCall struct {
	done chan struct{}
	err  error
	n    int
}

// reconnecter is a Bus that counts its reconnections (fanout/jetstream.Subscriber): after one, nothing
// confirmed before counts.
type reconnecter interface{ Reconnects() uint64 }

func (g *flushGroup) busReconnects() uint64 {
	if r, ok := g.bus.(reconnecter); ok {
		return r.Reconnects()
	}
	return 0
}

// confirm returns once every subscription up to generation need is in force at the server: at once
// when a flush since confirmed it, else after the next flush.
func (g *flushGroup) confirm(ctx context.Context, need uint64) error {
	if need <= g.confirmed.Load() && g.reconnects.Load() == g.busReconnects() {
		g.m.confirmSkipped.Inc()
		return nil
	}
	return g.flush(ctx)
}

// flush returns after a Bus.Flush that started after the call.
func (g *flushGroup) flush(ctx context.Context) error {
	g.mu.Lock()
	if g.next == nil {
		g.next = &flushCall{done: make(chan struct{})}
	}
	call := g.next
	call.n++
	if !g.running {
		g.running = true
		g.wg.Add(1)
		go g.loop()
	}
	g.mu.Unlock()
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return fmt.Errorf("hub: confirm subscriptions: %w", ctx.Err())
	}
}

func (g *flushGroup) loop() {
	defer g.wg.Done()
	for {
		g.mu.Lock()
		call := g.next
		g.next = nil
		if call == nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		gen, reconnects := g.gen.Load(), g.busReconnects()
		ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
		call.err = g.bus.Flush(ctx)
		cancel()
		if call.err == nil {
			g.reconnects.Store(reconnects)
			if gen > g.confirmed.Load() {
				g.confirmed.Store(gen) // only this goroutine writes it
			}
		}
		g.m.flushes.Inc()
		g.m.flushWaiters.Observe(float64(call.n))
		close(call.done)
	}
}

// loader reads the follow lists of users in batches (Config.SetupLoaders goroutines).
func (h *Hub) loader() {
	defer h.bg.Done()
	batch := make([]*user, 0, h.cfg.SetupBatch)
	for {
		select {
		case u := <-h.loads:
			batch = append(batch[:0], u)
		case <-h.stop:
			return
		}
	more:
		for len(batch) < h.cfg.SetupBatch {
			select {
			case u := <-h.loads:
				batch = append(batch, u)
			default:
				break more
			}
		}
		h.m.loadsWaiting.Sub(float64(len(batch)))
		h.loadBatch(batch)
		clear(batch)
	}
}

// loadBatch confirms the users' own subjects, reads their follow lists in one call, then indexes each
// user under its creators and subscribes to them.
func (h *Hub) loadBatch(batch []*user) {
	t0 := h.cfg.Now()
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SetupTimeout)
	defer cancel()
	ids := make([]int64, len(batch))
	var need uint64
	for i, u := range batch {
		ids[i] = u.id
		need = max(need, u.ownGen)
	}
	h.m.loadBatch.Observe(float64(len(batch)))
	err := h.flushes.confirm(ctx, need)
	var lists map[int64][]int64
	if err == nil {
		lists, err = h.d.Follows.FollowLists(ctx, ids)
		if err != nil {
			err = fmt.Errorf("hub: follow lists of %d users: %w", len(ids), err)
		}
	}
	for _, u := range batch {
		h.finishLoad(u, lists[u.id], err)
	}
	d := h.cfg.Now().Sub(t0).Seconds()
	for range batch {
		h.m.setup[stageFollows].Observe(d)
	}
}

// finishLoad indexes u under the creators it follows, applying the follow changes that arrived while its
// list was read, in their order, and ends the load.
func (h *Hub) finishLoad(u *user, list []int64, err error) {
	s := h.reg.usersShard(u.id)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() { close(u.loaded); u.loaded = nil }()
	u.loading = false
	if err != nil {
		u.loadErr = err
		u.pending = nil
		return
	}
	follows := slices.Clone(list)
	slices.Sort(follows)
	follows = slices.Compact(follows)
	for _, ch := range u.pending {
		i, has := slices.BinarySearch(follows, ch.creatorID)
		switch {
		case ch.following && !has:
			follows = slices.Insert(follows, i, ch.creatorID)
		case !ch.following && has:
			follows = slices.Delete(follows, i, i+1)
		}
	}
	u.pending = nil
	u.follows = follows
	if u.gone {
		return
	}
	for _, id := range u.follows {
		h.reg.indexFollower(id, u)
		gen, err := h.interest.acquire(fanout.CreatorSubject(id))
		if err != nil {
			h.log.Warn("hub: subscribe", "subject", fanout.CreatorSubject(id), "err", err)
		}
		u.gen = max(u.gen, gen)
	}
}
