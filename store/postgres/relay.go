package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/fanout"
)

// Outbox is the outbox table as the relay (fanout/relay) uses it: pending records in id order, their
// publication, the coalesced and the parked ones, the checks against the stream after NATS lost data,
// and pruning. One relay at a time uses it (see [Leader]); every method is still safe when two overlap.
//
// A row is pending while published_at and parked_at are both NULL; published when published_at is set,
// with stream_seq the stream sequence it was stored at, or NULL when the relay coalesced it (a newer
// stock.changed of the same drop made it useless, so it was never sent); parked when parked_at is set.
//
// No index covers a column the relay changes (migration 00014_hot_updates), so marking a row is a HOT
// update. The pending rows are found by the transaction that wrote them (outbox.xid): see Pending.
type Outbox struct {
	pool *pgxpool.Pool

	mu sync.Mutex
	// from is the oldest writer (xid) whose rows the next read considers; 0 reads every row.
	from uint64
	// open are the rows a read returned that are not published, coalesced or parked yet (the relay may
	// defer or retry them), with their writers: from never passes them.
	open map[int64]uint64
	// requeues counts Requeue calls, so a read that overlapped one does not advance from past it.
	requeues uint64
	// lastFull is when a read last considered every row.
	lastFull time.Time
}

// fullReadEvery is how often Pending considers every row instead of the recent writers' only: a row
// made pending again by hand without a new xid (migration 00014_hot_updates) is found within it.
const fullReadEvery = time.Minute

// NewOutbox returns the outbox on pool.
func NewOutbox(pool *pgxpool.Pool) *Outbox { return &Outbox{pool: pool, open: make(map[int64]uint64)} }

// Pending returns up to limit pending records in id order, leaving out the rows whose id is in skip (the
// relay's deferred rows).
//
// It reads only the rows written by transactions at or after from, the oldest transaction that was
// running at the previous read (pg_snapshot_xmin of its snapshot) or that wrote a row returned before and
// not yet marked. That misses no pending row: a row the previous read could see and did not return does
// not exist (it returned every pending row at or after its own from, none being older, or, when it was
// cut at limit, from stays where it was); a row it could not see was written by a transaction still
// running then or started after, whose xid is at least that snapshot's xmin, whatever the row's id. The
// first read of an Outbox, a read after Requeue, and one read a minute consider every row.
func (o *Outbox) Pending(ctx context.Context, limit int, skip []int64) ([]fanout.Record, error) {
	const q = `
SELECT id, event_id, subject, type, payload, created_at, attempts, xid::text::bigint
FROM outbox
WHERE xid >= $3::bigint::text::xid8 AND published_at IS NULL AND parked_at IS NULL AND NOT (id = ANY ($2::bigint[]))
ORDER BY id
LIMIT $1`
	if skip == nil {
		skip = []int64{}
	}
	o.mu.Lock()
	from, requeues := o.from, o.requeues
	full := time.Since(o.lastFull) >= fullReadEvery
	if full {
		from = 0
	}
	o.mu.Unlock()
	// The snapshot's xmin is read before the rows, in a snapshot taken earlier: a smaller or equal xmin,
	// which keeps the argument above.
	var xmin int64
	if err := o.pool.QueryRow(ctx, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").Scan(&xmin); err != nil {
		return nil, fmt.Errorf("outbox: pending: %w", err)
	}
	// Planned with the actual from each time (an unnamed statement): a generic plan cannot tell a read
	// of the last writers from a read of every row.
	rows, err := o.pool.Query(ctx, q, pgx.QueryExecModeCacheDescribe, limit, skip, int64(from))
	if err != nil {
		return nil, fmt.Errorf("outbox: pending: %w", err)
	}
	var xids []uint64
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (fanout.Record, error) {
		var r fanout.Record
		var typ string
		var xid int64
		err := row.Scan(&r.Seq, &r.EventID, &r.Subject, &typ, &r.Payload, &r.CreatedAt, &r.Attempts, &xid)
		r.Type = fanout.Type(typ)
		xids = append(xids, uint64(xid))
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: pending: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if full {
		// Forget the rows that are no longer pending though never marked here (another relay's, or
		// adopted): every pending row not skipped is in recs.
		deferred := make(map[int64]bool, len(skip))
		for _, id := range skip {
			deferred[id] = true
		}
		for id := range o.open {
			if !deferred[id] {
				delete(o.open, id)
			}
		}
		o.lastFull = time.Now()
	}
	for i, r := range recs {
		o.open[r.Seq] = xids[i]
	}
	next := uint64(xmin)
	if len(recs) == limit {
		next = from // rows past the limit are not seen yet
	}
	for _, x := range o.open {
		next = min(next, x)
	}
	for _, id := range skip {
		if _, ok := o.open[id]; !ok {
			next = min(next, from) // a deferred row this Outbox never returned: its writer is unknown
		}
	}
	if o.requeues == requeues {
		o.from = next
	}
	return recs, nil
}

// settled forgets rows that are no longer pending.
func (o *Outbox) settled(ids ...int64) {
	o.mu.Lock()
	for _, id := range ids {
		delete(o.open, id)
	}
	o.mu.Unlock()
}

// MarkPublished records that the rows ids[i] are stored at stream sequence streamSeqs[i]. A row published
// before keeps its first published_at and gets the new sequence.
func (o *Outbox) MarkPublished(ctx context.Context, ids []int64, streamSeqs []uint64, at time.Time) error {
	if len(ids) != len(streamSeqs) {
		return fmt.Errorf("outbox: mark published: %d ids, %d sequences", len(ids), len(streamSeqs))
	}
	if len(ids) == 0 {
		return nil
	}
	const q = `
UPDATE outbox o SET published_at = coalesce(o.published_at, $3), stream_seq = u.seq
FROM unnest($1::bigint[], $2::bigint[]) AS u(id, seq)
WHERE o.id = u.id AND o.parked_at IS NULL`
	// The record commits without waiting for its WAL flush: it is on the relay's hot path, and a record
	// lost in a database crash is harmless, since the relay finds the event in the stream's tail when it
	// starts leading again (Adopt) and JetStream drops a second publication within its window.
	batch := &pgx.Batch{}
	batch.Queue("BEGIN")
	batch.Queue("SET LOCAL synchronous_commit TO OFF")
	batch.Queue(q, ids, toInt64s(streamSeqs), at)
	batch.Queue("COMMIT")
	if err := o.pool.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("outbox: mark published: %w", err)
	}
	o.settled(ids...)
	return nil
}

