// Package faults_test is the multi-process fault test: the real livedrops binary as two api, two hub and
// two worker processes over PostgreSQL, Redis (one server, or a Redis Cluster) and a three-node NATS
// cluster with JetStream (stream replicas 3), a steady load of orders on hot drops, a few thousand
// followers' sockets spread over both hubs, and followers with no socket whose devices the workers push
// to through the providers' stand-ins (push_test.go); then faults, one at a time, with the invariants
// checked after each from the database, the clients' logs and the stand-ins' records. RELIABILITY.md
// describes each fault, its promise and how this test checks it.
//
// `go test ./loadtest/faults` (part of `make test`) runs the short version: fewer sockets, shorter
// phases, one Redis server. `make test-faults` runs the whole of it (-faults.full): more sockets and
// load, and the run again on a Redis Cluster with a master killed.
package faults_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout/push/pushtest"
)

var (
	full       = flag.Bool("faults.full", false, "run the whole fault test (make test-faults), not the short version")
	reportPath = flag.String("faults.report", "", "append the figures of each phase to this file")
	keepDir    = flag.String("faults.dir", "", "keep the work directory (logs of every process) under this directory")
	only       = flag.String("faults.phases", "", "run only the phases whose names match this regular expression (steady always runs)")
)

// params size a run.
type params struct {
	followers  int           // sockets, one per follower
	offline    int           // followers with no socket and a device each (push_test.go)
	buyers     int           // buyer goroutines
	pace       time.Duration // mean pause between one buyer's intents
	stock      int           // units of each hot drop
	warm, cool time.Duration // load before and after each fault
}

func runParams() params {
	if *full {
		return params{followers: 3000, offline: 600, buyers: 12, pace: 60 * time.Millisecond, stock: 1500, warm: 3 * time.Second, cool: 3 * time.Second}
	}
	return params{followers: 1000, offline: 200, buyers: 6, pace: 60 * time.Millisecond, stock: 600, warm: 2 * time.Second, cool: 2 * time.Second}
}

func TestFaults(t *testing.T) {
	p := runParams()
	t.Run("redis", func(t *testing.T) { runFaults(t, p, false) })
	if *full {
		t.Run("redis-cluster", func(t *testing.T) { runFaults(t, p, true) })
	}
}

// run is one fault test over one stack.
type run struct {
	t       *testing.T
	p       params
	s       *stack
	w       *world
	c       *clients
	l       *load
	pw      *pushWorld
	pushAt  pushtest.Stats // the stand-ins' counters at the end of the last phase
	fromRow int64          // outbox rows up to this one were written before the sockets were ready
	maxID   int64          // and their largest event id
	nextC   int64          // creator of the next hot drop
	summary []string
	seen    map[string]bool // delivery problems already reported by an earlier phase
}

func runFaults(t *testing.T, p params, cluster bool) {
	s := startStack(t, stackConfig{redisCluster: cluster, reqTimeout: 3 * time.Second})
	w := seedWorld(t, s, 4, p.followers)
	pw := seedPush(t, s, w, p.offline)
	l := newLoad(t, s, w, p.pace)
	started := time.Now()
	registerDevices(t, s, w, pw, l)
	t.Logf("%d devices registered (%d offline followers, %d of the clients' users) in %s", len(pw.offline)+len(pw.online),
		len(pw.offline), len(pw.online), time.Since(started).Round(time.Millisecond))
	started = time.Now()
	c := startClients(t, s, w, 2)
	t.Logf("%d sockets connected over 2 hubs in %s", p.followers, time.Since(started).Round(time.Millisecond))
	r := &run{t: t, p: p, s: s, w: w, c: c, l: l, pw: pw, pushAt: s.push.stats(), nextC: 1, seen: map[string]bool{}}
	if err := s.db.QueryRow(context.Background(), `SELECT coalesce(max(id), 0), coalesce(max(event_id::bigint), 0) FROM outbox`).
		Scan(&r.fromRow, &r.maxID); err != nil {
		t.Fatal(err)
	}

	var match *regexp.Regexp
	if *only != "" {
		match = regexp.MustCompile(*only)
	}
	for _, ph := range faultPhases {
		if cluster && !ph.cluster || !cluster && ph.name == "redis-cluster-master-sigkill" {
			continue
		}
		if !*full && ph.knownBug != "" {
			// make test stays green while the bug is open; make test-faults runs the phase and fails on it.
			t.Logf("short run: leaving out %s (open bug: %s)", ph.name, ph.knownBug)
			continue
		}
		if match != nil && ph.name != "steady" && !match.MatchString(ph.name) {
			continue
		}
		r.phase(ph.name, ph.fault, ph.latency) // every phase runs, so one failure shows what else holds
	}
	for _, line := range r.summary {
		t.Log(line)
	}
	if *reportPath != "" {
		f, err := os.OpenFile(*reportPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "# %s %s, %d sockets, %d buyers\n", time.Now().UTC().Format(time.RFC3339), t.Name(), p.followers, p.buyers)
		for _, line := range r.summary {
			fmt.Fprintln(f, line)
		}
		f.Close()
	}
}

