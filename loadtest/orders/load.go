package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runResult is one run: one server config, one buyer count, one fresh drop.
type runResult struct {
	config         config
	buyers         int
	attempts       int
	elapsed        time.Duration
	confirmed      int // units of the orders buyers were told about (distinct order ids)
	confirmedDB    int // units of the drop's confirmed orders in the database
	oversold       int
	duplicates     int // keys answered with two orders, or holding two in the database
	wrongReplays   int // retries of a key not answered with its order
	missing        int // orders a buyer was told about that the database does not hold
	errors         int // transport errors and 5xx
	sellingPerSec  float64
	attemptsPerSec float64
	p50, p95, p99  time.Duration
	codes          map[string]int
	cpu            cpuSample // spent while the buyers ran
	// sellCPU is what was spent until the first sold_out answer, when sellOrders orders had been
	// confirmed: the CPU each order costs while the drop sells.
	sellCPU    cpuSample
	sellOrders int
}

// cpuPerOrderSelling is a party's CPU per order confirmed while the drop sold, in µs.
func (r runResult) cpuPerOrderSelling(d time.Duration) float64 {
	if r.sellOrders == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(r.sellOrders)
}

// cpuPerAttempt is a party's CPU per answered request, in µs.
func (r runResult) cpuPerAttempt(d time.Duration) float64 {
	if r.attempts == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(r.attempts)
}

// othersPct is the share of the machine's CPU used by processes outside the run while it ran.
func (r runResult) othersPct() float64 {
	c := r.cpu
	if c.machineAll <= 0 {
		return 0
	}
	others := c.machineBusy - c.server - c.pg - c.redis - c.self
	return 100 * max(0, others.Seconds()) / c.machineAll.Seconds()
}

func (r runResult) String() string {
	return fmt.Sprintf("%-14s attempts=%d elapsed_s=%.2f confirmed=%d confirmed_db=%d oversold=%d duplicates=%d "+
		"wrong_replays=%d missing=%d errors=%d selling_orders_per_s=%.0f attempts_per_s=%.0f p50_ms=%.1f p95_ms=%.1f "+
		"p99_ms=%.1f cpu_us_per_attempt server=%.0f pg=%.0f redis=%.0f generator=%.0f "+
		"cpu_us_per_order_selling server=%.0f pg=%.0f redis=%.0f generator=%.0f others_cpu_pct=%.0f answers=%v",
		r.config, r.attempts, r.elapsed.Seconds(), r.confirmed, r.confirmedDB, r.oversold, r.duplicates,
		r.wrongReplays, r.missing, r.errors, r.sellingPerSec, r.attemptsPerSec, ms(r.p50), ms(r.p95), ms(r.p99),
		r.cpuPerAttempt(r.cpu.server), r.cpuPerAttempt(r.cpu.pg), r.cpuPerAttempt(r.cpu.redis),
		r.cpuPerAttempt(r.cpu.self), r.cpuPerOrderSelling(r.sellCPU.server), r.cpuPerOrderSelling(r.sellCPU.pg),
		r.cpuPerOrderSelling(r.sellCPU.redis), r.cpuPerOrderSelling(r.sellCPU.self), r.othersPct(), r.codes)
}

var runSeq atomic.Int64

// runOnce starts a server for c, sells a fresh drop to buyers, stops the server and checks the books.
func runOnce(ctx context.Context, o options, st *stack, kind serverKind, c config, buyers int) (runResult, error) {
	name := fmt.Sprintf("run%02d-%s-%d", runSeq.Add(1), c.mode, c.pool)
	srv, err := kind.start(ctx, st, c, name)
	if err != nil {
		return runResult{}, err
	}
	floor := c.mode == modeFloor
	dropID, err := st.newDrop(ctx, o.stock, o.maxPerUser, floor)
	if err != nil {
		_ = srv.stop()
		return runResult{}, err
	}
	meter := cpuMeter{server: srv.cmd.Process.Pid, pg: st.pg.PID(), redis: st.redis.PID()}
	profiled := make(chan struct{})
	meter.onStart = func() {
		if srv.pprof == "" {
			close(profiled)
			return
		}
		go func() {
			defer close(profiled)
			takeProfiles(srv.pprof, filepath.Join(o.pprofDir, name), o.pprofSecs)
		}()
	}
	var waits func() string
	stopWaits := make(chan struct{})
	if o.pgStats {
		if _, err := st.pool.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
			_ = srv.stop()
			return runResult{}, err
		}
		waits = st.pgWaits(ctx, stopWaits)
	}
	res, ids := drive(ctx, o, st, srv.base, dropID, buyers, meter)
	close(stopWaits)
	<-profiled
	if o.stages && !floor {
		fmt.Printf("  %s %s\n", name, stages(srv.base))
	}
	if o.pgStats {
		fmt.Printf("  %s %s\n", name, waits())
		st.pgStatements(ctx, os.Stdout, res.attempts)
	}
	if err := srv.stop(); err != nil {
		return runResult{}, err
	}
	if ctx.Err() != nil {
		return runResult{}, ctx.Err()
	}
	res.config = c
	b, err := st.books(ctx, dropID, floor)
	if err != nil {
		return runResult{}, err
	}
	res.confirmedDB = b.confirmed
	res.oversold = max(0, b.confirmed-o.stock, res.confirmed-o.stock)
	if b.stock+b.confirmed != o.stock {
		fmt.Printf("WARNING: the books of drop %d do not balance: stock %d + confirmed %d != %d\n", dropID, b.stock, b.confirmed, o.stock)
	}
	res.duplicates += b.keysWithTwo
	found, err := st.hasOrders(ctx, dropID, ids, floor)
	if err != nil {
		return runResult{}, err
	}
	res.missing = len(ids) - found
	return res, nil
}

