package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/store"
)

// Hub answers the questions of the hub role: whom a user follows, whose a drop is, and where an event
// sits in the JetStream stream. It implements hub.Follows, hub.Drops and hub.Sequences.
type Hub struct {
	pool *pgxpool.Pool
}

// NewHub returns the hub's queries on pool.
func NewHub(pool *pgxpool.Pool) *Hub { return &Hub{pool: pool} }

// FollowedCreators returns the ids of the creators userID follows that are greater than after, at most
// limit of them, in ascending order: a keyset page. A user who follows nobody (or does not exist) gets
// an empty page.
func (h *Hub) FollowedCreators(ctx context.Context, userID, after int64, limit int) ([]int64, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("followed creators of user %d: limit %d: %w", userID, limit, store.ErrInvalid)
	}
	rows, err := h.pool.Query(ctx, `
SELECT creator_id FROM follows
WHERE follower_id = $1 AND creator_id > $2
ORDER BY creator_id
LIMIT $3`, userID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("followed creators of user %d: %w", userID, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("followed creators of user %d: %w", userID, err)
	}
	return ids, nil
}

// DropCreator returns the creator of dropID, or store.ErrNotFound.
func (h *Hub) DropCreator(ctx context.Context, dropID int64) (int64, error) {
	var creator int64
	err := h.pool.QueryRow(ctx, `SELECT creator_id FROM drops WHERE drop_id = $1`, dropID).Scan(&creator)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("drop %d: %w", dropID, store.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("drop %d: %w", dropID, err)
	}
	return creator, nil
}

// StreamSeq returns the JetStream stream sequence the relay recorded for eventID. An event the outbox
// does not hold (unknown, or pruned after the replay window) or has not published yet is
// store.ErrNotFound.
func (h *Hub) StreamSeq(ctx context.Context, eventID string) (uint64, error) {
	var seq *int64
	err := h.pool.QueryRow(ctx, `SELECT stream_seq FROM outbox WHERE event_id = $1`, eventID).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (seq == nil || *seq <= 0)) {
		return 0, fmt.Errorf("event %q: %w", eventID, store.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("event %q: %w", eventID, err)
	}
	return uint64(*seq), nil
}