// faultPhases are the faults, in order. latency is the bound on the p99 of event delivery (commit or
// start_time to receipt) for the events that happen from a second after the fault is over; 0 checks
// none (the fault delays events on purpose, or its recovery is slower than the bound: see the phase).
var faultPhases = []struct {
	name     string
	cluster  bool   // also on the Redis Cluster stack
	knownBug string // an open bug makes this phase fail: only make test-faults runs it
	latency  time.Duration
	fault    func(*run, *phase)
}{
	{"steady", true, "", 2 * time.Second, func(*run, *phase) { time.Sleep(3 * time.Second) }},
	{"hub-sigkill", true, "", 2 * time.Second, (*run).hubKill},
	{"api-sigkill", false, "", 2 * time.Second, (*run).apiKill},
	{"worker-sigkill", false, "", 2 * time.Second, (*run).workerKill},
	{"worker-sigkill-mid-push", false, "", 2 * time.Second, (*run).workerKillMidPush},
	// The relay publishes the backlog in one burst when the workers return: the hub's reordering shows.
	// fanout/relay's TestAllWorkersDownAcrossStartTime checks the stream's order in make test meanwhile.
	{"workers-down-across-start", false, "", 0, (*run).workersDown},
	{"nats-node-restart", false, "", 2 * time.Second, (*run).natsNodeRestart},
	// After the leader's SIGKILL, publications wait for the election (6 to 10 s; the phase's recovery is
	// the new leader). The relay's JetStream requests are bounded to 1 s (jetstream.PublisherConfig
	// APITimeout), so it publishes again within about a second of the election: the events from a second
	// after it are held to the promise.
	{"nats-leader-sigkill", false, "", 2 * time.Second, (*run).natsLeaderKill},
	{"redis-restart", false, "", 2 * time.Second, func(r *run, ph *phase) { r.redisRestart(ph, false) }},
	{"redis-data-loss", false, "", 2 * time.Second, func(r *run, ph *phase) { r.redisRestart(ph, true) }},
	{"redis-cluster-master-sigkill", true, "", 2 * time.Second, (*run).redisMasterKill},
	{"postgres-stop", false, "", 2 * time.Second, (*run).pgStop},
	{"slow-network", false, "", 2 * time.Second, (*run).slowNetwork},
}

// phase is what one fault's step records.
type phase struct {
	name          string
	start, end    time.Time
	faultAt       time.Time // the fault is injected
	recoveredAt   time.Time // the faulty part is back
	noDisconnects bool      // sockets must not lose their connections during the fault
	notes         []string
	skipLatency   []string // event types whose latency this fault delays on purpose
}

func (ph *phase) note(format string, args ...any) {
	ph.notes = append(ph.notes, fmt.Sprintf(format, args...))
}

// hotDrops creates n drops starting in a second and sends the orders to them.
func (r *run) hotDrops(n, stock int) []int64 {
	var ids []int64
	start := time.Now().Add(time.Second)
	for range n {
		ids = append(ids, r.l.createDrop(r.nextC, start, stock, 2))
		r.nextC = r.nextC%int64(r.w.creators) + 1
	}
	r.l.setHot(ids...)
	return ids
}

