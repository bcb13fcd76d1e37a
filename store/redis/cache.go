package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// CacheConfig configures a Cache. Zero values are the documented defaults.
type CacheConfig struct {
	// Prefix starts every key, so tests and deployments can share a Redis; "" means "ld:".
	Prefix string
	// DropTTL bounds how long a cached drop (and its stock_count) may trail the database in Redis;
	// 0 means 750 ms (with LocalTTL: at most 1 s).
	// Orders call InvalidateDrop after they commit, so the bound matters only for a read that
	// raced a write.
	DropTTL time.Duration
	// CreatorTTL bounds how long a creator profile (and its follower_count) may trail the database
	// after a racing follow; 0 means 2 s.
	CreatorTTL time.Duration
	// ProductTTL is the lifetime of a cached product, which never changes once created; 0 means 10 min.
	ProductTTL time.Duration
	// PageTTL is the lifetime of a cached page of products or followers; 0 means 30 s. Pages live under
	// a version that every change bumps, so a change is visible at once whatever the TTL.
	PageTTL time.Duration
	// LocalTTL is how long a process keeps what it read from Redis (or loaded) in its own memory, so a
	// hot key costs no round trip; it adds to every staleness bound for changes made through another
	// process (this process's own changes clear its copy at once). 0 means 250 ms; negative turns the
	// in-process tier off.
	LocalTTL time.Duration
	// LocalEntries bounds the in-process tier; 0 means 100,000 entries.
	LocalEntries int
	// OpTimeout bounds each Redis call; past it the read falls back to the database. 0 means 100 ms.
	OpTimeout time.Duration
	// Logger receives Redis failures at Debug (they are counted in the metrics); nil discards them.
	Logger *slog.Logger
}

