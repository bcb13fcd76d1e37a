// Command fanoutbench measures the hub's fan-out (make bench-fanout): it starts PostgreSQL, Redis and
// NATS, seeds one creator with N followers and their tokens, starts hub processes and wsfan load
// generator processes (each holds at most ~19,900 sockets: this machine caps a process at 20,000 open
// files), waits until every socket is subscribed, makes the creator's drop start, and prints
//
//	RESULT hubs=.. sockets=.. p50_ms=.. p99_ms=.. last_ms=.. missing=.. rss_per_socket_kib=.. cpu_us_per_delivery=..
//
// where the latencies run from the drop's start_time to the receipt of drop.started at the clients.
//
// Hubs: it runs `<hub-bin> hub`, the real binary configured by its environment variables. The drop start: the harness plays the scheduler and the relay, as they
// would at start_time: it flips the drop live, writes the drop.started outbox row and publishes it to
// JetStream with Nats-Msg-Id = event id, then records the stream sequence.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/natslocal"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/postgres/pglocal"
	"github.com/livedrops/livedrops/store/redis/redislocal"
)

const secret = "fanoutbench-secret-0123456789abcdef"

type config struct {
	hubs, sockets, perGen int
	hubBin, wsfan, dir    string
	wait, startIn, hold   time.Duration
	settle                time.Duration
	godebug, gogc         string
	storm                 bool
	keep                  bool
	concurrency           int
	profile               string
}

