package hub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store"
)

// takeToken returns the bearer token of r, from the Authorization header or else the access_token query
// parameter, and removes the parameter from r.URL so that nothing downstream (an access log, a panic
// handler) can print it.
func takeToken(r *http.Request) string {
	q := r.URL.Query()
	token := q.Get("access_token")
	if q.Has("access_token") {
		q.Del("access_token")
		r.URL.RawQuery = q.Encode()
	}
	if scheme, t, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " "); ok &&
		strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(t) != "" {
		token = strings.TrimSpace(t)
	}
	return token
}

// matchOrigin reports whether a browser page of origin may connect to host: no Origin (not a browser),
// the same host, or a match of one of patterns.
func matchOrigin(origin, host string, patterns []string) (bool, error) {
	for _, p := range patterns {
		if _, err := path.Match(p, "x"); err != nil {
			return false, fmt.Errorf("pattern %q: %w", p, err)
		}
	}
	if origin == "" {
		return true, nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false, nil
	}
	if strings.EqualFold(u.Host, host) {
		return true, nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true, nil
		}
	}
	return false, nil
}

// connRequest is what a socket asks for in its URL.
type connRequest struct {
	resume  bool   // a resume position was given, valid or not
	since   string // the valid position, "" when malformed
	watches []int64
}

func (h *Hub) parseRequest(r *http.Request, lastEventID string) (connRequest, error) {
	var req connRequest
	q := r.URL.Query()
	raw, has := lastEventID, lastEventID != ""
	if !has && q.Has("since") {
		raw, has = q.Get("since"), true
	}
	if has {
		req.resume = true
		req.since, _ = ParseEventID(raw)
	}
	w, err := ParseDropList(q.Get("watch"), h.cfg.MaxWatches)
	req.watches = w
	return req, err
}

var errTooManyWatches = errors.New("hub: too many watched drops")

// dropCreator is the creator of dropID, cached (a drop never changes creator); that a drop does not
// exist is cached for Config.NotFoundTTL, and lookups of one drop at once share one query.
func (h *Hub) dropCreator(ctx context.Context, dropID int64) (int64, error) {
	if v, ok := h.dropCreators.Load(dropID); ok {
		h.m.dropLookups[lookupHit].Inc()
		return v.(int64), nil
	}
	if v, ok := h.dropMisses.Load(dropID); ok {
		if h.cfg.Now().UnixNano() < v.(int64) {
			h.m.dropLookups[lookupMissCached].Inc()
			return 0, fmt.Errorf("hub: drop %d: %w", dropID, store.ErrNotFound)
		}
		h.dropMisses.Delete(dropID)
	}
	v, err, _ := h.dropLookups.Do(strconv.FormatInt(dropID, 10), func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.SetupTimeout)
		defer cancel()
		creator, err := h.d.Drops.DropCreator(ctx, dropID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			h.m.dropLookups[lookupNotFound].Inc()
			if h.dropMissN.Add(1) > 100_000 {
				h.dropMisses.Clear()
				h.dropMissN.Store(0)
			}
			h.dropMisses.Store(dropID, h.cfg.Now().Add(h.cfg.NotFoundTTL).UnixNano())
			return int64(0), err
		case err != nil:
			h.m.dropLookups[lookupError].Inc()
			return int64(0), err
		}
		h.m.dropLookups[lookupFound].Inc()
		if h.dropCacheN.Add(1) > 100_000 {
			h.dropCreators.Clear()
			h.dropCacheN.Store(0)
		}
		h.dropCreators.Store(dropID, creator)
		return creator, nil
	})
	return v.(int64), err
}

// watch makes c receive dropID's stock ticks and lifecycle.
func (h *Hub) watch(ctx context.Context, c *conn, dropID int64) error {
	creator, err := h.dropCreator(ctx, dropID)
	if err != nil {
		return err
	}
	c.imu.Lock()
	defer c.imu.Unlock()
	if c.gone {
		return nil
	}
	if _, ok := c.watches[dropID]; ok {
		return nil
	}
	if len(c.watches) >= h.cfg.MaxWatches {
		return errTooManyWatches
	}
	g1, err := h.interest.acquire(fanout.DropSubject(dropID))
	if err != nil {
		return err
	}
	g2, err := h.interest.acquire(fanout.CreatorSubject(creator))
	if err != nil {
		h.interest.release(fanout.DropSubject(dropID))
		return err
	}
	c.gen = max(c.gen, g1, g2)
	if c.watches == nil {
		c.watches = map[int64]int64{}
	}
	c.watches[dropID] = creator
	h.reg.addWatcher(dropID, c)
	return nil
}

