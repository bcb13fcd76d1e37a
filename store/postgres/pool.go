package postgres

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// applicationName is what pg_stat_activity shows for our sessions unless the URL names another.
const applicationName = "livedrops"

// PoolConfig tunes the connection pool [Open] returns. Zero values are the documented defaults; a
// setting given in the database URL (pool_max_conns, pool_min_conns, pool_max_conn_lifetime,
// pool_max_conn_idle_time, pool_health_check_period, statement_timeout, application_name) is used
// when the matching field is zero.
type PoolConfig struct {
	// MaxConns caps the open connections. Zero means 4 × GOMAXPROCS, at least 4: enough that
	// requests waiting on a hot drop's row lock do not starve the rest.
	MaxConns int32
	// MinConns is kept open even when idle. Zero means none.
	MinConns int32
	// MaxConnLifetime closes a connection this long after it opened. Zero means one hour.
	MaxConnLifetime time.Duration
	// MaxConnIdleTime closes a connection idle this long. Zero means 30 minutes.
	MaxConnIdleTime time.Duration
	// HealthCheckPeriod is how often idle connections are checked. Zero means one minute.
	HealthCheckPeriod time.Duration
	// StatementTimeout makes the server cancel a statement running longer (statement_timeout,
	// whole milliseconds). Zero leaves the server's setting (none by default).
	StatementTimeout time.Duration
}

// Open connects to the database at databaseURL with cfg, checks the connection with a ping, and
// returns the pool. The caller closes it. Sessions get application_name "livedrops" unless the URL
// sets one. Open neither creates nor migrates the schema: see [Migrate].
//
// Readiness: pool.Ping(ctx) is the check (it acquires a connection and runs an empty query).
func Open(ctx context.Context, databaseURL string, cfg PoolConfig) (*pgxpool.Pool, error) {
	poolConfig, err := poolConfig(databaseURL, cfg)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolConfig)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open database: ping: %w", err)
	}
	return pool, nil
}

func poolConfig(databaseURL string, cfg PoolConfig) (*pgxpool.Config, error) {
	switch {
	case cfg.MaxConns < 0, cfg.MinConns < 0, cfg.MaxConnLifetime < 0, cfg.MaxConnIdleTime < 0,
		cfg.HealthCheckPeriod < 0, cfg.StatementTimeout < 0:
		return nil, errors.New("open database: negative pool setting")
	case cfg.MaxConns > 0 && cfg.MinConns > cfg.MaxConns:
		return nil, fmt.Errorf("open database: MinConns %d above MaxConns %d", cfg.MinConns, cfg.MaxConns)
	}
	pc, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		// pgconn's parse errors do not repeat the password.
		return nil, fmt.Errorf("open database: parse database url: %w", err)
	}
	// pgxpool has already removed its pool_* settings from the runtime parameters; parse again to
	// learn whether the URL gave pool_max_conns or pgxpool filled in its own default.
	raw, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open database: parse database url: %w", err)
	}
	switch _, inURL := raw.RuntimeParams["pool_max_conns"]; {
	case cfg.MaxConns > 0:
		pc.MaxConns = cfg.MaxConns
	case !inURL:
		pc.MaxConns = max(4, 4*int32(runtime.GOMAXPROCS(0)))
	}
	if cfg.MinConns > 0 {
		pc.MinConns = cfg.MinConns
	}
	if pc.MinConns > pc.MaxConns {
		return nil, fmt.Errorf("open database: MinConns %d above MaxConns %d", pc.MinConns, pc.MaxConns)
	}
	if cfg.MaxConnLifetime > 0 {
		pc.MaxConnLifetime = cfg.MaxConnLifetime
	}
	if cfg.MaxConnIdleTime > 0 {
		pc.MaxConnIdleTime = cfg.MaxConnIdleTime
	}
	if cfg.HealthCheckPeriod > 0 {
		pc.HealthCheckPeriod = cfg.HealthCheckPeriod
	}
	params := pc.ConnConfig.RuntimeParams
	if cfg.StatementTimeout > 0 {
		params["statement_timeout"] = strconv.FormatInt(max(1, cfg.StatementTimeout.Milliseconds()), 10)
	}
	if _, ok := params["application_name"]; !ok {
		params["application_name"] = applicationName
	}
	return pc, nil
}
