package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/postgres/pglocal"
	"github.com/livedrops/livedrops/store/redis/redislocal"
)

// stack is what every run shares: PostgreSQL and Redis, the buyers and their tokens, a creator and a
// product to drop.
type stack struct {
	dir       string
	pg        *pglocal.Server
	redis     *redislocal.Server
	dbURL     string
	redisURL  string
	pool      *pgxpool.Pool
	secret    string
	users     []int64
	tokens    []string // "Bearer <token>" of users[i]
	creatorID int64
	productID int64
}

// usersNeeded is how many distinct users the buyers of every phase can use: each buyer moves on to a
// fresh user when its user holds max_per_user units, so a buyer needs stock/(buyers×max) + 1 of them.
func usersNeeded(o options) int {
	n := 0
	for _, b := range o.buyers {
		perBuyer := (o.stock+b*o.maxPerUser-1)/(b*o.maxPerUser) + 1
		n = max(n, b*perBuyer)
	}
	return n
}

func startStack(ctx context.Context, o options) (_ *stack, err error) {
	dir, err := os.MkdirTemp("", "livedrops-bench-orders-")
	if err != nil {
		return nil, err
	}
	// PostgreSQL runs as its own user when we are root and must reach the dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	st := &stack{dir: dir}
	defer func() {
		if err != nil {
			st.stop(o.keepData)
		}
	}()
	logger := slog.New(slog.DiscardHandler)
	// Durable, as in production: fsync and synchronous_commit on (a commit waits for its WAL flush).
	settings := map[string]string{"max_connections": "200"}
	if o.pgStats {
		settings["shared_preload_libraries"] = "pg_stat_statements"
		settings["pg_stat_statements.track"] = "all"
		settings["track_wal_io_timing"] = "on"
	}
	if st.pg, err = pglocal.Start(ctx, pglocal.Config{Dir: filepath.Join(dir, "pg"), Logger: logger,
		Settings: settings}); err != nil {
		return st, err
	}
	if st.redis, err = redislocal.Start(ctx, redislocal.Config{Dir: filepath.Join(dir, "redis"), Ephemeral: true, Logger: logger}); err != nil {
		return st, err
	}
	st.redisURL = st.redis.URL(0)
	admin, err := pgx.Connect(ctx, st.pg.URL("postgres"))
	if err != nil {
		return st, err
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE livedrops")
	admin.Close(ctx)
	if err != nil {
		return st, err
	}
	st.dbURL = st.pg.URL("livedrops")
	if err := postgres.Migrate(ctx, st.dbURL, logger); err != nil {
		return st, err
	}
	if st.pool, err = postgres.Open(ctx, st.dbURL, postgres.PoolConfig{MaxConns: 4}); err != nil {
		return st, err
	}
	if o.pgStats {
		if _, err := st.pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
			return st, err
		}
	}

	start := time.Now()
	n := usersNeeded(o)
	rows, err := st.pool.Query(ctx, `INSERT INTO users (name, email)
SELECT 'buyer ' || g, 'buyer' || g || '@bench.example' FROM generate_series(1, $1) AS g RETURNING user_id`, n+1)
	if err != nil {
		return st, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return st, err
	}
	st.creatorID, st.users = ids[0], ids[1:]
	if _, err := st.pool.Exec(ctx, `INSERT INTO creators (creator_id, profile_name) VALUES ($1, 'Celebrity')`, st.creatorID); err != nil {
		return st, err
	}
	if err := st.pool.QueryRow(ctx, `INSERT INTO products (creator_id, title, price_cents) VALUES ($1, 'Signed vinyl', 4900)
RETURNING product_id`, st.creatorID).Scan(&st.productID); err != nil {
		return st, err
	}

	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	st.secret = base64.RawURLEncoding.EncodeToString(raw)
	tokens, err := auth.New(auth.Config{Secret: []byte(st.secret)})
	if err != nil {
		return st, err
	}
	st.tokens = make([]string, len(st.users))
	for i, u := range st.users {
		tok, err := tokens.Mint(u, 12*time.Hour)
		if err != nil {
			return st, err
		}
		st.tokens[i] = "Bearer " + tok
	}
	fmt.Printf("stack ready: PostgreSQL and Redis in %s, %d buyers with tokens in %s\n", dir, n, time.Since(start).Round(time.Millisecond))
	return st, nil
}

func (st *stack) stop(keep bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st.pool != nil {
		st.pool.Close()
	}
	if st.redis != nil {
		_ = st.redis.Stop(ctx)
	}
	if st.pg != nil {
		_ = st.pg.Stop(ctx)
	}
	if !keep {
		_ = os.RemoveAll(st.dir)
	}
}

// newDrop creates a drop live since a second, for an hour; for the floor also its floor_drops row
// (the floor creates that table when it starts).
func (st *stack) newDrop(ctx context.Context, stock, maxPerUser int, floor bool) (int64, error) {
	var id int64
	err := st.pool.QueryRow(ctx, `INSERT INTO drops (creator_id, product_id, start_time, end_time, initial_stock,
       stock_count, max_per_user, status)
VALUES ($1, $2, now() - interval '1 second', now() + interval '1 hour', $3, $3, $4, 'live') RETURNING drop_id`,
		st.creatorID, st.productID, stock, maxPerUser).Scan(&id)
	if err == nil && floor {
		_, err = st.pool.Exec(ctx, `INSERT INTO floor_drops (drop_id, stock) VALUES ($1, $2)`, id, stock)
	}
	return id, err
}

// books is what the database says a drop sold.
type books struct {
	stock, confirmed, orders, keysWithTwo int
}

func (st *stack) books(ctx context.Context, dropID int64, floor bool) (books, error) {
	var b books
	q := `SELECT d.stock_count,
       (SELECT coalesce(sum(quantity), 0) FROM orders WHERE drop_id = d.drop_id AND status = 'confirmed'),
       (SELECT count(*) FROM orders WHERE drop_id = d.drop_id AND status = 'confirmed'),
       (SELECT count(*) FROM (SELECT 1 FROM orders WHERE drop_id = d.drop_id
                              GROUP BY user_id, idempotency_key HAVING count(*) > 1) AS x)
FROM drops d WHERE d.drop_id = $1`
	if floor {
		q = `SELECT d.stock,
       (SELECT coalesce(sum(quantity), 0) FROM floor_orders WHERE drop_id = d.drop_id),
       (SELECT count(*) FROM floor_orders WHERE drop_id = d.drop_id),
       (SELECT count(*) FROM (SELECT 1 FROM floor_orders WHERE drop_id = d.drop_id
                              GROUP BY user_id, idempotency_key HAVING count(*) > 1) AS x)
FROM floor_drops d WHERE d.drop_id = $1`
	}
	err := st.pool.QueryRow(ctx, q, dropID).Scan(&b.stock, &b.confirmed, &b.orders, &b.keysWithTwo)
	return b, err
}

// hasOrders reports which of ids are orders of dropID.
func (st *stack) hasOrders(ctx context.Context, dropID int64, ids []int64, floor bool) (int, error) {
	q := `SELECT count(*) FROM orders WHERE drop_id = $1 AND order_id = ANY($2) AND status = 'confirmed'`
	if floor {
		q = `SELECT count(*) FROM floor_orders WHERE drop_id = $1 AND order_id = ANY($2)`
	}
	var n int
	err := st.pool.QueryRow(ctx, q, dropID, ids).Scan(&n)
	return n, err
}
