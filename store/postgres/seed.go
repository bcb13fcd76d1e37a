package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
)

// SeedConfig says what Seed writes. Zero counts write nothing of that kind.
type SeedConfig struct {
	// Users is the number of accounts, creators and followers included: Seed writes at least
	// Creators + Followers.
	Users int
	// Creators is how many of the users become creators; the first is the celebrity.
	Creators int
	// Products are spread over the creators, round robin.
	Products int
	// Drops are spread over the products, round robin: three in four live now (started a minute ago,
	// ending in a week), one in four scheduled for tomorrow; stock 1,000,000 each.
	Drops int
	// Followers follow the celebrity, one millisecond apart (the last is the newest).
	Followers int
	// Now is the clock of the drops and follows; nil means time.Now.
	Now func() time.Time
	// Logger reports the progress; nil discards it.
	Logger *slog.Logger
}

// IDRange is the ids First..Last, both included; empty when Last < First.
type IDRange struct {
	First int64 `json:"first"`
	Last  int64 `json:"last"`
}

// Len is the number of ids in r.
func (r IDRange) Len() int {
	if r.Last < r.First {
		return 0
	}
	return int(r.Last - r.First + 1)
}

// SeedResult names what Seed wrote.
type SeedResult struct {
	Users       IDRange `json:"users"`
	Creators    IDRange `json:"creators"`
	CelebrityID int64   `json:"celebrity_id,omitempty"`
	Followers   IDRange `json:"followers"`
	Products    IDRange `json:"products"`
	Drops       IDRange `json:"drops"`
}

// seedChunk is the rows one COPY writes; chunks of a table are copied two at a time.
const seedChunk = 250_000

// Seed fills the database fast for demos and load tests: it reserves ids from the tables' identity
// sequences and writes every table with COPY (two connections at a time), then analyzes. Follower
// counts come from the schema's triggers as for any insert. It adds to what is there (e-mail
// addresses carry a random run id), but reserving ids assumes no one else inserts users, products or
// drops meanwhile: run it on a quiet database. Seed writes no outbox events.
func Seed(ctx context.Context, pool *pgxpool.Pool, cfg SeedConfig) (SeedResult, error) {
	if cfg.Users < 0 || cfg.Creators < 0 || cfg.Products < 0 || cfg.Drops < 0 || cfg.Followers < 0 {
		return SeedResult{}, errors.New("seed: negative count")
	}
	if (cfg.Products > 0 || cfg.Followers > 0) && cfg.Creators == 0 {
		return SeedResult{}, errors.New("seed: products and followers need at least one creator")
	}
	if cfg.Drops > 0 && cfg.Products == 0 {
		return SeedResult{}, errors.New("seed: drops need at least one product")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now().UTC().Truncate(time.Millisecond)
	users := max(cfg.Users, cfg.Creators+cfg.Followers)
	run := make([]byte, 4)
	_, _ = rand.Read(run)
	runID := hex.EncodeToString(run)

	var res SeedResult
	var err error
	if res.Users, err = reserveIDs(ctx, pool, "users", "user_id", users); err != nil {
		return res, err
	}
	if res.Products, err = reserveIDs(ctx, pool, "products", "product_id", cfg.Products); err != nil {
		return res, err
	}
	if res.Drops, err = reserveIDs(ctx, pool, "drops", "drop_id", cfg.Drops); err != nil {
		return res, err
	}
	res.Creators = IDRange{res.Users.First, res.Users.First + int64(cfg.Creators) - 1}
	if cfg.Creators > 0 {
		res.CelebrityID = res.Creators.First
	}
	res.Followers = IDRange{res.Creators.Last + 1, res.Creators.Last + int64(cfg.Followers)}

	step := func(name string, rows int, f func() error) error {
		start := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("seed %s: %w", name, err)
		}
		logger.InfoContext(ctx, "seeded", "table", name, "rows", rows, "duration_ms", time.Since(start).Milliseconds())
		return nil
	}
	err = step("users", users, func() error {
		return copyChunks(ctx, pool, "users", []string{"user_id", "name", "email"}, users, func(i int) []any {
			id := res.Users.First + int64(i)
			return []any{id, fmt.Sprintf("Seed user %d", id), fmt.Sprintf("seed-%s-%d@example.com", runID, id)}
		})
	})
	if err != nil {
		return res, err
	}
	err = step("creators", cfg.Creators, func() error {
		return copyChunks(ctx, pool, "creators", []string{"creator_id", "profile_name"}, cfg.Creators, func(i int) []any {
			id := res.Creators.First + int64(i)
			return []any{id, fmt.Sprintf("Seed creator %d", id)}
		})
	})
	if err != nil {
		return res, err
	}
	productCreator := func(i int) int64 { return res.Creators.First + int64(i%cfg.Creators) }
	err = step("products", cfg.Products, func() error {
		return copyChunks(ctx, pool, "products", []string{"product_id", "creator_id", "title", "description", "price_cents"}, cfg.Products, func(i int) []any {
			id := res.Products.First + int64(i)
			return []any{id, productCreator(i), fmt.Sprintf("Seed product %d", id), "A product of the seed.", int64(500 + i%100*100)}
		})
	})
	if err != nil {
		return res, err
	}
	err = step("drops", cfg.Drops, func() error {
		cols := []string{"drop_id", "creator_id", "product_id", "start_time", "end_time", "initial_stock", "stock_count", "max_per_user", "status"}
		return copyChunks(ctx, pool, "drops", cols, cfg.Drops, func(i int) []any {
			p := i % cfg.Products
			start, status := now.Add(-time.Minute), "live"
			if i%4 == 3 {
				start, status = now.Add(24*time.Hour), "scheduled"
			}
			return []any{res.Drops.First + int64(i), productCreator(p), res.Products.First + int64(p), start,
				start.Add(7 * 24 * time.Hour), int32(1_000_000), int32(1_000_000), int32(10), status}
		})
	})
	if err != nil {
		return res, err
	}
	base := now.Add(-time.Duration(cfg.Followers) * time.Millisecond)
	err = step("follows", cfg.Followers, func() error {
		return copyChunks(ctx, pool, "follows", []string{"creator_id", "follower_id", "followed_at"}, cfg.Followers, func(i int) []any {
			return []any{res.CelebrityID, res.Followers.First + int64(i), base.Add(time.Duration(i) * time.Millisecond)}
		})
	})
	if err != nil {
		return res, err
	}
	err = step("analyze", 0, func() error {
		_, err := pool.Exec(ctx, `ANALYZE users, creators, follows, creator_follower_counts, products, drops`)
		return err
	})
	return res, err
}

