package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/relay"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
)

// Compile-time checks that the adapters fit the interfaces package relay declares.
var (
	_ relay.Outbox     = (*postgres.Outbox)(nil)
	_ relay.Stream     = (*jetstream.Publisher)(nil)
	_ relay.Leadership = (*postgres.Leader)(nil)
	_ relay.Drops      = (*postgres.DropSchedule)(nil)
)

// worker is the worker role's jobs: the outbox relay, the drop scheduler and the push notifier. Any number of workers run
// side by side: one relay leads at a time, and each drop transition is made by exactly one scheduler.
type worker struct {
	stop func()
	wg   sync.WaitGroup
}

// startWorker creates or updates the JetStream stream and starts the jobs; they run until Stop.
func (a *App) startWorker(ctx context.Context) error {
	cfg := a.cfg
	stream := jetstream.StreamConfig{ReplayWindow: cfg.ReplayWindow, Replicas: cfg.StreamReplicas}
	pub, err := jetstream.NewPublisher(a.nc, jetstream.PublisherConfig{Stream: stream})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	// Not fatal: workers started together on a new NATS cluster race to create the stream and can both
	// time out (seen in loadtest/faults); the relay ensures the stream again whenever it starts leading,
	// and only one relay leads.
	if err := pub.Ensure(ctx); err != nil {
		a.logger.Warn("worker: cannot create or update the stream yet; the relay retries when it leads", "err", err)
	}
	metrics, err := relay.NewMetrics(a.registry)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	lists, err := redis.NewFollowLists(a.rdb, nil, redis.FollowListsConfig{Prefix: cfg.CachePrefix}, a.registry)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	relayStream := followListStream{Stream: pub, lists: lists, a: a}
	rel, err := relay.New(postgres.NewOutbox(a.pool), relayStream, postgres.NewLeader(a.pool, "relay", postgres.LeaderConfig{}),
		relay.Config{ReplayWindow: cfg.ReplayWindow, StockRate: cfg.StockRate, Logger: a.logger, Metrics: metrics})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	sched, err := relay.NewScheduler(postgres.NewDropSchedule(a.pool), relay.SchedulerConfig{Logger: a.logger, Metrics: metrics})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	// The jobs outlive Start's ctx: they stop in Shutdown's worker step.
	workCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	w := &worker{stop: stop}
	// The notifier first: its first attempt at creating its streams and consumers runs before the
	// relay's own stream update when it starts leading (nats-server 2.15's file store races a consumer
	// creation against a concurrent update of its stream: seen under -race with the embedded server).
	if err := a.startNotifier(workCtx, w); err != nil {
		stop()
		return fmt.Errorf("worker: %w", err)
	}
	w.wg.Go(func() {
		if err := rel.Run(workCtx); err != nil {
			a.logger.Error("relay stopped", "err", err)
		}
	})
	w.wg.Go(func() {
		if err := sched.Run(workCtx); err != nil {
			a.logger.Error("scheduler stopped", "err", err)
		}
	})
	a.worker = w
	return nil
}

// followListStream is the relay's stream with the hubs' follow-list cache kept in step: before a
// follow.changed goes out, its user's cached list gets a new version (store/redis.FollowLists), so a hub
// that reads the list after the event was published never reads it from before the change.
type followListStream struct {
	relay.Stream
	lists *redis.FollowLists
	a     *App
}

func (s followListStream) Publish(ctx context.Context, events []fanout.Event) ([]uint64, error) {
	var users []int64
	for _, ev := range events {
		if ev.Type == fanout.FollowChanged && ev.UserID > 0 {
			users = append(users, ev.UserID)
		}
	}
	if err := s.lists.Invalidate(ctx, users...); err != nil {
		// Published anyway: Redis is never the source of truth; the lists then expire on their own.
		s.a.logger.Warn("relay: invalidate follow lists", "users", len(users), "err", err)
	}
	return s.Stream.Publish(ctx, events)
}

// Stop cancels the jobs and waits for them, within ctx.
func (w *worker) Stop(ctx context.Context) error {
	w.stop()
	done := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("worker jobs still running: %w", ctx.Err())
	}
}
