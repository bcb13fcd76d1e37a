package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/fanout/push"
	"github.com/livedrops/livedrops/store"
)

// Devices stores push devices (the devices table) for the REST API and the push notifier.
type Devices struct {
	pool *pgxpool.Pool
}

// NewDevices returns the device store on pool.
func NewDevices(pool *pgxpool.Pool) *Devices { return &Devices{pool: pool} }

// RegisterDevice records d (validated and normalised by the caller) as a device of userID and reports
// whether it is new to the user: an FCM token or Web Push endpoint already registered by this user is
// the same device (its keys are refreshed) and created is false; one registered by another user moves
// to this one (the token names one app install or browser profile, and it is signed in as userID now).
// A user holding store.MaxDevicesPerUser devices gets store.ErrLimitExceeded; an unknown user
// store.ErrNotFound. Registrations of one user are serialised on the user's row, so the cap holds
// under concurrency.
func (s *Devices) RegisterDevice(ctx context.Context, userID int64, d store.NewDevice) (dev store.Device, created bool, err error) {
	var sub []byte
	if d.Platform == store.PlatformWebPush {
		if sub, err = json.Marshal(d.Keys); err != nil {
			return dev, false, err
		}
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM users WHERE user_id = $1 FOR NO KEY UPDATE`, userID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("user %d: %w", userID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		dev = store.Device{UserID: userID, Platform: d.Platform, Token: d.Token}
		var owner int64
		err = tx.QueryRow(ctx, `SELECT device_id, user_id, created_at FROM devices WHERE platform = $1 AND token = $2`,
			string(d.Platform), d.Token).Scan(&dev.ID, &owner, &dev.CreatedAt)
		switch {
		case err == nil && owner == userID:
			_, err = tx.Exec(ctx, `UPDATE devices SET subscription = $2 WHERE device_id = $1 AND subscription IS DISTINCT FROM $2`, dev.ID, sub)
			return err
		case err != nil && !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM devices WHERE user_id = $1`, userID).Scan(&n); err != nil {
			return err
		}
		if n >= store.MaxDevicesPerUser {
			return fmt.Errorf("user %d holds %d devices, the most one may: delete one first: %w", userID, n, store.ErrLimitExceeded)
		}
		created = true
		// ON CONFLICT: another user registering the same token at this moment; the later commit owns it.
		return tx.QueryRow(ctx, `INSERT INTO devices (user_id, platform, token, subscription) VALUES ($1, $2, $3, $4)
ON CONFLICT (platform, token) DO UPDATE SET user_id = excluded.user_id, subscription = excluded.subscription, created_at = now()
RETURNING device_id, created_at`, userID, string(d.Platform), d.Token, sub).Scan(&dev.ID, &dev.CreatedAt)
	})
	if err != nil {
		if constraint(err) == ConstraintDeviceUser {
			err = fmt.Errorf("user %d: %w", userID, store.ErrNotFound)
		}
		return store.Device{}, false, fmt.Errorf("register device of user %d: %w", userID, err)
	}
	dev.CreatedAt = dev.CreatedAt.UTC()
	if d.Platform == store.PlatformWebPush {
		keys := d.Keys
		dev.Keys = &keys
	}
	return dev, created, nil
}

