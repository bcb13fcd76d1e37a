package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	goredis "github.com/redis/go-redis/v9"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/api/httpkit"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
)

// App is one running LiveDrops process: the roles of cfg.Role, their connections and the HTTP server
// that carries their routes and /healthz, /readyz and /metrics.
type App struct {
	cfg    Config
	logger *slog.Logger

	dev    *devStack // services `all` started itself; nil otherwise
	pool   *pgxpool.Pool
	rdb    goredis.UniversalClient
	nc     *nats.Conn
	tokens *auth.Tokens
	// cache is the REST API's Redis cache (roles api and all, unless LIVEDROPS_CACHE=off); whoever
	// commits a drop change calls cache.InvalidateDrop after the commit.
	cache *redis.Cache
	// hub serves /ws and /events (roles hub and all); its sockets close after the HTTP server.
	hub *hubNode
	// worker runs the relay and the scheduler (roles worker and all); stopped before NATS drains.
	worker *worker
	// pushPending: the push notifier is configured but its streams are not created yet (push.go);
	// readiness fails meanwhile, since creator events published before its consumer exists are never
	// pushed on a first deployment.
	pushPending atomic.Bool
	// orders is the REST API's order store (roles api and all); closed after the HTTP server.
	orders *postgres.Orders

	registry *prometheus.Registry
	health   *httpkit.Health
	srv      *http.Server
	ln       net.Listener
	serveErr chan error
	pprof    *pprofServer // LIVEDROPS_PPROF_ADDR; nil when off

	shutdownOnce sync.Once
	shutdownErr  error
}

// uses says which services a role talks to; readiness checks exactly those.
func uses(role string) (nats, tokens bool) {
	switch role {
	case "all", "hub":
		return true, true
	case "worker":
		return true, false
	default: // api
		return false, true
	}
}

// Start brings a process up: the dev stack (role all, for services without a URL), migrations (role
// all), the connections, and the HTTP server, listening when Start returns. On error everything
// started so far is stopped again.
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, logger: logger, serveErr: make(chan error, 1)}
	defer func() {
		if err != nil {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
			defer cancel()
			err = errors.Join(err, a.Shutdown(stopCtx))
		}
	}()

	if cfg.Role == "all" {
		if a.dev, err = startDevStack(ctx, &a.cfg, logger); err != nil {
			return a, err
		}
		if err := devVAPID(&a.cfg); err != nil {
			return a, err
		}
		cfg = a.cfg
		if err := postgres.Migrate(ctx, cfg.DatabaseURL, logger); err != nil {
			return a, err
		}
	}
	useNATS, useTokens := uses(cfg.Role)
	if useTokens {
		if a.tokens, err = newTokens(cfg); err != nil {
			return a, err
		}
	}

	if a.pool, err = postgres.Open(ctx, cfg.DatabaseURL, postgres.PoolConfig{MaxConns: cfg.DBMaxConns}); err != nil {
		return a, err
	}
	if a.rdb, err = redis.Open(ctx, cfg.RedisURL); err != nil {
		return a, err
	}
	checks := []httpkit.Check{
		{Name: "postgres", Check: a.pool.Ping},
		{Name: "redis", Check: func(ctx context.Context) error { return a.rdb.Ping(ctx).Err() }},
	}
	if useNATS {
		if a.nc, err = jetstream.Connect(ctx, cfg.NatsURL, "livedrops-"+cfg.Role, logger); err != nil {
			return a, err
		}
		checks = append(checks, httpkit.Check{Name: "nats", Check: jetstream.Check(a.nc)})
	}
	if cfg.Role == "worker" || cfg.Role == "all" {
		checks = append(checks, httpkit.Check{Name: "push", Check: func(context.Context) error {
			if a.pushPending.Load() {
				return errPushPending
			}
			return nil
		}})
	}

	a.registry = prometheus.NewRegistry()
	if err := a.registerMetrics(); err != nil {
		return a, err
	}
	httpMetrics, err := httpkit.NewMetrics(a.registry)
	if err != nil {
		return a, err
	}
	a.health = httpkit.NewHealth(logger, 0, checks...)
	router := httpkit.NewRouter(httpkit.Options{Logger: logger, Metrics: httpMetrics, BodyLimit: cfg.BodyLimit})
	router.Use(httpkit.CORS(cfg.AllowedOrigins)) // REST from pages of the origins the sockets allow
	router.Get("/healthz", a.health.Healthz)
	router.Get("/readyz", a.health.Readyz)
	router.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{Registry: a.registry}))
	if cfg.Role == "api" || cfg.Role == "all" {
		if err := a.mountAPI(router); err != nil {
			return a, err
		}
		if err := a.mountWeb(router); err != nil {
			return a, err
		}
	}
	if cfg.Role == "hub" || cfg.Role == "all" {
		if err := a.mountHub(router); err != nil {
			return a, err
		}
	}
	if cfg.Role == "worker" || cfg.Role == "all" {
		if err := a.startWorker(ctx); err != nil {
			return a, err
		}
	}

	if cfg.PprofAddr != "" {
		if a.pprof, err = startPprof(cfg.PprofAddr, logger); err != nil {
			return a, err
		}
	}
	a.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return a, fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	a.srv = httpkit.NewServer(cfg.HTTPAddr, router, logger, httpkit.Timeouts{})
	go func() { a.serveErr <- a.srv.Serve(a.ln) }()
	logger.Info("listening", "addr", a.ln.Addr().String(), "database_url", maskURL(cfg.DatabaseURL),
		"redis_url", maskURL(cfg.RedisURL), "nats_url", maskURL(cfg.NatsURL))
	return a, nil
}

