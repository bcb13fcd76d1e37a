package jetstream

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/fanout"
)

// ActiveCreators returns the ids of the creators whose subject (ld.creator.<id>) holds at least one
// message in the stream: the creators that published within the stream's window (the replay window).
// It implements hub.Activity; the hub compares them with the creators its users follow to choose how it
// subscribes. One stream-info request, whose answer lists one entry per such creator.
func (r *Replayer) ActiveCreators(ctx context.Context) ([]int64, error) {
	s, err := r.js.Stream(ctx, r.stream)
	if err != nil {
		return nil, fmt.Errorf("jetstream: stream %s: %w", r.stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(fanout.CreatorPrefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("jetstream: creator subjects of %s: %w", r.stream, err)
	}
	out := make([]int64, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		id, err := strconv.ParseInt(strings.TrimPrefix(subject, fanout.CreatorPrefix), 10, 64)
		if err == nil && id > 0 {
			out = append(out, id)
		}
	}
	return out, nil
}