// MarkCoalesced records that the pending rows ids were superseded and will never be sent: published_at
// is set, stream_seq stays NULL.
func (o *Outbox) MarkCoalesced(ctx context.Context, ids []int64, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	const q = `
UPDATE outbox SET published_at = $2
WHERE id = ANY ($1::bigint[]) AND published_at IS NULL AND parked_at IS NULL`
	if _, err := o.pool.Exec(ctx, q, ids, at); err != nil {
		return fmt.Errorf("outbox: mark coalesced: %w", err)
	}
	o.settled(ids...)
	return nil
}

// RecordFailure counts a failed publication of row id with its reason, and parks the row when park is
// true: it then stays in the table for inspection and is never tried again (an operator re-queues it by
// clearing parked_at and setting xid = pg_current_xact_id(): see migration 00014_hot_updates).
func (o *Outbox) RecordFailure(ctx context.Context, id int64, reason string, park bool, at time.Time) error {
	const q = `
UPDATE outbox SET attempts = attempts + 1, last_error = left($2, 2000),
	parked_at = CASE WHEN $3 THEN $4::timestamptz END
WHERE id = $1 AND published_at IS NULL AND parked_at IS NULL`
	if _, err := o.pool.Exec(ctx, q, id, reason, park, at); err != nil {
		return fmt.Errorf("outbox: record failure of row %d: %w", id, err)
	}
	if park {
		o.settled(id)
	}
	return nil
}

