package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/fanout/natslocal"
)

// Config is everything the binary can be told, parsed once from flags and the environment (a flag wins
// over its variable) and validated before anything starts. README.md's configuration table documents
// each setting; keep the two in step.
type Config struct {
	Role string // all, api, hub or worker; for other commands the command name

	HTTPAddr        string
	DatabaseURL     string
	RedisURL        string
	NatsURL         string
	DataDir         string
	JWTSecret       string
	JWTIssuer       string
	JWTAudience     string
	LogLevel        slog.Level
	LogFormat       string
	ShutdownTimeout time.Duration
	DrainDelay      time.Duration
	BodyLimit       int64
	DBMaxConns      int32
	NatsSync        string

	// api role
	Cache             bool
	CachePrefix       string
	CacheDropTTL      time.Duration
	CacheLocalTTL     time.Duration
	RateUser          int
	RateIP            int
	RequestTimeout    time.Duration
	OrderMode         string
	ReplayWindow      time.Duration
	AllowedOrigins    []string
	MaxSocketsPerUser int
	StreamReplicas    int
	StockRate         float64

	// PprofAddr, when set, serves net/http/pprof on a listener of its own (off by default).
	PprofAddr string

	// hub role (issue 11)
	HubWorkers   int
	HubMaxSetups int
	HubInterest  string
	HubGCGrowth  float64
	HubBurstGOGC int

	// token command
	TokenUser int64
	TokenTTL  time.Duration

	// seed command
	Seed seedFlags
}

// seedFlags are the flags of `livedrops seed`.
type seedFlags struct {
	Users, Creators, Products, Drops, Followers int
	TokensFile                                  string
	TokenTTL                                    time.Duration
}

// setting ties a flag to its environment variable, so both and the README table stay one list.
type setting struct {
	flag, env, def, usage string
	set                   func(c *Config, v string) error
}

