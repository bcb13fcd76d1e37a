// Package redislocal runs redis-server from the machine's binaries with its data in a directory: the dev
// stack of `livedrops all` and the real Redis of the tests.
//
// The server listens on a loopback port only, keeps an append-only file in the data directory (unless
// Ephemeral), runs in its own process group so a Ctrl-C at the terminal reaches the parent first, and gets
// SIGTERM from the kernel if the parent dies without stopping it.
package redislocal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrMissingBinary reports that redis-server is not installed; the error text names the command that
// installs it.
var ErrMissingBinary = errors.New("redis-server not found")

// Config says where and how to run the server. Zero values are the documented defaults.
type Config struct {
	// Dir holds the append-only file (required).
	Dir string
	// Port is the loopback TCP port; 0 picks a free one at each start.
	Port int
	// Ephemeral keeps nothing on disk (tests).
	Ephemeral bool
	// Binary is the server program; "" looks up redis-server on PATH.
	Binary string
	// StartTimeout bounds start-up; 0 means 30 s.
	StartTimeout time.Duration
	// Logger receives start and stop notes; nil discards them.
	Logger *slog.Logger
}

// Server is a running redis-server started by Start.
type Server struct {
	port    int
	cmd     *exec.Cmd
	logPath string
	logger  *slog.Logger

	done    chan struct{}
	waitErr error

	stopOnce sync.Once
	stopErr  error
}

// Start starts redis-server and waits until it answers PING.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("redislocal: Config.Dir is required")
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	bin := cfg.Binary
	if bin == "" {
		bin = "redis-server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not on PATH; install it with `apt-get update && apt-get install -y redis-server`",
			ErrMissingBinary, bin)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("redislocal: data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("redislocal: create %s: %w", dir, err)
	}
	port := cfg.Port
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	args := []string{
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--daemonize", "no", "--protected-mode", "yes", "--save", "",
		"--unixsocket", "", "--logfile", "",
	}
	if cfg.Ephemeral {
		args = append(args, "--appendonly", "no")
	} else {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	}
	logPath := filepath.Join(dir, "redis.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("redislocal: open server log: %w", err)
	}
	defer logFile.Close()

	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("redislocal: start %s: %w", path, err)
	}
	s := &Server{port: port, cmd: cmd, logPath: logPath, logger: logger, done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(ctx); err != nil {
		stopCtx, stopCancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer stopCancel()
		_ = s.Stop(stopCtx)
		return nil, fmt.Errorf("redislocal: server did not become ready: %w\n%s", err, tail(logPath, 2048))
	}
	logger.Info("redis started", "dir", dir, "port", port, "pid", cmd.Process.Pid)
	return s, nil
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is a redis:// URL for database db.
func (s *Server) URL(db int) string { return fmt.Sprintf("redis://%s/%d", s.Addr(), db) }

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Done is closed when the server process has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// Stop asks the server to exit (SIGTERM: it finishes writing the append-only file), and kills it if ctx
// expires first. Safe to call more than once.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.stop(ctx) })
	return s.stopErr
}

func (s *Server) stop(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		s.logger.Info("redis stopped", "port", s.port)
		return nil
	case <-ctx.Done():
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("redislocal: redis-server did not stop in time, killed: %w", ctx.Err())
	}
}

func (s *Server) waitReady(ctx context.Context) error {
	client := redis.NewClient(&redis.Options{Addr: s.Addr(), DialTimeout: time.Second, MaxRetries: -1, Protocol: 2})
	defer client.Close()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := client.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("redis-server exited: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