// Adopt marks pending rows published that the stream is found to hold (a relay stopped between the
// publication and its record): the row with event id eventIDs[i] is stored at streamSeqs[i]. It returns
// how many rows it marked.
func (o *Outbox) Adopt(ctx context.Context, eventIDs []string, streamSeqs []uint64, at time.Time) (int64, error) {
	if len(eventIDs) != len(streamSeqs) {
		return 0, fmt.Errorf("outbox: adopt: %d ids, %d sequences", len(eventIDs), len(streamSeqs))
	}
	if len(eventIDs) == 0 {
		return 0, nil
	}
	const q = `
UPDATE outbox o SET published_at = $3, stream_seq = t.seq
FROM unnest($1::text[], $2::bigint[]) AS t(event_id, seq)
WHERE o.event_id = t.event_id AND o.published_at IS NULL AND o.parked_at IS NULL`
	tag, err := o.pool.Exec(ctx, q, eventIDs, toInt64s(streamSeqs), at)
	if err != nil {
		return 0, fmt.Errorf("outbox: adopt: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Requeue makes pending again the rows created at or after since that were published but that the
// stream no longer holds, so the relay publishes them again in order. The stream's last sequence is last
// and the messages it holds at sequences from..last are tailSeqs[i] with event id tailIDs[i]: a row
// published after last is lost, and so is one at a sequence in from..last where the stream holds
// something else (or nothing). It returns how many rows it re-queued.
func (o *Outbox) Requeue(ctx context.Context, since time.Time, from, last uint64, tailSeqs []uint64, tailIDs []string) (int64, error) {
	if len(tailSeqs) != len(tailIDs) {
		return 0, fmt.Errorf("outbox: requeue: %d sequences, %d ids", len(tailSeqs), len(tailIDs))
	}
	const q = `
UPDATE outbox SET published_at = NULL, stream_seq = NULL
WHERE stream_seq IS NOT NULL AND created_at >= $1 AND (
	stream_seq > $3
	OR (stream_seq >= $2 AND (stream_seq, event_id) NOT IN (
		SELECT t.seq, t.event_id FROM unnest($4::bigint[], $5::text[]) AS t(seq, event_id))))`
	// Rows pending again keep their old xid: the next read considers every row.
	o.mu.Lock()
	o.from, o.requeues = 0, o.requeues+1
	o.mu.Unlock()
	tag, err := o.pool.Exec(ctx, q, since, int64(from), int64(last), toInt64s(tailSeqs), tailIDs)
	if err != nil {
		return 0, fmt.Errorf("outbox: requeue: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Prune deletes up to limit published or parked rows created before before, oldest first, and returns
// how many it deleted. Pending rows are never pruned.
func (o *Outbox) Prune(ctx context.Context, before time.Time, limit int) (int64, error) {
	const q = `
DELETE FROM outbox WHERE id IN (
	SELECT id FROM outbox
	WHERE created_at < $1 AND (published_at IS NOT NULL OR parked_at IS NOT NULL)
	ORDER BY created_at
	LIMIT $2)`
	tag, err := o.pool.Exec(ctx, q, before, limit)
	if err != nil {
		return 0, fmt.Errorf("outbox: prune: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Backlog counts the pending rows (among the writers the next Pending considers).
func (o *Outbox) Backlog(ctx context.Context) (int64, error) {
	o.mu.Lock()
	from := o.from
	o.mu.Unlock()
	var n int64
	err := o.pool.QueryRow(ctx, `SELECT count(*) FROM outbox
WHERE xid >= $1::bigint::text::xid8 AND published_at IS NULL AND parked_at IS NULL`,
		pgx.QueryExecModeCacheDescribe, int64(from)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("outbox: backlog: %w", err)
	}
	return n, nil
}

// StreamSeq returns the stream sequence the event eventID was last published at; found is false when
// the outbox has no such published event (unknown, pruned, pending, parked or coalesced).
func (o *Outbox) StreamSeq(ctx context.Context, eventID string) (seq uint64, found bool, err error) {
	var s int64
	err = o.pool.QueryRow(ctx,
		"SELECT stream_seq FROM outbox WHERE event_id = $1 AND stream_seq IS NOT NULL", eventID).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("outbox: stream sequence of %q: %w", eventID, err)
	}
	return uint64(s), true, nil
}

// Listen sends a token on wake when events are committed (NOTIFY on [OutboxChannel]), and once when it
// starts listening. It returns nil when ctx ends and an error when its connection fails.
func (o *Outbox) Listen(ctx context.Context, wake chan<- struct{}) error {
	return listen(ctx, o.pool, OutboxChannel, wake)
}

func toInt64s(u []uint64) []int64 {
	out := make([]int64, len(u))
	for i, v := range u {
		out[i] = int64(v)
	}
	return out
}
