package natslocal_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/fanout/natslocal"
)

func TestParseSync(t *testing.T) {
	tests := []struct {
		in       string
		always   bool
		interval time.Duration
		wantErr  bool
	}{
		{"", true, 0, false},
		{"always", true, 0, false},
		{"2m", false, 2 * time.Minute, false},
		{"0s", false, 0, true},
		{"-1s", false, 0, true},
		{"sometimes", false, 0, true},
	}
	for _, tc := range tests {
		always, interval, err := natslocal.ParseSync(tc.in)
		if (err != nil) != tc.wantErr || always != tc.always || interval != tc.interval {
			t.Errorf("ParseSync(%q) = %v, %v, %v; want %v, %v, err %v", tc.in, always, interval, err, tc.always, tc.interval, tc.wantErr)
		}
	}
}

// A stream and its messages survive a restart on the same directory.
func TestRestartKeepsJetStreamData(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	s, err := natslocal.Start(ctx, natslocal.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEPT", Subjects: []string{"kept.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "kept.one", []byte("first run")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	s2, err := natslocal.Start(ctx, natslocal.Config{Dir: dir, Sync: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop(ctx)
	nc2, err := nats.Connect(s2.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	stream, err := js2.Stream(ctx, "KEPT")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	msg, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data) != "first run" {
		t.Fatalf("got %q, want %q", msg.Data, "first run")
	}
}

func TestBadSyncIsRefused(t *testing.T) {
	if _, err := natslocal.Start(context.Background(), natslocal.Config{Dir: t.TempDir(), Sync: "never"}); err == nil {
		t.Fatal("Start with Sync=never succeeded")
	}
}
