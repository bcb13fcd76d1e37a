package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/postgres/pglocal"
)

// runSeed is `livedrops seed`: it fills the database named by DATABASE_URL or, when that is empty, the
// dev stack's (it starts the PostgreSQL of the data dir, as `all` does, and stops it at the end; stop
// `livedrops all` on that data dir first). It migrates, seeds with COPY, writes the followers' tokens
// (signed with the configured or the dev stack's secret, so `all` on the same data dir accepts them)
// and prints what it wrote as one JSON object on stdout.
func runSeed(ctx context.Context, cfg Config, logger *slog.Logger, stdout io.Writer) (err error) {
	start := time.Now()
	if cfg.DatabaseURL == "" {
		pg, err := startDevPostgres(ctx, cfg.DataDir, logger)
		if err != nil {
			return err
		}
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
			defer cancel()
			err = errors.Join(err, pg.Stop(stopCtx))
		}()
		cfg.DatabaseURL = pg.URL(devDatabase)
	}
	var tokens *auth.Tokens
	if cfg.Seed.TokensFile != "" {
		if tokens, err = newTokens(cfg); err != nil {
			return err
		}
	}
	if err := postgres.Migrate(ctx, cfg.DatabaseURL, logger); err != nil {
		return err
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.PoolConfig{})
	if err != nil {
		return err
	}
	defer pool.Close()
	s := cfg.Seed
	res, err := postgres.Seed(ctx, pool, postgres.SeedConfig{Users: s.Users, Creators: s.Creators,
		Products: s.Products, Drops: s.Drops, Followers: s.Followers, Logger: logger})
	if err != nil {
		return err
	}
	if tokens != nil {
		t := time.Now()
		if err := writeTokens(s.TokensFile, tokens, res.Followers, s.TokenTTL); err != nil {
			return err
		}
		logger.Info("seeded", "table", "tokens", "rows", res.Followers.Len(), "duration_ms", time.Since(t).Milliseconds(), "file", s.TokensFile)
	}
	logger.Info("seed done", "duration_ms", time.Since(start).Milliseconds())
	return json.NewEncoder(stdout).Encode(res)
}

// startDevPostgres starts the dev stack's PostgreSQL in dataDir and creates its database.
func startDevPostgres(ctx context.Context, dataDir string, logger *slog.Logger) (*pglocal.Server, error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("seed: data dir: %w", err)
	}
	// 0755: PostgreSQL runs as its own user when we are root and must reach dir/pg.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("seed: create data dir: %w", err)
	}
	pg, err := pglocal.Start(ctx, pglocal.Config{Dir: filepath.Join(dir, "pg"), Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	if err := createDatabase(ctx, pg.URL("postgres"), devDatabase); err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return nil, errors.Join(fmt.Errorf("seed: %w", err), pg.Stop(stopCtx))
	}
	return pg, nil
}

// writeTokens writes "user_id token" for every id of ids, in order, minting on every CPU.
func writeTokens(path string, tokens *auth.Tokens, ids postgres.IDRange, ttl time.Duration) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("seed: tokens file: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	const chunk = 10_000
	n := ids.Len()
	workers := runtime.GOMAXPROCS(0)
	// Chunks are minted in parallel and written in order: chunk i waits for chunk i-1's turn.
	turns := make([]chan struct{}, (n+chunk-1)/chunk+1)
	for i := range turns {
		turns[i] = make(chan struct{})
	}
	close(turns[0])
	g := new(errgroup.Group)
	g.SetLimit(workers)
	for c := 0; c*chunk < n; c++ {
		g.Go(func() error {
			buf := make([]byte, 0, chunk*220)
			var err error
			for i := c * chunk; i < min((c+1)*chunk, n) && err == nil; i++ {
				id := ids.First + int64(i)
				var tok string
				if tok, err = tokens.Mint(id, ttl); err == nil {
					buf = strconv.AppendInt(buf, id, 10)
					buf = append(buf, ' ')
					buf = append(buf, tok...)
					buf = append(buf, '\n')
				}
			}
			<-turns[c]
			defer close(turns[c+1]) // always, so the chunks after this one never wait forever
			if err != nil {
				return err
			}
			_, err = w.Write(buf)
			return err
		})
	}
	err = g.Wait()
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("seed: write tokens: %w", err)
	}
	return nil
}
