package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	goredis "github.com/redis/go-redis/v9"

	"github.com/livedrops/livedrops/fanout/push"
)

// PushDedupe remembers, per (event, device), that a worker is sending it (a claim with a lease) or that
// it was handled (done), for the push notifier's exactly-once sends. One key per pair,
// <prefix>push:<event id>:<device id>, valued "c:<owner>" or "d"; every command touches one key, so it
// works on a Redis Cluster, pipelined per batch. It implements fanout/notifier.Dedupe.
type PushDedupe struct {
	rdb    goredis.UniversalClient
	prefix string
}

// NewPushDedupe returns the dedupe store; prefix starts every key (default "livedrops:").
func NewPushDedupe(rdb goredis.UniversalClient, prefix string) *PushDedupe {
	if prefix == "" {
		prefix = "livedrops:"
	}
	return &PushDedupe{rdb: rdb, prefix: prefix}
}

func (p *PushDedupe) key(eventID string, device int64) string {
	return p.prefix + "push:" + eventID + ":" + strconv.FormatInt(device, 10)
}

// Claim takes each pair for owner for lease: Claimed when it was free (or already owner's), Done when it
// was handled, Busy when another owner holds it.
func (p *PushDedupe) Claim(ctx context.Context, eventID string, devices []int64, owner string, lease time.Duration) ([]push.Claim, error) {
	out := make([]push.Claim, len(devices))
	if len(devices) == 0 {
		return out, nil
	}
	mine := "c:" + owner
	sets := make([]*goredis.BoolCmd, len(devices))
	if _, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for i, d := range devices {
			sets[i] = pipe.SetNX(ctx, p.key(eventID, d), mine, lease)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("redis: push claim: %w", err)
	}
	gets := map[int]*goredis.StringCmd{}
	if _, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for i, c := range sets {
			if c.Val() {
				out[i] = push.Claimed
				continue
			}
			gets[i] = pipe.Get(ctx, p.key(eventID, devices[i]))
		}
		return nil
	}); err != nil && !errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("redis: push claim: %w", err)
	}
	var retake []int
	for i, g := range gets {
		switch v, err := g.Result(); {
		case errors.Is(err, goredis.Nil):
			retake = append(retake, i) // expired between the two round trips
		case err != nil:
			return nil, fmt.Errorf("redis: push claim: %w", err)
		case v == "d":
			out[i] = push.Done
		case v == mine:
			out[i] = push.Claimed
		default:
			out[i] = push.Busy
		}
	}
	for _, i := range retake {
		out[i] = push.Busy // the caller looks again shortly
	}
	return out, nil
}

var casExpire = goredis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)
var casDelete = goredis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// Extend keeps owner's claims for another lease (pairs finished or taken meanwhile are left alone).
func (p *PushDedupe) Extend(ctx context.Context, eventID string, devices []int64, owner string, lease time.Duration) error {
	return p.cas(ctx, casExpire, eventID, devices, "c:"+owner, lease.Milliseconds())
}

// Release gives up owner's claims.
func (p *PushDedupe) Release(ctx context.Context, eventID string, devices []int64, owner string) error {
	return p.cas(ctx, casDelete, eventID, devices, "c:"+owner)
}

func (p *PushDedupe) cas(ctx context.Context, s *goredis.Script, eventID string, devices []int64, args ...any) error {
	if len(devices) == 0 {
		return nil
	}
	if err := s.Load(ctx, p.rdb).Err(); err != nil {
		return fmt.Errorf("redis: push: load script: %w", err)
	}
	_, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for _, d := range devices {
			s.EvalSha(ctx, pipe, []string{p.key(eventID, d)}, args...)
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return fmt.Errorf("redis: push: %w", err)
	}
	return nil
}

// Finish marks the pairs done for keep.
func (p *PushDedupe) Finish(ctx context.Context, eventID string, devices []int64, keep time.Duration) error {
	if len(devices) == 0 {
		return nil
	}
	if _, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for _, d := range devices {
			pipe.Set(ctx, p.key(eventID, d), "d", keep)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("redis: push finish: %w", err)
	}
	return nil
}