func (c CacheConfig) withDefaults() CacheConfig {
	if c.Prefix == "" {
		c.Prefix = "ld:"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DropTTL, 750*time.Millisecond)
	def(&c.CreatorTTL, 2*time.Second)
	def(&c.ProductTTL, 10*time.Minute)
	def(&c.PageTTL, 30*time.Second)
	def(&c.OpTimeout, 100*time.Millisecond)
	if c.LocalTTL == 0 {
		c.LocalTTL = 250 * time.Millisecond
	}
	if c.LocalEntries <= 0 {
		c.LocalEntries = 100_000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Cache is a read-through Redis cache in front of the PostgreSQL stores: drops (with their stock, for
// DropTTL), products (written through at creation), pages of products, creator profiles and pages of
// followers, one key per page so a celebrity's list spreads over a Redis Cluster.
//
// Two tiers: each process keeps what it read for LocalTTL in memory, so a hot key costs no round
// trip, and Redis keeps it for its cache's TTL, so processes share their loads.
//
// Redis is never the source of truth: every failure (Redis down, slow, a bad value) falls back to the
// store and is counted. A key that expires is rebuilt once per process (singleflight), not by every
// request that misses it. Writes go to the store first; the cache is invalidated after the commit.
// Pages are keyed by a version (per creator for followers, one for products) that each change bumps,
// so a page read before a change can never be served after it. Single objects are deleted after the
// commit; a read that raced the write can put the old value back for at most its TTL.
//
// Wrap the stores with Creators, Follows, Products and Drops; the results have the stores' method
// sets.
type Cache struct {
	rdb      goredis.UniversalClient
	cfg      CacheConfig
	local    *local // nil when LocalTTL < 0
	flight   singleflight.Group
	requests *prometheus.CounterVec
	failures *prometheus.CounterVec
}

// NewCache returns a cache on rdb and registers its metrics on reg:
//
//	livedrops_cache_requests_total{cache,result}  reads by cache (drop, product, products, creator,
//	                                              followers) and result (hit_local: in-process,
//	                                              hit: Redis, miss, error)
//	livedrops_cache_write_errors_total{cache}     fills and invalidations Redis refused
func NewCache(rdb goredis.UniversalClient, cfg CacheConfig, reg prometheus.Registerer) (*Cache, error) {
	c := &Cache{rdb: rdb, cfg: cfg.withDefaults()}
	if c.cfg.LocalTTL > 0 {
		c.local = newLocal(c.cfg.LocalTTL, c.cfg.LocalEntries)
	}
	var err error
	c.requests, err = registerCounter(reg, prometheus.CounterOpts{
		Namespace: "livedrops", Subsystem: "cache", Name: "requests_total",
		Help: "Cache reads, by cache and result (hit, miss, error: Redis failed and the database answered).",
	}, "cache", "result")
	if err != nil {
		return nil, err
	}
	c.failures, err = registerCounter(reg, prometheus.CounterOpts{
		Namespace: "livedrops", Subsystem: "cache", Name: "write_errors_total",
		Help: "Cache fills and invalidations that Redis refused, by cache.",
	}, "cache")
	if err != nil {
		return nil, err
	}
	// Every series exists at 0 from the start, so rules and dashboards see them before the first read.
	for _, cache := range []string{cacheDrop, cacheProduct, cacheProducts, cacheCreator, cacheFollowers} {
		for _, result := range []string{"hit_local", "hit", "miss", "error"} {
			c.requests.WithLabelValues(cache, result)
		}
		c.failures.WithLabelValues(cache)
	}
	return c, nil
}

// registerCounter registers a counter vector, or returns the one already registered under its name.
func registerCounter(reg prometheus.Registerer, opts prometheus.CounterOpts, labels ...string) (*prometheus.CounterVec, error) {
	cv := prometheus.NewCounterVec(opts, labels)
	if err := reg.Register(cv); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("redis: register %s: %w", opts.Name, err)
	}
	return cv, nil
}

// Cache names, the values of the cache label.
const (
	cacheDrop      = "drop"
	cacheProduct   = "product"
	cacheProducts  = "products"
	cacheCreator   = "creator"
	cacheFollowers = "followers"
)

func (c *Cache) key(parts ...string) string {
	n := len(c.cfg.Prefix)
	for _, p := range parts {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, c.cfg.Prefix...)
	for i, p := range parts {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, p...)
	}
	return string(b)
}

func id(n int64) string { return strconv.FormatInt(n, 10) }

func (c *Cache) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.OpTimeout)
}

// readThrough returns the value at key from the process, or from Redis, or loads it with load, stores
// it (in Redis for ttl) and returns it.
func readThrough[T any](ctx context.Context, c *Cache, cache, key string, ttl time.Duration, load func(context.Context) (T, error)) (T, error) {
	if v, ok := c.local.get(key); ok {
		if t, ok := v.(T); ok {
			c.requests.WithLabelValues(cache, "hit_local").Inc()
			return t, nil
		}
	}
	opCtx, cancel := c.opContext(ctx)
	b, err := c.rdb.Get(opCtx, key).Bytes()
	cancel()
	switch {
	case err == nil:
		var v T
		jerr := json.Unmarshal(b, &v)
		if jerr == nil {
			c.requests.WithLabelValues(cache, "hit").Inc()
			c.local.set(key, v)
			return v, nil
		}
		// A value this version cannot read: load and overwrite it.
		c.cfg.Logger.DebugContext(ctx, "cache: undecodable value", "key", key, "err", jerr)
		c.requests.WithLabelValues(cache, "error").Inc()
	case errors.Is(err, goredis.Nil):
		c.requests.WithLabelValues(cache, "miss").Inc()
	default:
		c.cfg.Logger.DebugContext(ctx, "cache: redis get failed", "key", key, "err", err)
		c.requests.WithLabelValues(cache, "error").Inc()
		// Redis is failing: read the database without trying to fill.
		return load(ctx)
	}
	v, err, _ := c.flight.Do(key, func() (any, error) {
		v, err := load(ctx)
		if err != nil {
			return v, err
		}
		c.set(ctx, cache, key, v, ttl)
		c.local.set(key, v)
		return v, nil
	})
	if err != nil && errors.Is(err, context.Canceled) && ctx.Err() == nil {
		// The request that led the flight went away; this one still wants the answer.
		return load(ctx)
	}
	out, _ := v.(T)
	return out, err
}