func settings() []setting {
	return []setting{
		{"http-addr", "LIVEDROPS_HTTP_ADDR", ":8080", "address the HTTP server listens on",
			func(c *Config, v string) error {
				if _, _, err := net.SplitHostPort(v); err != nil {
					return fmt.Errorf("not host:port: %w", err)
				}
				c.HTTPAddr = v
				return nil
			}},
		{"database-url", "DATABASE_URL", "", "PostgreSQL URL; empty with `all`: start PostgreSQL in the data dir",
			func(c *Config, v string) error { return setURL(&c.DatabaseURL, v, "postgres", "postgresql") }},
		{"redis-url", "REDIS_URL", "", "Redis URL; empty with `all`: start redis-server in the data dir",
			func(c *Config, v string) error { return setURL(&c.RedisURL, v, "redis", "rediss") }},
		{"nats-url", "NATS_URL", "", "NATS URL (comma-separated for a cluster); empty with `all`: embed NATS",
			func(c *Config, v string) error {
				for _, u := range strings.Split(v, ",") {
					if err := setURL(new(string), strings.TrimSpace(u), "nats", "tls"); err != nil {
						return err
					}
				}
				c.NatsURL = v
				return nil
			}},
		{"data-dir", "LIVEDROPS_DATA_DIR", "data", "folder of the dev stack: PostgreSQL, Redis and NATS data and the generated JWT secret",
			func(c *Config, v string) error {
				if strings.TrimSpace(v) == "" {
					return errors.New("must not be empty")
				}
				c.DataDir = v
				return nil
			}},
		{"jwt-secret", "LIVEDROPS_JWT_SECRET", "", "HMAC secret of the tokens (>= 32 bytes); empty with `all`/`token`: generated once into the data dir",
			func(c *Config, v string) error {
				if v != "" && len(v) < auth.MinSecretLen {
					return fmt.Errorf("is %d bytes, need at least %d", len(v), auth.MinSecretLen)
				}
				c.JWTSecret = v
				return nil
			}},
		{"jwt-issuer", "LIVEDROPS_JWT_ISSUER", "livedrops", "iss claim written and required",
			func(c *Config, v string) error { c.JWTIssuer = v; return nonEmpty(v) }},
		{"jwt-audience", "LIVEDROPS_JWT_AUDIENCE", "livedrops", "aud claim written and required",
			func(c *Config, v string) error { c.JWTAudience = v; return nonEmpty(v) }},
		{"log-level", "LIVEDROPS_LOG_LEVEL", "info", "debug, info, warn or error",
			func(c *Config, v string) error { return c.LogLevel.UnmarshalText([]byte(v)) }},
		{"log-format", "LIVEDROPS_LOG_FORMAT", "auto", "json, text, or auto: text when stderr is a terminal, else json",
			func(c *Config, v string) error {
				if v != "json" && v != "text" && v != "auto" {
					return errors.New(`want "json", "text" or "auto"`)
				}
				c.LogFormat = v
				return nil
			}},
		{"shutdown-timeout", "LIVEDROPS_SHUTDOWN_TIMEOUT", "25s", "deadline for the whole graceful shutdown",
			func(c *Config, v string) error { return setDuration(&c.ShutdownTimeout, v, time.Second) }},
		{"drain-delay", "LIVEDROPS_DRAIN_DELAY", "0s", "time between /readyz turning 503 and the listener closing (give load balancers time to notice)",
			func(c *Config, v string) error { return setDuration(&c.DrainDelay, v, 0) }},
		{"body-limit", "LIVEDROPS_BODY_LIMIT", "1048576", "largest request body in bytes; larger is 413",
			func(c *Config, v string) error {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 1024 || n > 64<<20 {
					return errors.New("want bytes between 1024 and 67108864")
				}
				c.BodyLimit = n
				return nil
			}},
		{"db-max-conns", "LIVEDROPS_DB_MAX_CONNS", "0", "PostgreSQL pool size; 0 means 4 per CPU",
			func(c *Config, v string) error {
				n, err := strconv.ParseInt(v, 10, 32)
				if err != nil || n < 0 || n > 1000 {
					return errors.New("want 0..1000")
				}
				c.DBMaxConns = int32(n)
				return nil
			}},
		{"cache", "LIVEDROPS_CACHE", "on", "Redis cache of drops, products, creators and follower pages: on or off (reads then all go to PostgreSQL)",
			func(c *Config, v string) error {
				switch v {
				case "on", "true", "1":
					c.Cache = true
				case "off", "false", "0":
					c.Cache = false
				default:
					return errors.New(`want "on" or "off"`)
				}
				return nil
			}},
		{"cache-prefix", "LIVEDROPS_CACHE_PREFIX", "ld:", "prefix of every cache and rate-limit key in Redis",
			func(c *Config, v string) error { c.CachePrefix = v; return nonEmpty(v) }},
		{"cache-drop-ttl", "LIVEDROPS_CACHE_DROP_TTL", "750ms", "longest a drop (and its stock_count) stays in Redis: the bound on staleness after a racing write",
			func(c *Config, v string) error { return setDuration(&c.CacheDropTTL, v, time.Millisecond) }},
		{"cache-local-ttl", "LIVEDROPS_CACHE_LOCAL_TTL", "250ms", "how long a process keeps cached values in memory; adds to every staleness bound across processes (0s: off)",
			func(c *Config, v string) error { return setDuration(&c.CacheLocalTTL, v, 0) }},
		{"rate-user", "LIVEDROPS_RATE_USER", "50", "writes per second each user may make (burst twice that); 0 turns the limit off",
			func(c *Config, v string) error { return setRate(&c.RateUser, v) }},
		{"rate-ip", "LIVEDROPS_RATE_IP", "2000", "writes per second from each client address (burst twice that); 0 turns the limit off",
			func(c *Config, v string) error { return setRate(&c.RateIP, v) }},
		{"request-timeout", "LIVEDROPS_REQUEST_TIMEOUT", "10s", "deadline of each REST request (503 timeout past it)",
			func(c *Config, v string) error { return setDuration(&c.RequestTimeout, v, time.Millisecond) }},
		{"order-mode", "LIVEDROPS_ORDER_MODE", "batched", "how orders take stock: batched (one transaction per drop for whatever is queued, sold-out answers from memory) or single (one transaction per order: the baseline)",
			func(c *Config, v string) error {
				if v != "batched" && v != "single" {
					return errors.New(`want "batched" or "single"`)
				}
				c.OrderMode = v
				return nil
			}},
		{"replay-window", "LIVEDROPS_REPLAY_WINDOW", "15m", "how long events stay in the JetStream stream and the outbox, so clients can resume (at least 10m)",
			func(c *Config, v string) error { return setDuration(&c.ReplayWindow, v, 10*time.Minute) }},
		{"stream-replicas", "LIVEDROPS_STREAM_REPLICAS", "1", "replicas of the JetStream stream: 1 on one NATS server, 3 on a cluster",
			func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 5 {
					return errors.New("want 1..5")
				}
				c.StreamReplicas = n
				return nil
			}},
		{"stock-rate", "LIVEDROPS_STOCK_RATE", "4", "stock.changed events per second per drop at most (the relay coalesces to the newest)",
			func(c *Config, v string) error {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || f <= 0 || f > 100 {
					return errors.New("want a rate above 0 and at most 100")
				}
				c.StockRate = f
				return nil
			}},
		{"allowed-origins", "LIVEDROPS_ALLOWED_ORIGINS", "", "comma-separated host patterns (e.g. *.example.com) of browser pages allowed to open sockets besides the hub's own host; empty: same origin only",
			func(c *Config, v string) error {
				c.AllowedOrigins = parseOrigins(v)
				for _, o := range c.AllowedOrigins {
					if _, err := path.Match(o, ""); err != nil {
						return fmt.Errorf("pattern %q: %w", o, err)
					}
				}
				return nil
			}},
		{"max-sockets-per-user", "LIVEDROPS_MAX_SOCKETS_PER_USER", "16", "sockets one user may hold on one hub; more are refused (close code 4429)",
			func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 1000 {
					return errors.New("want 1..1000")
				}
				c.MaxSocketsPerUser = n
				return nil
			}},
		{"pprof-addr", "LIVEDROPS_PPROF_ADDR", "", "address of a separate listener serving /debug/pprof/ (CPU, heap, block and mutex profiles; keep it on loopback); empty: off",
			func(c *Config, v string) error {
				if v == "" {
					c.PprofAddr = ""
					return nil
				}
				if _, _, err := net.SplitHostPort(v); err != nil {
					return fmt.Errorf("not host:port: %w", err)
				}
				c.PprofAddr = v
				return nil
			}},
		{"hub-workers", "LIVEDROPS_HUB_WORKERS", "0", "goroutines writing fan-outs to sockets; 0 means GOMAXPROCS (give a hub sharing its host with other hubs GOMAXPROCS = its share of the cores)",
			func(c *Config, v string) error { return setInt(&c.HubWorkers, v, 0, 256) }},
		{"hub-max-setups", "LIVEDROPS_HUB_MAX_SETUPS", "256", "sockets a hub sets up at once (token, follow list, subscriptions); more wait for a place, at most 10s, then are closed with 4002",
			func(c *Config, v string) error { return setInt(&c.HubMaxSetups, v, 1, 100_000) }},
		{"hub-interest", "LIVEDROPS_HUB_INTEREST", "auto", "how a hub subscribes to creators: auto (one subject per followed creator, or one ld.creator.* wildcard when at least half the creators that published lately have a local follower, back below a third) or per-creator",
			func(c *Config, v string) error {
				if v != "auto" && v != "per-creator" {
					return errors.New(`want "auto" or "per-creator"`)
				}
				c.HubInterest = v
				return nil
			}},
		{"hub-gc-growth", "LIVEDROPS_HUB_GC_GROWTH", "0.25", "a hub collects garbage at a quiet moment (no fan-out for a second) once its heap grew by this share of its live size; 0: off (GOGC alone decides)",
			func(c *Config, v string) error {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || f < 0 || f > 10 {
					return errors.New("want a share from 0 (off) to 10")
				}
				c.HubGCGrowth = f
				return nil
			}},
		{"hub-burst-gogc", "LIVEDROPS_HUB_BURST_GOGC", "200", "GOGC of a hub while a connect burst fills its setup stage (a reconnect storm), until a second without a setup; the process's own GOGC comes back after it; 0: never changed",
			func(c *Config, v string) error { return setInt(&c.HubBurstGOGC, v, 0, 10_000) }},
		{"nats-sync", "LIVEDROPS_NATS_SYNC", "always", "JetStream disk sync of the embedded NATS: always, or an interval such as 2m",
			func(c *Config, v string) error {
				if _, _, err := natslocal.ParseSync(v); err != nil {
					return err
				}
				c.NatsSync = v
				return nil
			}},
	}
}

