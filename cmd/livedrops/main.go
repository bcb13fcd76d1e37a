// Command livedrops is the one LiveDrops binary: every role (api, hub, worker, or all of them in one
// process) and the tools around them (migrate, token, version).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/store/postgres"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); empty means "read the build info".
var version string

const usage = `livedrops: real-time product drops

Usage:
  livedrops all     [flags]   every role in one process; starts PostgreSQL, Redis and NATS itself
                              when DATABASE_URL, REDIS_URL or NATS_URL is empty (the dev stack)
  livedrops api     [flags]   REST API
  livedrops hub     [flags]   WebSocket/SSE hub
  livedrops worker  [flags]   outbox relay, drop scheduler, notifier
  livedrops migrate [flags]   apply database migrations and exit
  livedrops token --user N    print a bearer token for user N (for load tools)
  livedrops seed    [flags]   fill the database with demo and load-test data (COPY); against
                              DATABASE_URL, or the dev stack's PostgreSQL in the data dir when empty
  livedrops version           print the version

Run "livedrops <command> -h" for the flags of a command; every flag also reads an environment
variable, named in its help (a flag wins over its variable).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "livedrops:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "livedrops:", err)
		os.Exit(1)
	}
}

// run is the whole program; main only adds the process around it, so tests can call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "livedrops", versionString())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "all", "api", "hub", "worker", "migrate", "token", "seed":
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}

	cfg, err := parseConfig(cmd, rest, getenv, stderr)
	if err != nil {
		return err
	}
	logger := newLogger(cfg, stderr)

	switch cmd {
	case "migrate":
		return postgres.Migrate(ctx, cfg.DatabaseURL, logger)
	case "seed":
		return runSeed(ctx, cfg, logger, stdout)
	case "token":
		tokens, err := newTokens(cfg)
		if err != nil {
			return err
		}
		tok, err := tokens.Mint(cfg.TokenUser, cfg.TokenTTL)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		return nil
	}

	logger.Info("starting", "version", versionString(), "config", cfg)
	app, err := Start(ctx, cfg, logger)
	if err != nil {
		return err
	}
	if cfg.Role == "all" || cfg.Role == "api" {
		url := pageURL(app.Addr())
		logger.Info("ready", "url", url)
		fmt.Fprintf(stdout, "\nLiveDrops is ready: open %s in a browser (Ctrl-C stops it)\n\n", url)
	}
	runErr := app.Wait(ctx)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	return errors.Join(runErr, app.Shutdown(shutdownCtx))
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.LogFormat == "text" || (cfg.LogFormat == "auto" && isTerminal(w)) {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("role", cfg.Role)
}

// isTerminal reports whether w is a terminal (a person reads the logs, not a collector).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newTokens builds the token issuer/verifier. Without a configured secret it uses the dev stack's,
// generated once into the data dir.
func newTokens(cfg Config) (*auth.Tokens, error) {
	secret := cfg.JWTSecret
	if secret == "" {
		var err error
		if secret, err = loadOrCreateSecret(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	return auth.New(auth.Config{Secret: []byte(secret), Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience})
}

func versionString() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	var rev, when string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " " + rev
	}
	if t, err := time.Parse(time.RFC3339, when); err == nil {
		v += " " + t.UTC().Format("2006-01-02")
	}
	return v
}
