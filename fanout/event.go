// Package fanout is the domain of LiveDrops' live events: the event envelope every socket receives,
// the event types, and the NATS subjects they travel on. It uses the standard library only; the
// adapters beneath it (fanout/jetstream, ...) move events, the hub delivers them.
//
// Routing (see ARCHITECTURE.md): an event travels on exactly one subject.
//
//	ld.creator.<creator_id>  drop.scheduled, drop.started, stock.low, drop.soldout, drop.ended
//	ld.drop.<drop_id>        stock.changed (the ticks only the drop's watchers receive)
//	ld.user.<user_id>        order.confirmed, order.failed, follow.changed
//
// A hub that has a socket watching a drop therefore also listens to the drop's creator subject, and
// hands a creator event about that drop to its watchers as well as to the creator's followers.
package fanout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/livedrops/livedrops/internal/jsonw"
)

// Type names an event kind, as it appears in the envelope's "type".
type Type string

// The event types of the public contract (API.md, "Live events").
const (
	DropScheduled  Type = "drop.scheduled"
	DropStarted    Type = "drop.started"
	StockChanged   Type = "stock.changed"
	StockLow       Type = "stock.low"
	DropSoldOut    Type = "drop.soldout"
	DropEnded      Type = "drop.ended"
	OrderConfirmed Type = "order.confirmed"
	OrderFailed    Type = "order.failed"
	FollowChanged  Type = "follow.changed"
)

// scope says which subject family a type travels on.
type scope int

const (
	scopeCreator scope = iota + 1
	scopeDrop
	scopeUser
)

var types = map[Type]struct {
	scope    scope
	needDrop bool
}{
	DropScheduled:  {scopeCreator, true},
	DropStarted:    {scopeCreator, true},
	StockChanged:   {scopeDrop, true},
	StockLow:       {scopeCreator, true},
	DropSoldOut:    {scopeCreator, true},
	DropEnded:      {scopeCreator, true},
	OrderConfirmed: {scopeUser, true},
	OrderFailed:    {scopeUser, true},
	FollowChanged:  {scopeUser, false},
}

// Known reports whether t is one of the contract's event types.
func (t Type) Known() bool {
	_, ok := types[t]
	return ok
}

// Subject prefixes; a subject is a prefix followed by a decimal id.
const (
	CreatorPrefix = "ld.creator."
	DropPrefix    = "ld.drop."
	UserPrefix    = "ld.user."
	// AllSubjects is the wildcard one JetStream stream keeps.
	AllSubjects = "ld.>"
)

// CreatorSubject is the subject of a creator's drop lifecycle events.
func CreatorSubject(creatorID int64) string { return CreatorPrefix + strconv.FormatInt(creatorID, 10) }

// DropSubject is the subject of a drop's stock ticks.
func DropSubject(dropID int64) string { return DropPrefix + strconv.FormatInt(dropID, 10) }

// UserSubject is the subject of a user's own events.
func UserSubject(userID int64) string { return UserPrefix + strconv.FormatInt(userID, 10) }

// Event is one live event. Its JSON form is the envelope of API.md:
//
//	{"id":"...","type":"drop.started","ts":"2026-11-25T12:00:00.000Z","creator_id":7,"drop_id":42,"data":{...}}
//
// UserID routes user events (order.*, follow.changed) and is not part of the envelope.
type Event struct {
	// ID is unique and ordered by the moment the event was written; assigned by the outbox.
	ID string
	// Type is the event kind.
	Type Type
	// TS is when the event happened: a drop's start_time for drop.started, its end_time for drop.ended,
	// the commit for the rest. Encoded in UTC with milliseconds.
	TS time.Time
	// CreatorID is the creator of the drop concerned (for follow.changed: the creator followed).
	CreatorID int64
	// DropID is the drop concerned; 0 for events about no drop.
	DropID int64
	// UserID is the recipient of user events; 0 otherwise.
	UserID int64
	// Data is the type-specific JSON object; nil encodes as {}.
	Data json.RawMessage
}

// TimeFormat is RFC 3339 with exactly three fractional digits, as every time on the wire.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Errors of Validate and UnmarshalJSON.
var (
	ErrUnknownType = errors.New("unknown event type")
	ErrInvalid     = errors.New("invalid event")
)