// UserDevices lists userID's devices, oldest first (at most store.MaxDevicesPerUser).
func (s *Devices) UserDevices(ctx context.Context, userID int64) ([]store.Device, error) {
	rows, err := s.pool.Query(ctx, `SELECT device_id, platform, token, subscription, created_at FROM devices
WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("devices of user %d: %w", userID, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Device, error) {
		d := store.Device{UserID: userID}
		var platform string
		var sub []byte
		if err := row.Scan(&d.ID, &platform, &d.Token, &sub, &d.CreatedAt); err != nil {
			return d, err
		}
		d.Platform, d.CreatedAt = store.Platform(platform), d.CreatedAt.UTC()
		if sub != nil {
			var k store.WebPushKeys
			if err := json.Unmarshal(sub, &k); err != nil {
				return d, fmt.Errorf("device %d: subscription: %w", d.ID, err)
			}
			d.Keys = &k
		}
		return d, nil
	})
	if err != nil {
		return nil, fmt.Errorf("devices of user %d: %w", userID, err)
	}
	return out, nil
}

// DeleteDevice removes device deviceID of userID and reports whether there was one (another user's
// device is not touched and reads as absent).
func (s *Devices) DeleteDevice(ctx context.Context, userID, deviceID int64) (bool, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM devices WHERE device_id = $1 AND user_id = $2`, deviceID, userID)
	if err != nil {
		return false, fmt.Errorf("delete device %d of user %d: %w", deviceID, userID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// PageEnds splits the followers of creatorID after follower id after into pages of pageSize followers
// (in follower id order, the follows primary key) and returns the last follower id of each page, at
// most maxPages of them. more is true when followers remain after the last end: split again from it.
// The last page may be shorter than pageSize. One index range scan, the ends picked in the database.
func (s *Devices) PageEnds(ctx context.Context, creatorID, after int64, pageSize, maxPages int) (ends []int64, more bool, err error) {
	if pageSize < 1 || maxPages < 1 {
		return nil, false, errors.New("page ends: pageSize and maxPages must be positive")
	}
	limit := pageSize * maxPages
	rows, err := s.pool.Query(ctx, `
WITH s AS (
    SELECT follower_id, row_number() OVER (ORDER BY follower_id) AS rn, count(*) OVER () AS total
    FROM (SELECT follower_id FROM follows WHERE creator_id = $1 AND follower_id > $2
          ORDER BY follower_id LIMIT $3) x
)
SELECT follower_id, total FROM s WHERE rn % $4 = 0 OR rn = total ORDER BY follower_id`,
		creatorID, after, limit, pageSize)
	if err != nil {
		return nil, false, fmt.Errorf("page ends of creator %d: %w", creatorID, err)
	}
	var total int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id, &total); err != nil {
			rows.Close()
			return nil, false, fmt.Errorf("page ends of creator %d: %w", creatorID, err)
		}
		ends = append(ends, id)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("page ends of creator %d: %w", creatorID, err)
	}
	return ends, total == int64(limit), nil
}

// FollowerIDs returns the ids of the followers of creatorID in (after, last]: one range of the follows
// primary key.
func (s *Devices) FollowerIDs(ctx context.Context, creatorID, after, last int64) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT follower_id FROM follows
WHERE creator_id = $1 AND follower_id > $2 AND follower_id <= $3`, creatorID, after, last)
	if err != nil {
		return nil, fmt.Errorf("followers of %d in (%d, %d]: %w", creatorID, after, last, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("followers of %d in (%d, %d]: %w", creatorID, after, last, err)
	}
	return ids, nil
}

// UsersDevices returns the devices of userIDs.
func (s *Devices) UsersDevices(ctx context.Context, userIDs []int64) ([]push.Device, error) {
	rows, err := s.pool.Query(ctx, `SELECT device_id, user_id, platform, token,
    coalesce(subscription->>'p256dh', ''), coalesce(subscription->>'auth', '')
FROM devices WHERE user_id = ANY($1)`, userIDs)
	if err != nil {
		return nil, fmt.Errorf("devices of %d users: %w", len(userIDs), err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (push.Device, error) {
		var d push.Device
		var platform string
		err := row.Scan(&d.ID, &d.UserID, &platform, &d.Token, &d.P256dh, &d.Auth)
		d.Provider = push.Provider(platform)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("devices of %d users: %w", len(userIDs), err)
	}
	return out, nil
}

// RemoveDevice deletes device id if it still holds token (the provider said the token is gone; a row
// registered again since with another token stays). It reports whether a row was deleted.
func (s *Devices) RemoveDevice(ctx context.Context, id int64, token string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM devices WHERE device_id = $1 AND token = $2`, id, token)
	if err != nil {
		return false, fmt.Errorf("remove device %d: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// CopyDevices writes devices with COPY, for seeding load tests: ids are assigned by the table.
func CopyDevices(ctx context.Context, pool *pgxpool.Pool, devices []push.Device) error {
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i >= len(devices) {
			return nil, nil
		}
		d := devices[i]
		i++
		var sub []byte
		if d.Provider == push.WebPush {
			var err error
			if sub, err = json.Marshal(store.WebPushKeys{P256dh: d.P256dh, Auth: d.Auth}); err != nil {
				return nil, err
			}
		}
		return []any{d.UserID, string(d.Provider), d.Token, sub}, nil
	})
	n, err := pool.CopyFrom(ctx, pgx.Identifier{"devices"}, []string{"user_id", "platform", "token", "subscription"}, src)
	if err != nil {
		return fmt.Errorf("copy devices: %w", err)
	}
	if n != int64(len(devices)) {
		return fmt.Errorf("copy devices: copied %d, want %d", n, len(devices))
	}
	return nil
}

// PushDrop returns what a push notification says about drop id: its creator's name, its product and
// price, and its end. An unknown drop is store.ErrNotFound.
func (s *Devices) PushDrop(ctx context.Context, id int64) (push.Drop, error) {
	d := push.Drop{ID: id}
	var status string
	var stock int64
	err := s.pool.QueryRow(ctx, `SELECT d.creator_id, c.profile_name, p.title, p.price_cents, d.end_time, d.status, d.stock_count
FROM drops d JOIN creators c ON c.creator_id = d.creator_id JOIN products p ON p.product_id = d.product_id
WHERE d.drop_id = $1`, id).Scan(&d.CreatorID, &d.CreatorName, &d.ProductTitle, &d.PriceCents, &d.EndTime, &status, &stock)
	if errors.Is(err, pgx.ErrNoRows) {
		return push.Drop{}, fmt.Errorf("drop %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return push.Drop{}, fmt.Errorf("drop %d: %w", id, err)
	}
	d.EndTime = d.EndTime.UTC()
	d.Over = status == string(store.DropEnded) || status == string(store.DropSoldOut) || stock <= 0
	return d, nil
}
