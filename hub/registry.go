package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/livedrops/livedrops/fanout"
)

// Lock order, outermost first: users shard, creators shard, drops shard, interest shard. The fan-out
// path takes only creators and drops shards (read locks) and reads a user's sockets without a lock.

// user is everything the hub knows about one user with at least one socket here.
type user struct {
	id    int64
	conns atomic.Pointer[[]*conn] // copy on write, under the users shard lock

	// Under the users shard lock.
	n       int     // sockets
	follows []int64 // creator ids, sorted (a slice: most users follow few creators)
	loading bool    // follows are being loaded; follow changes wait in pending
	pending []followChange
	loaded  chan struct{} // closed when loading ends, then dropped (nil)
	loadErr error
	ownGen  uint64 // subscription generation of the user's own subject
	gen     uint64 // highest subscription generation of the user's subjects
	gone    bool   // removed from the registry
}

type followChange struct {
	creatorID int64
	following bool
}

// userSet is a set that iterates as fast as a slice.
type userSet struct {
	list []*user
	idx  map[*user]int
}

func (s *userSet) add(u *user) {
	if _, ok := s.idx[u]; ok {
		return
	}
	s.idx[u] = len(s.list)
	s.list = append(s.list, u)
}

func (s *userSet) remove(u *user) {
	i, ok := s.idx[u]
	if !ok {
		return
	}
	last := len(s.list) - 1
	s.list[i] = s.list[last]
	s.idx[s.list[i]] = i
	s.list[last] = nil
	s.list = s.list[:last]
	delete(s.idx, u)
}

type usersShard struct {
	mu sync.Mutex
	m  map[int64]*user
}

type creatorsShard struct {
	mu sync.RWMutex
	m  map[int64]*userSet
}

type dropsShard struct {
	mu sync.RWMutex
	m  map[int64]map[*conn]struct{}
}

type connsShard struct {
	mu sync.Mutex
	m  map[*conn]struct{}
}

// registry indexes the local users and sockets.
type registry struct {
	users    []usersShard
	creators []creatorsShard
	drops    []dropsShard
	conns    []connsShard
}

func newRegistry(n int) *registry {
	r := &registry{users: make([]usersShard, n), creators: make([]creatorsShard, n),
		drops: make([]dropsShard, n), conns: make([]connsShard, n)}
	for i := range n {
		r.users[i].m = map[int64]*user{}
		r.creators[i].m = map[int64]*userSet{}
		r.drops[i].m = map[int64]map[*conn]struct{}{}
		r.conns[i].m = map[*conn]struct{}{}
	}
	return r
}

func shardOf(id int64, n int) int { return int(uint64(id) % uint64(n)) }

func (r *registry) usersShard(id int64) *usersShard { return &r.users[shardOf(id, len(r.users))] }
func (r *registry) creatorsShard(id int64) *creatorsShard {
	return &r.creators[shardOf(id, len(r.creators))]
}
func (r *registry) dropsShard(id int64) *dropsShard { return &r.drops[shardOf(id, len(r.drops))] }
func (r *registry) connsShard(c *conn) *connsShard {
	return &r.conns[int(c.seq%uint64(len(r.conns)))]
}

// indexFollower and unindexFollower change the creators index; the caller holds u's users shard lock.
func (r *registry) indexFollower(creatorID int64, u *user) {
	s := r.creatorsShard(creatorID)
	s.mu.Lock()
	set := s.m[creatorID]
	if set == nil {
		set = &userSet{idx: map[*user]int{}}
		s.m[creatorID] = set
	}
	set.add(u)
	s.mu.Unlock()
}

func (r *registry) unindexFollower(creatorID int64, u *user) {
	s := r.creatorsShard(creatorID)
	s.mu.Lock()
	if set := s.m[creatorID]; set != nil {
		set.remove(u)
		if len(set.list) == 0 {
			delete(s.m, creatorID)
		}
	}
	s.mu.Unlock()
}

