package redis

import (
	"context"
	"errors"
	"fmt"
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
	// OpTimeout bounds each Redis call; 0 means 100 ms. Past it the request is allowed.
	OpTimeout time.Duration
}

// Limiter limits requests per key in Redis. When Redis cannot answer, it fails open: Allow returns the
// error (and the caller lets the request through), and the error is counted.
type Limiter struct {
	cfg       LimiterConfig
	limiter   *redis_rate.Limiter
	limit     redis_rate.Limit
	decisions *prometheus.CounterVec
}

// NewLimiter returns a limiter on rdb and registers on reg (shared by every limiter of a registry):
//
//	livedrops_ratelimit_requests_total{limit,result}  result: allowed, limited, error (failed open)
func NewLimiter(rdb goredis.UniversalClient, cfg LimiterConfig, reg prometheus.Registerer) (*Limiter, error) {
	if cfg.Name == "" || cfg.Rate <= 0 || cfg.Burst < 0 || cfg.OpTimeout < 0 || cfg.Period < 0 {
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
		cfg.OpTimeout = 100 * time.Millisecond
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
	return &Limiter{
		cfg:       cfg,
		limiter:   redis_rate.NewLimiter(rdb),
		limit:     redis_rate.Limit{Rate: cfg.Rate, Burst: cfg.Burst, Period: cfg.Period},
		decisions: decisions,
	}, nil
}

// Allow takes one request from key's budget. It returns 0 when the request may go, or how long to
// wait before the next one would be allowed. An error means Redis did not answer; the caller should
// let the request through.
func (l *Limiter) Allow(ctx context.Context, key string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.OpTimeout)
	defer cancel()
	res, err := l.limiter.Allow(ctx, l.cfg.Prefix+l.cfg.Name+":"+key, l.limit)
	if err != nil {
		l.decisions.WithLabelValues(l.cfg.Name, "error").Inc()
		return 0, fmt.Errorf("rate limit %s: %w", l.cfg.Name, err)
	}
	if res.Allowed > 0 {
		l.decisions.WithLabelValues(l.cfg.Name, "allowed").Inc()
		return 0, nil
	}
	l.decisions.WithLabelValues(l.cfg.Name, "limited").Inc()
	return max(res.RetryAfter, time.Millisecond), nil
}