func (h *Hub) unwatch(c *conn, dropID int64) {
	c.imu.Lock()
	defer c.imu.Unlock()
	creator, ok := c.watches[dropID]
	if c.gone || !ok {
		return
	}
	delete(c.watches, dropID)
	h.reg.removeWatcher(dropID, c)
	h.interest.release(fanout.DropSubject(dropID))
	h.interest.release(fanout.CreatorSubject(creator))
}

// watchError is the error frame for a refused watch.
func watchError(err error, f ClientFrame) *frame {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return controlFrame(encodeError("not_found", fmt.Sprintf("no drop %d", f.DropID), f))
	case errors.Is(err, errTooManyWatches):
		return controlFrame(encodeError("limit_exceeded", "this socket watches the most drops allowed", f))
	default:
		return controlFrame(encodeError("unavailable", "try again later", f))
	}
}

// start finishes the setup of a joined socket: its watches, its resume, then the hello frame, what the
// resume replays and what arrived meanwhile; then the socket is live.
func (h *Hub) start(ctx context.Context, c *conn, req connRequest, t0 time.Time) {
	var early []*frame
	for _, d := range req.watches {
		if err := h.watch(ctx, c, d); err != nil {
			early = append(early, watchError(err, ClientFrame{Op: OpWatch, DropID: d}))
		}
	}
	// Every subscription of c is in force at the server before hello: the client receives every event
	// published after hello, and a resume reads the stream only after that point.
	// If that cannot be confirmed (NATS slow under a connect burst), the socket could miss what is
	// published meanwhile: it is told to reconnect (4002) instead of getting a hello that promises more.
	tf := h.cfg.Now()
	c.imu.Lock()
	need := c.gen
	c.imu.Unlock()
	s := h.reg.usersShard(c.userID)
	s.mu.Lock()
	need = max(need, c.u.gen)
	s.mu.Unlock()
	err := h.flushes.confirm(ctx, need)
	h.m.setup[stageConfirm].Observe(h.cfg.Now().Sub(tf).Seconds())
	if err != nil {
		h.log.Warn("hub: flush subscriptions", "conn_id", c.id, "err", err)
		if req.resume {
			h.m.resumes.WithLabelValues(resumeError).Inc()
		}
		c.closeWith(CloseServerError, "", reasonSetup, nil)
		return
	}
	recovered := false
	var replay []*frame
	if req.resume {
		recovered, replay = h.resume(ctx, c, req.since)
	}
	hello := controlFrame(encodeHello(c.id, h.cfg.Now(), h.cfg.ReplayWindow, req.resume, recovered))
	c.mu.Lock()
	q := make([]*frame, 0, 1+len(early)+len(replay)+len(c.queue))
	q = append(q, hello)
	q = append(q, early...)
	q = append(q, replay...)
	floor := c.floor.Load()
	for _, f := range c.queue {
		if f.seq > 0 && f.seq <= floor {
			h.m.queued.Dec() // a refilled event the replay covered (gap.go)
			continue
		}
		q = append(q, f)
	}
	c.extra = len(replay)
	if len(replay) > 0 {
		c.skip = make(map[string]struct{}, len(replay))
		for _, f := range replay {
			c.skip[f.id] = struct{}{}
		}
	}
	c.queue = q
	if c.expires != 0 && !c.closed {
		h.expiries.track(c) // closeWith marks c closed under c.mu before it untracks it
	}
	c.mu.Unlock()
	h.m.queued.Add(float64(1 + len(early) + len(replay)))
	h.m.setup[stageTotal].Observe(h.cfg.Now().Sub(t0).Seconds())
	c.run(nil)
}

// handleFrame acts on one client frame.
func (h *Hub) handleFrame(c *conn, f ClientFrame) {
	switch f.Op {
	case OpPing:
		c.offer(controlFrame(pongFrame))
	case OpWatch:
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SetupTimeout)
		defer cancel()
		if err := h.watch(ctx, c, f.DropID); err != nil {
			if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, errTooManyWatches) {
				h.log.Warn("hub: watch", "conn_id", c.id, "drop_id", f.DropID, "err", err)
			}
			c.offer(watchError(err, f))
			return
		}
		// The ack comes once the drop's subjects are in force at the server.
		c.imu.Lock()
		need := c.gen
		c.imu.Unlock()
		if err := h.flushes.confirm(ctx, need); err != nil {
			h.log.Warn("hub: flush subscriptions", "conn_id", c.id, "err", err)
		}
		c.offer(controlFrame(encodeWatching(f.DropID)))
	case OpUnwatch:
		h.unwatch(c, f.DropID)
	}
}

// counter is an atomic count with a bound, for caches.
type counter = atomic.Int64
