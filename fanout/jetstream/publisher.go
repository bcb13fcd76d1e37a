package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/livedrops/livedrops/fanout"
)

// PublisherConfig tunes a Publisher. Zero values are the documented defaults.
type PublisherConfig struct {
	// Stream is the stream published to; Ensure creates or updates it.
	Stream StreamConfig
	// AckTimeout bounds the wait for each acknowledgement; 0 means 5 s.
	AckTimeout time.Duration
	// APITimeout bounds each JetStream API request that has no deadline of its own (Ensure, Tail's reads);
	// 0 means 1 s. While a stream elects a leader its API requests go unanswered: a short bound lets the
	// relay try again, and recover, within a second of the election instead of nats.go's 5 s default
	// (loadtest/faults, nats-leader-sigkill).
	APITimeout time.Duration
	// AtomicFrom is the smallest batch sent as one JetStream atomic batch (at most MaxAtomicBatch events
	// each), which the server stores with a few disk syncs for the whole batch instead of one per event.
	// With sync "always" that is what keeps the relay ahead of thousands of events a second, and leaves
	// the disk to PostgreSQL's commits (bench-events: with batches of 8 and more sent atomically, relay
	// and start-lag p99 fell several times against event by event). A smaller batch goes event by event:
	// an atomic batch costs about 10 ms of its own. 0 means 8; -1 never uses atomic batches.
	AtomicFrom int
}

// MaxAtomicBatch is the most events one atomic batch holds (the server's default limit).
const MaxAtomicBatch = 1000

// Publisher publishes events to the events stream, each with its event id as Nats-Msg-Id so that
// JetStream drops a second publication of it within the duplicates window, and reads back what the
// stream holds. It is safe for concurrent use, but one publisher at a time keeps the stream's order.
type Publisher struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	stream     StreamConfig
	ackTimeout time.Duration
	atomicFrom int // 0: never
}

// NewPublisher returns a publisher on nc. It does not touch the server: call Ensure first.
func NewPublisher(nc *nats.Conn, cfg PublisherConfig) (*Publisher, error) {
	stream, err := cfg.Stream.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.APITimeout == 0 {
		cfg.APITimeout = time.Second
	}
	if cfg.AckTimeout < 0 || cfg.APITimeout < 0 {
		return nil, errors.New("jetstream: negative AckTimeout or APITimeout")
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.AckTimeout), jetstream.WithDefaultTimeout(cfg.APITimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	switch {
	case cfg.AtomicFrom == 0:
		cfg.AtomicFrom = 8
	case cfg.AtomicFrom < 0:
		cfg.AtomicFrom = 0
	case cfg.AtomicFrom == 1:
		cfg.AtomicFrom = 2
	}
	return &Publisher{nc: nc, js: js, stream: stream, ackTimeout: cfg.AckTimeout, atomicFrom: cfg.AtomicFrom}, nil
}

// StreamName is the name of the stream published to.
func (p *Publisher) StreamName() string { return p.stream.Name }

// Ensure creates the stream, or updates it to the configuration; also after NATS lost it.
func (p *Publisher) Ensure(ctx context.Context) error { return ensureStream(ctx, p.js, p.stream) }

// RejectedError is a publication that the client or the server refused for the message itself (too
// large, bad subject, ...): publishing it again will not succeed. Every other error of Publish is
// transient (no connection, no stream, timeout).
type RejectedError struct{ Err error }

func (e *RejectedError) Error() string { return "rejected: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *RejectedError) Unwrap() error { return e.Err }

// Rejected reports true: consumers match the behaviour without importing this package.
func (e *RejectedError) Rejected() bool { return true }

// classify wraps the errors that concern the message itself in a RejectedError.
func classify(err error) error {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrBadHeaderMsg) {
		return &RejectedError{Err: err}
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum, jetstream.JSErrCodeBadRequest:
			return &RejectedError{Err: err}
		}
	}
	return err
}

// Publish sends events in order, each to its subject with Nats-Msg-Id = its id and the envelope (id
// included) as data, and waits for the acknowledgements. It returns the stream sequence of each
// acknowledged event, in order: all of them, or the prefix before the first failure together with that
// failure's error (a *RejectedError when that event can never be published). An event the stream already
// holds within the duplicates window is acknowledged with its original sequence.
//
// From AtomicFrom events on, they go as JetStream atomic batches: each batch is stored whole, at
// consecutive sequences, or not at all. A batch refused whole (one of its events is stored already, or
// refused) or whose outcome is unknown (timeout) is published again event by event. Event by event, the
// events go out without waiting for each acknowledgement; the publications after a failed one are still
// waited for, so none is left in flight, but they are not reported: the caller publishes them again and
// JetStream drops the duplicates (or, better, first reads the stream's Tail).
func (p *Publisher) Publish(ctx context.Context, events []fanout.Event) ([]uint64, error) {
	if p.atomicFrom == 0 || len(events) < p.atomicFrom {
		return p.publishEach(ctx, events)
	}
	seqs := make([]uint64, 0, len(events))
	for len(events) > 0 {
		chunk := events[:min(len(events), MaxAtomicBatch)]
		events = events[len(chunk):]
		s, err := p.publishAtomic(ctx, chunk)
		if err != nil && ctx.Err() == nil {
			// The batch as a whole was refused or its outcome is unknown (a duplicate inside it, a message
			// refused, a timeout): publish its events one by one, which deduplicates each, tells which one
			// is refused, and costs one sync per event this once.
			s, err = p.publishEach(ctx, chunk)
		}
		seqs = append(seqs, s...)
		if err != nil {
			return seqs, err
		}
	}
	return seqs, nil
}

