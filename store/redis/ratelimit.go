package redis

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
)

// LimiterConfig configures a Limiter: a token bucket of Burst that refills Rate per Period, per key
// (GCRA, github.com/go-redis/redis_rate), kept in Redis so every API process shares it.
type LimiterConfig struct {
	// Name labels the limiter's metrics and keys ("user", "ip"); required.
	Name string
	// Rate is the sustained requests per Period per key; required (> 0).
	Rate int
	// Period is the time Rate is counted over; 0 means one second.
	Period time.Duration
	// Burst is how many requests a key may make at once; 0 means 2 × Rate.
	Burst int
	// Prefix starts every key; "" means "ld:".
	Prefix string
	// OpTimeout bounds each Redis call; 0 means 500 ms. Past it the request is allowed. (A burst of
	// 2,000 new keys at once takes Redis 60 to 170 ms on two busy cores: at 100 ms a sale's first
	// second would fail open.)
	OpTimeout time.Duration

	// MaxLease is the most requests of one key a process takes from Redis in one call and then
	// spends locally (a lease); 0 means Burst/4, at most 32; 1 asks Redis for every request. A key
	// starts with a lease of at most 4 and doubles it each time it spends a whole one before it
	// expires, so only keys busy on this process lease more. The sustained rate of a key over all
	// processes stays Redis's; its burst may exceed Burst by what the processes hold leased and
	// unspent (at most MaxLease each).
	MaxLease int
	// LeaseTTL is how long a lease may be spent; what is left then is dropped (never given back:
	// the key's next lease is what it spent of this one). 0 means 2 s.
	LeaseTTL time.Duration
	// MaxKeys bounds the keys whose leases this process keeps; 0 means 100,000. Past it, expired
	// leases are dropped first, then any.
	MaxKeys int
	// Now is the clock of the leases; nil means time.Now.
	Now func() time.Time
}

// Limiter limits requests per key in Redis, the shared bound of every process. A key busy on this
// process takes its budget from Redis a lease at a time (LimiterConfig.MaxLease) and spends it
// locally, so a hot user costs one Redis call per lease instead of one per request; every request
// allowed was granted by Redis first, so the rate over all processes stays Redis's. A key Redis
// refused is refused locally until its Retry-After. When Redis cannot answer, it fails open: Allow
// returns the error (and the caller lets the request through), and the error is counted; the key
// then goes on failing open locally for the lease it asked for, so a Redis in trouble gets one call
// per lease, not one per request.
type Limiter struct {
	cfg       LimiterConfig
	limiter   *redis_rate.Limiter
	limit     redis_rate.Limit
	decisions *prometheus.CounterVec
	calls     prometheus.Counter
	seed      maphash.Seed
	shards    [limiterShards]leaseShard
}

const limiterShards = 32

type leaseShard struct {
	mu   sync.Mutex
	keys map[string]*lease
}

// lease is what a process holds of one key's budget.
type lease struct {
	tokens  int           // granted by Redis, not spent yet
	size    int           // granted by the last Redis call; 0 before the first
	spent   int           // spent of the last grant
	next    int           // what the next Redis call asks for
	expires time.Time     // tokens left then are dropped
	blocked time.Time     // Redis said no request of the key is allowed before then
	failed  bool          // tokens were not granted: Redis failed, and they fail open
	fetch   chan struct{} // non-nil while a Redis call for this key runs; closed when it returns
}