func main() {
	var cfg config
	flag.IntVar(&cfg.hubs, "hubs", 1, "hub processes")
	flag.IntVar(&cfg.sockets, "sockets", 19900, "followers of the creator, one socket each")
	flag.IntVar(&cfg.perGen, "per-gen", 19900, "most sockets one generator process holds (20,000 open files per process)")
	flag.StringVar(&cfg.hubBin, "hub-bin", "bin/livedrops", "the livedrops binary, run as `<bin> hub` for each hub")
	flag.StringVar(&cfg.wsfan, "wsfan", "bin/wsfan", "the load generator binary")
	flag.StringVar(&cfg.dir, "dir", "", "work directory (default: a temporary one, removed at the end)")
	flag.DurationVar(&cfg.wait, "wait", 60*time.Second, "how long clients wait for the event")
	flag.DurationVar(&cfg.startIn, "start-in", 3*time.Second, "drop start_time, this long after every socket is ready")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (logs)")
	flag.DurationVar(&cfg.hold, "hold", 0, "pause this long once every socket is ready (to look at the hubs)")
	flag.StringVar(&cfg.godebug, "hub-godebug", "adaptivestackstart=0",
		"GODEBUG of the hubs: start goroutines on the smallest stack (a socket's reader needs 4 KiB; the average a process with pgx and NATS starts them with is 8)")
	flag.StringVar(&cfg.gogc, "hub-gogc", "100", "GOGC of the hubs")
	flag.BoolVar(&cfg.storm, "storm", false, "then a reconnect storm: every client of hub 0 reconnects at once to a fresh hub, resuming")
	flag.IntVar(&cfg.concurrency, "concurrency", 100, "connects in flight per generator (each waits for its hello)")
	flag.StringVar(&cfg.profile, "profile", "", "write pprof profiles of hub 0 to files with this prefix: CPU and block/mutex during the connect, CPU during the drops")
	flag.DurationVar(&cfg.settle, "settle", time.Minute, "longest wait for the hubs' RSS to settle after the connect burst")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "fanoutbench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s fanoutbench: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, cfg config) (err error) {
	if cfg.hubs < 1 || cfg.sockets < 1 || cfg.perGen < 1 {
		return errors.New("-hubs, -sockets and -per-gen must be positive")
	}
	wsfan, err := filepath.Abs(cfg.wsfan)
	if err != nil {
		return err
	}
	if cfg.dir == "" {
		if cfg.dir, err = os.MkdirTemp("", "fanoutbench-"); err != nil {
			return err
		}
		if !cfg.keep {
			defer os.RemoveAll(cfg.dir)
		}
	}
	if err := os.Chmod(cfg.dir, 0o755); err != nil { // PostgreSQL runs as another user
		return err
	}
	logf("work dir %s", cfg.dir)

	// Services.
	pg, err := pglocal.Start(ctx, pglocal.Config{Dir: cfg.dir + "/pg", Ephemeral: true,
		Settings: map[string]string{"max_connections": "300"}})
	if err != nil {
		return err
	}
	defer stopService(pg.Stop)
	rs, err := redislocal.Start(ctx, redislocal.Config{Dir: cfg.dir + "/redis", Ephemeral: true})
	if err != nil {
		return err
	}
	defer stopService(rs.Stop)
	ns, err := natslocal.Start(ctx, natslocal.Config{Dir: cfg.dir + "/nats"})
	if err != nil {
		return err
	}
	defer stopService(ns.Stop)
	dbURL := pg.URL("livedrops")
	if err := createDatabase(ctx, pg.URL("postgres")); err != nil {
		return err
	}
	if err := postgres.Migrate(ctx, dbURL, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	nc, err := jetstream.Connect(ctx, ns.ClientURL(), "fanoutbench-relay", slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := jetstream.EnsureStream(ctx, nc, jetstream.StreamConfig{}); err != nil {
		return err
	}

	// Seed: creator 1 with followers 2..sockets+1, and their tokens.
	start := time.Now()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := seed(ctx, conn, cfg.sockets); err != nil {
		return err
	}
	tokensFile := cfg.dir + "/tokens.txt"
	if err := writeTokens(tokensFile, cfg.sockets); err != nil {
		return err
	}
	logf("seeded 1 creator with %d followers and their tokens in %s", cfg.sockets, time.Since(start).Round(time.Millisecond))

	// Hubs.
	var hubs []*proc
	defer func() {
		for _, h := range hubs {
			h.stop()
		}
	}()
	for i := range cfg.hubs {
		h, err := startHub(cfg, fmt.Sprintf("hub-%d", i), dbURL, rs.URL(0), ns.ClientURL())
		if err != nil {
			return err
		}
		hubs = append(hubs, h)
	}
	for _, h := range hubs {
		if err := waitHTTP(ctx, "http://"+h.addr+"/healthz", 60*time.Second); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", h.name, err, h.logPath)
		}
	}
	idleRSS := 0.0
	for _, h := range hubs {
		idleRSS += rssKiB(h.cmd.Process.Pid)
	}
	logf("%d hub(s) up, %.0f MiB RSS in all", len(hubs), idleRSS/1024)
	for i, h := range hubs {
		logf("hub %d: http://%s (pid %d)", i, h.addr, h.cmd.Process.Pid)
	}

	// Generators: each holds at most perGen sockets and talks to one hub.
	gens := int(math.Ceil(float64(cfg.sockets) / float64(cfg.perGen)))
	if gens < cfg.hubs {
		gens = cfg.hubs
	}
	per := int(math.Ceil(float64(cfg.sockets) / float64(gens)))
	var gs []*proc
	defer func() {
		for _, g := range gs {
			g.stop()
		}
	}()
	start = time.Now()
	var waitProfiles []func()
	if cfg.profile != "" {
		waitProfiles = append(waitProfiles,
			profileAsync(hubs[0], "profile", 10*time.Second, cfg.profile+"connect.cpu.pprof"),
			profileAsync(hubs[0], "block", 10*time.Second, cfg.profile+"connect.block.pprof"),
			profileAsync(hubs[0], "mutex", 10*time.Second, cfg.profile+"connect.mutex.pprof"))
	}
	for g := range gens {
		from := g * per
		count := min(per, cfg.sockets-from)
		if count <= 0 {
			break
		}
		h := hubs[g%len(hubs)]
		cmd := exec.Command(wsfan, "-url", "ws://"+h.addr+"/ws", "-tokens", tokensFile,
			"-from", strconv.Itoa(from), "-count", strconv.Itoa(count), "-src-base", strconv.Itoa(10+2*g),
			"-wait", cfg.wait.String(), "-out", fmt.Sprintf("%s/lat-%d.txt", cfg.dir, g),
			"-concurrency", strconv.Itoa(cfg.concurrency))
		p, err := startProc(fmt.Sprintf("gen-%d", g), cmd, cfg.dir)
		if err != nil {
			return err
		}
		gs = append(gs, p)
	}
	failed := 0
	for _, g := range gs {
		line, err := g.waitLine(ctx, "READY", 10*time.Minute)
		if err != nil {
			return fmt.Errorf("%s: %w (log: %s)", g.name, err, g.logPath)
		}
		failed += intField(line, "failed")
	}
	logf("%d sockets ready in %s (%d failed to connect)", cfg.sockets-failed, time.Since(start).Round(time.Millisecond), failed)
	setupStats(hubs)
	for _, w := range waitProfiles {
		w()
	}
	// The connect burst leaves garbage that the Go runtime hands back to the kernel over seconds: the
	// memory a hub needs for its sockets is what it holds once its RSS has settled (within 2% over 5 s),
	// waiting at most -settle.
	time.Sleep(cfg.hold + cfg.startIn) // -start-in before anything, so that a profile can start
	busyRSS := settledRSS(hubs, cfg.settle)
	memStats(hubs)
	if cfg.profile != "" && hubs[0].debugAddr != "" {
		if err := fetch("http://"+hubs[0].debugAddr+"/debug/pprof/heap", cfg.profile+"heap.pprof"); err != nil {
			logf("heap profile: %v", err)
		}
	}

	// The drop starts.
	startTime := time.Now().Add(cfg.startIn).Truncate(time.Millisecond)
	dropID, err := createDrop(ctx, conn, startTime)
	var lastEvent string
	if err != nil {
		return err
	}
	time.Sleep(time.Until(startTime) - 200*time.Millisecond)
	cpu0 := cpuTimes(hubs)
	gen0 := cpuTimes(gs)
	self0 := selfCPU()
	time.Sleep(time.Until(startTime))
	if lastEvent, err = startDrop(ctx, conn, nc, dropID, startTime); err != nil {
		return err
	}
	for _, g := range gs {
		if _, err := g.waitLine(ctx, "GOT", cfg.wait+time.Minute); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", g.name, err, g.logPath)
		}
	}
	// CPU is read once every client has its event, before they close their sockets.
	hubCPU := cpuTimes(hubs) - cpu0
	genCPU := cpuTimes(gs) - gen0
	selfCPUd := selfCPU() - self0
	received := 0
	for _, g := range gs {
		line, err := g.waitLine(ctx, "DONE", time.Minute)
		if err != nil {
			return fmt.Errorf("%s: %w (log: %s)", g.name, err, g.logPath)
		}
		received += intField(line, "received")
		g.doneLine = line
	}
	var lat []float64
	for g := range gs {
		b, err := os.ReadFile(fmt.Sprintf("%s/lat-%d.txt", cfg.dir, g))
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			v, _ := strconv.ParseFloat(f, 64)
			lat = append(lat, v)
		}
	}
	slices.Sort(lat)
	cpuPer := 0.0
	if received > 0 {
		cpuPer = hubCPU.Seconds() * 1e6 / float64(received)
	}
	logf("CPU during the delivery: hubs %.2fs, generators %.2fs, services+harness (NATS in process, PostgreSQL, Redis) %.2fs",
		hubCPU.Seconds(), genCPU.Seconds(), selfCPUd.Seconds())
	logf("hub RSS: %.0f MiB idle, %.0f MiB with %d sockets (%.1f KiB per socket above idle)",
		idleRSS/1024, busyRSS/1024, cfg.sockets-failed, (busyRSS-idleRSS)/float64(max(1, cfg.sockets-failed)))
	if cfg.storm {
		if err := storm(ctx, cfg, wsfan, tokensFile, hubs[0], gs, lastEvent, func() (*proc, error) {
			return startHub(cfg, "hub-storm", dbURL, rs.URL(0), ns.ClientURL())
		}); err != nil {
			return err
		}
	}
	fmt.Printf("RESULT hubs=%d sockets=%d p50_ms=%.0f p99_ms=%.0f last_ms=%.0f missing=%d rss_per_socket_kib=%.1f cpu_us_per_delivery=%.1f\n",
		cfg.hubs, cfg.sockets, pctf(lat, 0.5), pctf(lat, 0.99), pctf(lat, 1), cfg.sockets-received,
		busyRSS/float64(max(1, cfg.sockets-failed)), cpuPer)
	return nil
}

