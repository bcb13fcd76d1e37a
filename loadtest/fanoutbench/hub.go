package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/api/httpkit"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/hub"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
)

// runHub is a hub process configured like `livedrops hub` (DATABASE_URL, REDIS_URL, NATS_URL,
// LIVEDROPS_JWT_SECRET, LIVEDROPS_HTTP_ADDR, LIVEDROPS_LOG_LEVEL) and wired the way cmd/livedrops is to
// wire the hub role, shutdown order included. It stands in for the real binary until that is wired.
func runHub(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q", args)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var level slog.Level
	if err := level.UnmarshalText([]byte(getenv("LIVEDROPS_LOG_LEVEL", "info"))); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	pool, err := postgres.Open(startCtx, os.Getenv("DATABASE_URL"), postgres.PoolConfig{})
	if err != nil {
		return err
	}
	defer pool.Close()
	rdb, err := redis.Open(startCtx, os.Getenv("REDIS_URL"))
	if err != nil {
		return err
	}
	defer rdb.Close()
	nc, err := jetstream.Connect(startCtx, os.Getenv("NATS_URL"), "livedrops-hub", logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	tokens, err := auth.New(auth.Config{Secret: []byte(os.Getenv("LIVEDROPS_JWT_SECRET"))})
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	bus := jetstream.NewSubscriber(nc, logger, jetstream.SubscriberConfig{})
	defer bus.Close()
	replayer, err := jetstream.NewReplayer(nc, jetstream.ReplayerConfig{})
	if err != nil {
		return err
	}
	defer replayer.Close()
	host, _ := os.Hostname()
	presence, err := redis.NewPresence(rdb, redis.PresenceConfig{HubID: fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano())})
	if err != nil {
		return err
	}
	queries := postgres.NewHub(pool)
	h, err := hub.New(hub.Config{}, hub.Deps{Logger: logger, Registerer: reg, Verifier: tokens, Follows: queries,
		Drops: queries, Bus: bus, Sequences: queries, Replayer: replayer, Presence: presence})
	if err != nil {
		return err
	}

	router := httpkit.NewRouter(httpkit.Options{Logger: logger})
	router.Get("/ws", h.ServeWS)
	router.Get("/events", h.ServeSSE)
	router.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	router.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if os.Getenv("FANOUTBENCH_PPROF") != "" {
		router.Mount("/debug", middleware.Profiler())
	}
	addr := getenv("LIVEDROPS_HTTP_ADDR", ":8080")
	srv := httpkit.NewServer(addr, router, logger, httpkit.Timeouts{})
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()

	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	}
	// Shutdown order: http (listener; hijacked sockets are not waited for), then the hub closes every
	// socket with CloseDraining and waits, then NATS drains, then the pools close.
	stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := []error{srv.Shutdown(stopCtx)}
	errs = append(errs, h.Shutdown(stopCtx))
	bus.Close()
	errs = append(errs, nc.Drain())
	if err := errors.Join(errs...); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
