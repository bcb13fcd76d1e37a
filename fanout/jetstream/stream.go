package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/fanout"
)

// Stream defaults and bounds.
const (
	// DefaultStreamName is the stream that keeps every event when StreamConfig.Name is empty.
	DefaultStreamName = "LIVEDROPS"
	// DefaultReplayWindow is how long the stream keeps events when StreamConfig.ReplayWindow is zero.
	DefaultReplayWindow = 15 * time.Minute
	// MinReplayWindow is the shortest replay window allowed: API.md promises at least 10 minutes.
	MinReplayWindow = 10 * time.Minute
	// DefaultDuplicates is the deduplication window when StreamConfig.Duplicates is zero.
	DefaultDuplicates = 2 * time.Minute
)

// StreamConfig describes the one JetStream stream that keeps every live event (subjects
// fanout.AllSubjects, file storage). Zero values are the documented defaults.
type StreamConfig struct {
	// Name is the stream's name; "" means DefaultStreamName.
	Name string
	// ReplayWindow is how long events are kept (the stream's MaxAge), so a client can resume within it;
	// 0 means DefaultReplayWindow (15 min). At least MinReplayWindow (10 min).
	ReplayWindow time.Duration
	// Duplicates is the window in which a second publication with the same Nats-Msg-Id (event id) is
	// dropped; 0 means DefaultDuplicates (2 min). At most ReplayWindow.
	Duplicates time.Duration
	// Replicas is the number of copies in a NATS cluster; 0 means 1 (one server). At most 5.
	Replicas int
}

// withDefaults fills in the defaults and validates c.
func (c StreamConfig) withDefaults() (StreamConfig, error) {
	if c.Name == "" {
		c.Name = DefaultStreamName
	}
	if c.ReplayWindow == 0 {
		c.ReplayWindow = DefaultReplayWindow
	}
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	var errs []error
	if c.ReplayWindow < MinReplayWindow {
		errs = append(errs, fmt.Errorf("replay window %s is below the minimum %s", c.ReplayWindow, MinReplayWindow))
	}
	if c.Duplicates < 0 || c.Duplicates > c.ReplayWindow {
		errs = append(errs, fmt.Errorf("duplicates window %s must be positive and at most the replay window %s", c.Duplicates, c.ReplayWindow))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d: want 1 to 5", c.Replicas))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("jetstream: stream config: %w", err)
	}
	return c, nil
}

func (c StreamConfig) jetstream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Name,
		Description: "LiveDrops live events, kept for the replay window",
		Subjects:    []string{fanout.AllSubjects},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		MaxAge:      c.ReplayWindow,
		Duplicates:  c.Duplicates,
		Replicas:    c.Replicas,
		// Hubs read single messages and replays with direct gets, served by any replica.
		AllowDirect: true,
		// The relay publishes a batch of events atomically: one disk sync per batch, not per event.
		AllowAtomicPublish: true,
	}
}

// EnsureStream creates the events stream, or updates an existing one to cfg. It is idempotent: every
// process may call it at start.
func EnsureStream(ctx context.Context, nc *nats.Conn, cfg StreamConfig) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return ensureStream(ctx, js, cfg)
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) error {
	if _, err := js.CreateOrUpdateStream(ctx, cfg.jetstream()); err != nil {
		return fmt.Errorf("jetstream: create or update stream %s: %w", cfg.Name, err)
	}
	return nil
}
