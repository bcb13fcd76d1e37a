package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/fanout"
)

// DropsChannel is the LISTEN/NOTIFY channel told when drops are created or their times change
// (trigger drops_notify_scheduler), so schedulers re-arm their timers at once.
const DropsChannel = "livedrops_drops"

// DropSchedule moves drops through their lifetime at their times, as the scheduler (fanout/relay) asks:
// scheduled → live at start_time with a drop.started event, live or sold_out → ended at end_time with a
// drop.ended event. Each move is a conditional UPDATE (WHERE status = ...) committed with its events in
// one transaction, so however many schedulers race, each drop moves, and its event is written, once. A
// drop also leaves scheduled when its first order comes before the scheduler (see StartDue): its
// drop.started is written then, by the same trigger, ahead of that order's events.
type DropSchedule struct {
	pool *pgxpool.Pool
}

// NewDropSchedule returns the drop schedule on pool.
func NewDropSchedule(pool *pgxpool.Pool) *DropSchedule { return &DropSchedule{pool: pool} }

// NextDeadline returns the earliest start_time of a scheduled drop or end_time of a live or sold-out
// one, past ones included; ok is false when no drop waits for either.
func (s *DropSchedule) NextDeadline(ctx context.Context) (next time.Time, ok bool, err error) {
	const q = `
SELECT least(
	(SELECT min(start_time) FROM drops WHERE status = 'scheduled'),
	(SELECT min(end_time) FROM drops WHERE status IN ('live', 'sold_out')))`
	var t *time.Time
	if err := s.pool.QueryRow(ctx, q).Scan(&t); err != nil {
		return time.Time{}, false, fmt.Errorf("drop schedule: next deadline: %w", err)
	}
	if t == nil {
		return time.Time{}, false, nil
	}
	return t.UTC(), true, nil
}

// StartDue makes live up to limit scheduled drops whose start_time is at or before now, oldest first,
// and returns the start times of the drops it started: a drop another scheduler, or its first order,
// started first is not among them. Their drop.started events (ts = start_time, data = the drop, live)
// are written in the same statement by the trigger drops_write_started_event (migration 00013), which
// also writes the drop.started of a drop whose first order comes before any scheduler. Schedulers lock
// the due rows in one order, so they wait for each other, never deadlock.
func (s *DropSchedule) StartDue(ctx context.Context, now time.Time, limit int) ([]time.Time, error) {
	const q = `
WITH due AS (
	SELECT drop_id FROM drops
	WHERE status = 'scheduled' AND start_time <= $1
	ORDER BY start_time, drop_id
	LIMIT $2
	FOR UPDATE
)
UPDATE drops d SET status = 'live'
FROM due
WHERE d.drop_id = due.drop_id AND d.status = 'scheduled'
RETURNING d.start_time`
	rows, err := s.pool.Query(ctx, q, now, limit)
	if err != nil {
		return nil, fmt.Errorf("drop schedule: start due drops: %w", err)
	}
	starts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (time.Time, error) {
		var t time.Time
		err := row.Scan(&t)
		return t.UTC(), err
	})
	if err != nil {
		return nil, fmt.Errorf("drop schedule: start due drops: %w", err)
	}
	slices.SortFunc(starts, time.Time.Compare)
	return starts, nil
}

// EndDue ends up to limit live or sold-out drops whose end_time is at or before now, oldest first, in
// one transaction that also writes their drop.ended events (ts = end_time, data {"stock_count": n}). It
// returns the end times of the drops it ended. An order holding a drop's row lock is waited for.
func (s *DropSchedule) EndDue(ctx context.Context, now time.Time, limit int) ([]time.Time, error) {
	const q = `
WITH due AS (
	SELECT drop_id FROM drops
	WHERE status IN ('live', 'sold_out') AND end_time <= $1
	ORDER BY end_time, drop_id
	LIMIT $2
	FOR UPDATE
)
UPDATE drops d SET status = 'ended'
FROM due
WHERE d.drop_id = due.drop_id AND d.status IN ('live', 'sold_out')
RETURNING d.drop_id, d.creator_id, d.end_time, d.stock_count`
	type ended struct {
		dropID, creatorID int64
		end               time.Time
		stock             int
	}
	var done []ended
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, now, limit)
		if err != nil {
			return err
		}
		done, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (ended, error) {
			var e ended
			err := row.Scan(&e.dropID, &e.creatorID, &e.end, &e.stock)
			e.end = e.end.UTC()
			return e, err
		})
		if err != nil || len(done) == 0 {
			return err
		}
		slices.SortFunc(done, func(a, b ended) int {
			if c := a.end.Compare(b.end); c != 0 {
				return c
			}
			return cmp.Compare(a.dropID, b.dropID)
		})
		events := make([]fanout.Event, len(done))
		for i, e := range done {
			data, err := json.Marshal(struct {
				StockCount int `json:"stock_count"`
			}{e.stock})
			if err != nil {
				return err
			}
			events[i] = fanout.Event{Type: fanout.DropEnded, TS: e.end, CreatorID: e.creatorID,
				DropID: e.dropID, Data: data}
		}
		return InsertEvents(ctx, tx, events...)
	})
	if err != nil {
		return nil, fmt.Errorf("drop schedule: end due drops: %w", err)
	}
	ends := make([]time.Time, len(done))
	for i, e := range done {
		ends[i] = e.end
	}
	return ends, nil
}

// Listen sends a token on wake when drops are created or rescheduled (NOTIFY on [DropsChannel]), and
// once when it starts listening. It returns nil when ctx ends and an error when its connection fails.
func (s *DropSchedule) Listen(ctx context.Context, wake chan<- struct{}) error {
	return listen(ctx, s.pool, DropsChannel, wake)
}