func (a *App) registerMetrics() error {
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "livedrops", Name: "build_info",
		Help: "Always 1; the labels say which version and role this process runs.",
	}, []string{"version", "role", "goversion"})
	buildInfo.WithLabelValues(versionString(), a.cfg.Role, runtime.Version()).Set(1)
	return errors.Join(
		a.registry.Register(collectors.NewGoCollector()),
		a.registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
		a.registry.Register(buildInfo),
		a.registry.Register(postgres.NewPoolCollector(a.pool)),
	)
}

// Addr is the address the HTTP server listens on (useful with port 0).
func (a *App) Addr() string { return a.ln.Addr().String() }

// Wait blocks until ctx is done (a signal: nil) or something the process cannot run without fails.
func (a *App) Wait(ctx context.Context) error {
	var devFailed <-chan string
	if a.dev != nil {
		devFailed = a.dev.Failed()
	}
	select {
	case <-ctx.Done():
		a.logger.Info("shutdown requested")
		return nil
	case err := <-a.serveErr:
		return fmt.Errorf("http server: %w", err)
	case name := <-devFailed:
		return fmt.Errorf("dev stack: %s exited unexpectedly (see its log in %s)", name, a.cfg.DataDir)
	}
}

// Shutdown stops the process in order, within ctx: readiness fails first (load balancers stop sending),
// after the drain delay the listener closes and in-flight requests finish, then sockets and consumers
// drain, then the pools close, and last the dev stack's servers stop. It is safe to call more than once
// and returns every failure joined.
func (a *App) Shutdown(ctx context.Context) error {
	a.shutdownOnce.Do(func() { a.shutdownErr = a.shutdown(ctx) })
	return a.shutdownErr
}

func (a *App) shutdown(ctx context.Context) error {
	var errs []error
	step := func(name string, f func() error) {
		start := time.Now()
		err := f()
		a.logger.Info("shutdown step", "step", name, "duration_ms", time.Since(start).Milliseconds(), "err", err)
		if err != nil {
			errs = append(errs, fmt.Errorf("shutdown %s: %w", name, err))
		}
	}
	if a.health != nil {
		step("readiness", func() error {
			a.health.SetDraining()
			select {
			case <-time.After(a.cfg.DrainDelay):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	if a.srv != nil {
		step("http", func() error {
			err := a.srv.Shutdown(ctx)
			if err != nil {
				err = errors.Join(err, a.srv.Close())
			}
			if serveErr := <-a.serveErr; !errors.Is(serveErr, http.ErrServerClosed) {
				err = errors.Join(err, serveErr)
			}
			return err
		})
	} else if a.ln != nil {
		step("listener", a.ln.Close)
	}
	if a.hub != nil {
		step("hub", func() error {
			// Every socket gets the going-away code with a spread reconnect hint; then the NATS adapters stop.
			err := a.hub.hub.Shutdown(ctx)
			a.hub.bus.Close()
			a.hub.replayer.Close()
			return err
		})
	}
	if a.orders != nil {
		step("orders", func() error { return a.orders.Close(ctx) })
	}
	if a.worker != nil {
		step("worker", func() error { return a.worker.Stop(ctx) })
	}
	if a.nc != nil {
		step("nats", func() error { return drainNATS(ctx, a.nc) })
	}
	if a.rdb != nil {
		step("redis", a.rdb.Close)
	}
	if a.pool != nil {
		step("postgres", func() error { a.pool.Close(); return nil })
	}
	if a.pprof != nil {
		step("pprof", func() error { return a.pprof.Close(ctx) })
	}
	if a.dev != nil {
		step("dev stack", func() error { return a.dev.Stop(ctx) })
	}
	return errors.Join(errs...)
}

// drainNATS lets pending messages out and subscriptions finish, then closes the connection.
func drainNATS(ctx context.Context, nc *nats.Conn) error {
	if nc.IsClosed() {
		return nil
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return err
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return ctx.Err()
	}
}
