package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Drops is the scheduler's view of the drops table (store/postgres.DropSchedule).
type Drops interface {
	// NextDeadline returns the earliest start of a scheduled drop or end of a live or sold-out one, past
	// ones included; ok is false when there is none.
	NextDeadline(ctx context.Context) (next time.Time, ok bool, err error)
	// StartDue starts up to limit scheduled drops whose start_time is at or before now, each with its
	// drop.started event in the same transaction, and returns the start times of those it started.
	StartDue(ctx context.Context, now time.Time, limit int) ([]time.Time, error)
	// EndDue ends up to limit live or sold-out drops whose end_time is at or before now, each with its
	// drop.ended event, and returns the end times of those it ended.
	EndDue(ctx context.Context, now time.Time, limit int) ([]time.Time, error)
	// Listen sends on wake when drops are created or rescheduled, until ctx ends (nil) or its connection
	// fails.
	Listen(ctx context.Context, wake chan<- struct{}) error
}

// SchedulerConfig tunes the scheduler. Zero values are the documented defaults.
type SchedulerConfig struct {
	// Rescan is the longest the scheduler waits without reading the next deadline from the database
	// (in case a notification was missed); 0 means 5 s.
	Rescan time.Duration
	// Retry is the wait before trying again a deadline that has passed but whose drop did not move
	// (another scheduler holds it, or the database failed); 0 means 100 ms.
	Retry time.Duration
	// Batch is how many drops one transaction moves; 0 means 500.
	Batch int
	// Clock is the scheduler's time; nil means the system clock.
	Clock Clock
	// Logger receives the scheduler's log; nil discards it.
	Logger *slog.Logger
	// Metrics are updated when set (NewMetrics).
	Metrics *Metrics
}

// Scheduler starts drops at their start_time and ends them at their end_time. Any number run at once:
// each transition is one conditional UPDATE with its event, so exactly one of them makes it. It keeps
// one timer, armed at the next deadline in the database, and re-arms it when a drop is created or
// rescheduled (LISTEN/NOTIFY) and at least every Rescan. A drop whose start passed while no scheduler
// ran starts as soon as one runs, with one drop.started, unless its first order came before: that
// order's transaction started it, with its drop.started ahead of the order's events (store/postgres,
// migration 00013), and the scheduler finds nothing to do.
type Scheduler struct {
	drops Drops
	cfg   SchedulerConfig
	log   *slog.Logger
	m     *Metrics
}

// NewScheduler returns a scheduler; it does nothing until Run.
func NewScheduler(drops Drops, cfg SchedulerConfig) (*Scheduler, error) {
	if cfg.Rescan == 0 {
		cfg.Rescan = 5 * time.Second
	}
	if cfg.Retry == 0 {
		cfg.Retry = 100 * time.Millisecond
	}
	if cfg.Batch == 0 {
		cfg.Batch = 500
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rescan < 0 || cfg.Retry < 0 || cfg.Batch < 1 {
		return nil, errors.New("relay: scheduler config: negative Rescan, Retry or Batch")
	}
	return &Scheduler{drops: drops, cfg: cfg, log: cfg.Logger.With("component", "scheduler"),
		m: cfg.Metrics.orDiscard()}, nil
}

// Run moves drops on time until ctx ends, then returns nil.
func (s *Scheduler) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for failures := 0; ctx.Err() == nil; {
			began := time.Now()
			err := s.drops.Listen(ctx, wake)
			if err == nil || ctx.Err() != nil {
				continue
			}
			if time.Since(began) > 10*time.Second {
				failures = 0 // it listened for a while: a new failure, worth a line
			}
			if failures++; failures == 1 {
				s.log.Warn("scheduler: listening for new drops failed; rescanning meanwhile", "err", err)
			}
			s.sleep(ctx, min(s.cfg.Rescan, time.Second))
		}
	})
	defer wg.Wait()

	failing := false
	for ctx.Err() == nil {
		wait, err := s.tick(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if !failing {
				s.log.Warn("scheduler: moving due drops failed; retrying", "err", err)
			}
			failing, wait = true, s.cfg.Retry
		} else if failing {
			failing = false
			s.log.Info("scheduler working again")
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-s.cfg.Clock.After(wait):
		}
	}
	return nil
}

// tick moves every drop that is due and returns how long to wait for the next deadline.
func (s *Scheduler) tick(ctx context.Context) (time.Duration, error) {
	now := s.cfg.Clock.Now()
	for {
		starts, err := s.drops.StartDue(ctx, now, s.cfg.Batch)
		if err != nil {
			return 0, err
		}
		s.observe("start", starts)
		if len(starts) < s.cfg.Batch {
			break
		}
	}
	for {
		ends, err := s.drops.EndDue(ctx, now, s.cfg.Batch)
		if err != nil {
			return 0, err
		}
		s.observe("end", ends)
		if len(ends) < s.cfg.Batch {
			break
		}
	}
	next, ok, err := s.drops.NextDeadline(ctx)
	if err != nil {
		return 0, err
	}
	if !ok {
		return s.cfg.Rescan, nil
	}
	wait := next.Sub(s.cfg.Clock.Now())
	if !next.After(now) {
		// Due at this tick and still not moved: another scheduler is moving it right now.
		wait = s.cfg.Retry
	}
	return min(max(wait, 0), s.cfg.Rescan), nil
}

func (s *Scheduler) observe(transition string, at []time.Time) {
	if len(at) == 0 {
		return
	}
	committed := s.cfg.Clock.Now()
	lag := s.m.schedLag.WithLabelValues(transition)
	for _, t := range at {
		lag.Observe(committed.Sub(t).Seconds())
	}
	s.m.transitions.WithLabelValues(transition).Add(float64(len(at)))
	s.log.Debug(fmt.Sprintf("scheduler: %s %d drops", transition, len(at)),
		"max_lag_ms", committed.Sub(at[0]).Milliseconds())
}

func (s *Scheduler) sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-s.cfg.Clock.After(d):
	}
}
