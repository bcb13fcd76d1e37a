// Command fanoutbench measures the hub (make bench-fanout) running what users run: it starts PostgreSQL,
// Redis and NATS, seeds with `livedrops seed` (one creator, N followers, their tokens), starts `livedrops
// worker` (scheduler and relay), `livedrops api` and -hubs `livedrops hub` processes, then wsfan load
// generator processes (each holds at most ~19,900 sockets: this machine caps a process at 20,000 open
// files) connecting -concurrency sockets at a time each. Once every socket has its hello, the creator
// posts -drops drops through the API, -every apart; their drop.scheduled fan-outs end before the first
// start_time; the scheduler starts each on time and the relay publishes its drop.started. It prints
//
//	RESULT hubs=.. sockets=.. drops=.. connect_s=.. sockets_per_s=.. p50_ms=.. p99_ms=.. last_worst_ms=..
//	       last_median_ms=.. first_last_ms=.. missing=.. rss_per_socket_kib=.. cpu_us_per_delivery=..
//	       hub_cpu_us_per_connect=.. box_cpu_us_per_connect=..
//
// where the latencies run from each drop's start_time (the event's ts) to the receipt of its drop.started
// at the clients; last_* are the last receiver of a drop, worst and median over the drops, first_last_ms
// that of the first drop; cpu_us_per_delivery is the hubs' CPU alone over the drops, per delivery;
// hub_cpu_us_per_connect the hubs' CPU from the generators' start until every socket had its hello, per
// socket, and box_cpu_us_per_connect that of every process of the run (hubs, generators, api, worker,
// NATS, PostgreSQL, Redis) in the same span.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedrops/livedrops/fanout/natslocal"
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
	drops                 int
	every                 time.Duration
	hubEnv                string
	floor                 string
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
	flag.IntVar(&cfg.drops, "drops", 1, "drops of the creator, started -every apart (each drop.started is measured)")
	flag.DurationVar(&cfg.every, "every", 500*time.Millisecond, "time between two drops' start_time")
	flag.StringVar(&cfg.floor, "floor", "bin/wsfloor", "the floor server (loadtest/wsfloor), measured after the hub in the same shape for the vs_floor ratios; empty: skip (skipped too when -sockets exceeds -per-gen)")
	flag.StringVar(&cfg.hubEnv, "hub-env", "", "more environment of the hubs, space-separated KEY=VALUE (e.g. GOMAXPROCS=1)")
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
	if cfg.hubs < 1 || cfg.sockets < 1 || cfg.perGen < 1 || cfg.drops < 1 {
		return errors.New("-hubs, -sockets, -per-gen and -drops must be positive")
	}
	wsfan, err := filepath.Abs(cfg.wsfan)
	if err != nil {
		return err
	}
	if cfg.hubBin, err = filepath.Abs(cfg.hubBin); err != nil {
		return err
	}
	if cfg.floor != "" {
		if cfg.floor, err = filepath.Abs(cfg.floor); err != nil {
			return err
		}
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
	env := serviceEnv{db: dbURL, redis: rs.URL(0), nats: ns.ClientURL()}

	// Seed with the binary, as an operator would: creator and followers, and the followers' tokens.
	start := time.Now()
	tokensFile := cfg.dir + "/tokens.txt"
	seeded, err := seed(ctx, cfg, env, tokensFile)
	if err != nil {
		return err
	}
	logf("seeded with livedrops seed: creator %d with %d followers and their tokens in %s", seeded.CelebrityID,
		cfg.sockets, time.Since(start).Round(time.Millisecond))
	creatorToken, err := output(ctx, env.cmd(cfg.hubBin, "token", "-user", strconv.FormatInt(seeded.CelebrityID, 10), "-ttl", "6h"))
	if err != nil {
		return fmt.Errorf("livedrops token: %w", err)
	}

	// The API (the creator posts the drops) and a worker (scheduler and relay), as in production.
	var others []*proc
	defer func() {
		for _, p := range others {
			p.stop()
		}
	}()
	for _, role := range []string{"worker", "api"} {
		p, err := startRole(cfg, env, role, role)
		if err != nil {
			return err
		}
		others = append(others, p)
	}
	api := others[1]

	// Hubs.
	var hubs []*proc
	defer func() {
		for _, h := range hubs {
			h.stop()
		}
	}()
	for i := range cfg.hubs {
		h, err := startRole(cfg, env, "hub", fmt.Sprintf("hub-%d", i))
		if err != nil {
			return err
		}
		hubs = append(hubs, h)
	}
	for _, p := range append(slices.Clone(others), hubs...) {
		if err := waitHTTP(ctx, "http://"+p.addr+"/readyz", 60*time.Second); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", p.name, err, p.logPath)
		}
	}
	idleRSS := 0.0
	for _, h := range hubs {
		idleRSS += rssKiB(h.cmd.Process.Pid)
	}
	logf("%d hub(s) up, %.0f MiB RSS in all; api and worker up", len(hubs), idleRSS/1024)
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
	// How long after READY a generator waits for its events: the settling, the drops' lead and train.
	lead := cfg.startIn + time.Duration(cfg.drops*cfg.sockets)*20*time.Microsecond
	genWait := cfg.hold + cfg.settle + lead + time.Duration(cfg.drops)*cfg.every + cfg.wait
	var waitProfiles []func()
	if cfg.profile != "" {
		waitProfiles = append(waitProfiles,
			profileAsync(hubs[0], "profile", 10*time.Second, cfg.profile+"connect.cpu.pprof"),
			profileAsync(hubs[0], "block", 10*time.Second, cfg.profile+"connect.block.pprof"),
			profileAsync(hubs[0], "mutex", 10*time.Second, cfg.profile+"connect.mutex.pprof"))
	}
	// What the whole box spends on the connect: the hubs, the generators (new processes: all of their
	// CPU), the api and worker, and the services with this harness (NATS runs in it).
	connectHub0, connectOthers0 := cpuTimes(hubs), cpuTimes(others)
	nats0, pg0, redis0 := servicesCPU()
	load0 := loadAvg()
	for g := range gens {
		from := g * per
		count := min(per, cfg.sockets-from)
		if count <= 0 {
			break
		}
		h := hubs[g%len(hubs)]
		cmd := exec.Command(wsfan, "-url", "ws://"+h.addr+"/ws", "-tokens", tokensFile,
			"-from", strconv.Itoa(from), "-count", strconv.Itoa(count), "-src-base", strconv.Itoa(10+2*g),
			"-wait", genWait.String(), "-out", fmt.Sprintf("%s/lat-%d.txt", cfg.dir, g),
			"-concurrency", strconv.Itoa(cfg.concurrency), "-expect", strconv.Itoa(cfg.drops))
		p, err := startProc(fmt.Sprintf("gen-%d", g), cmd, cfg.dir)
		if err != nil {
			return err
		}
		gs = append(gs, p)
	}
	failed := 0
	var slowestGen time.Duration
	for _, g := range gs {
		line, err := g.waitLine(ctx, "READY", 10*time.Minute)
		if err != nil {
			return fmt.Errorf("%s: %w (log: %s)", g.name, err, g.logPath)
		}
		failed += intField(line, "failed")
		slowestGen = max(slowestGen, time.Duration(floatField(line, "connect_s")*float64(time.Second)))
	}
	connected := cfg.sockets - failed
	connectS := slowestGen.Seconds()
	logf("%d sockets ready in %.2fs, %.0f sockets/s (%d failed to connect)", connected, connectS,
		float64(connected)/connectS, failed)
	connectHub := cpuTimes(hubs) - connectHub0
	connectGen := cpuTimes(gs)
	connectOthers := cpuTimes(others) - connectOthers0
	nats1, pg1, redis1 := servicesCPU()
	perSocket := func(d time.Duration) float64 { return d.Seconds() * 1e6 / float64(max(1, connected)) }
	connectBox := connectHub + connectGen + connectOthers + nats1 - nats0 + pg1 - pg0 + redis1 - redis0
	logf("CPU of the connect per socket: hubs %.0f µs, generators %.0f µs, api+worker %.0f µs, NATS (in the harness) %.0f µs, PostgreSQL %.0f µs, Redis %.0f µs; %.2f of %d cores busy on average; load average %s → %s",
		perSocket(connectHub), perSocket(connectGen), perSocket(connectOthers), perSocket(nats1-nats0),
		perSocket(pg1-pg0), perSocket(redis1-redis0), connectBox.Seconds()/connectS, runtime.NumCPU(), load0, loadAvg())
	setupStats(hubs)
	for _, w := range waitProfiles {
		w()
	}
	// The connect burst leaves garbage that the Go runtime hands back to the kernel over seconds: the
	// memory a hub needs for its sockets is what it holds once its RSS has settled (within 2% over 5 s),
	// waiting at most -settle.
	time.Sleep(cfg.hold)
	busyRSS := settledRSS(hubs, cfg.settle)
	memStats(hubs)
	if cfg.profile != "" && hubs[0].debugAddr != "" {
		if err := fetch("http://"+hubs[0].debugAddr+"/debug/pprof/heap", cfg.profile+"heap.pprof"); err != nil {
			logf("heap profile: %v", err)
		}
	}

	// The drops: posted by the creator through the API, -every apart; each post fans drop.scheduled out
	// to every follower, which is over before the first start_time (it is not measured). The scheduler
	// then starts each at its start_time and the relay publishes its drop.started.
	first := time.Now().Add(lead).Truncate(time.Millisecond)
	starts := map[int64]time.Time{}
	for i := range cfg.drops {
		at := first.Add(time.Duration(i) * cfg.every)
		id, err := createDrop(ctx, "http://"+api.addr, creatorToken, seeded.Products.First, at)
		if err != nil {
			return err
		}
		starts[id] = at
	}
	scheduled := float64(cfg.drops * connected)
	if err := waitMetric(hubs, `livedrops_hub_events_written_total{type="drop.scheduled"}`, scheduled,
		time.Until(first)-500*time.Millisecond); err != nil {
		logf("warning: %v: drop.scheduled fan-outs overlap the measured window; raise -start-in", err)
	} else {
		logf("%d drops posted, their drop.scheduled written to every socket, %s before the first start",
			cfg.drops, time.Until(first).Round(time.Millisecond))
	}
	time.Sleep(time.Until(first) - 200*time.Millisecond)
	worker := others[0]
	before := breakdown(worker, hubs)
	cpu0 := cpuTimes(hubs)
	gen0 := cpuTimes(gs)
	others0 := cpuTimes(others)
	self0 := selfCPU()
	var waitDropProfile func()
	if cfg.profile != "" {
		d := time.Duration(cfg.drops)*cfg.every + 2*time.Second
		waitDropProfile = profileAsync(hubs[0], "profile", d, cfg.profile+"drops.cpu.pprof")
	}
	for _, g := range gs {
		if _, err := g.waitLine(ctx, "GOT", time.Duration(cfg.drops)*cfg.every+cfg.wait+time.Minute); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", g.name, err, g.logPath)
		}
	}
	// CPU is read once every client has its events, before they close their sockets.
	hubCPU := cpuTimes(hubs) - cpu0
	genCPU := cpuTimes(gs) - gen0
	othersCPU := cpuTimes(others) - others0
	selfCPUd := selfCPU() - self0
	received := 0
	var lastID int64
	for _, g := range gs {
		line, err := g.waitLine(ctx, "DONE", time.Minute)
		if err != nil {
			return fmt.Errorf("%s: %w (log: %s)", g.name, err, g.logPath)
		}
		received += intField(line, "events")
		lastID = max(lastID, int64(intField(line, "last_id")))
		g.doneLine = line
	}
	if waitDropProfile != nil {
		waitDropProfile()
	}
	after := breakdown(worker, hubs)
	logf("where the time went, mean per drop.started: scheduler start_time→commit %.1f ms, relay insert→stream ack %.1f ms, hubs ts→socket write %.1f ms",
		after.mean(before, 0), after.mean(before, 1), after.mean(before, 2))
	var all []float64
	perDrop := map[int64][]float64{}
	for g := range gs {
		b, err := os.ReadFile(fmt.Sprintf("%s/lat-%d.txt", cfg.dir, g))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			id, _ := strconv.ParseInt(f[0], 10, 64)
			if _, ok := starts[id]; !ok {
				continue
			}
			// wsfan measured from the event's ts, which for drop.started is the drop's start_time.
			v, _ := strconv.ParseFloat(f[1], 64)
			all = append(all, v)
			perDrop[id] = append(perDrop[id], v)
		}
	}
	slices.Sort(all)
	var lasts []float64
	var firstLast float64
	firstID := int64(math.MaxInt64)
	for id := range starts {
		firstID = min(firstID, id)
	}
	ids := slices.Sorted(maps.Keys(starts))
	for _, id := range ids {
		l := perDrop[id]
		last := math.NaN()
		if len(l) > 0 {
			last = slices.Max(l)
		}
		lasts = append(lasts, last)
		if id == firstID {
			firstLast = last
		}
		slices.Sort(l)
		logf("drop %d: %d receivers, p50 %.0f ms, p99 %.0f ms, last %.0f ms", id, len(l), pctf(l, 0.5), pctf(l, 0.99), last)
	}
	slices.Sort(lasts)
	cpuPer := 0.0
	if received > 0 {
		cpuPer = hubCPU.Seconds() * 1e6 / float64(received)
	}
	logf("CPU during the drops: hubs %.2fs, generators %.2fs, api+worker %.2fs, services+harness (NATS in process, PostgreSQL, Redis) %.2fs",
		hubCPU.Seconds(), genCPU.Seconds(), othersCPU.Seconds(), selfCPUd.Seconds())
	logf("hub RSS: %.0f MiB idle, %.0f MiB with %d sockets (%.1f KiB per socket above idle)",
		idleRSS/1024, busyRSS/1024, connected, (busyRSS-idleRSS)/float64(max(1, connected)))
	if cfg.storm {
		if err := storm(ctx, cfg, wsfan, tokensFile, hubs[0], gs, strconv.FormatInt(lastID, 10), func() (*proc, error) {
			return startRole(cfg, env, "hub", "hub-storm")
		}); err != nil {
			return err
		}
	}
	floor := ""
	if cfg.floor != "" && cfg.sockets <= cfg.perGen {
		// The floor runs alone: the LiveDrops processes and their clients stop first.
		for _, p := range slices.Concat(gs, hubs, others) {
			p.stop()
		}
		fs, err := floorRun(ctx, cfg, wsfan, tokensFile)
		if err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		floor = fmt.Sprintf(" floor_connect_s=%.2f floor_last_worst_ms=%.0f floor_last_median_ms=%.0f floor_first_last_ms=%.0f "+
			"floor_rss_per_socket_kib=%.1f floor_cpu_us_per_delivery=%.1f vs_floor_connect=%.2f vs_floor_last_worst=%.2f vs_floor_last_median=%.2f",
			fs.connectS, fs.lastWorst, fs.lastMedian, fs.firstLast, fs.rssPerSocket, fs.cpuPer,
			connectS/fs.connectS, pctf(lasts, 1)/fs.lastWorst, pctf(lasts, 0.5)/fs.lastMedian)
	}
	fmt.Printf("RESULT hubs=%d sockets=%d drops=%d connect_s=%.2f sockets_per_s=%.0f p50_ms=%.0f p99_ms=%.0f "+
		"last_worst_ms=%.0f last_median_ms=%.0f first_last_ms=%.0f missing=%d rss_per_socket_kib=%.1f cpu_us_per_delivery=%.1f "+
		"hub_cpu_us_per_connect=%.0f box_cpu_us_per_connect=%.0f%s\n",
		cfg.hubs, cfg.sockets, cfg.drops, connectS, float64(connected)/connectS, pctf(all, 0.5), pctf(all, 0.99),
		pctf(lasts, 1), pctf(lasts, 0.5), firstLast, cfg.sockets*cfg.drops-received,
		busyRSS/float64(max(1, connected)), cpuPer, perSocket(connectHub), perSocket(connectBox), floor)
	return nil
}