// NewLimiter returns a limiter on rdb and registers on reg (shared by every limiter of a registry):
//
//	livedrops_ratelimit_requests_total{limit,result}  result: allowed, limited, error (failed open)
//	livedrops_ratelimit_redis_calls_total{limit}      Redis calls made (a lease each)
func NewLimiter(rdb goredis.UniversalClient, cfg LimiterConfig, reg prometheus.Registerer) (*Limiter, error) {
	if cfg.Name == "" || cfg.Rate <= 0 || cfg.Burst < 0 || cfg.OpTimeout < 0 || cfg.Period < 0 ||
		cfg.MaxLease < 0 || cfg.LeaseTTL < 0 || cfg.MaxKeys < 0 {
		return nil, errors.New("redis: limiter needs a name, a positive rate and no negative setting")
	}
	if cfg.Burst == 0 {
		cfg.Burst = 2 * cfg.Rate
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "ld:"
	}
	if cfg.Period == 0 {
		cfg.Period = time.Second
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 500 * time.Millisecond
	}
	if cfg.MaxLease == 0 {
		cfg.MaxLease = max(1, min(cfg.Burst/4, 32))
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 2 * time.Second
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	decisions, err := registerCounter(reg, prometheus.CounterOpts{
		Namespace: "livedrops", Subsystem: "ratelimit", Name: "requests_total",
		Help: "Requests the rate limiters decided on, by limiter and result (allowed, limited, error: Redis failed and the request was allowed).",
	}, "limit", "result")
	if err != nil {
		return nil, err
	}
	for _, result := range []string{"allowed", "limited", "error"} {
		decisions.WithLabelValues(cfg.Name, result) // at 0 from the start, for rules and dashboards
	}
	calls, err := registerCounter(reg, prometheus.CounterOpts{
		Namespace: "livedrops", Subsystem: "ratelimit", Name: "redis_calls_total",
		Help: "Calls the rate limiters made to Redis, by limiter: one per lease of a key's budget (requests_total minus this is what local leases saved).",
	}, "limit")
	if err != nil {
		return nil, err
	}
	// The calls of every key go through go-redis's automatic pipelining: the leases asked for at the
	// same moment share one round trip instead of taking a pooled connection each.
	ap, err := rdb.AutoPipeline()
	if err != nil {
		return nil, fmt.Errorf("redis: limiter: %w", err)
	}
	l := &Limiter{
		cfg:       cfg,
		limiter:   redis_rate.NewLimiter(ap),
		limit:     redis_rate.Limit{Rate: cfg.Rate, Burst: cfg.Burst, Period: cfg.Period},
		decisions: decisions,
		calls:     calls.WithLabelValues(cfg.Name),
		seed:      maphash.MakeSeed(),
	}
	for i := range l.shards {
		l.shards[i].keys = make(map[string]*lease)
	}
	l.warm()
	return l, nil
}

// warm has Redis load the limiter's script now, so the first burst of requests is not refused it
// (NOSCRIPT) all at once and sent the whole script each. It asks for 0 requests of a key no request
// uses, which writes nothing. A Redis that does not answer is no error: requests then fail open.
func (l *Limiter) warm() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*l.cfg.OpTimeout)
	defer cancel()
	_, _ = l.limiter.AllowAtMost(ctx, l.cfg.Prefix+l.cfg.Name+":", l.limit, 0)
}

