package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/store"
)

// Hub answers the questions of the hub role: whom users follow, whose a drop is, and where an event
// sits in the JetStream stream. It implements hub.Follows, hub.Drops and hub.Sequences.
type Hub struct {
	pool     *pgxpool.Pool
	pageSize int
}

// FollowListPage is how many creator ids of one user FollowLists reads per round trip: the first page of
// every user comes in one query, a user who follows more is read on in keyset pages of this size.
const FollowListPage = 1000

// NewHub returns the hub's queries on pool.
func NewHub(pool *pgxpool.Pool) *Hub { return NewHubPaged(pool, FollowListPage) }

// NewHubPaged is NewHub reading follow lists in pages of pageSize ids (at least 1).
func NewHubPaged(pool *pgxpool.Pool, pageSize int) *Hub {
	return &Hub{pool: pool, pageSize: max(1, pageSize)}
}

// FollowLists returns, for each of userIDs, every creator id the user follows, ascending; users who
// follow nobody (or do not exist) are missing from the map. The first FollowListPage ids of every user
// come from one query (one index probe per user and partition); longer lists are read on in pages.
func (h *Hub) FollowLists(ctx context.Context, userIDs []int64) (map[int64][]int64, error) {
	out := make(map[int64][]int64, len(userIDs))
	if len(userIDs) == 0 {
		return out, nil
	}
	rows, err := h.pool.Query(ctx, `
SELECT u.id, f.creator_id
FROM unnest($1::bigint[]) AS u(id)
CROSS JOIN LATERAL (
	SELECT creator_id FROM follows WHERE follower_id = u.id ORDER BY creator_id LIMIT $2
) f`, userIDs, h.pageSize)
	if err != nil {
		return nil, fmt.Errorf("follow lists of %d users: %w", len(userIDs), err)
	}
	var user, creator int64
	_, err = pgx.ForEachRow(rows, []any{&user, &creator}, func() error {
		out[user] = append(out[user], creator)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("follow lists of %d users: %w", len(userIDs), err)
	}
	for user, list := range out {
		for page := list; len(page) == h.pageSize; {
			if page, err = h.FollowedCreators(ctx, user, page[len(page)-1], h.pageSize); err != nil {
				return nil, err
			}
			list = append(list, page...)
		}
		out[user] = list
	}
	return out, nil
}

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