// batchAck is the answer to the commit of an atomic batch.
type batchAck struct {
	Stream   string `json:"stream"`
	Sequence uint64 `json:"seq"`
	BatchID  string `json:"batch"`
	Count    int    `json:"count"`
	Error    *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// publishAtomic sends events as one atomic batch: all are stored, at consecutive sequences, or none.
func (p *Publisher) publishAtomic(ctx context.Context, events []fanout.Event) ([]uint64, error) {
	batchID := nuid.Next()
	var reply *nats.Msg
	for i, ev := range events {
		msg, err := p.message(ev)
		if err != nil {
			return nil, err
		}
		msg.Header.Set(jetstream.ExpectedStreamHeader, p.stream.Name)
		msg.Header.Set("Nats-Batch-Id", batchID)
		msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < len(events)-1 {
			if err := p.nc.PublishMsg(msg); err != nil {
				return nil, fmt.Errorf("jetstream: publish batch: %w", err)
			}
			continue
		}
		msg.Header.Set("Nats-Batch-Commit", "1")
		reqCtx, cancel := context.WithTimeout(ctx, p.ackTimeout)
		reply, err = p.nc.RequestMsgWithContext(reqCtx, msg)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("jetstream: commit batch: %w", err)
		}
	}
	var ack batchAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return nil, fmt.Errorf("jetstream: commit batch: bad answer %q: %w", reply.Data, err)
	}
	if ack.Error != nil {
		return nil, fmt.Errorf("jetstream: commit batch: %s (%d)", ack.Error.Description, ack.Error.ErrCode)
	}
	if ack.Count != len(events) || ack.BatchID != batchID || ack.Sequence < uint64(len(events)) {
		return nil, fmt.Errorf("jetstream: commit batch: acknowledged %d events of batch %q at %d, sent %d of %q",
			ack.Count, ack.BatchID, ack.Sequence, len(events), batchID)
	}
	seqs := make([]uint64, len(events))
	for i := range seqs {
		seqs[i] = ack.Sequence - uint64(len(events)-1-i)
	}
	return seqs, nil
}

// publishEach sends events one by one, without waiting for each acknowledgement.
func (p *Publisher) publishEach(ctx context.Context, events []fanout.Event) ([]uint64, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	var sendErr error
	for _, ev := range events {
		msg, err := p.message(ev)
		if err == nil {
			var f jetstream.PubAckFuture
			f, err = p.js.PublishMsgAsync(msg, jetstream.WithExpectStream(p.stream.Name))
			if err == nil {
				futures = append(futures, f)
				continue
			}
		}
		sendErr = classify(fmt.Errorf("jetstream: publish event %s (%s): %w", ev.ID, ev.Type, err))
		break
	}
	seqs := make([]uint64, 0, len(futures))
	var ackErr error
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ackErr == nil {
				seqs = append(seqs, ack.Sequence)
			}
		case err := <-f.Err():
			if ackErr == nil {
				ackErr = classify(fmt.Errorf("jetstream: publish event %s: %w", events[i].ID, err))
			}
		case <-ctx.Done():
			if ackErr == nil {
				ackErr = fmt.Errorf("jetstream: publish: %w", ctx.Err())
			}
			return seqs, ackErr
		}
	}
	if ackErr != nil {
		return seqs, ackErr
	}
	return seqs, sendErr
}

func (p *Publisher) message(ev fanout.Event) (*nats.Msg, error) {
	if ev.ID == "" {
		return nil, &RejectedError{Err: errors.New("event without id")}
	}
	if err := ev.Validate(); err != nil {
		return nil, &RejectedError{Err: err}
	}
	// What json.Marshal writes (the encoder is compact and escapes as it does), without json.Marshal
	// validating and compacting it a second time: the relay's hot path.
	data, err := ev.MarshalJSON()
	if err != nil {
		return nil, &RejectedError{Err: err}
	}
	msg := nats.NewMsg(ev.Subject())
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	msg.Data = data
	return msg, nil
}

// Tail reports the stream's last sequence and the event ids of its last n messages (oldest first;
// sequences whose message is gone are left out). An empty stream, or one that does not exist, has last
// sequence 0. The id is the message's Nats-Msg-Id, or the "id" of its JSON payload when it has none.
func (p *Publisher) Tail(ctx context.Context, n int) (last uint64, seqs []uint64, ids []string, err error) {
	s, err := p.js.Stream(ctx, p.stream.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil, nil, nil
	}
	if err != nil {
		return 0, nil, nil, fmt.Errorf("jetstream: stream %s: %w", p.stream.Name, err)
	}
	state := s.CachedInfo().State
	last = state.LastSeq
	if last == 0 || n <= 0 {
		return last, nil, nil, nil
	}
	from := max(state.FirstSeq, 1)
	if uint64(n) < last && last-uint64(n)+1 > from {
		from = last - uint64(n) + 1
	}
	for seq := from; seq <= last && from <= last; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, nil, nil, fmt.Errorf("jetstream: read message %d of %s: %w", seq, p.stream.Name, err)
		}
		if id := messageID(msg); id != "" {
			seqs = append(seqs, seq)
			ids = append(ids, id)
		}
	}
	return last, seqs, ids, nil
}

func messageID(msg *jetstream.RawStreamMsg) string {
	if id := msg.Header.Get(jetstream.MsgIDHeader); id != "" {
		return id
	}
	var env struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(msg.Data, &env) == nil {
		return env.ID
	}
	return ""
}

// Reconnects counts the connection's reconnections. A NATS server that restarted may have lost what it
// had acknowledged, so a change means the stream must be checked against the outbox again.
func (p *Publisher) Reconnects() uint64 { return p.nc.Stats().Reconnects }
