package redis

import (
	"hash/maphash"
	"sync"
	"time"
)

// local is the in-process tier of the cache: recently read values, kept for a short TTL so a hot key
// costs no Redis round trip at all. It is bounded: a full shard drops an eighth of its entries.
type local struct {
	seed   maphash.Seed
	ttl    time.Duration
	max    int // entries per shard
	shards [16]localShard
}

type localShard struct {
	mu sync.RWMutex
	m  map[string]localEntry
}

type localEntry struct {
	v       any
	expires int64 // unix nanoseconds
}

func newLocal(ttl time.Duration, maxEntries int) *local {
	l := &local{seed: maphash.MakeSeed(), ttl: ttl, max: max(1, maxEntries/16)}
	for i := range l.shards {
		l.shards[i].m = make(map[string]localEntry)
	}
	return l
}

func (l *local) shard(key string) *localShard {
	return &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
}

func (l *local) get(key string) (any, bool) {
	if l == nil {
		return nil, false
	}
	s := l.shard(key)
	s.mu.RLock()
	e, ok := s.m[key]
	s.mu.RUnlock()
	if !ok || time.Now().UnixNano() >= e.expires {
		return nil, false
	}
	return e.v, true
}

func (l *local) set(key string, v any) {
	if l == nil {
		return
	}
	s := l.shard(key)
	exp := time.Now().Add(l.ttl).UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= l.max {
		drop := max(1, len(s.m)/8)
		for k := range s.m { // map order is random enough for an eviction sample
			delete(s.m, k)
			if drop--; drop == 0 {
				break
			}
		}
	}
	s.m[key] = localEntry{v: v, expires: exp}
}

func (l *local) del(key string) {
	if l == nil {
		return
	}
	s := l.shard(key)
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}
