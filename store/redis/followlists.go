package redis

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
)

// FollowSource reads whole follow lists of many users at once (store/postgres.Hub).
type FollowSource interface {
	FollowLists(ctx context.Context, userIDs []int64) (map[int64][]int64, error)
}

// FollowListsConfig configures FollowLists. Zero values are the documented defaults.
type FollowListsConfig struct {
	// Prefix starts every key; it must be the prefix of the Cache whose follows invalidate the lists.
	// Default "ld:".
	Prefix string
	// TTL is the lifetime of a cached list. Lists are invalidated when they change (a new version), so
	// the TTL only bounds how long a list can trail a change whose invalidation never ran (the API
	// process died between the commit and the invalidation, and the relay's one failed too). Default 10m,
	// at most 1h (a version lives followingVersionTTL, far longer than any list under it).
	TTL time.Duration
	// PageSize is the most creator ids one key holds; a longer list takes several keys. Default 1000.
	PageSize int
	// OpTimeout bounds each round trip to Redis; past it the lists come from the source. Default 250ms.
	OpTimeout time.Duration
	// Logger receives Redis failures at Debug (they are counted in the metrics); nil discards them.
	Logger *slog.Logger
}

// FollowLists caches the lists of creators users follow, for the hub: a reconnect storm or a crowd
// arriving before a drop reads Redis, not PostgreSQL. It implements hub.Follows.
//
// Keys: <prefix>following:<user>:v holds the list's version (a random number, absent = "0"), and
// <prefix>following:<user>:<version>:<page> holds page 0, 1, ... of the list as a JSON array of at most
// PageSize ids (a full page means another follows). Invalidate sets a new version, so a list read before a
// change and stored after it sits under a version nobody asks for again; versions are random, so an
// expired version key can never bring an old list back. Every command touches one key (pipelined), so it
// works on a Redis Cluster as on one server. Who invalidates: the API after it commits a follow or unfollow
// (Cache.Follows), and the relay before it publishes the follow.changed event (so a change is never
// published before its list is invalidated).
type FollowLists struct {
	rdb      goredis.UniversalClient
	src      FollowSource
	cfg      FollowListsConfig
	requests *prometheus.CounterVec
	failures *prometheus.CounterVec
}

// NewFollowLists returns the cache of src's lists on rdb and registers its metrics on reg (the
// livedrops_cache_* series, cache="following"). With a nil src it only invalidates (the relay's use).
func NewFollowLists(rdb goredis.UniversalClient, src FollowSource, cfg FollowListsConfig, reg prometheus.Registerer) (*FollowLists, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "ld:"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 10 * time.Minute
	}
	cfg.TTL = min(cfg.TTL, time.Hour)
	if cfg.PageSize <= 0 {
		cfg.PageSize = 1000
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &FollowLists{rdb: rdb, src: src, cfg: cfg}
	var err error
	if f.requests, err = registerCounter(reg, prometheus.CounterOpts{
		Namespace: "livedrops", Subsystem: "cache", Name: "requests_total",
		Help: "Cache reads, by cache and result (hit, miss, error: Redis failed and the database answered).",
	}, "cache", "result"); err != nil {
		return nil, err
	}
	if f.failures, err = registerCounter(reg, prometheus.CounterOpts{
		Namespace: "livedrops", Subsystem: "cache", Name: "write_errors_total",
		Help: "Cache fills and invalidations that Redis refused, by cache.",
	}, "cache"); err != nil {
		return nil, err
	}
	return f, nil
}

const cacheFollowing = "following"

// followingVersionKey is the key of a user's list version.
func followingVersionKey(prefix string, userID int64) string {
	return prefix + "following:" + strconv.FormatInt(userID, 10) + ":v"
}

// followingVersionTTL is how long a list version outlives its last change: far longer than any page
// under it, so a version key that expires (and reads "0" again) finds no page of its time.
const followingVersionTTL = 24 * time.Hour

func (f *FollowLists) pageKey(userID int64, version string, page int) string {
	return f.cfg.Prefix + "following:" + strconv.FormatInt(userID, 10) + ":" + version + ":" + strconv.Itoa(page)
}

// FollowLists returns every creator id each of userIDs follows (users who follow nobody map to an empty
// or missing list): from Redis where cached, the rest from the source in one call, which then fills
// Redis. When Redis fails, everything comes from the source.
func (f *FollowLists) FollowLists(ctx context.Context, userIDs []int64) (map[int64][]int64, error) {
	if len(userIDs) == 0 {
		return map[int64][]int64{}, nil
	}
	versions, err := f.versions(ctx, userIDs)
	if err != nil {
		f.cfg.Logger.DebugContext(ctx, "follow lists: redis versions failed", "err", err)
		f.requests.WithLabelValues(cacheFollowing, "error").Add(float64(len(userIDs)))
		return f.src.FollowLists(ctx, userIDs)
	}
	out, misses, err := f.read(ctx, userIDs, versions)
	if err != nil {
		f.cfg.Logger.DebugContext(ctx, "follow lists: redis read failed", "err", err)
		f.requests.WithLabelValues(cacheFollowing, "error").Add(float64(len(userIDs)))
		return f.src.FollowLists(ctx, userIDs)
	}
	f.requests.WithLabelValues(cacheFollowing, "hit").Add(float64(len(userIDs) - len(misses)))
	if len(misses) == 0 {
		return out, nil
	}
	f.requests.WithLabelValues(cacheFollowing, "miss").Add(float64(len(misses)))
	loaded, err := f.src.FollowLists(ctx, misses)
	if err != nil {
		return nil, err
	}
	for _, u := range misses {
		out[u] = loaded[u]
	}
	version := make(map[int64]string, len(userIDs))
	for i, u := range userIDs {
		version[u] = versions[i]
	}
	f.fill(ctx, misses, version, loaded)
	return out, nil
}

