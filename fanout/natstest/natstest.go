// Package natstest gives a test a real NATS server with JetStream, in process, with its store in a
// temporary directory; it is stopped when the test ends. (A test that restarts NATS on the same store
// and port uses natslocal directly.)
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := natslocal.Start(ctx, natslocal.Config{Dir: tb.TempDir()})
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