// startHub starts one hub process on a free port.
func startHub(cfg config, name, dbURL, redisURL, natsURL string) (*proc, error) {
	port, err := pglocal.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	env := []string{"DATABASE_URL=" + dbURL, "REDIS_URL=" + redisURL, "NATS_URL=" + natsURL,
		"LIVEDROPS_JWT_SECRET=" + secret, "LIVEDROPS_HTTP_ADDR=" + addr, "LIVEDROPS_LOG_LEVEL=warn",
		"LIVEDROPS_SHUTDOWN_TIMEOUT=20s", "GODEBUG=" + cfg.godebug, "GOGC=" + cfg.gogc}
	debugAddr := ""
	if cfg.profile != "" && name == "hub-0" {
		dport, err := pglocal.FreePort()
		if err != nil {
			return nil, err
		}
		debugAddr = fmt.Sprintf("127.0.0.1:%d", dport)
		env = append(env, "LIVEDROPS_DEBUG_ADDR="+debugAddr)
	}
	cmd := exec.Command(cfg.hubBin, "hub")
	cmd.Env = append(os.Environ(), env...)
	h, err := startProc(name, cmd, cfg.dir)
	if err != nil {
		return nil, err
	}
	h.addr, h.debugAddr = addr, debugAddr
	return h, nil
}

