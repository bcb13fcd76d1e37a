package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/store"
)

// Directory serves the browsing reads of the web page and other clients: the list of creators and a
// creator's drops, newest first. Pages are a few rows read by index, so they are not cached.
type Directory struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

// NewDirectory returns the directory reads on pool; now derives drop statuses (nil: time.Now).
func NewDirectory(pool *pgxpool.Pool, now func() time.Time) *Directory {
	if now == nil {
		now = time.Now
	}
	return &Directory{pool: pool, now: now}
}

// Creators returns a page of creators, newest first (by creator_id, creators_pkey), with their follower
// counts. The cursor's ID is the last creator id seen.
func (s *Directory) Creators(ctx context.Context, req store.PageRequest) (store.Page[store.Creator], error) {
	limit := pageLimit(req.Limit)
	var before int64 = store.MaxID + 1
	if req.After != nil {
		before = req.After.ID
	}
	rows, err := s.pool.Query(ctx, `
SELECT c.creator_id, c.profile_name,
       coalesce((SELECT sum(n.followers) FROM creator_follower_counts n WHERE n.creator_id = c.creator_id), 0)::bigint
FROM creators c WHERE c.creator_id < $1 ORDER BY c.creator_id DESC LIMIT $2`, before, limit+1)
	if err != nil {
		return store.Page[store.Creator]{}, fmt.Errorf("creators: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Creator, error) {
		var c store.Creator
		err := row.Scan(&c.ID, &c.ProfileName, &c.FollowerCount)
		return c, err
	})
	if err != nil {
		return store.Page[store.Creator]{}, fmt.Errorf("creators: %w", err)
	}
	return cut(items, limit, func(c store.Creator) store.Cursor {
		return store.Cursor{At: time.UnixMilli(0).UTC(), ID: c.ID}
	}), nil
}

// CreatorDrops returns a page of creatorID's drops of every status, newest first (by drop_id), each with
// its status derived at the store's clock; store.ErrNotFound when there is no such creator.
func (s *Directory) CreatorDrops(ctx context.Context, creatorID int64, req store.PageRequest) (store.Page[store.Drop], error) {
	limit := pageLimit(req.Limit)
	var before int64 = store.MaxID + 1
	if req.After != nil {
		before = req.After.ID
	}
	now := s.now()
	rows, err := s.pool.Query(ctx, dropColumns+`
WHERE d.creator_id = $1 AND d.drop_id < $2 ORDER BY d.drop_id DESC LIMIT $3`, creatorID, before, limit+1)
	if err != nil {
		return store.Page[store.Drop]{}, fmt.Errorf("creator %d drops: %w", creatorID, err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Drop, error) {
		d, err := scanDrop(row)
		return d.At(now), err
	})
	if err != nil {
		return store.Page[store.Drop]{}, fmt.Errorf("creator %d drops: %w", creatorID, err)
	}
	if len(items) == 0 {
		var ok bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM creators WHERE creator_id = $1)`, creatorID).Scan(&ok); err != nil {
			return store.Page[store.Drop]{}, fmt.Errorf("creator %d drops: %w", creatorID, err)
		}
		if !ok {
			return store.Page[store.Drop]{}, fmt.Errorf("creator %d: %w", creatorID, store.ErrNotFound)
		}
	}
	return cut(items, limit, dropPosition), nil
}
