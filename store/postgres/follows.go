package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store"
)

// Follows stores the follow graph. A change writes a follow.changed event to the outbox in its own
// transaction; following twice or unfollowing a non-follow changes nothing and writes nothing.
type Follows struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

// NewFollows returns the follow store on pool; now is the clock of event times (nil: time.Now).
func NewFollows(pool *pgxpool.Pool, now func() time.Time) *Follows {
	if now == nil {
		now = time.Now
	}
	return &Follows{pool: pool, now: now}
}

// Follow makes userID follow creatorID and reports whether that changed anything. Following oneself is
// a *store.FieldError; an unknown creator or user is store.ErrNotFound.
func (s *Follows) Follow(ctx context.Context, userID, creatorID int64) (changed bool, err error) {
	if userID == creatorID {
		return false, store.Invalid("creator_id", "you cannot follow yourself")
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO follows (creator_id, follower_id) VALUES ($1, $2)
ON CONFLICT (creator_id, follower_id) DO NOTHING`, creatorID, userID)
		switch constraint(err) {
		case "":
		case ConstraintFollowCreator:
			return fmt.Errorf("creator %d: %w", creatorID, store.ErrNotFound)
		case ConstraintFollowFollower:
			return fmt.Errorf("user %d: %w", userID, store.ErrNotFound)
		case ConstraintFollowNoSelf:
			return store.Invalid("creator_id", "you cannot follow yourself")
		}
		if err != nil {
			return err
		}
		if changed = tag.RowsAffected() == 1; !changed {
			return nil
		}
		return s.writeEvent(ctx, tx, userID, creatorID, true)
	})
	if err != nil {
		return false, fmt.Errorf("user %d follow %d: %w", userID, creatorID, err)
	}
	return changed, nil
}

// Unfollow ends userID's follow of creatorID and reports whether there was one.
func (s *Follows) Unfollow(ctx context.Context, userID, creatorID int64) (changed bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM follows WHERE creator_id = $1 AND follower_id = $2`, creatorID, userID)
		if err != nil {
			return err
		}
		if changed = tag.RowsAffected() == 1; !changed {
			return nil
		}
		return s.writeEvent(ctx, tx, userID, creatorID, false)
	})
	if err != nil {
		return false, fmt.Errorf("user %d unfollow %d: %w", userID, creatorID, err)
	}
	return changed, nil
}

func (s *Follows) writeEvent(ctx context.Context, tx pgx.Tx, userID, creatorID int64, following bool) error {
	data, err := json.Marshal(struct {
		CreatorID int64 `json:"creator_id"`
		Following bool  `json:"following"`
	}{creatorID, following})
	if err != nil {
		return err
	}
	return InsertEvents(ctx, tx, fanout.Event{Type: fanout.FollowChanged, TS: s.now(), CreatorID: creatorID,
		UserID: userID, Data: data})
}

// Followers returns a page of creatorID's followers, newest first (keyset on followed_at, follower_id:
// any depth costs one index descent). An unknown creator is store.ErrNotFound.
func (s *Follows) Followers(ctx context.Context, creatorID int64, req store.PageRequest) (store.Page[store.Follower], error) {
	limit := pageLimit(req.Limit)
	items, err := newestFollows(ctx, s.pool,
		`SELECT f.follower_id, u.name, f.followed_at FROM follows f JOIN users u ON u.user_id = f.follower_id`,
		"creator_id", "follower_id", creatorID, req, limit,
		func(row pgx.CollectableRow) (store.Follower, error) {
			var f store.Follower
			err := row.Scan(&f.UserID, &f.Name, &f.FollowedAt)
			f.FollowedAt = f.FollowedAt.UTC()
			return f, err
		})
	if err != nil {
		return store.Page[store.Follower]{}, fmt.Errorf("followers of %d: %w", creatorID, err)
	}
	if len(items) == 0 {
		if err := s.mustExist(ctx, `SELECT EXISTS (SELECT 1 FROM creators WHERE creator_id = $1)`, creatorID); err != nil {
			return store.Page[store.Follower]{}, fmt.Errorf("followers: creator %d: %w", creatorID, err)
		}
	}
	return cut(items, limit, store.Follower.Position), nil
}

// Following returns a page of the creators userID follows, newest first. An unknown user is
// store.ErrNotFound.
func (s *Follows) Following(ctx context.Context, userID int64, req store.PageRequest) (store.Page[store.Following], error) {
	limit := pageLimit(req.Limit)
	items, err := newestFollows(ctx, s.pool,
		`SELECT f.creator_id, c.profile_name, f.followed_at FROM follows f JOIN creators c ON c.creator_id = f.creator_id`,
		"follower_id", "creator_id", userID, req, limit,
		func(row pgx.CollectableRow) (store.Following, error) {
			var f store.Following
			err := row.Scan(&f.CreatorID, &f.ProfileName, &f.FollowedAt)
			f.FollowedAt = f.FollowedAt.UTC()
			return f, err
		})
	if err != nil {
		return store.Page[store.Following]{}, fmt.Errorf("following of %d: %w", userID, err)
	}
	if len(items) == 0 {
		if err := s.mustExist(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)`, userID); err != nil {
			return store.Page[store.Following]{}, fmt.Errorf("following: user %d: %w", userID, err)
		}
	}
	return cut(items, limit, store.Following.Position), nil
}

// newestFollows reads one keyset page of follows, newest first: sel selects from follows f, the rows
// where f.<keyCol> = key, ordered by (followed_at, f.<tieCol>) descending, after req.After when set, one
// more than limit so cut can tell whether a next page exists. keyCol and tieCol are column names of this
// file, never input.
func newestFollows[T any](ctx context.Context, pool *pgxpool.Pool, sel, keyCol, tieCol string, key int64,
	req store.PageRequest, limit int, scan pgx.RowToFunc[T]) ([]T, error) {
	q := sel + " WHERE f." + keyCol + " = $1"
	args := []any{key}
	if req.After != nil {
		q += " AND (f.followed_at, f." + tieCol + ") < ($2, $3)"
		args = append(args, req.After.At, req.After.ID)
	}
	q += fmt.Sprintf(" ORDER BY f.followed_at DESC, f.%s DESC LIMIT $%d", tieCol, len(args)+1)
	rows, err := pool.Query(ctx, q, append(args, limit+1)...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scan)
}

func (s *Follows) mustExist(ctx context.Context, query string, id int64) error {
	var ok bool
	if err := s.pool.QueryRow(ctx, query, id).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return store.ErrNotFound
	}
	return nil
}

// pageLimit applies the default and the maximum of a list's limit.
func pageLimit(n int) int {
	switch {
	case n <= 0:
		return store.DefaultLimit
	case n > store.MaxLimit:
		return store.MaxLimit
	}
	return n
}

// cut trims items fetched with limit+1 to a page, with Next set when the extra row was there.
func cut[T any](items []T, limit int, pos func(T) store.Cursor) store.Page[T] {
	if items == nil {
		items = []T{}
	}
	if len(items) <= limit {
		return store.Page[T]{Items: items}
	}
	items = items[:limit]
	next := pos(items[limit-1])
	return store.Page[T]{Items: items, Next: &next}
}
