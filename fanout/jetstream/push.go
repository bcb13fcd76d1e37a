package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/push"
)

// Names of the push notifier's streams, subjects and consumers.
const (
	// PushJobsStream is the work queue of push jobs (splits and follower pages), shared by all workers.
	PushJobsStream = "PUSH_JOBS"
	// PushJobsSubject is its one subject (outside ld.>, the events stream's).
	PushJobsSubject = "push.jobs"
	// PushDLQStream keeps the push messages given up on, on push.dlq.<provider>.
	PushDLQStream = "PUSH_DLQ"
	// PushDLQPrefix starts the dead-letter subjects.
	PushDLQPrefix = "push.dlq."
	// PushEventsConsumer is the durable consumer of the events stream.
	PushEventsConsumer = "push-notifier"
	// PushJobsConsumer is the durable consumer of the jobs.
	PushJobsConsumer = "push-jobs"
)

// PushQueueConfig tunes a PushQueue. Zero values are the documented defaults.
type PushQueueConfig struct {
	// EventsStream is the stream of live events; "" means DefaultStreamName.
	EventsStream string
	// AckWait is how long a job or an event may go without a sign of progress before it is delivered
	// to another worker (the worker in hand signals progress every AckWait/3); 0 means 30 s.
	AckWait time.Duration
	// DeadLetterAge is how long parked messages are kept; 0 means 14 days.
	DeadLetterAge time.Duration
	// Replicas of the push streams; 0 means 1.
	Replicas int
	// Logger receives the log; nil discards it.
	Logger *slog.Logger
}

// PushQueue is the push notifier's view of JetStream: a durable consumer of the live events of
// creators (ld.creator.>), the work queue of push jobs with its durable consumer shared by every
// worker, and the dead-letter stream. It implements fanout/notifier.Queue.
type PushQueue struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg PushQueueConfig
	log *slog.Logger

	jobs jetstream.Consumer
}