// phase runs one fault under load and checks every invariant after it.
func (r *run) phase(name string, fault func(*run, *phase), bound time.Duration) {
	t := r.t
	ph := &phase{name: name, start: time.Now()}
	failed := false
	fail := func(format string, args ...any) {
		t.Helper()
		failed = true
		t.Errorf(format, args...)
	}
	r.hotDrops(2, r.p.stock)
	time.Sleep(1200 * time.Millisecond) // the drops start
	r.l.start(r.p.buyers)
	time.Sleep(r.p.warm)
	ph.faultAt = time.Now()
	fault(r, ph)
	if ph.recoveredAt.IsZero() {
		ph.recoveredAt = time.Now()
	}
	time.Sleep(max(r.p.cool, time.Until(ph.recoveredAt.Add(r.p.cool+time.Second))))
	r.l.halt()
	ph.end = time.Now()
	answers, slow := r.l.takeAnswers()

	// Settle: every socket connected again, the outbox published, every event delivered.
	ctx := context.Background()
	checkFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		var pending int
		if err := r.s.db.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL`).Scan(&pending); err != nil {
			return err
		}
		if pending > 0 {
			return fmt.Errorf("%s: %d outbox rows pending", name, pending)
		}
		if n := r.c.sync(); n != r.p.followers {
			return fmt.Errorf("%s: %d of %d sockets connected", name, n, r.p.followers)
		}
		return nil
	})
	exp := expectedEvents(t, r.s, r.fromRow)
	var logs clientLogs
	var d delivery
	deadline := time.Now().Add(time.Minute)
	for {
		r.c.sync()
		logs = readClientLogs(t, r.c)
		d = checkDelivery(r.w, exp, logs, r.maxID)
		if d.missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	var fresh []string
	for _, p := range d.problems {
		if !r.seen[p] {
			r.seen[p] = true
			fresh = append(fresh, p)
		}
	}
	if len(fresh) > 0 || d.parked > 0 || d.unpublished > 0 {
		fail("%s: deliveries (all since the sockets connected): %s; new in this phase: %d, e.g. %v", name, d,
			len(fresh), fresh[:min(len(fresh), 8)])
	}
	pc := r.checkPushes(ctx, time.Minute)
	var freshPush []string
	for _, p := range pc.problems {
		if !r.seen[p] {
			r.seen[p] = true
			freshPush = append(freshPush, p)
		}
	}
	if len(freshPush) > 0 {
		fail("%s: pushes (all since the sockets connected): %s; new in this phase: %d, e.g. %v", name, pc,
			len(freshPush), freshPush[:min(len(freshPush), 8)])
	}
	pushAt := r.s.push.stats()
	pushLine := fmt.Sprintf("push_pairs_total=%d push_missing=%d push_twice=%d push_online=%d %s", pc.expected, pc.missing,
		pc.twice, pc.online, pushFigures(pushAt, r.pushAt))
	r.pushAt = pushAt
	confirmed, refused, problems := r.l.checkOrders(ctx)
	for i, p := range problems {
		if !r.seen[p] && i < 20 {
			fail("%s: orders: %s", name, p)
		}
		r.seen[p] = true
	}
	for label, n := range answers {
		if strings.HasPrefix(label, "5") && !strings.HasPrefix(label, "503 ") || strings.Contains(label, "not-problem-json") {
			fail("%s: %d answers %q (a 5xx other than 503, or not problem+json); the apis' errors:\n%s", name, n, label,
				r.s.apiErrors(10))
		}
	}
	if len(slow) > 0 {
		fail("%s: %d answers past the request timeout (%s), e.g. %v", name, len(slow), r.s.reqLimit, slow[:min(3, len(slow))])
	}
	if ph.noDisconnects {
		for _, dr := range logs.drops {
			if dr.at >= ph.faultAt.UnixMilli() && dr.at <= ph.recoveredAt.UnixMilli() {
				fail("%s: socket of user %d lost its connection during the fault: %s", name, dr.user, dr.reason)
				break
			}
		}
	}
	var disconnects int
	for _, dr := range logs.drops {
		if dr.at >= ph.start.UnixMilli() && dr.at <= ph.end.UnixMilli() {
			disconnects++
		}
	}
	after := latencies(logs, ph.recoveredAt.Add(time.Second).UnixMilli(), ph.end.UnixMilli(), ph.skipLatency...)
	if bound > 0 && len(after) > 0 && pct(after, 0.99) > float64(bound.Milliseconds()) {
		fail("%s: delivery p99 %.0f ms after the recovery, want at most %s", name, pct(after, 0.99), bound)
	}
	all := latencies(logs, ph.start.UnixMilli(), ph.end.UnixMilli(), ph.skipLatency...)
	keys := make([]string, 0, len(answers))
	for k := range answers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var ans []string
	for _, k := range keys {
		ans = append(ans, fmt.Sprintf("%s:%d", strings.ReplaceAll(k, " ", "/"), answers[k]))
	}
	line := fmt.Sprintf("PHASE %s ok=%v took_s=%.1f answers=%s orders_confirmed_total=%d refused_total=%d deliveries_total=%d "+
		"missing=%d twice=%d resumes_total=%d disconnects=%d latency_ms_p50=%.0f p99=%.0f max=%.0f after_recovery_p99=%.0f max=%.0f %s %s",
		name, !failed, ph.end.Sub(ph.start).Seconds(), strings.Join(ans, ","), confirmed, refused, d.delivered,
		d.missing, d.duplicates, d.resumes, disconnects, pct(all, 0.5), pct(all, 0.99), pct(all, 1), pct(after, 0.99), pct(after, 1),
		pushLine, strings.Join(ph.notes, "; "))
	t.Log(line)
	r.summary = append(r.summary, line)
}

// hubKill SIGKILLs one hub: its sockets reconnect to the other and resume; then it comes back.
func (r *run) hubKill(ph *phase) {
	h := r.s.hubs[1]
	h.kill()
	checkFor(r.t, time.Minute, 200*time.Millisecond, func() error {
		if n := r.c.sync(); n != r.p.followers {
			return fmt.Errorf("%d of %d sockets connected", n, r.p.followers)
		}
		return nil
	})
	ph.note("sockets_back_s=%.1f", time.Since(ph.faultAt).Seconds())
	h.start()
	h.waitReady(r.t, time.Minute)
	ph.recoveredAt = time.Now()
}

// apiKill SIGKILLs one api while orders go to it; intents retry on the other; then it comes back.
func (r *run) apiKill(ph *phase) {
	a := r.s.apis[0]
	a.kill()
	time.Sleep(2 * time.Second)
	a.start()
	a.waitReady(r.t, time.Minute)
	ph.recoveredAt = time.Now()
}

// workerKill SIGKILLs the worker whose relay leads; the other takes over; then it comes back.
func (r *run) workerKill(ph *phase) {
	w := r.s.relayLeader()
	w.kill()
	var other *role
	checkFor(r.t, time.Minute, 100*time.Millisecond, func() error {
		for _, x := range r.s.workers {
			if x != w {
				if v, err := x.metric("livedrops_relay_leader"); err == nil && v == 1 {
					other = x
					return nil
				}
			}
		}
		return fmt.Errorf("no other worker leads the relay")
	})
	ph.note("relay_takeover_s=%.1f (%s)", time.Since(ph.faultAt).Seconds(), other.name)
	w.start()
	w.waitReady(r.t, time.Minute)
	ph.recoveredAt = time.Now()
}

// workersDown stops every worker across a drop's start_time; the drop sells out meanwhile; when the
// workers return, drop.started goes out once, before its stock.low and drop.soldout.
func (r *run) workersDown(ph *phase) {
	for _, w := range r.s.workers {
		w.kill()
	}
	ph.skipLatency = []string{"drop.started", "drop.scheduled", "stock.low", "drop.soldout", "order.confirmed"}
	late := r.l.createDrop(r.nextC, time.Now().Add(time.Second), 40, 2)
	r.nextC = r.nextC%int64(r.w.creators) + 1
	r.l.mu.Lock()
	hot := append([]int64{late}, r.l.hot...)
	r.l.mu.Unlock()
	r.l.setHot(hot...)
	checkFor(r.t, time.Minute, 100*time.Millisecond, func() error {
		var status string
		if err := r.s.db.QueryRow(context.Background(), `SELECT status FROM drops WHERE drop_id = $1`, late).Scan(&status); err != nil {
			return err
		}
		if status != "sold_out" {
			return fmt.Errorf("drop %d is %s", late, status)
		}
		return nil
	})
	ph.note("drop %d sold out while every worker was down", late)
	for _, w := range r.s.workers {
		w.start()
	}
	for _, w := range r.s.workers {
		w.waitReady(r.t, time.Minute)
	}
	ph.recoveredAt = time.Now()
}

// natsNodeRestart stops a NATS node that does not lead the stream, then starts it again.
func (r *run) natsNodeRestart(ph *phase) {
	leader := r.s.streamLeader()
	var nd *natsNode
	for _, n := range r.s.nats {
		if n != leader {
			nd = n
			break
		}
	}
	nd.stop(30 * time.Second)
	time.Sleep(3 * time.Second)
	nd.start()
	nd.waitHealthy(r.t, time.Minute)
	r.s.waitStream(time.Minute)
	ph.note("stopped %s (not the stream leader)", nd.name)
	ph.recoveredAt = time.Now()
}

// natsLeaderKill SIGKILLs the node leading the stream; another is elected; then it comes back.
func (r *run) natsLeaderKill(ph *phase) {
	leader := r.s.streamLeader()
	leader.kill()
	checkFor(r.t, time.Minute, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		info, err := r.s.streamInfo(ctx)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == leader.name {
			return fmt.Errorf("no new stream leader yet")
		}
		return nil
	})
	ph.recoveredAt = time.Now()
	ph.note("killed leader %s; new leader after %.1fs", leader.name, time.Since(ph.faultAt).Seconds())
	time.Sleep(time.Second)
	leader.start()
	leader.waitHealthy(r.t, time.Minute)
	r.s.waitStream(time.Minute)
	ph.note("back with 3 current replicas after %.1fs", time.Since(ph.faultAt).Seconds())
}

// redisRestart stops Redis for a few seconds (with its data, or losing it); orders keep being served
// (rate limits fail open, reads fall back to PostgreSQL), and presence is rebuilt.
func (r *run) redisRestart(ph *phase, lose bool) {
	ph.noDisconnects = true
	r.s.redis.restart(r.t, 3*time.Second, lose)
	ph.recoveredAt = time.Now()
	r.checkPresence(ph)
}

// redisMasterKill kills a master of the Redis Cluster; its replica takes over; then it comes back.
func (r *run) redisMasterKill(ph *phase) {
	ph.noDisconnects = true
	restart := r.s.redis.killMaster(r.t)
	ph.note("replica promoted after %.1fs", time.Since(ph.faultAt).Seconds())
	restart()
	ph.recoveredAt = time.Now()
	r.checkPresence(ph)
}

// checkPresence waits until every connected follower reads online in Redis again.
func (r *run) checkPresence(ph *phase) {
	cl := r.s.redis.client()
	ids := r.w.followerIDs()
	sample := []int64{ids[0], ids[len(ids)/3], ids[len(ids)/2], ids[len(ids)-1]}
	checkFor(r.t, 45*time.Second, 500*time.Millisecond, func() error {
		for _, u := range sample {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			hubs, err := cl.hkeys(ctx, fmt.Sprintf("ld:presence:user:%d", u))
			cancel()
			if err != nil {
				return err
			}
			if len(hubs) == 0 {
				return fmt.Errorf("user %d has a socket but no presence", u)
			}
		}
		return nil
	})
	ph.note("presence_back_s=%.1f", time.Since(ph.recoveredAt).Seconds())
}

// pgStop stops PostgreSQL for a few seconds: writes answer 503 problem+json within the request
// timeout, cached reads still answer, sockets stay open; everything recovers when it returns.
func (r *run) pgStop(ph *phase) {
	ph.noDisconnects = true
	product := r.s.apis[0].base() + "/products/1"
	if a := r.l.get(product); a.status != http.StatusOK {
		r.t.Fatalf("GET /products/1 before the stop: %+v", a)
	}
	r.s.stopPG()
	down := time.Now()
	var reads, readsOK int
	for time.Since(down) < 4*time.Second {
		a := r.l.get(product)
		reads++
		if a.status == http.StatusOK {
			readsOK++
		} else if a.err != nil || a.status != http.StatusServiceUnavailable || !strings.HasPrefix(a.contentType, "application/problem+json") {
			r.t.Errorf("GET /products/1 with PostgreSQL down: %+v", a)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.s.startPG()
	ph.recoveredAt = time.Now()
	ph.note("cached product reads answered %d/%d while PostgreSQL was down", readsOK, reads)
	if readsOK == 0 {
		r.t.Errorf("no cached read answered while PostgreSQL was down")
	}
}

// slowNetwork adds latency to every connection to PostgreSQL and NATS, then cuts them all briefly.
func (r *run) slowNetwork(ph *phase) {
	proxies := []*proxy{r.s.pgProxy}
	for _, nd := range r.s.nats {
		proxies = append(proxies, nd.proxy)
	}
	for _, p := range proxies {
		p.setLatency(100 * time.Millisecond)
	}
	time.Sleep(4 * time.Second)
	for _, p := range proxies {
		p.cut(time.Second)
	}
	time.Sleep(time.Second)
	for _, p := range proxies {
		p.setLatency(0)
	}
	ph.note("latency 100ms each way for 4s, then every connection cut and refused for 1s")
	ph.recoveredAt = time.Now()
}

func (l *load) get(url string) answer {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return answer{err: err}
	}
	return l.do(req)
}
