package relay

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/livedrops/livedrops/fanout"
)

// ErrPoison marks an outbox record that can never be published as it is: its payload does not decode,
// does not validate, or disagrees with the record's type or subject.
var ErrPoison = errors.New("poison outbox record")

// Decode turns an outbox record into the event to publish: the payload decoded, the record's event id
// set, the user id taken from a user subject. It fails with ErrPoison unless the event validates and
// travels on the record's subject with the record's type.
func Decode(rec fanout.Record) (fanout.Event, error) {
	var ev fanout.Event
	if rec.EventID == "" {
		return ev, fmt.Errorf("%w: row %d has no event id", ErrPoison, rec.Seq)
	}
	// Event's own decoder, not json.Unmarshal, which would read the whole payload once more to check it
	// before handing it over (the decoder checks it too).
	if err := ev.UnmarshalJSON(rec.Payload); err != nil {
		return ev, fmt.Errorf("%w: event %s: %w", ErrPoison, rec.EventID, err)
	}
	if ev.Type != rec.Type {
		return ev, fmt.Errorf("%w: event %s: payload type %q, row type %q", ErrPoison, rec.EventID, ev.Type, rec.Type)
	}
	ev.ID = rec.EventID
	if rest, ok := strings.CutPrefix(rec.Subject, fanout.UserPrefix); ok {
		if id, err := strconv.ParseInt(rest, 10, 64); err == nil {
			ev.UserID = id
		}
	}
	if err := ev.Validate(); err != nil {
		return ev, fmt.Errorf("%w: event %s: %w", ErrPoison, rec.EventID, err)
	}
	if s := ev.Subject(); s != rec.Subject {
		return ev, fmt.Errorf("%w: event %s travels on %s, row says %s", ErrPoison, rec.EventID, s, rec.Subject)
	}
	return ev, nil
}