// profileAsync fetches a profile of p (its debug listener) into path, in the background; wait for it
// with the returned function.
func profileAsync(p *proc, kind string, d time.Duration, path string) func() {
	done := make(chan struct{})
	if p.debugAddr == "" {
		close(done)
		return func() {}
	}
	go func() {
		defer close(done)
		u := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", p.debugAddr, kind, int(d.Seconds()))
		resp, err := http.Get(u)
		if err != nil {
			logf("profile %s: %v", kind, err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			logf("profile %s: %v", kind, err)
			return
		}
		logf("profile %s of %s written to %s", kind, p.name, path)
	}()
	return func() { <-done }
}

// fetch writes what url answers to path.
func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// memStats logs where the hubs' memory is, from their Go runtime metrics.
func memStats(hubs []*proc) {
	want := []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_heap_alloc_bytes",
		"go_memstats_stack_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes",
		"go_memstats_sys_bytes", "go_memstats_next_gc_bytes"}
	total := map[string]float64{}
	for _, h := range hubs {
		resp, err := http.Get("http://" + h.addr + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			name, val, ok := strings.Cut(line, " ")
			if !ok || !slices.Contains(want, name) {
				continue
			}
			v, _ := strconv.ParseFloat(val, 64)
			total[name] += v
		}
	}
	var parts []string
	for _, n := range want {
		v := total[n]
		if strings.HasSuffix(n, "_bytes") {
			parts = append(parts, fmt.Sprintf("%s=%.0fMiB", strings.TrimPrefix(n, "go_memstats_"), v/(1<<20)))
		} else {
			parts = append(parts, fmt.Sprintf("%s=%.0f", strings.TrimPrefix(n, "go_"), v))
		}
	}
	logf("hub runtime: %s", strings.Join(parts, " "))
}

// setupStats logs the hubs' own setup histograms (livedrops_hub_setup_seconds): mean per stage.
func setupStats(hubs []*proc) {
	sum, count := map[string]float64{}, map[string]float64{}
	for _, h := range hubs {
		resp, err := http.Get("http://" + h.addr + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			for suffix, m := range map[string]map[string]float64{"_sum": sum, "_count": count} {
				rest, ok := strings.CutPrefix(line, "livedrops_hub_setup_seconds"+suffix+`{stage="`)
				if !ok {
					continue
				}
				stage, val, _ := strings.Cut(rest, `"} `)
				v, _ := strconv.ParseFloat(val, 64)
				m[stage] += v
			}
		}
	}
	var parts []string
	for _, st := range []string{"admit", "follows", "confirm", "total"} {
		if count[st] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%.1fms", st, sum[st]/count[st]*1000))
		}
	}
	logf("hub setup, mean per socket: %s", strings.Join(parts, " "))
}