// collect appends c to out unless this event already reached it (an event about a drop goes to the
// creator's followers and the drop's watchers, each socket once).
func collect(out []*conn, c *conn, ev uint64) []*conn {
	if c.stamp.Swap(ev) == ev {
		return out
	}
	return append(out, c)
}

// followerConns appends the sockets of the local followers of creatorID.
func (r *registry) followerConns(creatorID int64, ev uint64, out []*conn) []*conn {
	s := r.creatorsShard(creatorID)
	s.mu.RLock()
	defer s.mu.RUnlock()
	set := s.m[creatorID]
	if set == nil {
		return out
	}
	if out == nil {
		out = make([]*conn, 0, len(set.list)+8)
	}
	for _, u := range set.list {
		if cs := u.conns.Load(); cs != nil {
			for _, c := range *cs {
				out = collect(out, c, ev)
			}
		}
	}
	return out
}

// watcherConns appends the sockets watching dropID.
func (r *registry) watcherConns(dropID int64, ev uint64, out []*conn) []*conn {
	s := r.dropsShard(dropID)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for c := range s.m[dropID] {
		out = collect(out, c, ev)
	}
	return out
}

// userConns appends the sockets of userID.
func (r *registry) userConns(userID int64, ev uint64, out []*conn) []*conn {
	s := r.usersShard(userID)
	s.mu.Lock()
	u := s.m[userID]
	s.mu.Unlock()
	if u == nil {
		return out
	}
	if cs := u.conns.Load(); cs != nil {
		for _, c := range *cs {
			out = collect(out, c, ev)
		}
	}
	return out
}

func (r *registry) addWatcher(dropID int64, c *conn) {
	s := r.dropsShard(dropID)
	s.mu.Lock()
	set := s.m[dropID]
	if set == nil {
		set = map[*conn]struct{}{}
		s.m[dropID] = set
	}
	set[c] = struct{}{}
	s.mu.Unlock()
}

func (r *registry) removeWatcher(dropID int64, c *conn) {
	s := r.dropsShard(dropID)
	s.mu.Lock()
	if set := s.m[dropID]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(s.m, dropID)
		}
	}
	s.mu.Unlock()
}

func (r *registry) addConn(c *conn) {
	s := r.connsShard(c)
	s.mu.Lock()
	s.m[c] = struct{}{}
	s.mu.Unlock()
}

