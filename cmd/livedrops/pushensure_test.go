package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/natstest"
)

// A worker whose push streams cannot be created yet (here: the events stream, which the leading relay
// creates, does not exist) keeps retrying instead of exiting, and its notifier's consumers exist once
// the stream does; a stopping worker's retries end with its context.
func TestPushQueueIsEnsuredOnceItCanBe(t *testing.T) {
	nc, queue, first := newPushQueue(t)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ensurePushQueue(ctx, queue, first, log) }()

	// It fails at first, and says so, without giving up.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "cannot create the push streams yet") {
		if time.Now().After(deadline) {
			t.Fatalf("no failed attempt logged; log:\n%s", logs.String())
		}
		select {
		case err := <-done:
			t.Fatalf("ensurePushQueue returned %v before the events stream existed", err)
		case <-time.After(50 * time.Millisecond):
		}
	}

	// The relay creates the events stream; the next attempt succeeds.
	pub, err := jetstream.NewPublisher(nc, jetstream.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ensurePushQueue: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("ensurePushQueue still retrying 30 s after the events stream exists; log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "push streams ready") {
		t.Errorf("success after retries not logged; log:\n%s", logs.String())
	}
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for stream, consumer := range map[string]string{
		jetstream.DefaultStreamName: jetstream.PushEventsConsumer,
		jetstream.PushJobsStream:    jetstream.PushJobsConsumer,
	} {
		if _, err := js.Consumer(ctx, stream, consumer); err != nil {
			t.Errorf("consumer %s on %s: %v", consumer, stream, err)
		}
	}
	if _, err := js.Stream(ctx, jetstream.PushDLQStream); err != nil {
		t.Errorf("stream %s: %v", jetstream.PushDLQStream, err)
	}
}

func TestPushQueueRetriesEndWithTheWorker(t *testing.T) {
	_, queue, first := newPushQueue(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ensurePushQueue(ctx, queue, first, slog.New(slog.DiscardHandler)) }()
	time.Sleep(time.Second) // a few failed attempts: no events stream
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("ensurePushQueue after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ensurePushQueue kept retrying after its context ended")
	}
}

// newPushQueue is a push queue on a NATS server of its own without the events stream, and the error of
// its first Ensure (the relay has not created the events stream yet).
func newPushQueue(t *testing.T) (*nats.Conn, *jetstream.PushQueue, error) {
	t.Helper()
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	queue, err := jetstream.NewPushQueue(nc, jetstream.PushQueueConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := queue.Ensure(ctx)
	if first == nil {
		t.Fatal("the push queue was created without the events stream")
	}
	return nc, queue, first
}