// NewPushQueue returns a PushQueue on nc; Ensure creates what it needs.
func NewPushQueue(nc *nats.Conn, cfg PushQueueConfig) (*PushQueue, error) {
	if cfg.EventsStream == "" {
		cfg.EventsStream = DefaultStreamName
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.DeadLetterAge <= 0 {
		cfg.DeadLetterAge = 14 * 24 * time.Hour
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &PushQueue{nc: nc, js: js, cfg: cfg, log: log}, nil
}

// Ensure creates or updates the jobs and dead-letter streams and both durable consumers. The events
// consumer starts with the events published after its creation: a first deployment pushes no old drop.
func (q *PushQueue) Ensure(ctx context.Context) error {
	_, err := q.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: PushJobsStream, Description: "LiveDrops push jobs: follower splits and pages",
		Subjects: []string{PushJobsSubject}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
		MaxAge: 48 * time.Hour, Duplicates: 10 * time.Minute, Replicas: q.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("jetstream: stream %s: %w", PushJobsStream, err)
	}
	_, err = q.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: PushDLQStream, Description: "LiveDrops push messages given up on, with the reason",
		Subjects: []string{PushDLQPrefix + ">"}, Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage,
		MaxAge: q.cfg.DeadLetterAge, Replicas: q.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("jetstream: stream %s: %w", PushDLQStream, err)
	}
	_, err = q.js.CreateOrUpdateConsumer(ctx, q.cfg.EventsStream, jetstream.ConsumerConfig{
		Durable: PushEventsConsumer, Description: "LiveDrops push notifier: creator events",
		FilterSubject: fanout.CreatorPrefix + ">", DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: q.cfg.AckWait, MaxDeliver: -1, MaxAckPending: 64,
		Replicas: q.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("jetstream: consumer %s: %w", PushEventsConsumer, err)
	}
	q.jobs, err = q.js.CreateOrUpdateConsumer(ctx, PushJobsStream, jetstream.ConsumerConfig{
		Durable: PushJobsConsumer, Description: "LiveDrops push workers",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: q.cfg.AckWait, MaxDeliver: -1, MaxAckPending: 10_000,
		Replicas: q.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("jetstream: consumer %s: %w", PushJobsConsumer, err)
	}
	return nil
}

// ConsumeEvents hands each creator event to handle, one at a time, until ctx ends.
func (q *PushQueue) ConsumeEvents(ctx context.Context, handle func(ctx context.Context, ev fanout.Event) error) error {
	c, err := q.js.Consumer(ctx, q.cfg.EventsStream, PushEventsConsumer)
	if err != nil {
		return fmt.Errorf("jetstream: consumer %s: %w", PushEventsConsumer, err)
	}
	return q.consume(ctx, c, 1, func(ctx context.Context, m jetstream.Msg) error {
		var ev fanout.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			q.log.Error("push: undecodable event skipped", "subject", m.Subject(), "err", err)
			return nil
		}
		return handle(ctx, ev)
	})
}

// ConsumeJobs hands jobs to handle, up to concurrency at once, until ctx ends.
func (q *PushQueue) ConsumeJobs(ctx context.Context, concurrency int, handle func(ctx context.Context, data []byte) error) error {
	if q.jobs == nil {
		return errors.New("jetstream: push queue: Ensure first")
	}
	return q.consume(ctx, q.jobs, concurrency, func(ctx context.Context, m jetstream.Msg) error { return handle(ctx, m.Data()) })
}

// consume runs handle on c's messages, up to n at once, each kept in progress while it runs; acked on
// nil, redelivered after a second on error (at once, to another worker, on ctx's end).
func (q *PushQueue) consume(ctx context.Context, c jetstream.Consumer, n int, handle func(context.Context, jetstream.Msg) error) error {
	// A small prefetch: a message waiting in the buffer for a free slot is not kept in progress, and
	// would be redelivered after AckWait while this worker still holds it.
	it, err := c.Messages(jetstream.PullMaxMessages(min(n, 32)), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return fmt.Errorf("jetstream: consume: %w", err)
	}
	stopped := context.AfterFunc(ctx, it.Stop)
	defer stopped()
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		m, err := it.Next()
		if err != nil {
			<-sem
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			q.log.Warn("push: next message", "err", err)
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			progress := time.NewTicker(q.cfg.AckWait / 3)
			done := make(chan struct{})
			go func() {
				for {
					select {
					case <-done:
						return
					case <-progress.C:
						_ = m.InProgress()
					}
				}
			}()
			err := handle(ctx, m)
			progress.Stop()
			close(done)
			switch {
			case err == nil:
				if aerr := m.DoubleAck(context.WithoutCancel(ctx)); aerr != nil {
					q.log.Warn("push: ack", "subject", m.Subject(), "err", aerr)
				}
			case ctx.Err() != nil:
				_ = m.Nak() // stopping: let another worker have it now
			default:
				q.log.Warn("push: job failed, redelivering", "subject", m.Subject(), "err", err)
				_ = m.NakWithDelay(time.Second)
			}
		})
	}
}

// PublishJobs stores the jobs with their dedupe ids and waits for the acknowledgements.
func (q *PushQueue) PublishJobs(ctx context.Context, ids []string, data [][]byte) error {
	futures := make([]jetstream.PubAckFuture, 0, len(data))
	for i := range data {
		msg := nats.NewMsg(PushJobsSubject)
		msg.Header.Set(jetstream.MsgIDHeader, ids[i])
		msg.Data = data[i]
		f, err := q.js.PublishMsgAsync(msg, jetstream.WithExpectStream(PushJobsStream))
		if err != nil {
			return fmt.Errorf("jetstream: publish push job: %w", err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("jetstream: publish push job: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// DeadLetter parks data on push.dlq.<provider>.
func (q *PushQueue) DeadLetter(ctx context.Context, provider push.Provider, data []byte) error {
	if _, err := q.js.Publish(ctx, PushDLQPrefix+string(provider), data); err != nil {
		return fmt.Errorf("jetstream: dead-letter: %w", err)
	}
	return nil
}

// Pending counts the jobs waiting or delivered and not yet acknowledged.
func (q *PushQueue) Pending(ctx context.Context) (uint64, error) {
	if q.jobs == nil {
		return 0, errors.New("jetstream: push queue: Ensure first")
	}
	info, err := q.jobs.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}
