package jetstream_test

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/fanout/jetstream"
)

// What a subscription received before it was unsubscribed is still delivered, in order, even when the
// unsubscription comes while those messages wait in the channel (a wildcard taking a subject over).
func TestSubscriberDeliversWhatCameBeforeUnsubscribe(t *testing.T) {
	e := newReplayEnv(t, natsjs.StreamConfig{})
	s := jetstream.NewSubscriber(e.nc, slog.New(slog.DiscardHandler), jetstream.SubscriberConfig{})
	defer s.Close()
	gate := make(chan struct{})
	var mu sync.Mutex
	var got []string
	deliver := func(subject string, data []byte) {
		<-gate
		mu.Lock()
		got = append(got, string(data))
		mu.Unlock()
	}
	unsub, err := s.Subscribe("ld.creator.1", deliver)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprint("m", i))
		e.publish(t, "ld.creator.1", want[i])
	}
	if err := s.Flush(e.ctx); err != nil { // the messages reached this client before the unsubscription
		t.Fatal(err)
	}
	if err := unsub(); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "ld.creator.1", "after")
	close(gate)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(want) })
	// "after" never comes: one more message on a live subject proves the channel drained past it.
	done := make(chan struct{})
	if _, err := s.Subscribe("ld.user.9", func(string, []byte) { close(done) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "ld.user.9", "marker")
	<-done
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if err := unsub(); err != nil {
		t.Errorf("second unsubscribe: %v", err)
	}
}

func TestActiveCreators(t *testing.T) {
	e := newReplayEnv(t, natsjs.StreamConfig{})
	r, err := jetstream.NewReplayer(e.nc, jetstream.ReplayerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.ActiveCreators(e.ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty stream: got %v, %v", got, err)
	}
	e.publish(t, "ld.creator.7", "a")
	e.publish(t, "ld.creator.7", "b")
	e.publish(t, "ld.creator.12", "c")
	e.publish(t, "ld.drop.5", "d")
	e.publish(t, "ld.user.3", "e")
	got, err = r.ActiveCreators(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int64{7, 12}) {
		t.Errorf("got %v, want [7 12]", got)
	}
}
