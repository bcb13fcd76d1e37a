package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// LeaderConfig tunes a Leader. Zero values are the documented defaults.
type LeaderConfig struct {
	// RetryInterval is how often a standby tries to take the lock; 0 means 1 s.
	RetryInterval time.Duration
	// CheckInterval is how often the leader checks that its session, and so its lock, is alive; 0 means
	// 1 s. A check that fails or takes longer ends the leadership.
	CheckInterval time.Duration
}

// Leader elects one process among many for a job (the outbox relay) with a PostgreSQL session advisory
// lock held on a dedicated connection. When the leader's process dies its connection closes and the
// server releases the lock at once; when its network does, the server notices through TCP keepalives
// (set to about 10 s on that session), and the leader itself stops at its next failed check, before a
// standby can take over.
type Leader struct {
	pool *pgxpool.Pool
	key  int64
	name string
	cfg  LeaderConfig
}

// NewLeader returns an election for the job name (the lock key is derived from it).
func NewLeader(pool *pgxpool.Pool, name string, cfg LeaderConfig) *Leader {
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = time.Second
	}
	h := fnv.New64a()
	h.Write([]byte("livedrops.leader." + name))
	return &Leader{pool: pool, key: int64(h.Sum64()), name: name, cfg: cfg}
}

// Lead blocks until this process holds the lock, or ctx ends (then it returns ctx's error). It returns
// a context that ends when the leadership is lost or ctx ends, and a release function that gives the
// leadership up and waits for its watcher to stop; call it exactly once.
func (l *Leader) Lead(ctx context.Context) (context.Context, func(), error) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	for {
		if conn == nil || conn.IsClosed() {
			var err error
			if conn, err = l.connect(ctx); err != nil && ctx.Err() == nil {
				conn = nil
			}
		}
		if conn != nil {
			var got bool
			err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", l.key).Scan(&got)
			if err == nil && got {
				leadCtx, release := l.watch(ctx, conn)
				conn = nil // owned by watch now
				return leadCtx, release, nil
			}
			if err != nil && ctx.Err() == nil {
				conn.Close(context.WithoutCancel(ctx))
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("leader %s: %w", l.name, ctx.Err())
		case <-time.After(l.cfg.RetryInterval):
		}
	}
}

func (l *Leader) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg := l.pool.Config().ConnConfig.Copy()
	// The server drops the session, and so the lock, about 10 s after the leader's host vanishes.
	cfg.RuntimeParams["tcp_keepalives_idle"] = "4"
	cfg.RuntimeParams["tcp_keepalives_interval"] = "2"
	cfg.RuntimeParams["tcp_keepalives_count"] = "3"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("leader %s: connect: %w", l.name, err)
	}
	return conn, nil
}

// watch checks the session every CheckInterval and ends the returned context when a check fails.
func (l *Leader) watch(parent context.Context, conn *pgx.Conn) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel(errors.New("leadership released"))
		ticker := time.NewTicker(l.cfg.CheckInterval)
		defer ticker.Stop()
		for {
			select {
			case <-stop:
				// Unlock explicitly so a standby need not wait for the connection to close.
				unlockCtx, c := context.WithTimeout(context.WithoutCancel(parent), l.cfg.CheckInterval)
				_, _ = conn.Exec(unlockCtx, "SELECT pg_advisory_unlock($1)", l.key)
				conn.Close(unlockCtx)
				c()
				return
			case <-ctx.Done():
				<-stop
				closeCtx, c := context.WithTimeout(context.WithoutCancel(parent), l.cfg.CheckInterval)
				conn.Close(closeCtx)
				c()
				return
			case <-ticker.C:
				checkCtx, c := context.WithTimeout(ctx, l.cfg.CheckInterval)
				err := conn.Ping(checkCtx)
				c()
				if err != nil {
					cancel(fmt.Errorf("leader %s: lost the session holding the lock: %w", l.name, err))
				}
			}
		}
	}()
	var once bool
	release := func() {
		if once {
			return
		}
		once = true
		close(stop)
		<-done
	}
	return ctx, release
}
