package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/store/postgres"
)

// SQLSTATE codes the tests expect.
const (
	codeIntegrity  = "23000"
	codeForeignKey = "23503"
	codeUnique     = "23505"
	codeCheck      = "23514"
)

func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// migrated returns a pool on a fresh database migrated by postgres.Migrate.
func migrated(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	ctx := testContext(tb)
	if err := postgres.Migrate(ctx, url, nil); err != nil {
		tb.Fatalf("Migrate: %v", err)
	}
	pool, err := postgres.Open(ctx, url, postgres.PoolConfig{})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func mustExec(tb testing.TB, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, sql string, args ...any) {
	tb.Helper()
	if _, err := db.Exec(testContext(tb), sql, args...); err != nil {
		tb.Fatalf("exec %q: %v", sql, err)
	}
}

func queryInt(tb testing.TB, pool *pgxpool.Pool, sql string, args ...any) int64 {
	tb.Helper()
	var n int64
	if err := pool.QueryRow(testContext(tb), sql, args...).Scan(&n); err != nil {
		tb.Fatalf("query %q: %v", sql, err)
	}
	return n
}

// checkPgError fails unless err is a *pgconn.PgError with the SQLSTATE code and constraint name; an
// empty code means err must be nil.
func checkPgError(tb testing.TB, err error, code, constraint string) {
	tb.Helper()
	if code == "" {
		if err != nil {
			tb.Fatalf("got error %v, want none", err)
		}
		return
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		tb.Fatalf("got error %v, want a *pgconn.PgError %s on %s", err, code, constraint)
	}
	if pgErr.Code != code || pgErr.ConstraintName != constraint {
		tb.Fatalf("got SQLSTATE %s on constraint %q (%s), want %s on %q",
			pgErr.Code, pgErr.ConstraintName, pgErr.Message, code, constraint)
	}
}

// logRecorder is a slog handler target that keeps JSON records for inspection.
type logRecorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *logRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *logRecorder) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// records returns the records whose message is msg.
func (r *logRecorder) records(tb testing.TB, msg string) []map[string]any {
	tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	dec := json.NewDecoder(strings.NewReader(r.buf.String()))
	for {
		var rec map[string]any
		if err := dec.Decode(&rec); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			tb.Fatalf("decode log record: %v", err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
}