// reserveIDs takes n consecutive ids from table's identity sequence.
func reserveIDs(ctx context.Context, pool *pgxpool.Pool, table, column string, n int) (IDRange, error) {
	if n == 0 {
		return IDRange{First: 1, Last: 0}, nil
	}
	var first int64
	err := pool.QueryRow(ctx, `
WITH s AS (SELECT pg_get_serial_sequence($1, $2) AS seq),
     f AS (SELECT nextval((SELECT seq FROM s)) AS first)
SELECT first FROM f, LATERAL (SELECT setval((SELECT seq FROM s), f.first + $3 - 1)) AS moved`, table, column, n).Scan(&first)
	if err != nil {
		return IDRange{}, fmt.Errorf("seed: reserve %d %s ids: %w", n, table, err)
	}
	return IDRange{First: first, Last: first + int64(n) - 1}, nil
}

// copyChunks writes rows 0..n-1 of table with COPY, in chunks of seedChunk, two connections at a time.
func copyChunks(ctx context.Context, pool *pgxpool.Pool, table string, cols []string, n int, row func(i int) []any) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for lo := 0; lo < n; lo += seedChunk {
		hi := min(lo+seedChunk, n)
		g.Go(func() error {
			i := lo
			src := pgx.CopyFromFunc(func() ([]any, error) {
				if i >= hi {
					return nil, nil
				}
				r := row(i)
				i++
				return r, nil
			})
			copied, err := pool.CopyFrom(ctx, pgx.Identifier{table}, cols, src)
			if err != nil {
				return err
			}
			if copied != int64(hi-lo) {
				return fmt.Errorf("copied %d rows, want %d", copied, hi-lo)
			}
			return nil
		})
	}
	return g.Wait()
}