func setInt(dst *int, v string, lo, hi int) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return fmt.Errorf("want %d..%d", lo, hi)
	}
	*dst = n
	return nil
}

func setRate(dst *int, v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1_000_000 {
		return errors.New("want requests per second from 0 (off) to 1000000")
	}
	*dst = n
	return nil
}

func nonEmpty(v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func setURL(dst *string, v string, schemes ...string) error {
	if v == "" {
		*dst = ""
		return nil
	}
	u, err := url.Parse(v)
	if err != nil {
		// url.Error repeats the whole URL, password included: keep only its reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("not a valid URL: %w", err)
	}
	for _, s := range schemes {
		if u.Scheme == s {
			if u.Host == "" {
				return errors.New("URL has no host")
			}
			*dst = v
			return nil
		}
	}
	return fmt.Errorf("scheme %q, want %s", u.Scheme, strings.Join(schemes, " or "))
}

func setDuration(dst *time.Duration, v string, minimum time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("not a duration such as 25s: %w", err)
	}
	if d < minimum {
		return fmt.Errorf("must be at least %s", minimum)
	}
	*dst = d
	return nil
}

// errUsage marks a command-line mistake: the caller prints usage and exits 2.
var errUsage = errors.New("usage")

// parseConfig reads the flags of command cmd and the environment through getenv. Every bad value is
// reported at once, naming the flag, its variable and what is wanted.
func parseConfig(cmd string, args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	cfg := Config{Role: cmd}
	fs := flag.NewFlagSet("livedrops "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	all := settings()
	values := make([]*string, len(all))
	for i, s := range all {
		def := s.def
		if v, ok := lookup(getenv, s.env); ok {
			def = v
		}
		values[i] = fs.String(s.flag, def, s.usage+" (env "+s.env+")")
	}
	var tokenUser int64
	var tokenTTL time.Duration
	if cmd == "token" {
		fs.Int64Var(&tokenUser, "user", 0, "user id the token is for (required)")
		fs.DurationVar(&tokenTTL, "ttl", 24*time.Hour, "lifetime of the token")
	}
	var seed seedFlags
	if cmd == "seed" {
		fs.IntVar(&seed.Users, "users", 1000, "accounts to create (at least creators + followers are)")
		fs.IntVar(&seed.Creators, "creators", 10, "of the users, how many become creators; the first is the celebrity")
		fs.IntVar(&seed.Products, "products", 200, "products, spread over the creators")
		fs.IntVar(&seed.Drops, "drops", 50, "drops, spread over the products (three in four live now)")
		fs.IntVar(&seed.Followers, "followers", 0, "followers of the celebrity (the first creator)")
		fs.StringVar(&seed.TokensFile, "tokens-file", "", "write `user_id token` of every follower to this file, one per line")
		fs.DurationVar(&seed.TokenTTL, "token-ttl", 24*time.Hour, "lifetime of the tokens written")
	}
	if err := fs.Parse(args); err != nil {
		return cfg, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	var errs []error
	for i, s := range all {
		if err := s.set(&cfg, *values[i]); err != nil {
			errs = append(errs, fmt.Errorf("-%s / %s = %q: %w", s.flag, s.env, mask(s, *values[i]), err))
		}
	}
	if cmd == "token" {
		if tokenUser <= 0 {
			errs = append(errs, fmt.Errorf("-user: want a positive user id, got %d", tokenUser))
		}
		if tokenTTL <= 0 {
			errs = append(errs, fmt.Errorf("-ttl: want a positive duration, got %s", tokenTTL))
		}
		cfg.TokenUser, cfg.TokenTTL = tokenUser, tokenTTL
	}
	if cmd == "seed" {
		if seed.Users < 0 || seed.Creators < 0 || seed.Products < 0 || seed.Drops < 0 || seed.Followers < 0 {
			errs = append(errs, errors.New("seed: counts must not be negative"))
		}
		if (seed.Products > 0 || seed.Followers > 0) && seed.Creators == 0 {
			errs = append(errs, errors.New("seed: -products and -followers need -creators >= 1"))
		}
		if seed.Drops > 0 && seed.Products == 0 {
			errs = append(errs, errors.New("seed: -drops needs -products >= 1"))
		}
		if seed.TokenTTL <= 0 {
			errs = append(errs, fmt.Errorf("-token-ttl: want a positive duration, got %s", seed.TokenTTL))
		}
		cfg.Seed = seed
	}
	if len(errs) == 0 {
		errs = append(errs, cfg.validateRole())
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// validateRole checks what only the dev stack may leave empty.
func (c Config) validateRole() error {
	var errs []error
	need := func(ok bool, what string) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s is required for `livedrops %s` (only `all` starts a dev stack by itself)", what, c.Role))
		}
	}
	switch c.Role {
	case "api", "hub", "worker":
		need(c.DatabaseURL != "", "DATABASE_URL")
		need(c.RedisURL != "", "REDIS_URL")
		need(c.NatsURL != "", "NATS_URL")
		need(c.JWTSecret != "" || c.Role == "worker", "LIVEDROPS_JWT_SECRET")
	case "migrate":
		need(c.DatabaseURL != "", "DATABASE_URL")
	}
	return errors.Join(errs...)
}

func lookup(getenv func(string) string, key string) (string, bool) {
	v := getenv(key)
	return v, v != ""
}

// LogValue shows the configuration with secrets masked, for the start-up log line.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("role", c.Role),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("database_url", maskURL(c.DatabaseURL)),
		slog.String("redis_url", maskURL(c.RedisURL)),
		slog.String("nats_url", maskURL(c.NatsURL)),
		slog.String("data_dir", c.DataDir),
		slog.String("jwt_secret", maskSecret(c.JWTSecret)),
		slog.String("jwt_issuer", c.JWTIssuer),
		slog.String("jwt_audience", c.JWTAudience),
		slog.String("log_level", c.LogLevel.String()),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.Duration("drain_delay", c.DrainDelay),
		slog.Int64("body_limit", c.BodyLimit),
		slog.Int("db_max_conns", int(c.DBMaxConns)),
		slog.String("nats_sync", c.NatsSync),
		slog.Bool("cache", c.Cache),
		slog.String("cache_prefix", c.CachePrefix),
		slog.Duration("cache_drop_ttl", c.CacheDropTTL),
		slog.Duration("cache_local_ttl", c.CacheLocalTTL),
		slog.Int("rate_user", c.RateUser),
		slog.Int("rate_ip", c.RateIP),
		slog.Duration("request_timeout", c.RequestTimeout),
		slog.String("order_mode", c.OrderMode),
		slog.Duration("replay_window", c.ReplayWindow),
		slog.Any("allowed_origins", c.AllowedOrigins),
		slog.Int("max_sockets_per_user", c.MaxSocketsPerUser),
		slog.Int("stream_replicas", c.StreamReplicas),
		slog.Float64("stock_rate", c.StockRate),
		slog.String("pprof_addr", c.PprofAddr),
		slog.Int("hub_workers", c.HubWorkers),
		slog.Int("hub_max_setups", c.HubMaxSetups),
		slog.String("hub_interest", c.HubInterest),
		slog.Float64("hub_gc_growth", c.HubGCGrowth),
		slog.Int("hub_burst_gogc", c.HubBurstGOGC),
	)
}

func mask(s setting, v string) string {
	switch s.env {
	case "LIVEDROPS_JWT_SECRET":
		return maskSecret(v)
	case "DATABASE_URL", "REDIS_URL", "NATS_URL":
		return maskURL(v)
	}
	return v
}

func maskSecret(v string) string {
	if v == "" {
		return ""
	}
	return "***"
}

// maskURL hides the password of every URL in a comma-separated list.
func maskURL(v string) string {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "***"
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxx")
		}
		if q := u.Query(); q.Has("password") {
			q.Set("password", "xxx")
			u.RawQuery = q.Encode()
		}
		parts[i] = strings.ReplaceAll(u.String(), "xxx", "***")
	}
	return strings.Join(parts, ",")
}
