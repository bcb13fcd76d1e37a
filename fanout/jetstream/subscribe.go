package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// SubscriberConfig tunes a Subscriber. Zero values are the documented defaults.
type SubscriberConfig struct {
	// Buffer is how many received messages may wait for their callback. Past it NATS drops messages and
	// reports a slow consumer (logged by Connect's error handler). Default 65536.
	Buffer int
}

// Subscriber holds core NATS subscriptions and hands their messages to callbacks, one at a time, in
// arrival order, from a single goroutine. Every subscription shares one channel (nats.ChanSubscribe),
// so a hub holding the subjects of 20,000 users runs one goroutine, not 20,000. It implements hub.Bus.
//
// Unsubscribing stops a subscription at once, but what it already received is still delivered: a marker
// sent through the channel after the unsubscription retires its callback. So a hub that moves a subject
// from one subscription to another (a wildcard taking over, hub.interest) loses nothing in between.
type Subscriber struct {
	nc  *nats.Conn
	log *slog.Logger
	ch  chan *nats.Msg

	mu       sync.RWMutex
	subs     map[*nats.Subscription]func(subject string, data []byte)
	retiring map[*nats.Subscription]func(subject string, data []byte) // unsubscribed, messages still queued

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// NewSubscriber starts a Subscriber on nc; Close stops it.
func NewSubscriber(nc *nats.Conn, logger *slog.Logger, cfg SubscriberConfig) *Subscriber {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 65536
	}
	s := &Subscriber{nc: nc, log: logger, ch: make(chan *nats.Msg, cfg.Buffer),
		subs: map[*nats.Subscription]func(string, []byte){}, retiring: map[*nats.Subscription]func(string, []byte){},
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *Subscriber) loop() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		case m := <-s.ch:
			if m.Subject == "" { // the retirement marker: every message of m.Sub came before it
				s.mu.Lock()
				delete(s.retiring, m.Sub)
				s.mu.Unlock()
				continue
			}
			s.mu.RLock()
			deliver := s.subs[m.Sub]
			if deliver == nil {
				deliver = s.retiring[m.Sub]
			}
			s.mu.RUnlock()
			if deliver != nil {
				deliver(m.Subject, m.Data)
			}
		}
	}
}

// ErrClosed is returned by Subscribe after Close.
var ErrClosed = errors.New("jetstream: subscriber closed")

// Subscribe calls deliver with every message published on subject from now on, until unsubscribe; the
// messages received before unsubscribe are still delivered after it.
func (s *Subscriber) Subscribe(subject string, deliver func(subject string, data []byte)) (unsubscribe func() error, err error) {
	select {
	case <-s.stop:
		return nil, ErrClosed
	default:
	}
	// Registered under the lock before the first message can be looked up.
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, err := s.nc.ChanSubscribe(subject, s.ch)
	if err != nil {
		return nil, fmt.Errorf("jetstream: subscribe %s: %w", subject, err)
	}
	s.subs[sub] = deliver
	return func() error {
		s.mu.Lock()
		if _, ok := s.subs[sub]; !ok {
			s.mu.Unlock()
			return nil
		}
		delete(s.subs, sub)
		s.retiring[sub] = deliver
		s.mu.Unlock()
		err := sub.Unsubscribe()
		// After Unsubscribe returns, NATS queues nothing more for sub: the marker comes after its last
		// message. Unsubscribe may run on the delivery goroutine itself (a callback), so never wait for
		// room in the channel here.
		marker := &nats.Msg{Sub: sub}
		select {
		case s.ch <- marker:
		default:
			go func() {
				select {
				case s.ch <- marker:
				case <-s.stop:
				}
			}()
		}
		if err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			return fmt.Errorf("jetstream: unsubscribe %s: %w", subject, err)
		}
		return nil
	}, nil
}

// Reconnects is how many times the connection was re-established: subscriptions confirmed before a
// reconnection are confirmed again only by a new Flush.
func (s *Subscriber) Reconnects() uint64 { return s.nc.Stats().Reconnects }

// Connected reports whether the connection is up (not reconnecting).
func (s *Subscriber) Connected() bool { return s.nc.IsConnected() }

// Flush returns once the server has processed every earlier Subscribe of this connection.
func (s *Subscriber) Flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if err := s.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("jetstream: flush: %w", err)
	}
	return nil
}

// Close unsubscribes everything and stops the delivery goroutine; messages not yet delivered are
// dropped. Safe to call twice.
func (s *Subscriber) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		for sub := range s.subs {
			_ = sub.Unsubscribe()
		}
		clear(s.subs)
		clear(s.retiring)
		s.mu.Unlock()
		close(s.stop)
		<-s.done
	})
}
