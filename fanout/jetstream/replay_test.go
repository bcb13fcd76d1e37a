package jetstream_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/natstest"
)

// replayEnv is a NATS server with a stream, for the subscriber and replayer tests.
type replayEnv struct {
	nc  *nats.Conn
	js  natsjs.JetStream
	ctx context.Context
}

func newReplayEnv(t *testing.T, cfg natsjs.StreamConfig) *replayEnv {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	s := natstest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	nc, err := jetstream.Connect(ctx, s.ClientURL(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name == "" {
		if err := jetstream.EnsureStream(ctx, nc, jetstream.StreamConfig{}); err != nil {
			t.Fatal(err)
		}
	} else if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return &replayEnv{nc: nc, js: js, ctx: ctx}
}

// publish stores data on subject as the relay would and returns its stream sequence.
func (e *replayEnv) publish(t *testing.T, subject, data string) uint64 {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	m.Header.Set(nats.MsgIdHdr, data)
	ack, err := e.js.PublishMsg(e.ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

type replayed struct {
	seq  uint64
	data string
}

func replay(t *testing.T, r *jetstream.Replayer, after uint64, subjects, newest []string, limit int) ([]replayed, bool) {
	t.Helper()
	var got []replayed
	complete, err := r.Replay(t.Context(), after, subjects, newest, limit, func(seq uint64, subject string, data []byte) {
		if !slices.Contains(subjects, subject) && !slices.Contains(newest, subject) {
			t.Errorf("message %d on %q, which was not asked for", seq, subject)
		}
		got = append(got, replayed{seq, string(data)})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, complete
}

func TestReplay(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			cfg := natsjs.StreamConfig{Name: "NODIRECT", Subjects: []string{"ld.>"}, AllowDirect: false}
			stream := cfg.Name
			if direct {
				cfg, stream = natsjs.StreamConfig{}, jetstream.DefaultStreamName
			}
			e := newReplayEnv(t, cfg)
			r, err := jetstream.NewReplayer(e.nc, jetstream.ReplayerConfig{Stream: stream})
			if err != nil {
				t.Fatal(err)
			}
			s1 := e.publish(t, "ld.creator.1", "e1")
			e.publish(t, "ld.creator.2", "e2")
			s3 := e.publish(t, "ld.user.5", "e3")
			e.publish(t, "ld.drop.9", "tick1")
			s5 := e.publish(t, "ld.creator.1", "e5")
			s6 := e.publish(t, "ld.drop.9", "tick2")
			e.publish(t, "ld.user.6", "e7")

			tests := []struct {
				name             string
				after            uint64
				subjects, newest []string
				limit            int
				want             []replayed
				wantComplete     bool
			}{
				{"own subjects only, oldest first", s1, []string{"ld.creator.1", "ld.user.5"}, nil, 10,
					[]replayed{{s3, "e3"}, {s5, "e5"}}, true},
				{"newest stock tick only", s1, []string{"ld.user.5"}, []string{"ld.drop.9"}, 10,
					[]replayed{{s3, "e3"}, {s6, "tick2"}}, true},
				{"nothing missed", s6, []string{"ld.creator.1", "ld.user.5"}, []string{"ld.drop.9"}, 10, nil, true},
				{"over the limit", s1, []string{"ld.creator.1", "ld.user.5"}, nil, 1, nil, false},
				{"from the start", 0, []string{"ld.creator.1"}, nil, 10, []replayed{{s1, "e1"}, {s5, "e5"}}, true},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					got, complete := replay(t, r, tt.after, tt.subjects, tt.newest, tt.limit)
					if complete != tt.wantComplete || (complete && !slices.Equal(got, tt.want)) {
						t.Errorf("got %v complete=%v, want %v complete=%v", got, complete, tt.want, tt.wantComplete)
					}
				})
			}

			// The stream dropped the gap's start: not complete, whatever is left.
			st, err := e.js.Stream(e.ctx, stream)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Purge(e.ctx, natsjs.WithPurgeSequence(s3)); err != nil {
				t.Fatal(err)
			}
			if got, complete := replay(t, r, s1, []string{"ld.creator.1", "ld.user.5"}, nil, 10); complete {
				t.Errorf("after a purge: got %v complete, want incomplete", got)
			}
			if got, complete := replay(t, r, s3, []string{"ld.creator.1"}, nil, 10); !complete || !slices.Equal(got, []replayed{{s5, "e5"}}) {
				t.Errorf("after a purge, from a kept message: got %v complete=%v", got, complete)
			}
		})
	}
}

func TestReplayManySubjectsAndLongGaps(t *testing.T) {
	e := newReplayEnv(t, natsjs.StreamConfig{})
	r, err := jetstream.NewReplayer(e.nc, jetstream.ReplayerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	start := e.publish(t, "ld.user.1", "start")
	var subjects []string
	var want []replayed
	for i := range 100 { // more creators than are read one by one
		subj := "ld.creator." + strconv.Itoa(i+1)
		subjects = append(subjects, subj)
		if i%2 == 0 {
			want = append(want, replayed{e.publish(t, subj, "c"+strconv.Itoa(i)), "c" + strconv.Itoa(i)})
		}
		e.publish(t, "ld.creator.9999", "other"+strconv.Itoa(i)) // not followed
	}
	for i := range 600 { // more than one batch on one subject
		want = append(want, replayed{e.publish(t, "ld.user.1", "u"+strconv.Itoa(i)), "u" + strconv.Itoa(i)})
	}
	slices.SortFunc(want, func(a, b replayed) int { return int(a.seq) - int(b.seq) })
	got, complete := replay(t, r, start, append(subjects, "ld.user.1"), nil, 1000)
	if !complete || !slices.Equal(got, want) {
		t.Fatalf("got %d messages complete=%v, want %d", len(got), complete, len(want))
	}
}

func TestSubscriber(t *testing.T) {
	e := newReplayEnv(t, natsjs.StreamConfig{})
	s := jetstream.NewSubscriber(e.nc, slog.New(slog.DiscardHandler), jetstream.SubscriberConfig{})
	defer s.Close()
	var mu sync.Mutex
	var got []string
	deliver := func(subject string, data []byte) {
		mu.Lock()
		got = append(got, subject+"="+string(data))
		mu.Unlock()
	}
	unsubA, err := s.Subscribe("ld.creator.1", deliver)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Subscribe("ld.user.2", deliver); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "ld.creator.1", "a")
	e.publish(t, "ld.creator.3", "not subscribed")
	e.publish(t, "ld.user.2", "b")
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	if err := unsubA(); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "ld.creator.1", "after unsubscribe")
	e.publish(t, "ld.user.2", "c")
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 3 })
	mu.Lock()
	want := []string{"ld.creator.1=a", "ld.user.2=b", "ld.user.2=c"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	mu.Unlock()
	s.Close()
	if _, err := s.Subscribe("ld.user.3", deliver); err == nil {
		t.Error("Subscribe after Close: got no error")
	}
}

// waitFor polls cond until it holds, or fails the test after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