func (c *Cache) set(ctx context.Context, cache, key string, v any, ttl time.Duration) {
	b, err := json.Marshal(v)
	if err != nil {
		c.failures.WithLabelValues(cache).Inc()
		return
	}
	opCtx, cancel := c.opContext(context.WithoutCancel(ctx))
	defer cancel()
	if err := c.rdb.Set(opCtx, key, b, ttl).Err(); err != nil {
		c.cfg.Logger.DebugContext(ctx, "cache: redis set failed", "key", key, "err", err)
		c.failures.WithLabelValues(cache).Inc()
	}
}

func (c *Cache) del(ctx context.Context, cache string, keys ...string) error {
	opCtx, cancel := c.opContext(context.WithoutCancel(ctx))
	defer cancel()
	var errs []error
	for _, k := range keys { // one key at a time: keys of different slots in a Redis Cluster
		c.local.del(k)
		if err := c.rdb.Del(opCtx, k).Err(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.cfg.Logger.DebugContext(ctx, "cache: redis del failed", "keys", keys, "err", err)
		c.failures.WithLabelValues(cache).Inc()
		return fmt.Errorf("cache: invalidate %s: %w", cache, err)
	}
	return nil
}

// version reads a page version (0 when none was set yet); ok is false when Redis failed.
func (c *Cache) version(ctx context.Context, cache, key string) (v int64, ok bool) {
	if lv, ok := c.local.get(key); ok {
		return lv.(int64), true
	}
	opCtx, cancel := c.opContext(ctx)
	defer cancel()
	v, err := c.rdb.Get(opCtx, key).Int64()
	switch {
	case err == nil:
		c.local.set(key, v)
		return v, true
	case errors.Is(err, goredis.Nil):
		c.local.set(key, int64(0))
		return 0, true
	}
	c.cfg.Logger.DebugContext(ctx, "cache: redis version failed", "key", key, "err", err)
	c.requests.WithLabelValues(cache, "error").Inc()
	return 0, false
}

// bump moves a page version on, so every page cached under the old one is never read again (the old
// keys expire on their own: nothing deletes millions of keys).
func (c *Cache) bump(ctx context.Context, cache, key string) error {
	opCtx, cancel := c.opContext(context.WithoutCancel(ctx))
	defer cancel()
	v, err := c.rdb.Incr(opCtx, key).Result()
	if err != nil {
		c.local.del(key)
		c.cfg.Logger.DebugContext(ctx, "cache: redis incr failed", "key", key, "err", err)
		c.failures.WithLabelValues(cache).Inc()
		return fmt.Errorf("cache: invalidate %s: %w", cache, err)
	}
	c.local.set(key, v)
	return nil
}

// InvalidateDrop drops the cached drop id, so the next read sees the database. Call it after a
// commit that changes the drop (an order's stock, a status flip). An error means Redis refused: the
// cached value then lives out its DropTTL.
func (c *Cache) InvalidateDrop(ctx context.Context, dropID int64) error {
	return c.del(ctx, cacheDrop, c.key("drop", id(dropID)))
}

// InvalidateFollowing gives the follow lists of userIDs (FollowLists) a new version.
func (c *Cache) InvalidateFollowing(ctx context.Context, userIDs ...int64) error {
	return invalidateFollowing(ctx, c.rdb, c.cfg.Prefix, c.failures, userIDs...)
}

// InvalidateCreator drops the cached profile of creator id and moves its follower pages on.
func (c *Cache) InvalidateCreator(ctx context.Context, creatorID int64) error {
	return errors.Join(
		c.bump(ctx, cacheFollowers, c.key("followers", id(creatorID), "v")),
		c.del(ctx, cacheCreator, c.key("creator", id(creatorID))),
	)
}
