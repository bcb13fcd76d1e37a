package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/livedrops/livedrops/api"
	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/api/httpkit"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
)

// serverKind starts the server of a run, as a process of its own.
type serverKind struct {
	binary bool   // livedrops all; else this program's serve command
	path   string // the program
	env    []string
}

func (s serverKind) describe() string {
	if s.binary {
		return "livedrops all (" + s.path + ")"
	}
	return "builtin (orders serve: package api and the stores wired as cmd/livedrops wires them)"
}

// chooseServer picks the server -server asks for. auto takes the binary when `livedrops all -h` lists
// the order mode setting.
func chooseServer(o options, st *stack) (serverKind, error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return serverKind{}, err
	}
	hasMode := false
	if out, err := exec.Command(bin, "all", "-h").CombinedOutput(); err == nil || len(out) > 0 {
		hasMode = strings.Contains(string(out), "LIVEDROPS_ORDER_MODE")
	}
	switch {
	case o.server == "binary" && !hasMode:
		return serverKind{}, fmt.Errorf("%s has no LIVEDROPS_ORDER_MODE setting (build it, or use -server builtin)", bin)
	case o.server == "binary", o.server == "auto" && hasMode:
		return serverKind{binary: true, path: bin, env: o.serverEnv}, nil
	}
	self, err := os.Executable()
	if err != nil {
		return serverKind{}, err
	}
	if o.server == "auto" {
		fmt.Printf("%s has no LIVEDROPS_ORDER_MODE setting yet: using the builtin server\n", bin)
	}
	return serverKind{path: self}, nil
}

type server struct {
	cmd  *exec.Cmd
	base string
	done chan error
}

// start starts the server for c on a free port and waits until it is ready.
func (s serverKind) start(ctx context.Context, st *stack, c config, name string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	logPath := filepath.Join(st.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if s.binary {
		dataDir := filepath.Join(st.dir, name)
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return nil, err
		}
		cmd = exec.Command(s.path, "all")
		cmd.Env = append(cleanEnv(),
			"DATABASE_URL="+st.dbURL, "REDIS_URL="+st.redisURL, "LIVEDROPS_DATA_DIR="+dataDir,
			"LIVEDROPS_JWT_SECRET="+st.secret, "LIVEDROPS_HTTP_ADDR="+addr,
			"LIVEDROPS_ORDER_MODE="+c.mode, "LIVEDROPS_DB_MAX_CONNS="+strconv.Itoa(c.pool),
			// The buyers all come from one address and buy fast: no write limits in the way.
			"LIVEDROPS_RATE_USER=0", "LIVEDROPS_RATE_IP=0",
			// A baseline buyer may queue for seconds on the row lock; that is the measurement, not a failure.
			"LIVEDROPS_REQUEST_TIMEOUT=60s", "LIVEDROPS_LOG_LEVEL=warn")
		cmd.Env = append(cmd.Env, s.env...)
	} else {
		cmd = exec.Command(s.path, "serve", "-addr", addr, "-db", st.dbURL, "-redis", st.redisURL,
			"-secret", st.secret, "-mode", c.mode, "-pool", strconv.Itoa(c.pool))
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Should this program die, the server goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	srv := &server{cmd: cmd, base: "http://" + addr, done: make(chan error, 1)}
	go func() { srv.done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(srv.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return srv, nil
			}
		}
		select {
		case err := <-srv.done:
			return nil, fmt.Errorf("server exited before it was ready: %v (log in %s)", err, logPath)
		case <-ctx.Done():
			_ = srv.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = srv.stop()
			return nil, fmt.Errorf("server not ready after 2 minutes (log in %s)", logPath)
		}
	}
}

// cleanEnv is this process's environment without the settings the bench gives the binary itself.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "LIVEDROPS_") || k == "DATABASE_URL" ||
			k == "REDIS_URL" || k == "NATS_URL" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// stop ends the server with SIGTERM (a graceful shutdown) and waits.
func (s *server) stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("server: %w", err)
		}
		return nil
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return errors.New("server did not stop within 60 s; killed")
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// serveMain is `orders serve`: the REST API of package api on the PostgreSQL stores, with the Redis
// drop cache in front of drops and invalidated by orders, as cmd/livedrops mounts it, in the order
// mode asked for; no write rate limits; logs at warn.
func serveMain(args []string) error {
	fs := flag.NewFlagSet("orders serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	dbURL := fs.String("db", "", "PostgreSQL URL")
	redisURL := fs.String("redis", "", "Redis URL")
	secret := fs.String("secret", "", "JWT secret")
	mode := fs.String("mode", "batched", "order mode: single or batched")
	pool := fs.Int("pool", 0, "PostgreSQL pool size; 0: 4 per CPU")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	db, err := postgres.Open(ctx, *dbURL, postgres.PoolConfig{MaxConns: int32(*pool)})
	if err != nil {
		return err
	}
	defer db.Close()
	rdb, err := redis.Open(ctx, *redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	tokens, err := auth.New(auth.Config{Secret: []byte(*secret)})
	if err != nil {
		return err
	}
	registry := prometheus.NewRegistry()
	cache, err := redis.NewCache(rdb, redis.CacheConfig{Logger: logger}, registry)
	if err != nil {
		return err
	}
	orders, err := postgres.NewOrders(db, postgres.OrdersConfig{Mode: postgres.OrderMode(*mode), Cache: cache,
		Logger: logger, Registerer: registry})
	if err != nil {
		return err
	}
	users := postgres.NewUsers(db)
	catalog := postgres.NewCatalog(db, nil)
	rest, err := api.New(api.Config{Logger: logger, Tokens: tokens, Users: users, Creators: cache.Creators(users),
		Follows: cache.Follows(postgres.NewFollows(db, nil)), Products: cache.Products(catalog), Drops: cache.Drops(catalog),
		Orders: orders, RequestTimeout: time.Minute})
	if err != nil {
		return err
	}
	metrics, err := httpkit.NewMetrics(registry)
	if err != nil {
		return err
	}
	health := httpkit.NewHealth(logger, 0, httpkit.Check{Name: "postgres", Check: db.Ping})
	router := httpkit.NewRouter(httpkit.Options{Logger: logger, Metrics: metrics})
	router.Get("/healthz", health.Healthz)
	router.Get("/readyz", health.Readyz)
	router.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{Registry: registry}))
	// Profiles of a run, for whoever wants to see where the time goes (loopback only).
	router.Mount("/debug", middleware.Profiler())
	rest.Routes(router)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := httpkit.NewServer(*addr, router, logger, httpkit.Timeouts{})
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(srv.Shutdown(shutdownCtx), orders.Close(shutdownCtx))
}