// Validate checks that e can be routed and encoded.
func (e Event) Validate() error {
	info, ok := types[e.Type]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownType, e.Type)
	}
	switch {
	case e.TS.IsZero():
		return fmt.Errorf("%w: %s without ts", ErrInvalid, e.Type)
	case e.CreatorID <= 0:
		return fmt.Errorf("%w: %s without creator_id", ErrInvalid, e.Type)
	case info.needDrop && e.DropID <= 0:
		return fmt.Errorf("%w: %s without drop_id", ErrInvalid, e.Type)
	case info.scope == scopeUser && e.UserID <= 0:
		return fmt.Errorf("%w: %s without a user to route to", ErrInvalid, e.Type)
	case e.Data != nil && !isObject(e.Data):
		return fmt.Errorf("%w: %s data is not a JSON object", ErrInvalid, e.Type)
	}
	return nil
}

// Subject is the NATS subject e travels on. It panics on an unknown type; call Validate first.
func (e Event) Subject() string {
	switch types[e.Type].scope {
	case scopeCreator:
		return CreatorSubject(e.CreatorID)
	case scopeDrop:
		return DropSubject(e.DropID)
	case scopeUser:
		return UserSubject(e.UserID)
	}
	panic(fmt.Sprintf("fanout: subject of unknown event type %q", e.Type))
}

// wire is the envelope's JSON shape.
type wire struct {
	ID        string          `json:"id,omitempty"`
	Type      Type            `json:"type"`
	TS        string          `json:"ts"`
	CreatorID int64           `json:"creator_id"`
	DropID    int64           `json:"drop_id,omitempty"`
	Data      json.RawMessage `json:"data"`
}

// MarshalJSON encodes the envelope. An empty ID is left out (the outbox stores events before they have
// one). It writes byte for byte what json.Marshal writes of wire (Data compacted and HTML-escaped), without
// reflection: every order writes one.
func (e Event) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 96+len(e.Data))
	b = append(b, '{')
	if e.ID != "" {
		b = append(b, `"id":`...)
		b = jsonw.String(b, e.ID)
		b = append(b, ',')
	}
	b = append(b, `"type":`...)
	b = jsonw.String(b, string(e.Type))
	b = append(b, `,"ts":`...)
	b = jsonw.Time(b, e.TS, TimeFormat)
	b = append(b, `,"creator_id":`...)
	b = jsonw.Int(b, e.CreatorID)
	if e.DropID != 0 {
		b = append(b, `,"drop_id":`...)
		b = jsonw.Int(b, e.DropID)
	}
	b = append(b, `,"data":`...)
	if e.Data == nil {
		b = append(b, "{}"...)
	} else {
		start := len(b)
		buf := bytes.NewBuffer(b)
		if err := json.Compact(buf, e.Data); err != nil {
			return nil, fmt.Errorf("encode %s: data: %w", e.Type, err)
		}
		b = buf.Bytes()
		if data := b[start:]; bytes.ContainsAny(data, "<>&\u2028\u2029") {
			// json.Marshal escapes these inside a raw message's strings too.
			var esc bytes.Buffer
			json.HTMLEscape(&esc, data)
			b = append(b[:len(b)-len(data)], esc.Bytes()...)
		}
	}
	return append(b, '}'), nil
}

// UnmarshalJSON decodes an envelope. UserID is not on the wire and stays 0.
func (e *Event) UnmarshalJSON(b []byte) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !w.Type.Known() {
		return fmt.Errorf("%w %q", ErrUnknownType, w.Type)
	}
	ts, err := time.Parse(time.RFC3339Nano, w.TS)
	if err != nil {
		return fmt.Errorf("%w: ts: %w", ErrInvalid, err)
	}
	if w.Data != nil && !isObject(w.Data) {
		return fmt.Errorf("%w: data is not a JSON object", ErrInvalid)
	}
	*e = Event{ID: w.ID, Type: w.Type, TS: ts.UTC(), CreatorID: w.CreatorID, DropID: w.DropID, Data: w.Data}
	return nil
}

func isObject(b json.RawMessage) bool {
	b = bytes.TrimSpace(b)
	return len(b) >= 2 && b[0] == '{' && json.Valid(b)
}
