package fanout

import "time"

// Record is an event as the outbox keeps it: committed, numbered, and waiting for its publication or
// kept after it for the replay window. The outbox writes records; the relay reads them and publishes
// their events. Payload is the envelope without its id, exactly as it was stored.
type Record struct {
	// Seq orders records by the moment they were written (the outbox row id). It is not the event id,
	// and not commit order: a smaller Seq can become visible after a larger one.
	Seq int64
	// EventID is the event's id, given by the outbox.
	EventID string
	// Subject is the NATS subject the event travels on.
	Subject string
	// Type is the event type as stored next to the payload.
	Type Type
	// Payload is the envelope JSON without its id.
	Payload []byte
	// CreatedAt is when the record was written.
	CreatedAt time.Time
	// Attempts counts the publications the stream refused.
	Attempts int
	// StreamSeq is the stream sequence the event was last published at; 0 when it was not.
	StreamSeq uint64
}