// Allow takes one request from key's budget. It returns 0 when the request may go, or how long to
// wait before the next one would be allowed. An error means Redis did not answer; the caller should
// let the request through.
func (l *Limiter) Allow(ctx context.Context, key string) (time.Duration, error) {
	sh := &l.shards[maphash.String(l.seed, key)%limiterShards]
	for {
		sh.mu.Lock()
		ls := sh.keys[key]
		if ls == nil {
			ls = &lease{next: min(4, l.cfg.MaxLease)}
			l.keep(sh, key, ls)
		}
		now := l.cfg.Now()
		if ls.tokens > 0 && now.Before(ls.expires) {
			ls.tokens--
			ls.spent++
			failed := ls.failed
			sh.mu.Unlock()
			if failed {
				l.decisions.WithLabelValues(l.cfg.Name, "error").Inc()
				return 0, fmt.Errorf("rate limit %s: %w", l.cfg.Name, errFailingOpen)
			}
			l.decisions.WithLabelValues(l.cfg.Name, "allowed").Inc()
			return 0, nil
		}
		if now.Before(ls.blocked) {
			// Redis refused the key until then; its bucket refills with time only, so asking
			// again sooner would be refused too.
			wait := ls.blocked.Sub(now)
			sh.mu.Unlock()
			l.decisions.WithLabelValues(l.cfg.Name, "limited").Inc()
			return max(wait, time.Millisecond), nil
		}
		if ch := ls.fetch; ch != nil {
			// Another request of this key is asking Redis: wait for its lease.
			sh.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				l.decisions.WithLabelValues(l.cfg.Name, "error").Inc()
				return 0, fmt.Errorf("rate limit %s: %w", l.cfg.Name, ctx.Err())
			}
		}
		switch {
		case ls.size == 0:
		case ls.tokens == 0 && now.Before(ls.expires):
			// The last lease is spent and the key asks again before it would have expired: the key
			// is busy here, lease more.
			ls.next = min(2*ls.size, l.cfg.MaxLease)
		case ls.tokens > 0:
			// It expired with tokens left: ask for what was spent.
			ls.next = max(1, ls.spent)
		}
		ls.tokens = 0
		n := ls.next
		ch := make(chan struct{})
		ls.fetch = ch
		sh.mu.Unlock()

		granted, wait, err := l.ask(ctx, key, n)

		sh.mu.Lock()
		ls.fetch = nil
		close(ch)
		switch {
		case err != nil:
			// Fail open for the lease asked for, without asking Redis again meanwhile.
			ls.tokens, ls.size, ls.spent, ls.expires, ls.failed = n-1, n, 1, l.cfg.Now().Add(l.cfg.LeaseTTL), true
		case granted > 0:
			ls.tokens, ls.size, ls.spent, ls.expires, ls.failed = granted-1, granted, 1, l.cfg.Now().Add(l.cfg.LeaseTTL), false
		default:
			ls.blocked = l.cfg.Now().Add(wait)
		}
		sh.mu.Unlock()
		switch {
		case err != nil:
			l.decisions.WithLabelValues(l.cfg.Name, "error").Inc()
			return 0, fmt.Errorf("rate limit %s: %w", l.cfg.Name, err)
		case granted > 0:
			l.decisions.WithLabelValues(l.cfg.Name, "allowed").Inc()
			return 0, nil
		}
		l.decisions.WithLabelValues(l.cfg.Name, "limited").Inc()
		return max(wait, time.Millisecond), nil
	}
}

// errFailingOpen is the error of a request allowed because an earlier call to Redis for its key failed.
var errFailingOpen = errors.New("redis did not answer a moment ago: failing open")

// ask takes up to n requests of key's budget from Redis: how many it granted, and when none, how long
// until one would be.
func (l *Limiter) ask(ctx context.Context, key string, n int) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.OpTimeout)
	defer cancel()
	l.calls.Inc()
	// A pipelined command runs to its end once queued, whatever its context says; wait for it at
	// most OpTimeout. An answer that comes later is dropped with what it granted (the limit is only
	// ever stricter for it).
	type answer struct {
		res *redis_rate.Result
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := l.limiter.AllowAtMost(ctx, l.cfg.Prefix+l.cfg.Name+":"+key, l.limit, n)
		done <- answer{res, err}
	}()
	select {
	case a := <-done:
		if a.err != nil {
			return 0, 0, a.err
		}
		return a.res.Allowed, a.res.RetryAfter, nil
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

// keep adds ls under key to sh (locked), first making room when sh holds its share of MaxKeys: leases
// that have expired go first, then any that is not being fetched (its unspent tokens are dropped,
// which only makes the limit stricter).
func (l *Limiter) keep(sh *leaseShard, key string, ls *lease) {
	if limit := max(1, l.cfg.MaxKeys/limiterShards); len(sh.keys) >= limit {
		now := l.cfg.Now()
		for k, v := range sh.keys {
			if v.fetch == nil && !now.Before(v.expires) && !now.Before(v.blocked) {
				delete(sh.keys, k)
			}
		}
		for k, v := range sh.keys {
			if len(sh.keys) < limit*3/4 {
				break
			}
			if v.fetch == nil {
				delete(sh.keys, k)
			}
		}
	}
	sh.keys[key] = ls
}
