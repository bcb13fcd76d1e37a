// Package natslocal runs a NATS server with JetStream inside this process: the embedded broker of
// `livedrops all` and the real NATS of the tests.
//
// JetStream acknowledges a publish before it reaches the disk unless told otherwise; the default here
// is to sync every write (Sync "always"), and PostgreSQL's outbox stays the ledger in any case.
package natslocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says where and how to run the server. Zero values are the documented defaults.
type Config struct {
	// Dir holds the JetStream store (required).
	Dir string
	// Port is the loopback client port; 0 picks a free one.
	Port int
	// Sync is how JetStream flushes to disk: "always" (the default when empty: fsync every write) or a
	// Go duration such as "2m" (fsync on that interval, the NATS default; faster, and a crash of the
	// machine can lose what was acknowledged since the last sync).
	Sync string
	// StartTimeout bounds start-up; 0 means 15 s.
	StartTimeout time.Duration
	// Logger receives the server's own log lines; nil discards them.
	Logger *slog.Logger
}

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
}

// ParseSync validates a Config.Sync value: "" and "always" mean sync every write, otherwise a positive
// duration.
func ParseSync(v string) (always bool, interval time.Duration, err error) {
	switch strings.TrimSpace(v) {
	case "", "always":
		return true, 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return false, 0, fmt.Errorf("nats sync %q: want \"always\" or a positive duration such as 2m", v)
	}
	return false, d, nil
}

// Start starts the server and waits until it accepts connections.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("natslocal: Config.Dir is required")
	}
	always, interval, err := ParseSync(cfg.Sync)
	if err != nil {
		return nil, fmt.Errorf("natslocal: %w", err)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 15 * time.Second
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("natslocal: data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natslocal: create %s: %w", dir, err)
	}
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:   "livedrops-embedded",
		Host:         "127.0.0.1",
		Port:         port,
		JetStream:    true,
		StoreDir:     dir,
		SyncAlways:   always,
		SyncInterval: interval,
		NoSigs:       true, // the parent owns signals and the shutdown order
		MaxPayload:   1 << 20,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natslocal: new server: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(slogAdapter{cfg.Logger.With("component", "nats-server")}, false, false, false)
	}
	go ns.Start()

	deadline := cfg.StartTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < deadline {
		deadline = time.Until(d)
	}
	if !ns.ReadyForConnections(deadline) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natslocal: server not ready within %s", deadline)
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("nats started", "url", ns.ClientURL(), "store", dir, "sync_always", always, "sync_interval", interval)
	}
	return &Server{ns: ns}, nil
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Stop shuts the server down and waits for it; its JetStream data stays in Dir. Safe to call twice.
func (s *Server) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("natslocal: shutdown: %w", ctx.Err())
	}
}

// slogAdapter turns the server's printf-style logging into structured lines. Its notices (a banner at
// start, one line per client) go to Debug so they do not drown the process's own log.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