// floorStats are the floor's figures, measured as the hub's.
type floorStats struct {
	connectS, lastWorst, lastMedian, firstLast, rssPerSocket, cpuPer float64
}

// floorRun measures the floor (loadtest/wsfloor) in the shape of the hub's run: the same generator, the
// same sockets and connects in flight, the same drops -every apart, each broadcast at its start_time.
func floorRun(ctx context.Context, cfg config, wsfan, tokensFile string) (floorStats, error) {
	var fs floorStats
	port, err := pglocal.FreePort()
	if err != nil {
		return fs, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	floor, err := startProc("floor", exec.Command(cfg.floor, "-addr", addr), cfg.dir)
	if err != nil {
		return fs, err
	}
	defer floor.stop()
	floor.addr = addr
	if err := waitHTTP(ctx, "http://"+addr+"/healthz", 30*time.Second); err != nil {
		return fs, err
	}
	idle := rssKiB(floor.cmd.Process.Pid)
	floorIdleCPU := cpuTimes([]*proc{floor})
	genWait := cfg.settle + cfg.startIn + time.Duration(cfg.drops)*cfg.every + cfg.wait
	out := cfg.dir + "/lat-floor.txt"
	gen, err := startProc("floor-gen", exec.Command(wsfan, "-url", "ws://"+addr+"/ws", "-tokens", tokensFile,
		"-count", strconv.Itoa(cfg.sockets), "-src-base", "200", "-wait", genWait.String(), "-out", out,
		"-concurrency", strconv.Itoa(cfg.concurrency), "-expect", strconv.Itoa(cfg.drops)), cfg.dir)
	if err != nil {
		return fs, err
	}
	defer gen.stop()
	line, err := gen.waitLine(ctx, "READY", 10*time.Minute)
	if err != nil {
		return fs, fmt.Errorf("%s: %w (log: %s)", gen.name, err, gen.logPath)
	}
	fs.connectS = floatField(line, "connect_s")
	n := float64(max(1, cfg.sockets-intField(line, "failed")))
	logf("floor: CPU of the connect per socket: server %.0f µs, generator %.0f µs",
		(cpuTimes([]*proc{floor})-floorIdleCPU).Seconds()*1e6/n, cpuTimes([]*proc{gen}).Seconds()*1e6/n)
	busy := settledRSS([]*proc{floor}, cfg.settle)
	fs.rssPerSocket = busy / n
	logf("floor: %d sockets in %.2fs, RSS %.0f MiB idle, %.0f MiB busy", cfg.sockets, fs.connectS, idle/1024, busy/1024)
	first := time.Now().Add(cfg.startIn).Truncate(time.Millisecond)
	time.Sleep(time.Until(first) - 200*time.Millisecond)
	cpu0 := cpuTimes([]*proc{floor})
	var posts sync.WaitGroup
	for i := range cfg.drops {
		at := first.Add(time.Duration(i) * cfg.every)
		time.Sleep(time.Until(at))
		body := fmt.Sprintf(`{"id":"%d","type":"drop.started","ts":%q,"creator_id":1,"drop_id":%d,"data":{"status":"live"}}`,
			i+1, at.UTC().Format(time.RFC3339Nano), i+1)
		posts.Go(func() {
			resp, err := http.Post("http://"+addr+"/broadcast", "application/json", strings.NewReader(body))
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	if _, err := gen.waitLine(ctx, "GOT", time.Duration(cfg.drops)*cfg.every+cfg.wait+time.Minute); err != nil {
		return fs, fmt.Errorf("%s: %w (log: %s)", gen.name, err, gen.logPath)
	}
	cpu := cpuTimes([]*proc{floor}) - cpu0
	posts.Wait()
	done, err := gen.waitLine(ctx, "DONE", time.Minute)
	if err != nil {
		return fs, err
	}
	fs.cpuPer = cpu.Seconds() * 1e6 / float64(max(1, intField(done, "events")))
	b, err := os.ReadFile(out)
	if err != nil {
		return fs, err
	}
	perDrop := map[int64][]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 {
			id, _ := strconv.ParseInt(f[0], 10, 64)
			v, _ := strconv.ParseFloat(f[1], 64)
			perDrop[id] = append(perDrop[id], v)
		}
	}
	var lasts []float64
	for id := int64(1); id <= int64(cfg.drops); id++ {
		last := math.NaN()
		if l := perDrop[id]; len(l) > 0 {
			last = slices.Max(l)
		}
		if id == 1 {
			fs.firstLast = last
		}
		lasts = append(lasts, last)
	}
	slices.Sort(lasts)
	fs.lastWorst, fs.lastMedian = pctf(lasts, 1), pctf(lasts, 0.5)
	logf("floor: last receiver worst %.0f ms, median %.0f ms, first drop %.0f ms; %.1f µs of CPU per delivery (%s)",
		fs.lastWorst, fs.lastMedian, fs.firstLast, fs.cpuPer, strings.TrimSpace(done))
	return fs, nil
}

// latencySums are (sum, count) of the scheduler's start lag, the relay's publish latency and the hubs'
// drop.started delivery time, read from /metrics.
type latencySums [3][2]float64

func breakdown(worker *proc, hubs []*proc) latencySums {
	var l latencySums
	l[0][0] = scrape(worker.addr, `livedrops_scheduler_lag_seconds_sum{transition="start"}`)
	l[0][1] = scrape(worker.addr, `livedrops_scheduler_lag_seconds_count{transition="start"}`)
	l[1][0] = scrape(worker.addr, `livedrops_relay_publish_latency_seconds_sum`)
	l[1][1] = scrape(worker.addr, `livedrops_relay_publish_latency_seconds_count`)
	for _, h := range hubs {
		l[2][0] += scrape(h.addr, `livedrops_hub_delivery_seconds_sum{type="drop.started"}`)
		l[2][1] += scrape(h.addr, `livedrops_hub_delivery_seconds_count{type="drop.started"}`)
	}
	return l
}

// mean is the mean in ms of series i between before and l.
func (l latencySums) mean(before latencySums, i int) float64 {
	n := l[i][1] - before[i][1]
	if n <= 0 {
		return math.NaN()
	}
	return (l[i][0] - before[i][0]) / n * 1000
}

// serviceEnv names the services every livedrops process of the run uses.
type serviceEnv struct{ db, redis, nats string }

// cmd is a livedrops command with the services' environment.
func (e serviceEnv) cmd(bin string, args ...string) *exec.Cmd {
	c := exec.Command(bin, args...)
	c.Env = append(os.Environ(), "DATABASE_URL="+e.db, "REDIS_URL="+e.redis, "NATS_URL="+e.nats,
		"LIVEDROPS_JWT_SECRET="+secret, "LIVEDROPS_LOG_LEVEL=warn")
	return c
}

// seedResult is what `livedrops seed` prints.
type seedResult struct {
	CelebrityID int64 `json:"celebrity_id"`
	Followers   struct {
		First, Last int64
	} `json:"followers"`
	Products struct {
		First, Last int64
	} `json:"products"`
}

// seed runs `livedrops seed`: one creator (the celebrity) with -sockets followers, one product, and the
// followers' tokens in tokensFile.
func seed(ctx context.Context, cfg config, env serviceEnv, tokensFile string) (seedResult, error) {
	var res seedResult
	out, err := output(ctx, env.cmd(cfg.hubBin, "seed", "-users", strconv.Itoa(cfg.sockets+1), "-creators", "1",
		"-products", "1", "-drops", "0", "-followers", strconv.Itoa(cfg.sockets), "-tokens-file", tokensFile,
		"-token-ttl", "6h"))
	if err != nil {
		return res, fmt.Errorf("livedrops seed: %w", err)
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return res, fmt.Errorf("livedrops seed printed %q: %w", out, err)
	}
	if res.CelebrityID == 0 || res.Products.First == 0 || int(res.Followers.Last-res.Followers.First+1) != cfg.sockets {
		return res, fmt.Errorf("livedrops seed wrote %s, want a creator, a product and %d followers", out, cfg.sockets)
	}
	return res, nil
}

// output runs c and returns its stdout, trimmed; stderr goes into the error.
func output(ctx context.Context, c *exec.Cmd) (string, error) {
	var stderr strings.Builder
	c.Stderr = &stderr
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			_ = c.Process.Kill()
		case <-done:
		}
	}()
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// createDrop posts a drop of product starting at start, as its creator, and returns its id.
func createDrop(ctx context.Context, apiURL, token string, product int64, start time.Time) (int64, error) {
	body, _ := json.Marshal(map[string]any{"product_id": product, "start_time": start.UTC().Format(time.RFC3339Nano),
		"end_time": start.Add(time.Hour).UTC().Format(time.RFC3339Nano), "stock_count": 100, "max_per_user": 1})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/drops", strings.NewReader(string(body)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("POST /drops: %s: %s", resp.Status, b)
	}
	var d struct {
		DropID int64 `json:"drop_id"`
	}
	if err := json.Unmarshal(b, &d); err != nil || d.DropID == 0 {
		return 0, fmt.Errorf("POST /drops answered %s", b)
	}
	return d.DropID, nil
}

// waitMetric waits until the sum over ps of the series named want (name{labels}) reaches target.
func waitMetric(ps []*proc, want string, target float64, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		total := 0.0
		for _, p := range ps {
			total += scrape(p.addr, want)
		}
		if total >= target {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s reached %.0f of %.0f within %s", want, total, target, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scrape reads one series of a process's /metrics (0 when absent).
func scrape(addr, series string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func floatField(line, key string) float64 {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return 0
}

// startRole starts `livedrops <role>` on a free port, configured by its environment; hubs get the
// runtime settings of -hub-godebug, -hub-gogc and -hub-env, hub 0 a debug listener with -profile.
func startRole(cfg config, env serviceEnv, role, name string) (*proc, error) {
	port, err := pglocal.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := env.cmd(cfg.hubBin, role)
	cmd.Env = append(cmd.Env, "LIVEDROPS_HTTP_ADDR="+addr, "LIVEDROPS_SHUTDOWN_TIMEOUT=20s")
	debugAddr := ""
	if role == "hub" {
		cmd.Env = append(cmd.Env, "GODEBUG="+cfg.godebug, "GOGC="+cfg.gogc)
		cmd.Env = append(cmd.Env, strings.Fields(cfg.hubEnv)...)
		if cfg.profile != "" && (name == "hub-0" || name == "hub-storm") {
			dport, err := pglocal.FreePort()
			if err != nil {
				return nil, err
			}
			debugAddr = fmt.Sprintf("127.0.0.1:%d", dport)
			cmd.Env = append(cmd.Env, "LIVEDROPS_PPROF_ADDR="+debugAddr)
		}
	}
	p, err := startProc(name, cmd, cfg.dir)
	if err != nil {
		return nil, err
	}
	p.addr, p.debugAddr = addr, debugAddr
	return p, nil
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
	sumOf := func(series string) float64 {
		t := 0.0
		for _, h := range hubs {
			t += scrape(h.addr, series)
		}
		return t
	}
	batches := sumOf("livedrops_hub_follow_load_batch_users_count")
	logf("hub follow loads: %.0f batches of %.1f users on average; %.0f NATS confirmations (flushes), %.0f skipped",
		batches, sumOf("livedrops_hub_follow_load_batch_users_sum")/max(1, batches),
		sumOf("livedrops_hub_confirmations_total"), sumOf("livedrops_hub_confirmations_skipped_total"))
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
	if cfg.profile != "" {
		defer profileAsync(fresh, "profile", 8*time.Second, cfg.profile+"storm.cpu.pprof")()
	}
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
			if (strings.HasPrefix(line, "livedrops_hub_") || strings.HasPrefix(line, "go_gc_duration_seconds_count")) && !strings.HasSuffix(line, " 0") && !strings.Contains(line, "_bucket") {
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

// proc is a child process whose stdout lines are watched.
type proc struct {
	name, addr, logPath string
	debugAddr           string
	stopped             bool
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
	if p.cmd.Process == nil || p.stopped {
		return
	}
	p.stopped = true
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

// loadAvg is the machine's load average over the last minute, as /proc/loadavg has it.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
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
	nats, pg, redis := servicesCPU()
	return nats + pg + redis
}

// servicesCPU is the CPU of this process (embedded NATS and the harness), of its PostgreSQL and of its
// Redis.
func servicesCPU() (nats, pg, redis time.Duration) {
	nats = procCPU(os.Getpid())
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
			if comm == "postgres" {
				pg += procCPU(pid)
			} else {
				redis += procCPU(pid)
			}
		}
	}
	return nats, pg, redis
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
