package redislocal_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/livedrops/livedrops/store/redis/redislocal"
)

func start(t *testing.T, cfg redislocal.Config) *redislocal.Server {
	t.Helper()
	s, err := redislocal.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stop(t, s) })
	return s
}

func stop(t *testing.T, s *redislocal.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := start(t, redislocal.Config{Dir: dir})
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	if err := c.Set(ctx, "kept", "first run", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	stop(t, s)
	if err := syscall.Kill(s.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("redis-server %d after Stop: kill(0) = %v, want ESRCH", s.PID(), err)
	}

	s2 := start(t, redislocal.Config{Dir: dir})
	c2 := redis.NewClient(&redis.Options{Addr: s2.Addr()})
	defer c2.Close()
	got, err := c2.Get(ctx, "kept").Result()
	if err != nil || got != "first run" {
		t.Fatalf("got %q, %v; want %q", got, err, "first run")
	}
}

func TestMissingBinaryNamesTheInstallCommand(t *testing.T) {
	_, err := redislocal.Start(context.Background(), redislocal.Config{Dir: t.TempDir(), Binary: "redis-server-not-installed"})
	if !errors.Is(err, redislocal.ErrMissingBinary) {
		t.Fatalf("got %v, want ErrMissingBinary", err)
	}
	if !strings.Contains(err.Error(), "apt-get install -y redis-server") {
		t.Fatalf("error %q does not name the install command", err)
	}
}

func TestServerExitIsSeen(t *testing.T) {
	s := start(t, redislocal.Config{Dir: t.TempDir(), Ephemeral: true})
	if err := syscall.Kill(s.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the server died")
	}
}
