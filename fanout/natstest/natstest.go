// Package natstest gives a test a real NATS server with JetStream, in process, with its store in a
// temporary directory; it is stopped when the test ends.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout/natslocal"
)

// Start starts a server for this test and fails the test if it cannot.
func Start(tb testing.TB) *natslocal.Server {
	tb.Helper()
	return StartIn(tb, tb.TempDir())
}

// StartIn starts a server on an existing store directory, so a test can restart NATS on the data of an
// earlier server.
func StartIn(tb testing.TB, dir string) *natslocal.Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := natslocal.Start(ctx, natslocal.Config{Dir: dir})
	if err != nil {
		tb.Fatalf("natstest: start NATS: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			tb.Errorf("natstest: stop NATS: %v", err)
		}
	})
	return s
}