// answer is one response as the generator saw it.
type answer struct {
	status   int
	orderID  int64
	replayed bool
	code     string // problem code, or "transport"
	latency  time.Duration
	end      time.Duration // since the start of the run
}

func (a answer) confirmed() bool { return a.status == http.StatusCreated }
func (a answer) failed() bool    { return a.status == 0 || a.status >= 500 }
func (a answer) label() string {
	switch {
	case a.status == 0:
		return "transport"
	case a.confirmed() && a.replayed:
		return "201_replayed"
	case a.code != "":
		return strconv.Itoa(a.status) + "_" + a.code
	}
	return strconv.Itoa(a.status)
}

// buyer is one closed-loop buyer: a distinct user at a time, moving to its next user once the current
// one holds max_per_user units.
type buyer struct {
	id     int
	users  []int // indexes into stack.users
	cur    int
	held   int
	rng    *rand.Rand
	client *http.Client

	latencies []time.Duration
	codes     map[string]int
	fresh     map[int64]time.Duration // order id → when the buyer learnt of it (first answer)
	// sold counts fresh confirmations over all buyers; soldOut is called at every sold_out answer.
	sold    *atomic.Int64
	soldOut func()
	// Tallies.
	duplicates, wrongReplays, errors int
}

// drive runs buyers closed-loop until o.attempts requests have been answered and returns the
// measurements with the ids of every order a buyer was told about.
func drive(ctx context.Context, o options, st *stack, base string, dropID int64, buyers int, meter cpuMeter) (runResult, []int64) {
	transport := &http.Transport{MaxIdleConns: 2 * buyers, MaxIdleConnsPerHost: 2 * buyers,
		IdleConnTimeout: 5 * time.Minute, DisableCompression: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: o.timeout}
	bs := make([]*buyer, buyers)
	var sold atomic.Int64
	var sellOnce sync.Once
	var sellCPU cpuSample
	var sellOrders int
	var cpuBefore cpuSample
	soldOut := func() {
		sellOnce.Do(func() { sellCPU, sellOrders = meter.sample().sub(cpuBefore), int(sold.Load()) })
	}
	for i := range bs {
		b := &buyer{id: i, rng: rand.New(rand.NewPCG(uint64(i), uint64(dropID))), client: client,
			codes: map[string]int{}, fresh: map[int64]time.Duration{}, sold: &sold, soldOut: soldOut}
		for u := i; u < len(st.users); u += buyers {
			b.users = append(b.users, u)
		}
		bs[i] = b
	}
	// Open every buyer's connection first, so the run measures orders, not TCP handshakes.
	var wg sync.WaitGroup
	for range bs {
		wg.Go(func() {
			if resp, err := client.Get(base + "/healthz"); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()

	var tickets atomic.Int64
	take := func(n int64) bool { return tickets.Add(n) <= int64(o.attempts) }
	cpuBefore = meter.sample()
	if meter.onStart != nil {
		meter.onStart()
	}
	start := time.Now()
	for _, b := range bs {
		wg.Go(func() { b.loop(ctx, base, dropID, st, o, start, take) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := meter.sample().sub(cpuBefore)

	soldOut() // a run that never sold out counts the whole run
	res := runResult{buyers: buyers, elapsed: elapsed, codes: map[string]int{}, cpu: cpu, sellCPU: sellCPU,
		sellOrders: sellOrders}
	var all []time.Duration
	var ids []int64
	var lastFresh time.Duration
	for _, b := range bs {
		all = append(all, b.latencies...)
		for k, n := range b.codes {
			res.codes[k] += n
		}
		for id, at := range b.fresh {
			ids = append(ids, id)
			lastFresh = max(lastFresh, at)
		}
		res.duplicates += b.duplicates
		res.wrongReplays += b.wrongReplays
		res.errors += b.errors
	}
	res.attempts = len(all)
	res.confirmed = len(ids) // quantity 1 each
	slices.Sort(all)
	pct := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(p*float64(len(all))))]
	}
	res.p50, res.p95, res.p99 = pct(0.50), pct(0.95), pct(0.99)
	res.attemptsPerSec = float64(res.attempts) / elapsed.Seconds()
	if lastFresh > 0 {
		res.sellingPerSec = float64(res.confirmed) / lastFresh.Seconds()
	}
	return res, ids
}

// loop places orders until the tickets run out. Each attempt is a new key; some are sent again after
// their answer, some twice at once, and every copy must answer the key's one order.
func (b *buyer) loop(ctx context.Context, base string, dropID int64, st *stack, o options, start time.Time, take func(int64) bool) {
	for n := 0; ctx.Err() == nil; n++ {
		user := b.users[b.cur%len(b.users)]
		// Keys are unique per run: the users buy again in the next run, on another drop.
		drop := strconv.FormatInt(dropID, 10)
		body := []byte(`{"drop_id":` + drop + `,"quantity":1,"idempotency_key":"d` + drop + "-b" +
			strconv.Itoa(b.id) + "-" + strconv.Itoa(n) + `"}`)
		roll := b.rng.Float64() * 100
		var first answer
		switch {
		case roll < o.dupPct:
			if !take(2) {
				return
			}
			var second answer
			var wg sync.WaitGroup
			wg.Go(func() { second = b.post(ctx, base, st.tokens[user], body, start) })
			first = b.post(ctx, base, st.tokens[user], body, start)
			wg.Wait()
			b.tally(first, second)
			b.checkPair(first, second)
			if !first.confirmed() || first.replayed {
				first = second // the one that says what the key got
			}
		default:
			if !take(1) {
				return
			}
			first = b.post(ctx, base, st.tokens[user], body, start)
			b.tally(first)
			b.record(first)
			if roll < o.dupPct+o.retryPct && take(1) {
				again := b.post(ctx, base, st.tokens[user], body, start)
				b.tally(again)
				b.checkRetry(first, again)
				if first.failed() {
					first = again
				}
			}
		}
		switch {
		case first.confirmed():
			if b.held++; b.held >= o.maxPerUser {
				b.cur, b.held = b.cur+1, 0
			}
		case first.code == "limit_exceeded":
			b.cur, b.held = b.cur+1, 0
		}
	}
}

// post sends one order and reads its answer. It touches nothing of b but its client, so two may run
// at once.
func (b *buyer) post(ctx context.Context, base, auth string, body []byte, start time.Time) answer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/orders", bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	t := time.Now()
	resp, err := b.client.Do(req)
	var a answer
	if err == nil {
		var raw []byte
		raw, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		a.status = resp.StatusCode
		a.replayed = resp.Header.Get("Idempotent-Replayed") == "true"
		var v struct {
			OrderID int64  `json:"order_id"`
			Code    string `json:"code"`
		}
		if err == nil && json.Unmarshal(raw, &v) == nil {
			a.orderID, a.code = v.OrderID, v.Code
		}
	}
	now := time.Now()
	a.latency, a.end = now.Sub(t), now.Sub(start)
	if err != nil {
		a.status, a.code = 0, "transport"
	}
	return a
}

// tally counts an answer in the buyer's figures (from the buyer's own goroutine).
func (b *buyer) tally(as ...answer) {
	for _, a := range as {
		b.latencies = append(b.latencies, a.latency)
		b.codes[a.label()]++
		if a.failed() {
			b.errors++
		}
		if a.code == "sold_out" && b.soldOut != nil {
			b.soldOut()
		}
	}
}

// record notes a confirmation: a new order id is a fresh sale, a replay must name a known order.
func (b *buyer) record(a answer) {
	if !a.confirmed() {
		return
	}
	if _, known := b.fresh[a.orderID]; !known {
		b.fresh[a.orderID] = a.end
		if b.sold != nil {
			b.sold.Add(1)
		}
	}
}

// checkRetry compares a key's second answer with its first.
func (b *buyer) checkRetry(first, again answer) {
	switch {
	case first.failed(): // the first outcome is unknown: whatever the retry says is the key's
		b.record(again)
	case first.confirmed() && again.confirmed() && again.orderID != first.orderID:
		b.duplicates++ // two orders for one key
		b.record(again)
	case first.confirmed() && (!again.confirmed() || !again.replayed):
		b.wrongReplays++
	case !first.confirmed() && again.confirmed():
		b.wrongReplays++ // refusals are final for a request: stock only falls, totals only grow
		b.record(again)
	}
}

// checkPair compares the answers of one key sent twice at once.
func (b *buyer) checkPair(x, y answer) {
	switch {
	case x.failed() || y.failed():
		b.record(x)
		b.record(y)
	case x.confirmed() && y.confirmed() && x.orderID != y.orderID:
		b.duplicates++
		b.record(x)
		b.record(y)
	case x.confirmed() && y.confirmed():
		if x.replayed == y.replayed {
			b.wrongReplays++ // exactly one is the order's first answer
		}
		b.record(x)
	case x.confirmed() || y.confirmed():
		b.wrongReplays++ // one key, one outcome
		b.record(x)
		b.record(y)
	}
}
