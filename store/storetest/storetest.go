// Package storetest gives a test package a real PostgreSQL and a real Redis, started once per package
// from the machine's binaries and shared by its tests, each test isolated in its own database and its
// own Redis key prefix. It fails, never skips, when a server cannot start.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { storetest.Main(m) }
//
// The servers live in package state set by Main; that state is test-only and written once, before any
// test runs.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/postgres/pglocal"
	"github.com/livedrops/livedrops/store/redis/redislocal"
)

// stack is set once by Main before any test runs.
var stack struct {
	pg    *pglocal.Server
	redis *redislocal.Server

	templateOnce sync.Once
	templateErr  error
}

// Main starts PostgreSQL and Redis for the test package, runs its tests and stops both. It exits the
// process with a failure when a server cannot start.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if fuzzWorker() {
		// A fuzz worker only runs fuzz inputs, and the fuzz targets need no server: starting PostgreSQL
		// and Redis in each worker would spend the whole -fuzztime of `make fuzz` on start-up.
		return m.Run()
	}
	ctx := context.Background()
	root, err := os.MkdirTemp("", "livedrops-storetest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "storetest:", err)
		return 1
	}
	defer os.RemoveAll(root)
	// The PostgreSQL server may run as another user: let it reach its directory.
	if err := os.Chmod(root, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "storetest:", err)
		return 1
	}
	pg, err := pglocal.Start(ctx, pglocal.Config{Dir: root + "/pg", Ephemeral: true,
		Settings: map[string]string{"max_connections": "300"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "storetest: cannot start PostgreSQL:", err)
		return 1
	}
	defer stopWithin(pg.Stop)
	rs, err := redislocal.Start(ctx, redislocal.Config{Dir: root + "/redis", Ephemeral: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "storetest: cannot start Redis:", err)
		return 1
	}
	defer stopWithin(rs.Stop)
	stack.pg, stack.redis = pg, rs
	return m.Run()
}

func stopWithin(stop func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "storetest:", err)
	}
}

func mustStack(tb testing.TB) {
	tb.Helper()
	if stack.pg == nil && fuzzWorker() {
		tb.Fatal("storetest: a fuzz worker starts no servers: a fuzz target must not need PostgreSQL or Redis")
	}
	if stack.pg == nil {
		tb.Fatal("storetest: servers not started; call storetest.Main(m) from TestMain")
	}
}

// fuzzWorker reports whether this test process is a worker of go test -fuzz (flag -test.fuzzworker).
func fuzzWorker() bool {
	for _, a := range os.Args[1:] {
		if a == "-test.fuzzworker" || a == "-test.fuzzworker=true" || a == "--test.fuzzworker" {
			return true
		}
	}
	return false
}

// PostgresURL is the URL of database name on the package's PostgreSQL server.
func PostgresURL(tb testing.TB, name string) string {
	tb.Helper()
	mustStack(tb)
	return stack.pg.URL(name)
}

// NewDatabase creates a fresh, empty database for this test, dropped when the test ends, and returns
// its URL.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	return createDatabase(tb, "")
}

// NewMigratedDatabase creates a fresh database with the whole schema (cloned from a template migrated
// once per package), dropped when the test ends, and returns its URL.
func NewMigratedDatabase(tb testing.TB) string {
	tb.Helper()
	mustStack(tb)
	stack.templateOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		stack.templateErr = adminExec(ctx, "CREATE DATABASE livedrops_template")
		if stack.templateErr == nil {
			stack.templateErr = postgres.Migrate(ctx, stack.pg.URL("livedrops_template"), slog.New(slog.DiscardHandler))
		}
	})
	if stack.templateErr != nil {
		tb.Fatalf("storetest: migrate template database: %v", stack.templateErr)
	}
	return createDatabase(tb, "livedrops_template")
}

func createDatabase(tb testing.TB, template string) string {
	tb.Helper()
	mustStack(tb)
	name := "t_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stmt := "CREATE DATABASE " + name
	if template != "" {
		stmt += " TEMPLATE " + template
	}
	if err := adminExec(ctx, stmt); err != nil {
		tb.Fatalf("storetest: %s: %v", stmt, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := adminExec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("storetest: drop database %s: %v", name, err)
		}
	})
	return stack.pg.URL(name)
}

// adminExec runs one statement on the maintenance database. CREATE DATABASE from a template fails while
// another session uses the template, so it is retried briefly.
func adminExec(ctx context.Context, stmt string) error {
	conn, err := pgx.Connect(ctx, stack.pg.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		_, err = conn.Exec(ctx, stmt)
		if err == nil || !strings.Contains(err.Error(), "is being accessed by other users") {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// RedisAddr is host:port of the package's Redis server.
func RedisAddr(tb testing.TB) string {
	tb.Helper()
	mustStack(tb)
	return stack.redis.Addr()
}

// NewRedis returns a client of the package's Redis and a key prefix unique to this test; the test's keys
// are deleted and the client closed when it ends.
func NewRedis(tb testing.TB) (redis.UniversalClient, string) {
	tb.Helper()
	mustStack(tb)
	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{stack.redis.Addr()}})
	prefix := "t" + randomHex(6) + ":"
	tb.Cleanup(func() {
		defer client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			tb.Errorf("storetest: clean redis keys %s*: %v", prefix, err)
		}
	})
	return client, prefix
}

// StartPostgres starts a private PostgreSQL server for one test (one that stops or restarts it), stopped
// when the test ends.
func StartPostgres(tb testing.TB) *pglocal.Server {
	tb.Helper()
	dir := PrivateDir(tb)
	pg, err := pglocal.Start(context.Background(), pglocal.Config{Dir: dir + "/pg", Ephemeral: true})
	if err != nil {
		tb.Fatalf("storetest: start private PostgreSQL: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.Stop(ctx); err != nil {
			tb.Errorf("storetest: stop private PostgreSQL: %v", err)
		}
	})
	return pg
}

// PrivateDir is a temporary directory, removed when the test ends, that a server running as another OS
// user (PostgreSQL as `postgres`) can enter.
func PrivateDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "livedrops-test-")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