// storm kills hub 0 and its generators' sockets, and makes all of its clients reconnect at once to a
// fresh hub with ?since= the last event they got: the resume path under a reconnect storm.
func storm(ctx context.Context, cfg config, wsfan, tokensFile string, dead *proc, gens []*proc, since string,
	newHub func() (*proc, error)) error {
	fresh, err := newHub()
	if err != nil {
		return err
	}
	defer fresh.stop()
	if err := waitHTTP(ctx, "http://"+fresh.addr+"/healthz", 60*time.Second); err != nil {
		return err
	}
	_ = dead.cmd.Process.Kill() // the hub dies; its clients all come back at once
	_ = dead.cmd.Wait()
	n := 0
	for g, p := range gens {
		if g%cfg.hubs == 0 {
			n += intField(p.doneLine, "sockets")
		}
	}
	per := int(math.Ceil(float64(cfg.sockets) / float64(len(gens))))
	cpu0 := cpuTimes([]*proc{fresh})
	self0 := selfCPU()
	start := time.Now()
	var sg []*proc
	defer func() {
		for _, p := range sg {
			p.stop()
		}
	}()
	for g := range gens {
		if g%cfg.hubs != 0 {
			continue
		}
		from := g * per
		count := min(per, cfg.sockets-from)
		cmd := exec.Command(wsfan, "-url", "ws://"+fresh.addr+"/ws", "-tokens", tokensFile, "-since", since,
			"-from", strconv.Itoa(from), "-count", strconv.Itoa(count), "-src-base", strconv.Itoa(11+2*g),
			"-concurrency", "1024", "-wait", "1ms")
		p, err := startProc(fmt.Sprintf("storm-%d", g), cmd, cfg.dir)
		if err != nil {
			return err
		}
		sg = append(sg, p)
	}
	recovered, failed := 0, 0
	for _, p := range sg {
		line, err := p.waitLine(ctx, "READY", 10*time.Minute)
		if err != nil {
			return fmt.Errorf("%s: %w (log: %s)", p.name, err, p.logPath)
		}
		recovered += intField(line, "recovered")
		failed += intField(line, "failed")
	}
	took := time.Since(start)
	hubCPU := cpuTimes([]*proc{fresh}) - cpu0
	if resp, err := http.Get("http://" + fresh.addr + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "livedrops_hub_") && !strings.HasSuffix(line, " 0") && !strings.Contains(line, "_bucket") {
				logf("storm hub: %s", line)
			}
		}
	}
	fmt.Printf("STORM since=%s sockets=%d seconds=%.2f recovered=%d failed=%d hub_cpu_ms_per_resume=%.3f services_cpu_s=%.2f\n",
		since, n, took.Seconds(), recovered, failed, hubCPU.Seconds()*1000/float64(max(1, recovered)), (selfCPU() - self0).Seconds())
	return nil
}

func pctf(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func stopService(stop func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = stop(ctx)
}

func createDatabase(ctx context.Context, adminURL string) error {
	c, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "CREATE DATABASE livedrops")
	return err
}

