package pglocal_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedrops/livedrops/store/postgres/pglocal"
)

// testDir is a directory below a 0700 parent, as a checkout under /root would be: the server, run as
// another user when the tests run as root, must still reach it.
func testDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "data", "pg")
}

func start(t *testing.T, cfg pglocal.Config) *pglocal.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := pglocal.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stop(t, s) })
	return s
}

func stop(t *testing.T, s *pglocal.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

func exec(t *testing.T, url, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestStartStopRestartKeepsData(t *testing.T) {
	dir := testDir(t)
	s := start(t, pglocal.Config{Dir: dir})
	exec(t, s.URL("postgres"), "CREATE TABLE kept (v text)")
	exec(t, s.URL("postgres"), "INSERT INTO kept VALUES ('first run')")
	stop(t, s)

	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if _, err := pgx.Connect(context.Background(), s.URL("postgres")+"&connect_timeout=1"); err == nil {
		t.Fatal("server still answers after Stop")
	}

	s2 := start(t, pglocal.Config{Dir: dir})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s2.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var got string
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&got); err != nil {
		t.Fatalf("data of the first run: %v", err)
	}
	if got != "first run" {
		t.Fatalf("got %q, want %q", got, "first run")
	}
}

func TestStopIsIdempotentAndLeavesNoProcess(t *testing.T) {
	s := start(t, pglocal.Config{Dir: testDir(t), Ephemeral: true})
	pid := s.PID()
	stop(t, s)
	stop(t, s)
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("postmaster %d after Stop: kill(0) = %v, want ESRCH", pid, err)
	}
}

func TestServerExitIsSeen(t *testing.T) {
	s := start(t, pglocal.Config{Dir: testDir(t), Ephemeral: true})
	// The postmaster dies behind its owner's back: Done must report it.
	if err := syscall.Kill(s.PID(), syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Done not closed after the server died")
	}
}

func TestMissingBinaryNamesTheInstallCommand(t *testing.T) {
	_, err := pglocal.Start(context.Background(), pglocal.Config{Dir: testDir(t), BinDir: t.TempDir()})
	if !errors.Is(err, pglocal.ErrMissingBinary) {
		t.Fatalf("got %v, want ErrMissingBinary", err)
	}
	if !strings.Contains(err.Error(), "apt-get install -y postgresql") {
		t.Fatalf("error %q does not name the install command", err)
	}
}

func TestNonEmptyDirWithoutClusterIsRefused(t *testing.T) {
	dir := testDir(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stray"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := pglocal.Start(context.Background(), pglocal.Config{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "holds no PostgreSQL cluster") {
		t.Fatalf("got %v, want a refusal naming the problem", err)
	}
}

func TestConfigRequiresDir(t *testing.T) {
	if _, err := pglocal.Start(context.Background(), pglocal.Config{}); err == nil {
		t.Fatal("Start with no Dir succeeded")
	}
}
