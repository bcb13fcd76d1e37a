// Command orders is the order benchmark of LiveDrops (make bench-orders): a flash sale on one hot drop,
// through the real HTTP API, in the baseline mode (one transaction per order, at pool sizes 4, 8 and 16),
// the optimised mode (a group-commit batcher per drop and a sold-out flag in memory) and the floor (the
// least grouped order service, loadtest/orderfloor: the yardstick the product is read against),
// alternating, so every figure is compared with others measured in the same sitting.
//
// It is self-contained: it starts PostgreSQL (durable, synchronous_commit on) and Redis in a temporary
// dir, migrates, creates the buyers, a creator and a product, and then for every run starts a server
// in the mode of the run, creates a fresh drop (10,000 units, 5 per buyer), and drives closed-loop
// buyers at it, each a distinct user (a buyer whose user holds max_per_user moves on to a fresh user),
// until 50,000 attempts have been answered. Some requests are sent again with the same key, one after
// the other or two at once, and must answer the same order. After every run it checks the database:
// the units confirmed, nothing oversold, no key holding two orders, and every order a buyer was told
// about present.
//
// The server is the real binary, `livedrops all`, in the mode of the run (LIVEDROPS_ORDER_MODE), with
// the per-user write limit on (-rate-user, the default 50/s) and the per-address limit off (every buyer
// comes from 127.0.0.1); the floor runs as its own process on the same PostgreSQL.
//
// It prints one line per run (with the CPU each party spent per answered request, read from /proc, and
// the share of the machine other processes used meanwhile), the means of the server's order histograms
// (-stages), PostgreSQL's statements and wait events (-pg-stats), profiles (-pprof-dir), and at the end
//
//	RESULT confirmed=... oversold=... duplicate_orders=... orders_per_s=... selling_speedup=... speedup=... p50_ms=... p95_ms=... p99_ms=... p95_500_ms=... floor_orders_per_s=... floor_p95_ms=... floor_p95_500_ms=... selling_vs_floor=... p95_vs_floor=... p95_500_vs_floor=... server_cpu_us=... floor_cpu_us=... pg_cpu_us=... floor_pg_cpu_us=... selling_cpu_us=... floor_selling_cpu_us=... selling_cpu_vs_floor=...
//
// confirmed: the fewest units any run of the product confirmed, by the database or by the answers
// buyers got (every run should confirm the whole stock); oversold: the most any run sold beyond the
// stock; duplicate_orders: over all runs, keys answered with two different orders or holding two
// orders; orders_per_s: the optimised mode's median confirmed units per second until the stock hit 0,
// at the first (largest) buyer count; selling_speedup: that over the baseline's at its fastest pool;
// speedup: the same for attempts per second over the whole stream; p50/p95/p99: the optimised mode's
// latencies at the first buyer count (medians over its runs); p95_500_ms: its p95 at the second buyer
// count (500). The floor_ keys are the floor's, and the _vs_floor keys the product's over the floor's
// (medians over each one's runs of the same sitting). server_cpu_us is the CPU of livedrops and Redis
// per answered request (median over the runs), floor_cpu_us the floor's, pg_ the database's in each;
// selling_cpu_us is the CPU of livedrops, Redis and PostgreSQL per order confirmed until the first
// sold_out answer (the drop's selling phase), floor_selling_cpu_us the floor's with its PostgreSQL, and
// selling_cpu_vs_floor their ratio: the figure a shared machine blurs least, and what the selling rate
// hangs on when the box is CPU-bound.
// It exits 1 when a correctness check of the product failed (oversold, a duplicate, a wrong replay, a
// confirmed order missing from the database, or a run that did not sell the whole stock), after
// printing the RESULT line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	bin        string
	runs       int
	attempts   int
	stock      int
	maxPerUser int
	buyers     []int
	pools      []int
	retryPct   float64
	dupPct     float64
	timeout    time.Duration
	keepData   bool
	serverEnv  []string
	rateUser   int
	floor      bool
	floorBin   string
	baseline   bool
	pprofDir   string
	pprofSecs  int
	pgStats    bool
	stages     bool
}

