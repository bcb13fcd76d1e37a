package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedrops/livedrops/fanout/natslocal"
	"github.com/livedrops/livedrops/store/postgres/pglocal"
	"github.com/livedrops/livedrops/store/redis/redislocal"
)

// devDatabase is the database the dev stack creates in its PostgreSQL.
const devDatabase = "livedrops"

// devStack holds the services `livedrops all` started itself because no URL named them.
type devStack struct {
	logger *slog.Logger
	pg     *pglocal.Server
	redis  *redislocal.Server
	nats   *natslocal.Server
}

// startDevStack starts PostgreSQL, Redis and NATS in cfg.DataDir for each URL left empty, and fills the
// URLs in. On error, whatever it started is stopped again.
func startDevStack(ctx context.Context, cfg *Config, logger *slog.Logger) (_ *devStack, err error) {
	d := &devStack{logger: logger}
	if cfg.DatabaseURL != "" && cfg.RedisURL != "" && cfg.NatsURL != "" {
		return d, nil
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("dev stack: data dir: %w", err)
	}
	// 0755: PostgreSQL runs as its own user when we are root and must reach dir/pg.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dev stack: create data dir: %w", err)
	}
	defer func() {
		if err != nil {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			err = errors.Join(err, d.Stop(stopCtx))
		}
	}()

	if cfg.DatabaseURL == "" {
		d.pg, err = pglocal.Start(ctx, pglocal.Config{Dir: filepath.Join(dir, "pg"), Logger: logger})
		if err != nil {
			return d, fmt.Errorf("dev stack: %w", err)
		}
		if err := createDatabase(ctx, d.pg.URL("postgres"), devDatabase); err != nil {
			return d, fmt.Errorf("dev stack: %w", err)
		}
		cfg.DatabaseURL = d.pg.URL(devDatabase)
	}
	if cfg.RedisURL == "" {
		d.redis, err = redislocal.Start(ctx, redislocal.Config{Dir: filepath.Join(dir, "redis"), Logger: logger})
		if err != nil {
			return d, fmt.Errorf("dev stack: %w", err)
		}
		cfg.RedisURL = d.redis.URL(0)
	}
	if cfg.NatsURL == "" {
		d.nats, err = natslocal.Start(ctx, natslocal.Config{Dir: filepath.Join(dir, "nats"), Sync: cfg.NatsSync, Logger: logger})
		if err != nil {
			return d, fmt.Errorf("dev stack: %w", err)
		}
		cfg.NatsURL = d.nats.ClientURL()
	}
	return d, nil
}

// Failed is closed when a server of the dev stack exits on its own; nil (never ready) when there is none.
func (d *devStack) Failed() <-chan string {
	ch := make(chan string, 1)
	var pgDone, redisDone <-chan struct{}
	if d.pg != nil {
		pgDone = d.pg.Done()
	}
	if d.redis != nil {
		redisDone = d.redis.Done()
	}
	if pgDone == nil && redisDone == nil {
		return nil
	}
	go func() {
		select {
		case <-pgDone:
			ch <- "postgres"
		case <-redisDone:
			ch <- "redis"
		}
	}()
	return ch
}

// Stop stops the servers in the reverse order of their start.
func (d *devStack) Stop(ctx context.Context) error {
	var errs []error
	if d.nats != nil {
		errs = append(errs, d.nats.Stop(ctx))
	}
	if d.redis != nil {
		errs = append(errs, d.redis.Stop(ctx))
	}
	if d.pg != nil {
		errs = append(errs, d.pg.Stop(ctx))
	}
	return errors.Join(errs...)
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look for database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// secretFile is where the dev stack keeps its generated JWT secret.
const secretFile = "jwt-secret"

// loadOrCreateSecret returns the JWT secret kept in dir, generating it on first use (32 random bytes,
// base64url, file mode 0600). Two processes racing to create it agree on one secret.
func loadOrCreateSecret(dir string) (string, error) {
	path := filepath.Join(dir, secretFile)
	if b, err := os.ReadFile(path); err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < 32 {
			return "", fmt.Errorf("jwt secret in %s is too short; delete the file to generate a new one", path)
		}
		return s, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read jwt secret: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate jwt secret: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(raw)
	tmp, err := os.CreateTemp(dir, secretFile+".*")
	if err != nil {
		return "", fmt.Errorf("write jwt secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(secret + "\n"); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write jwt secret: %w", err)
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return "", fmt.Errorf("write jwt secret: %w", err)
	}
	// Link fails if another process won the race; then its secret is the one.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("write jwt secret: %w", err)
	}
	return loadOrCreateSecret(dir)
}