// PushLimiter spaces the requests to each push provider across every worker: one GCRA bucket per
// provider in Redis (github.com/go-redis/redis_rate), taken from in blocks of up to Block requests so a
// worker asks Redis once per block, not once per message. When Redis cannot answer, each process falls
// back to its share (Rate / FallbackShare) in memory, so an outage never lifts the limit. It implements
// fanout/notifier.Limiter.
type PushLimiter struct {
	lim    *redis_rate.Limiter
	prefix string
	rates  map[push.Provider]int
	block  int
	share  int

	mu        sync.Mutex
	tokens    map[push.Provider]int
	waiting   map[push.Provider]*sync.Mutex
	local     map[push.Provider]*localBucket
	downUntil time.Time // after a Redis error, the local buckets alone until then
}

// PushLimiterConfig configures a PushLimiter.
type PushLimiterConfig struct {
	// Prefix starts the keys (default "livedrops:").
	Prefix string
	// Rates are each provider's requests per second over all workers; a provider not listed, or with a
	// rate of 0, is not limited.
	Rates map[push.Provider]int
	// Block is how many requests one Redis call takes at most; 0 means 50.
	Block int
	// FallbackShare divides the rate among processes while Redis is down; 0 means 4.
	FallbackShare int
}

// NewPushLimiter returns the limiter.
func NewPushLimiter(rdb goredis.UniversalClient, cfg PushLimiterConfig) *PushLimiter {
	if cfg.Prefix == "" {
		cfg.Prefix = "livedrops:"
	}
	if cfg.Block <= 0 {
		cfg.Block = 50
	}
	if cfg.FallbackShare <= 0 {
		cfg.FallbackShare = 4
	}
	l := &PushLimiter{lim: redis_rate.NewLimiter(rdb), prefix: cfg.Prefix, rates: cfg.Rates, block: cfg.Block,
		share: cfg.FallbackShare, tokens: map[push.Provider]int{}, waiting: map[push.Provider]*sync.Mutex{},
		local: map[push.Provider]*localBucket{}}
	for p, r := range cfg.Rates {
		l.waiting[p] = &sync.Mutex{}
		l.local[p] = &localBucket{rate: float64(max(1, r/cfg.FallbackShare))}
	}
	return l
}

// Wait blocks until p may be sent one more request.
func (l *PushLimiter) Wait(ctx context.Context, p push.Provider) error {
	rate := l.rates[p]
	if rate <= 0 {
		return nil
	}
	for {
		l.mu.Lock()
		if l.tokens[p] > 0 {
			l.tokens[p]--
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		// One goroutine per provider refills; the others wait for it.
		w := l.waiting[p]
		w.Lock()
		l.mu.Lock()
		have := l.tokens[p]
		l.mu.Unlock()
		if have > 0 {
			w.Unlock()
			continue
		}
		block := min(l.block, max(1, rate/20)) // at most 50 ms of the rate per call
		limit := redis_rate.Limit{Rate: rate, Burst: block, Period: time.Second}
		l.mu.Lock()
		down := time.Now().Before(l.downUntil)
		l.mu.Unlock()
		var res *redis_rate.Result
		err := errRedisDown
		if !down {
			res, err = l.lim.AllowAtMost(ctx, l.prefix+"push:rate:"+string(p), limit, block)
			if err != nil && ctx.Err() == nil {
				l.mu.Lock()
				l.downUntil = time.Now().Add(time.Second) // ask Redis again in a second
				l.mu.Unlock()
			}
		}
		var wait time.Duration
		switch {
		case err != nil && ctx.Err() != nil:
			w.Unlock()
			return ctx.Err()
		case err != nil:
			wait = l.local[p].take()
			if wait == 0 {
				l.mu.Lock()
				l.tokens[p]++
				l.mu.Unlock()
			}
		case res.Allowed > 0:
			l.mu.Lock()
			l.tokens[p] += res.Allowed
			l.mu.Unlock()
		default:
			// Wait for a whole block, not one token: a call per token would cap the rate at what the
			// round trips allow.
			wait = max(res.RetryAfter, time.Millisecond) + time.Duration(block-1)*time.Second/time.Duration(rate)
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				w.Unlock()
				return ctx.Err()
			}
		}
		w.Unlock()
	}
}

var errRedisDown = errors.New("redis: push limiter: Redis unavailable a moment ago")

// localBucket is the fallback: a token bucket of one second's burst, in memory.
type localBucket struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

// take takes one token, or says how long until one is there.
func (b *localBucket) take() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if !b.last.IsZero() {
		b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	} else {
		b.tokens = b.rate
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}