// seed writes creator 1 and its n followers (users 2..n+1) with set-based SQL.
func seed(ctx context.Context, c *pgx.Conn, n int) error {
	for _, q := range []string{
		`INSERT INTO users (user_id, name, email) SELECT g, 'user ' || g, 'user' || g || '@bench.test' FROM generate_series(1, $1 + 1) g`,
		`INSERT INTO creators (creator_id, profile_name) VALUES (1, 'bench creator')`,
		`INSERT INTO follows (creator_id, follower_id) SELECT 1, g FROM generate_series(2, $1 + 1) g`,
		`INSERT INTO products (product_id, creator_id, title, price_cents) VALUES (1, 1, 'bench product', 1000)`,
		`SELECT setval(pg_get_serial_sequence('users', 'user_id'), $1 + 1)`,
	} {
		args := []any{n}
		if !strings.Contains(q, "$1") {
			args = nil
		}
		if _, err := c.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	_, err := c.Exec(ctx, `ANALYZE`)
	return err
}

func writeTokens(path string, n int) error {
	tokens, err := auth.New(auth.Config{Secret: []byte(secret)})
	if err != nil {
		return err
	}
	var b strings.Builder
	for u := int64(2); u <= int64(n)+1; u++ {
		tok, err := tokens.Mint(u, 6*time.Hour)
		if err != nil {
			return err
		}
		b.WriteString(tok)
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

func createDrop(ctx context.Context, c *pgx.Conn, start time.Time) (int64, error) {
	var id int64
	err := c.QueryRow(ctx, `INSERT INTO drops (creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user)
		VALUES (1, 1, $1, $2, 100, 100, 1) RETURNING drop_id`, start, start.Add(time.Hour)).Scan(&id)
	return id, err
}

// startDrop does what the scheduler and the relay do at start_time.
func startDrop(ctx context.Context, c *pgx.Conn, nc *nats.Conn, dropID int64, start time.Time) (string, error) {
	data, _ := json.Marshal(map[string]any{"drop_id": dropID, "creator_id": 1, "status": "live",
		"start_time": start.UTC().Format(fanout.TimeFormat), "initial_stock": 100, "stock_count": 100})
	ev := fanout.Event{Type: fanout.DropStarted, TS: start, CreatorID: 1, DropID: dropID, Data: data}
	tx, err := c.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE drops SET status = 'live' WHERE drop_id = $1`, dropID); err != nil {
		return "", err
	}
	payload, _ := json.Marshal(ev)
	if err := tx.QueryRow(ctx, `INSERT INTO outbox (subject, type, payload) VALUES ($1, $2, $3) RETURNING event_id`,
		ev.Subject(), string(ev.Type), payload).Scan(&ev.ID); err != nil {
		return "", err
	}
	if err := tx.Commit(ctx); err != nil {
		return "", err
	}
	js, err := natsjs.New(nc)
	if err != nil {
		return "", err
	}
	m := nats.NewMsg(ev.Subject())
	m.Data, _ = json.Marshal(ev)
	m.Header.Set(nats.MsgIdHdr, ev.ID)
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return "", err
	}
	_, err = c.Exec(ctx, `UPDATE outbox SET stream_seq = $1, published_at = now() WHERE event_id = $2`, int64(ack.Sequence), ev.ID)
	return ev.ID, err
}

// proc is a child process whose stdout lines are watched.
type proc struct {
	name, addr, logPath string
	debugAddr           string
	doneLine            string
	cmd                 *exec.Cmd
	lines               chan string
}

func startProc(name string, cmd *exec.Cmd, dir string) (*proc, error) {
	p := &proc{name: name, cmd: cmd, logPath: filepath.Join(dir, name+".log"), lines: make(chan string, 16)}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logFile
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		defer logFile.Close()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Fprintln(logFile, sc.Text())
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		close(p.lines)
	}()
	return p, nil
}

func (p *proc) waitLine(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return "", fmt.Errorf("exited before %s", prefix)
			}
			if strings.HasPrefix(line, prefix) {
				return line, nil
			}
		case <-t.C:
			return "", fmt.Errorf("no %s within %s", prefix, timeout)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func (p *proc) stop() {
	if p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

func intField(line, key string) int {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not up within %s: %v", url, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// settledRSS waits until the hubs' RSS together varies by less than 2% over 5 s (at most max) and returns it.
func settledRSS(hubs []*proc, maxWait time.Duration) float64 {
	var samples []float64
	deadline := time.Now().Add(maxWait)
	for {
		total := 0.0
		for _, h := range hubs {
			total += rssKiB(h.cmd.Process.Pid)
		}
		samples = append(samples, total)
		if n := len(samples); n >= 6 {
			w := samples[n-6:]
			if slices.Max(w)-slices.Min(w) < 0.02*slices.Max(w) || time.Now().After(deadline) {
				logf("hub RSS settled at %.0f MiB after %ds", total/1024, n-1)
				return total
			}
		}
		time.Sleep(time.Second)
	}
}

// rssKiB is a process's resident set.
func rssKiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.ParseFloat(f[0], 64)
			return n
		}
	}
	return 0
}

// cpuTimes is the CPU time (user + system) of the processes.
func cpuTimes(ps []*proc) time.Duration {
	var total time.Duration
	for _, p := range ps {
		total += procCPU(p.cmd.Process.Pid)
	}
	return total
}

// procCPU is the CPU time of a process: the sum over its threads of /proc/<pid>/task/<tid>/schedstat
// (nanoseconds), finer than /proc/<pid>/stat's 10 ms ticks.
func procCPU(pid int) time.Duration {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

// selfCPU is this process's CPU (embedded NATS and the harness) plus its services' (PostgreSQL, Redis).
func selfCPU() time.Duration {
	total := procCPU(os.Getpid())
	// children of this process that are not hubs or generators: the service servers
	entries, _ := os.ReadDir("/proc")
	me := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		comm := s[strings.IndexByte(s, '(')+1 : strings.LastIndexByte(s, ')')]
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 1 && (comm == "postgres" || comm == "redis-server") && ancestorIs(pid, me) {
			total += procCPU(pid)
		}
	}
	return total
}

func ancestorIs(pid int, ancestor string) bool {
	for range 4 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if f[1] == ancestor {
			return true
		}
		if pid, err = strconv.Atoi(f[1]); err != nil || pid <= 1 {
			return false
		}
	}
	return false
}
