package jetstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/natstest"
)

func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// connect starts a NATS server for the test and returns a connection to it, closed at the end.
func connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	leakCheck(tb)
	s := natstest.Start(tb)
	nc, err := jetstream.Connect(testContext(tb), s.ClientURL(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// leakCheck fails the test if it leaves goroutines behind; call it first, so that its check runs after
// every other cleanup.
func leakCheck(tb testing.TB) {
	tb.Helper()
	ignore := goleak.IgnoreCurrent()
	tb.Cleanup(func() { goleak.VerifyNone(tb, ignore) })
}

func newPublisher(tb testing.TB, nc *nats.Conn, cfg jetstream.PublisherConfig) *jetstream.Publisher {
	tb.Helper()
	p, err := jetstream.NewPublisher(nc, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.Ensure(testContext(tb)); err != nil {
		tb.Fatal(err)
	}
	return p
}

func event(id int, typ fanout.Type) fanout.Event {
	ev := fanout.Event{ID: strconv.Itoa(id), Type: typ, TS: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
		CreatorID: 7, DropID: 42, Data: json.RawMessage(`{"n":` + strconv.Itoa(id) + `}`)}
	if typ == fanout.OrderConfirmed {
		ev.UserID = 5
	}
	return ev
}

func TestStreamConfigValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     jetstream.StreamConfig
		wantErr string
	}{
		{"defaults", jetstream.StreamConfig{}, ""},
		{"a longer window", jetstream.StreamConfig{ReplayWindow: time.Hour, Duplicates: 5 * time.Minute, Replicas: 3}, ""},
		{"window below ten minutes", jetstream.StreamConfig{ReplayWindow: 9 * time.Minute}, "below the minimum"},
		{"duplicates longer than the window", jetstream.StreamConfig{Duplicates: 20 * time.Minute}, "duplicates window"},
		{"negative duplicates", jetstream.StreamConfig{Duplicates: -time.Second}, "duplicates window"},
		{"too many replicas", jetstream.StreamConfig{Replicas: 7}, "replicas"},
		{"negative replicas", jetstream.StreamConfig{Replicas: -1}, "replicas"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := jetstream.NewPublisher(&nats.Conn{}, jetstream.PublisherConfig{Stream: tc.cfg})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("got %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestEnsureStreamIsIdempotentAndUpdates(t *testing.T) {
	nc := connect(t)
	ctx := testContext(t)
	for _, window := range []time.Duration{0, 0, 30 * time.Minute} {
		if err := jetstream.EnsureStream(ctx, nc, jetstream.StreamConfig{ReplayWindow: window}); err != nil {
			t.Fatalf("EnsureStream(window %s): %v", window, err)
		}
	}
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, jetstream.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.MaxAge != 30*time.Minute || cfg.Duplicates != jetstream.DefaultDuplicates || cfg.Storage != natsjs.FileStorage ||
		!slices.Equal(cfg.Subjects, []string{fanout.AllSubjects}) || cfg.Replicas != 1 || !cfg.AllowDirect {
		t.Errorf("stream config: got max age %s, duplicates %s, storage %s, subjects %v, replicas %d, direct %v",
			cfg.MaxAge, cfg.Duplicates, cfg.Storage, cfg.Subjects, cfg.Replicas, cfg.AllowDirect)
	}
}

func TestPublishInOrderWithDeduplication(t *testing.T) {
	nc := connect(t)
	ctx := testContext(t)
	p := newPublisher(t, nc, jetstream.PublisherConfig{})

	events := []fanout.Event{event(1, fanout.StockChanged), event(2, fanout.OrderConfirmed), event(3, fanout.DropStarted)}
	seqs, err := p.Publish(ctx, events)
	if err != nil || !slices.Equal(seqs, []uint64{1, 2, 3}) {
		t.Fatalf("Publish: got %v, %v; want [1 2 3]", seqs, err)
	}
	// A publication again (a relay that stopped before recording it) is acknowledged with the original
	// sequence and not stored twice.
	seqs, err = p.Publish(ctx, []fanout.Event{events[1], event(4, fanout.DropEnded)})
	if err != nil || !slices.Equal(seqs, []uint64{2, 4}) {
		t.Fatalf("Publish again: got %v, %v; want [2 4]", seqs, err)
	}

	// What a consumer of the stream reads: each event once, in order.
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, jetstream.DefaultStreamName, natsjs.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for msg := range batch.Messages() {
		var ev fanout.Event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.ID != msg.Headers().Get(natsjs.MsgIDHeader) {
			t.Errorf("message %s has Nats-Msg-Id %s", ev.ID, msg.Headers().Get(natsjs.MsgIDHeader))
		}
		got = append(got, msg.Subject()+" "+ev.ID)
	}
	if want := []string{"ld.drop.42 1", "ld.user.5 2", "ld.creator.7 3", "ld.creator.7 4"}; !slices.Equal(got, want) {
		t.Errorf("stream: got %q, want %q", got, want)
	}

	last, tailSeqs, ids, err := p.Tail(ctx, 2)
	if err != nil || last != 4 || !slices.Equal(tailSeqs, []uint64{3, 4}) || !slices.Equal(ids, []string{"3", "4"}) {
		t.Errorf("Tail(2): got %d %v %v %v; want 4 [3 4] [3 4]", last, tailSeqs, ids, err)
	}
	if last, tailSeqs, _, err := p.Tail(ctx, 10); err != nil || last != 4 || len(tailSeqs) != 4 {
		t.Errorf("Tail(10): got %d %v %v; want 4 and all four", last, tailSeqs, err)
	}
}

func TestPublishRejectsWhatCanNeverBePublished(t *testing.T) {
	nc := connect(t)
	ctx := testContext(t)
	p := newPublisher(t, nc, jetstream.PublisherConfig{})
	huge := event(2, fanout.StockChanged)
	huge.Data = json.RawMessage(`{"pad":"` + strings.Repeat("x", 2<<20) + `"}`)
	noID := event(0, fanout.StockChanged)
	noID.ID = ""
	invalid := event(2, fanout.OrderConfirmed)
	invalid.UserID = 0

	tests := []struct {
		name string
		bad  fanout.Event
	}{{"larger than the server allows", huge}, {"without id", noID}, {"invalid", invalid}}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first := event(10*i+1, fanout.DropStarted)
			seqs, err := p.Publish(ctx, []fanout.Event{first, tc.bad, event(10*i+3, fanout.DropEnded)})
			var rejected *jetstream.RejectedError
			if !errors.As(err, &rejected) || !rejected.Rejected() {
				t.Fatalf("got %v, want a RejectedError", err)
			}
			if len(seqs) != 1 {
				t.Errorf("acknowledged: got %v, want the one before the refused event", seqs)
			}
		})
	}
}

func TestPublishWithoutStreamIsTransient(t *testing.T) {
	nc := connect(t)
	ctx := testContext(t)
	p, err := jetstream.NewPublisher(nc, jetstream.PublisherConfig{AckTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// No Ensure: no stream captures the subject.
	_, err = p.Publish(ctx, []fanout.Event{event(1, fanout.DropStarted)})
	var rejected *jetstream.RejectedError
	if err == nil || errors.As(err, &rejected) {
		t.Fatalf("got %v, want a transient error", err)
	}
	if last, seqs, _, err := p.Tail(ctx, 5); err != nil || last != 0 || seqs != nil {
		t.Errorf("Tail of a missing stream: got %d %v %v; want 0", last, seqs, err)
	}
	if err := p.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if seqs, err := p.Publish(ctx, []fanout.Event{event(1, fanout.DropStarted)}); err != nil || !slices.Equal(seqs, []uint64{1}) {
		t.Errorf("after Ensure: got %v, %v; want [1]", seqs, err)
	}
}

// Batches from AtomicFrom events up go as atomic batches; a batch the server refuses as a whole (one of
// its events is stored already, or refused) is published event by event, with the same outcome.
func TestPublishAtomicBatches(t *testing.T) {
	nc := connect(t)
	ctx := testContext(t)
	p := newPublisher(t, nc, jetstream.PublisherConfig{AtomicFrom: 10})
	batch := func(from, to int) []fanout.Event {
		var evs []fanout.Event
		for id := from; id <= to; id++ {
			evs = append(evs, event(id, fanout.OrderConfirmed))
		}
		return evs
	}
	seqRange := func(from, to uint64) []uint64 {
		var out []uint64
		for s := from; s <= to; s++ {
			out = append(out, s)
		}
		return out
	}
	huge := event(1250, fanout.StockChanged)
	huge.Data = json.RawMessage(`{"pad":"` + strings.Repeat("x", 2<<20) + `"}`)
	withHuge := append(batch(1201, 1249), huge)
	withHuge = append(withHuge, batch(1251, 1260)...)

	tests := []struct {
		name     string
		events   []fanout.Event
		want     []uint64
		rejected bool
	}{
		{"a new batch", batch(1, 100), seqRange(1, 100), false},
		{"a batch half stored already", batch(51, 150), seqRange(51, 150), false},
		{"a small batch", batch(151, 155), seqRange(151, 155), false},
		{"a batch with a refused event", withHuge, seqRange(156, 204), true},
		{"more than one atomic batch", batch(2001, 2000+jetstream.MaxAtomicBatch+5), seqRange(205, 204+jetstream.MaxAtomicBatch+5), false},
	}
	for _, tc := range tests {
		seqs, err := p.Publish(ctx, tc.events)
		var rejected *jetstream.RejectedError
		if errors.As(err, &rejected) != tc.rejected || (!tc.rejected && err != nil) {
			t.Errorf("%s: got error %v, want rejected %v", tc.name, err, tc.rejected)
		}
		if !slices.Equal(seqs, tc.want) {
			t.Errorf("%s: got sequences %v, want %v", tc.name, seqs, tc.want)
		}
	}
	last, _, _, err := p.Tail(ctx, 1)
	if want := uint64(204 + jetstream.MaxAtomicBatch + 5); err != nil || last != want {
		t.Errorf("stream's last sequence: got %d, %v; want %d (nothing stored twice)", last, err, want)
	}
}

// BenchmarkPublish publishes batches of events to a stream on a server that syncs every write (the
// default of natslocal), as the relay does: as one atomic batch (one sync) or event by event.
func BenchmarkPublish(b *testing.B) {
	for _, atomic := range []bool{true, false} {
		for _, batch := range []int{1, 10, 50, 500} {
			b.Run(fmt.Sprintf("atomic=%v/batch=%d", atomic, batch), func(b *testing.B) {
				nc := connect(b)
				cfg := jetstream.PublisherConfig{AtomicFrom: 2}
				if !atomic {
					cfg.AtomicFrom = -1
				}
				p := newPublisher(b, nc, cfg)
				ctx := testContext(b)
				events := make([]fanout.Event, batch)
				id := 0
				b.ReportAllocs()
				for b.Loop() {
					for i := range events {
						id++
						events[i] = event(id, fanout.OrderConfirmed)
					}
					if _, err := p.Publish(ctx, events); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(id)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}