func (r *registry) removeConn(c *conn) {
	s := r.connsShard(c)
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

// allConns is a snapshot of every socket.
func (r *registry) allConns() []*conn {
	var out []*conn
	for i := range r.conns {
		s := &r.conns[i]
		s.mu.Lock()
		for c := range s.m {
			out = append(out, c)
		}
		s.mu.Unlock()
	}
	return out
}

// shardConns appends the sockets of conns shard i.
func (r *registry) shardConns(i int, out []*conn) []*conn {
	s := &r.conns[i]
	s.mu.Lock()
	for c := range s.m {
		out = append(out, c)
	}
	s.mu.Unlock()
	return out
}

// userIDs is a snapshot of the local users.
func (r *registry) userIDs() []int64 {
	var out []int64
	for i := range r.users {
		s := &r.users[i]
		s.mu.Lock()
		for id := range s.m {
			out = append(out, id)
		}
		s.mu.Unlock()
	}
	return out
}

// errOverCap: the user holds Config.MaxSocketsPerUser sockets already.
var errOverCap = errors.New("hub: too many sockets for this user")

// join adds c to its user's sockets, loading the user's follows when c is the user's first socket here,
// and subscribes to the user's and the followed creators' subjects. c receives events from then on (in
// its queue, since it is still being set up).
func (h *Hub) join(ctx context.Context, c *conn) error {
	s := h.reg.usersShard(c.userID)
	s.mu.Lock()
	u := s.m[c.userID]
	first := u == nil
	if first {
		u = &user{id: c.userID, loading: true, loaded: make(chan struct{})}
		gen, err := h.interest.acquire(fanout.UserSubject(c.userID))
		if err != nil {
			s.mu.Unlock()
			return err
		}
		u.ownGen, u.gen = gen, gen
		s.m[c.userID] = u
	} else if u.n >= h.cfg.MaxSocketsPerUser {
		s.mu.Unlock()
		return errOverCap
	}
	u.n++
	c.u = u
	conns := []*conn{c}
	if old := u.conns.Load(); old != nil {
		conns = append(slices.Clone(*old), c)
	}
	u.conns.Store(&conns)
	loaded := u.loaded // nil once the load is over
	s.mu.Unlock()
	h.reg.addConn(c)
	if first {
		h.presence.online(c.userID)
		h.m.loadsWaiting.Inc()
		select {
		case h.loads <- u:
		case <-ctx.Done():
			h.m.loadsWaiting.Dec()
			h.finishLoad(u, nil, fmt.Errorf("hub: follow list: %w", ctx.Err()))
		}
	}
	if loaded != nil {
		select {
		case <-loaded:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	err := u.loadErr
	s.mu.Unlock()
	return err
}

// applyFollow applies a follow.changed event to the open sockets of its user: the creator's subject is
// added or removed at once. For a new follow it returns the generation of the creator's subscription
// (to confirm before the user hears of the change), else 0.
func (h *Hub) applyFollow(userID, creatorID int64, following bool) (gen uint64) {
	s := h.reg.usersShard(userID)
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.m[userID]
	if u == nil {
		return 0
	}
	if u.loading {
		u.pending = append(u.pending, followChange{creatorID, following})
		return 0
	}
	if u.loadErr != nil {
		return 0
	}
	i, has := slices.BinarySearch(u.follows, creatorID)
	switch {
	case following && !has:
		u.follows = slices.Insert(u.follows, i, creatorID)
		h.reg.indexFollower(creatorID, u)
		gen, err := h.interest.acquire(fanout.CreatorSubject(creatorID))
		if err != nil {
			h.log.Warn("hub: subscribe", "subject", fanout.CreatorSubject(creatorID), "err", err)
		}
		u.gen = max(u.gen, gen)
		return gen
	case !following && has:
		u.follows = slices.Delete(u.follows, i, i+1)
		h.reg.unindexFollower(creatorID, u)
		h.interest.release(fanout.CreatorSubject(creatorID))
	}
	return 0
}

// leave removes c from its user; the last socket of a user takes the user's interest with it.
func (h *Hub) leave(c *conn) {
	u := c.u
	if u == nil {
		return
	}
	h.reg.removeConn(c)
	s := h.reg.usersShard(u.id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := u.conns.Load(); old != nil {
		conns := slices.DeleteFunc(slices.Clone(*old), func(x *conn) bool { return x == c })
		u.conns.Store(&conns)
	}
	u.n--
	if u.n > 0 {
		return
	}
	u.gone = true
	delete(s.m, u.id)
	for _, id := range u.follows {
		h.reg.unindexFollower(id, u)
		h.interest.release(fanout.CreatorSubject(id))
	}
	u.follows = nil
	h.interest.release(fanout.UserSubject(u.id))
	h.presence.offline(u.id)
}

// subjectsOf lists the subjects c hears: its user's, its followed creators', and for each watched drop
// the drop's and its creator's. drops are the drop subjects (stock ticks, of which only the newest
// counts).
func (h *Hub) subjectsOf(c *conn) (subjects, drops []string) {
	s := h.reg.usersShard(c.userID)
	s.mu.Lock()
	seen := map[int64]bool{}
	subjects = append(subjects, fanout.UserSubject(c.userID))
	for _, id := range c.u.follows {
		seen[id] = true
		subjects = append(subjects, fanout.CreatorSubject(id))
	}
	s.mu.Unlock()
	c.imu.Lock()
	for drop, creator := range c.watches {
		drops = append(drops, fanout.DropSubject(drop))
		if !seen[creator] {
			seen[creator] = true
			subjects = append(subjects, fanout.CreatorSubject(creator))
		}
	}
	c.imu.Unlock()
	slices.Sort(subjects)
	slices.Sort(drops)
	return subjects, drops
}
