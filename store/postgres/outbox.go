package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livedrops/livedrops/fanout"
)

// OutboxChannel is the LISTEN/NOTIFY channel told at the commit of every transaction that wrote events,
// so the relay wakes at once instead of waiting for its next poll.
const OutboxChannel = "livedrops_outbox"

// execer is what InsertEvents needs of a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// InsertEvents writes events to the outbox. Call it with the transaction that makes the change the
// events report, so both commit or neither does; the relay publishes them afterwards. Each event gets
// its id from the outbox (the ID field is ignored). One round trip, whatever the number of events.
func InsertEvents(ctx context.Context, tx execer, events ...fanout.Event) error {
	if len(events) == 0 {
		return nil
	}
	subjects := make([]string, len(events))
	types := make([]string, len(events))
	payloads := make([]string, len(events))
	for i, ev := range events {
		if err := ev.Validate(); err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		ev.ID = ""
		b, err := ev.MarshalJSON() // what json.Marshal writes, without compacting it a second time
		if err != nil {
			return fmt.Errorf("insert events: encode %s: %w", ev.Type, err)
		}
		subjects[i], types[i], payloads[i] = ev.Subject(), string(ev.Type), string(b)
	}
	const q = `
WITH ins AS (
	INSERT INTO outbox (subject, type, payload)
	SELECT s, t, p::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS e(s, t, p, n)
	ORDER BY n
)
SELECT pg_notify('` + OutboxChannel + `', '')`
	if _, err := tx.Exec(ctx, q, subjects, types, payloads); err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	return nil
}