func main() {
	var o options
	var buyers, pools string
	var env stringList
	flag.StringVar(&o.bin, "bin", "bin/livedrops", "the livedrops binary")
	flag.IntVar(&o.runs, "runs", 3, "runs of each mode (and baseline pool) at each buyer count")
	flag.IntVar(&o.attempts, "attempts", 50_000, "order requests per run, retries included")
	flag.IntVar(&o.stock, "stock", 10_000, "units of each run's drop")
	flag.IntVar(&o.maxPerUser, "max-per-user", 5, "max_per_user of each run's drop")
	flag.StringVar(&buyers, "buyers", "2000,500", "closed-loop buyers, comma-separated buyer counts, in order")
	flag.StringVar(&pools, "pools", "4,8,16", "pool sizes of the baseline, comma-separated; the fastest is kept")
	flag.Float64Var(&o.retryPct, "retry-pct", 3, "percent of requests sent again with the same key after their answer")
	flag.Float64Var(&o.dupPct, "dup-pct", 1, "percent of requests sent twice at once with the same key")
	flag.DurationVar(&o.timeout, "timeout", 60*time.Second, "client timeout of one request")
	flag.BoolVar(&o.keepData, "keep-data", false, "keep the temporary dir (database, logs)")
	flag.Var(&env, "server-env", "KEY=VALUE added to the environment of `livedrops all` (repeatable)")
	flag.IntVar(&o.rateUser, "rate-user", 50, "LIVEDROPS_RATE_USER of the server: the per-user write limit, on as deployed (0: off); the per-address limit is always off")
	flag.BoolVar(&o.floor, "floor", true, "run the floor (loadtest/orderfloor) beside the product in every round, and report ratios to it")
	flag.StringVar(&o.floorBin, "floor-bin", "bin/orderfloor", "the orderfloor binary")
	flag.StringVar(&o.pprofDir, "pprof-dir", "", "take CPU, block and mutex profiles of every server while its buyers run and write them here (servers then run with pprof on)")
	flag.IntVar(&o.pprofSecs, "pprof-seconds", 4, "length of each profile (from the first order on)")
	flag.BoolVar(&o.pgStats, "pg-stats", false, "load pg_stat_statements and print, per run, the statements that took the most time and the sampled wait events of the sessions")
	flag.BoolVar(&o.stages, "stages", true, "print, per run of livedrops, the means of its order histograms (queue wait, lock wait, batch size, ...) from /metrics")
	flag.BoolVar(&o.baseline, "baseline", true, "run the one-transaction-per-order baseline (false: a quick run of the floor and batched only)")
	flag.Parse()
	var err error
	if o.buyers, err = intList(buyers); err == nil {
		o.pools, err = intList(pools)
	}
	switch {
	case err != nil:
	case o.runs < 1 || o.attempts < 1 || o.stock < 1 || o.maxPerUser < 1:
		err = errors.New("-runs, -attempts, -stock and -max-per-user must be positive")
	case o.rateUser < 0:
		err = errors.New("-rate-user must not be negative")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(2)
	}
	o.serverEnv = env
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad list %q: want positive integers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// config is one server setup under test.
type config struct {
	mode string // single, batched or floor
	pool int    // PostgreSQL pool size; 0: the server's default
}

// modeFloor runs loadtest/orderfloor instead of livedrops.
const modeFloor = "floor"

func (c config) String() string {
	if c.pool == 0 {
		return c.mode
	}
	return fmt.Sprintf("%s/pool%d", c.mode, c.pool)
}

func run(ctx context.Context, o options) error {
	st, err := startStack(ctx, o)
	if err != nil {
		return err
	}
	defer st.stop(o.keepData)
	srv, err := chooseServer(o)
	if err != nil {
		return err
	}
	fmt.Printf("server: %s; data and logs in %s\n", srv.describe(), st.dir)

	optimised := config{mode: "batched"}
	floor := config{mode: modeFloor}
	results := map[int]map[config][]runResult{}
	var bestPool map[string]config // "selling" and "stream" → the fastest baseline
	for phase, b := range o.buyers {
		var configs []config
		if o.floor {
			configs = append(configs, floor)
		}
		configs = append(configs, optimised)
		nFixed := len(configs)
		switch {
		case !o.baseline:
		case phase == 0:
			for _, p := range o.pools {
				configs = append(configs, config{mode: "single", pool: p})
			}
		default:
			configs = append(configs, bestPool["stream"])
			if bestPool["selling"] != bestPool["stream"] {
				configs = append(configs, bestPool["selling"])
			}
		}
		results[b] = map[config][]runResult{}
		for r := 1; r <= o.runs; r++ {
			for _, c := range configs {
				res, err := runOnce(ctx, o, st, srv, c, b)
				if err != nil {
					return fmt.Errorf("%s, %d buyers, run %d: %w", c, b, r, err)
				}
				fmt.Printf("run %d buyers=%d %s\n", r, b, res)
				results[b][c] = append(results[b][c], res)
			}
		}
		if phase == 0 && o.baseline {
			bestPool = map[string]config{}
			for _, c := range configs[nFixed:] {
				for metric, value := range map[string]func([]runResult) float64{"selling": medianSelling, "stream": medianStream} {
					if best, ok := bestPool[metric]; !ok || value(results[b][c]) > value(results[b][best]) {
						bestPool[metric] = c
					}
				}
			}
			fmt.Printf("fastest baseline at %d buyers: %s while selling, %s over the whole stream\n",
				b, bestPool["selling"], bestPool["stream"])
		}
	}

	// The summary.
	first := o.buyers[0]
	opt := results[first][optimised]
	confirmed, oversold, duplicates, wrong, missing, errs := o.stock, 0, 0, 0, 0, 0
	for _, byConfig := range results {
		for c, rs := range byConfig {
			if c.mode == modeFloor {
				continue // the yardstick's own books are printed per run, not the product's figures
			}
			for _, r := range rs {
				confirmed = min(confirmed, r.confirmedDB, r.confirmed)
				oversold = max(oversold, r.oversold)
				duplicates += r.duplicates
				wrong += r.wrongReplays
				missing += r.missing
				errs += r.errors
			}
		}
	}
	baseSelling := medianSelling(results[first][bestPool["selling"]])
	baseStream := medianStream(results[first][bestPool["stream"]])
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	p95 := func(rs []runResult) float64 { return medianOf(rs, func(r runResult) float64 { return ms(r.p95) }) }
	p95of500, floorP95of500 := 0.0, 0.0
	if len(o.buyers) > 1 {
		p95of500 = p95(results[o.buyers[1]][optimised])
		floorP95of500 = p95(results[o.buyers[1]][floor])
	}
	flr := results[first][floor]
	cpu := func(rs []runResult, party func(cpuSample) time.Duration) float64 {
		return medianOf(rs, func(r runResult) float64 { return r.cpuPerAttempt(party(r.cpu)) })
	}
	sellCPU := func(rs []runResult, party func(cpuSample) time.Duration) float64 {
		return medianOf(rs, func(r runResult) float64 { return r.cpuPerOrderSelling(party(r.sellCPU)) })
	}
	serverCPU := func(c cpuSample) time.Duration { return c.server }
	pgCPU := func(c cpuSample) time.Duration { return c.pg }
	redisCPU := func(c cpuSample) time.Duration { return c.redis }
	allButGenerator := func(c cpuSample) time.Duration { return c.server + c.pg + c.redis }
	for _, b := range o.buyers {
		for c, rs := range results[b] {
			fmt.Printf("median buyers=%d %-14s selling_orders_per_s=%.0f attempts_per_s=%.0f p50_ms=%.1f p95_ms=%.1f p99_ms=%.1f "+
				"cpu_us_per_attempt server=%.0f pg=%.0f redis=%.0f cpu_us_per_order_selling server=%.0f pg=%.0f redis=%.0f "+
				"others_cpu_pct=%.0f\n",
				b, c, medianSelling(rs), medianStream(rs),
				medianOf(rs, func(r runResult) float64 { return ms(r.p50) }), p95(rs),
				medianOf(rs, func(r runResult) float64 { return ms(r.p99) }),
				cpu(rs, serverCPU), cpu(rs, pgCPU), cpu(rs, redisCPU),
				sellCPU(rs, serverCPU), sellCPU(rs, pgCPU), sellCPU(rs, redisCPU), medianOf(rs, runResult.othersPct))
		}
	}
	fmt.Printf("RESULT confirmed=%d oversold=%d duplicate_orders=%d orders_per_s=%.0f selling_speedup=%.2f speedup=%.2f "+
		"p50_ms=%.1f p95_ms=%.1f p99_ms=%.1f p95_500_ms=%.1f floor_orders_per_s=%.0f floor_p95_ms=%.1f "+
		"floor_p95_500_ms=%.1f selling_vs_floor=%.2f p95_vs_floor=%.2f p95_500_vs_floor=%.2f "+
		"server_cpu_us=%.0f floor_cpu_us=%.0f pg_cpu_us=%.0f floor_pg_cpu_us=%.0f "+
		"selling_cpu_us=%.0f floor_selling_cpu_us=%.0f selling_cpu_vs_floor=%.2f\n",
		confirmed, oversold, duplicates, medianSelling(opt), ratio(medianSelling(opt), baseSelling),
		ratio(medianStream(opt), baseStream),
		medianOf(opt, func(r runResult) float64 { return ms(r.p50) }), p95(opt),
		medianOf(opt, func(r runResult) float64 { return ms(r.p99) }), p95of500,
		medianSelling(flr), p95(flr), floorP95of500,
		ratio(medianSelling(opt), medianSelling(flr)), ratio(p95(opt), p95(flr)), ratio(p95of500, floorP95of500),
		cpu(opt, func(c cpuSample) time.Duration { return c.server + c.redis }),
		cpu(flr, serverCPU), cpu(opt, pgCPU), cpu(flr, pgCPU),
		sellCPU(opt, allButGenerator), sellCPU(flr, allButGenerator),
		ratio(sellCPU(opt, allButGenerator), sellCPU(flr, allButGenerator)))
	if oversold > 0 || duplicates > 0 || wrong > 0 || missing > 0 || confirmed != o.stock {
		return fmt.Errorf("correctness: confirmed %d of %d (fewest in a run), oversold %d, duplicate orders %d, "+
			"wrong replays %d, confirmed orders missing from the database %d", confirmed, o.stock, oversold, duplicates, wrong, missing)
	}
	if errs > 0 {
		fmt.Printf("note: %d requests failed (5xx or transport) over all runs; see the per-run answers\n", errs)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func medianSelling(rs []runResult) float64 {
	return medianOf(rs, func(r runResult) float64 { return r.sellingPerSec })
}

func medianStream(rs []runResult) float64 {
	return medianOf(rs, func(r runResult) float64 { return r.attemptsPerSec })
}

// medianOf is the median of f over rs (the mean of the middle two for an even count); 0 for none.
func medianOf(rs []runResult, f func(runResult) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