// versions reads the list versions of users, "0" where none was set.
func (f *FollowLists) versions(ctx context.Context, users []int64) ([]string, error) {
	opCtx, cancel := context.WithTimeout(ctx, f.cfg.OpTimeout)
	defer cancel()
	pipe := f.rdb.Pipeline()
	cmds := make([]*goredis.StringCmd, len(users))
	for i, u := range users {
		cmds[i] = pipe.Get(opCtx, followingVersionKey(f.cfg.Prefix, u))
	}
	if _, err := pipe.Exec(opCtx); err != nil && !errors.Is(err, goredis.Nil) {
		return nil, err
	}
	out := make([]string, len(users))
	for i, c := range cmds {
		v, err := c.Result()
		switch {
		case errors.Is(err, goredis.Nil):
			out[i] = "0"
		case err != nil:
			return nil, err
		default:
			out[i] = v
		}
	}
	return out, nil
}

// read gets the cached lists, page after page for long ones; misses are the users whose list is not
// (wholly) cached.
func (f *FollowLists) read(ctx context.Context, users []int64, versions []string) (map[int64][]int64, []int64, error) {
	out := make(map[int64][]int64, len(users))
	var misses []int64
	todo := make([]int, len(users)) // indexes into users still reading
	for i := range users {
		todo[i] = i
	}
	for page := 0; len(todo) > 0; page++ {
		opCtx, cancel := context.WithTimeout(ctx, f.cfg.OpTimeout)
		pipe := f.rdb.Pipeline()
		cmds := make([]*goredis.StringCmd, len(todo))
		for j, i := range todo {
			cmds[j] = pipe.Get(opCtx, f.pageKey(users[i], versions[i], page))
		}
		_, err := pipe.Exec(opCtx)
		cancel()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return nil, nil, err
		}
		next := todo[:0]
		for j, i := range todo {
			u := users[i]
			b, err := cmds[j].Bytes()
			if errors.Is(err, goredis.Nil) {
				delete(out, u)
				misses = append(misses, u)
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			ids, ok := parsePage(b)
			if !ok {
				// A value this version cannot read: load it again (and overwrite it).
				delete(out, u)
				misses = append(misses, u)
				continue
			}
			out[u] = append(out[u], ids...)
			if len(ids) == f.cfg.PageSize {
				next = append(next, i)
			}
		}
		todo = next
	}
	return out, misses, nil
}

// parsePage reads a cached page of followed creator ids, a JSON array of integers as fill writes it;
// ok is false for anything else (an empty value, another type, a malformed or out-of-range number).
func parsePage(b []byte) (ids []int64, ok bool) {
	if len(b) == 0 || b[0] != '[' || json.Unmarshal(b, &ids) != nil {
		return nil, false
	}
	return ids, true
}

// fill stores the lists loaded for users under the versions read before the load.
func (f *FollowLists) fill(ctx context.Context, users []int64, version map[int64]string, lists map[int64][]int64) {
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.cfg.OpTimeout)
	defer cancel()
	pipe := f.rdb.Pipeline()
	for _, u := range users {
		list := lists[u]
		for page := 0; ; page++ {
			n := min(len(list), f.cfg.PageSize)
			b, _ := json.Marshal(list[:n])
			if n == 0 {
				b = []byte("[]")
			}
			pipe.Set(opCtx, f.pageKey(u, version[u], page), b, f.cfg.TTL)
			list = list[n:]
			if n < f.cfg.PageSize {
				break
			}
		}
	}
	if _, err := pipe.Exec(opCtx); err != nil {
		f.cfg.Logger.DebugContext(ctx, "follow lists: redis fill failed", "err", err)
		f.failures.WithLabelValues(cacheFollowing).Inc()
	}
}

// Invalidate gives the lists of userIDs a new version: the next read loads them from the source.
func (f *FollowLists) Invalidate(ctx context.Context, userIDs ...int64) error {
	return invalidateFollowing(ctx, f.rdb, f.cfg.Prefix, f.failures, userIDs...)
}

func invalidateFollowing(ctx context.Context, rdb goredis.UniversalClient, prefix string,
	failures *prometheus.CounterVec, userIDs ...int64) error {
	if len(userIDs) == 0 {
		return nil
	}
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	pipe := rdb.Pipeline()
	var b [8]byte
	for _, u := range userIDs {
		_, _ = rand.Read(b[:])
		pipe.Set(opCtx, followingVersionKey(prefix, u), strconv.FormatUint(binary.LittleEndian.Uint64(b[:])|1, 36), followingVersionTTL)
	}
	if _, err := pipe.Exec(opCtx); err != nil {
		failures.WithLabelValues(cacheFollowing).Inc()
		return fmt.Errorf("cache: invalidate follow lists: %w", err)
	}
	return nil
}
