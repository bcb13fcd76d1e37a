// Command events measures the event pipeline of issue 5 on a stack it starts itself (PostgreSQL and an
// embedded NATS in a temporary folder, removed after): the outbox relay's commit-to-stream latency
// under a steady load of outbox rows, and how late drop.started reaches the stream after start_time for
// drops scheduled a few seconds ahead, started by the drop scheduler while the load runs. It runs once
// with JetStream syncing every write ("always", the default of `livedrops all`) and once syncing on an
// interval (the NATS default, 2m), and prints one line:
//
//	RESULT relay_p50_ms=... relay_p99_ms=... start_lag_p50_ms=... start_lag_p99_ms=... start_commit_p99_ms=... lost=0 duplicates=0 rows_per_s=... interval_...
//
// Unlike the other load generators it imports LiveDrops packages: the relay and the scheduler run in
// this process exactly as the worker role runs them (same packages, default configuration), with
// pglocal and natslocal for the stack. A consumer reads the stream with an ordered JetStream consumer:
// relay latency is from a writer's COMMIT returning to the consumer receiving the stored message; start
// lag from the drop's start_time to the consumer receiving drop.started, start_commit the scheduler's
// part of it (start_time → its transaction committed); lost counts rows committed (and drops due)
// never delivered, duplicates events delivered twice.
//
//	go run ./loadtest/events -rate 2000 -duration 20s -drops 200
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/natslocal"
	"github.com/livedrops/livedrops/fanout/relay"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/postgres/pglocal"
)

type options struct {
	rate       int
	rowsPerTx  int
	producers  int
	duration   time.Duration
	drops      int
	lead       time.Duration
	spread     time.Duration
	syncs      []string
	drain      time.Duration
	atomicFrom int
	notify     bool
	poll       time.Duration
	verbose    bool
}

func main() {
	var o options
	var syncs string
	flag.IntVar(&o.rate, "rate", 2000, "outbox rows per second")
	flag.IntVar(&o.rowsPerTx, "rows-per-tx", 2, "outbox rows per transaction (an order writes its order.confirmed and a stock event)")
	flag.IntVar(&o.producers, "producers", 32, "concurrent writers (PostgreSQL groups their commits)")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "length of the load, per sync mode")
	flag.IntVar(&o.drops, "drops", 200, "drops scheduled during the load")
	flag.DurationVar(&o.lead, "lead", 3*time.Second, "how far ahead the first drop starts")
	flag.DurationVar(&o.spread, "spread", 2*time.Second, "the drops' start times spread over this span after -lead")
	flag.StringVar(&syncs, "syncs", "always,2m", "JetStream sync settings to run, comma-separated; the first is reported without prefix, the others as interval_*")
	flag.DurationVar(&o.drain, "drain", 15*time.Second, "how long to wait for the last events after the load")
	flag.IntVar(&o.atomicFrom, "atomic-from", 0, "the publisher's AtomicFrom: smallest batch sent as one JetStream atomic batch (0: its default, -1: never)")
	flag.BoolVar(&o.notify, "notify", true, "writers NOTIFY the relay at each commit (postgres.InsertEvents); false writes the same rows without it")
	flag.DurationVar(&o.poll, "poll", 0, "the relay's PollInterval (0: its default)")
	flag.BoolVar(&o.verbose, "v", false, "log the relay and the scheduler")
	flag.Parse()
	o.syncs = strings.Split(syncs, ",")
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "events:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if o.rate < 1 || o.rowsPerTx < 1 || o.producers < 1 || o.drops < 0 || o.lead+o.spread >= o.duration {
		return errors.New("want positive -rate, -rows-per-tx, -producers and -lead + -spread below -duration")
	}
	logger := slog.New(slog.DiscardHandler)
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	root, err := os.MkdirTemp("", "livedrops-bench-events-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	// PostgreSQL runs as its own user when we are root and must reach its folder.
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	fmt.Printf("bench-events: PostgreSQL (durable: fsync and synchronous_commit on) and NATS in %s\n", root)
	pg, err := pglocal.Start(ctx, pglocal.Config{Dir: filepath.Join(root, "pg"),
		Settings: map[string]string{"max_connections": "100"}})
	if err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pg.Stop(stopCtx)
	}()

	var fields []string
	for i, sync := range o.syncs {
		res, err := runMode(ctx, o, pg, filepath.Join(root, "nats-"+fmt.Sprint(i)), fmt.Sprintf("bench%d", i), sync, logger)
		if err != nil {
			return fmt.Errorf("sync %s: %w", sync, err)
		}
		fmt.Printf("sync=%s: %d rows at %.0f rows/s: relay p50 %.1f ms, p99 %.1f ms, max %.1f ms; %d drops: start lag p50 %.1f ms, p99 %.1f ms, max %.1f ms (of which start committed: p50 %.1f ms, p99 %.1f ms); lost %d, duplicates %d\n",
			sync, res.rows, res.rowsPerSec, res.relay.p(50), res.relay.p(99), res.relay.p(100), o.drops,
			res.start.p(50), res.start.p(99), res.start.p(100), res.commit.p(50), res.commit.p(99), res.lost, res.duplicates)
		prefix := ""
		if i > 0 {
			prefix = "interval_"
			if len(o.syncs) > 2 {
				prefix = "sync" + strings.ReplaceAll(sync, ".", "_") + "_"
			}
		}
		fields = append(fields,
			fmt.Sprintf("%srelay_p50_ms=%.1f", prefix, res.relay.p(50)),
			fmt.Sprintf("%srelay_p99_ms=%.1f", prefix, res.relay.p(99)),
			fmt.Sprintf("%sstart_lag_p50_ms=%.1f", prefix, res.start.p(50)),
			fmt.Sprintf("%sstart_lag_p99_ms=%.1f", prefix, res.start.p(99)),
			fmt.Sprintf("%sstart_commit_p99_ms=%.1f", prefix, res.commit.p(99)),
			fmt.Sprintf("%slost=%d", prefix, res.lost),
			fmt.Sprintf("%sduplicates=%d", prefix, res.duplicates),
			fmt.Sprintf("%srows_per_s=%.0f", prefix, res.rowsPerSec))
	}
	fmt.Println("RESULT " + strings.Join(fields, " "))
	return nil
}

type samples []float64 // milliseconds

func (s samples) p(q float64) float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	i := int(q / 100 * float64(len(c)-1))
	return c[i]
}

type result struct {
	rows             int
	rowsPerSec       float64
	relay, start     samples
	commit           samples // the scheduler's part of start: start_time → the start committed
	lost, duplicates int
}

func runMode(ctx context.Context, o options, pg *pglocal.Server, natsDir, db, syncMode string, logger *slog.Logger) (result, error) {
	var res result
	if err := createDatabase(ctx, pg.URL("postgres"), db); err != nil {
		return res, err
	}
	url := pg.URL(db)
	if err := postgres.Migrate(ctx, url, nil); err != nil {
		return res, err
	}
	pool, err := postgres.Open(ctx, url, postgres.PoolConfig{MaxConns: int32(o.producers + 8)})
	if err != nil {
		return res, err
	}
	defer pool.Close()
	ns, err := natslocal.Start(ctx, natslocal.Config{Dir: natsDir, Sync: syncMode})
	if err != nil {
		return res, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = ns.Stop(stopCtx)
	}()
	nc, err := jetstream.Connect(ctx, ns.ClientURL(), "bench-worker", logger)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	pub, err := jetstream.NewPublisher(nc, jetstream.PublisherConfig{AtomicFrom: o.atomicFrom})
	if err != nil {
		return res, err
	}
	if err := pub.Ensure(ctx); err != nil {
		return res, err
	}

	// The worker's jobs, as cmd/livedrops runs them.
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	r, err := relay.New(postgres.NewOutbox(pool), pub, postgres.NewLeader(pool, "relay", postgres.LeaderConfig{}),
		relay.Config{Logger: logger, PollInterval: o.poll})
	if err != nil {
		return res, err
	}
	commitLag := &lagRecorder{Drops: postgres.NewDropSchedule(pool)}
	sched, err := relay.NewScheduler(commitLag, relay.SchedulerConfig{Logger: logger})
	if err != nil {
		return res, err
	}
	var workers sync.WaitGroup
	workers.Go(func() { _ = r.Run(workCtx) })
	workers.Go(func() { _ = sched.Run(workCtx) })
	defer workers.Wait()
	defer stopWork()

	// The consumer: every stored message, in order.
	total := o.rate * int(o.duration/time.Second)
	commits := make([]atomic.Int64, total+o.rowsPerTx) // unix nanos of each row's commit, by row number
	recvRows := make([]atomic.Int32, total+o.rowsPerTx)
	starts := make(map[int64]time.Time) // drop → start_time
	var mu sync.Mutex
	dropsSeen := make(map[int64]int)
	var relayLat, startLat samples
	var received atomic.Int64
	cnc, err := nats.Connect(ns.ClientURL(), nats.Name("bench-consumer"))
	if err != nil {
		return res, err
	}
	defer cnc.Close()
	js, err := natsjs.New(cnc)
	if err != nil {
		return res, err
	}
	cons, err := js.OrderedConsumer(ctx, pub.StreamName(), natsjs.OrderedConsumerConfig{})
	if err != nil {
		return res, err
	}
	cc, err := cons.Consume(func(msg natsjs.Msg) {
		now := time.Now()
		var ev struct {
			Type   string          `json:"type"`
			TS     time.Time       `json:"ts"`
			DropID int64           `json:"drop_id"`
			Data   json.RawMessage `json:"data"`
		}
		if json.Unmarshal(msg.Data(), &ev) != nil {
			return
		}
		received.Add(1)
		switch fanout.Type(ev.Type) {
		case fanout.DropStarted:
			mu.Lock()
			dropsSeen[ev.DropID]++
			if dropsSeen[ev.DropID] == 1 {
				startLat = append(startLat, float64(now.Sub(ev.TS))/1e6)
			}
			mu.Unlock()
		case fanout.OrderConfirmed, fanout.FollowChanged:
			var d struct {
				N int `json:"n"`
			}
			if json.Unmarshal(ev.Data, &d) != nil || d.N < 0 || d.N >= len(recvRows) {
				return
			}
			if recvRows[d.N].Add(1) == 1 {
				if c := commits[d.N].Load(); c != 0 {
					mu.Lock()
					relayLat = append(relayLat, float64(now.UnixNano()-c)/1e6)
					mu.Unlock()
				}
			}
		}
	})
	if err != nil {
		return res, err
	}
	defer cc.Stop()

	// The drops, starting a few seconds into the load.
	begin := time.Now()
	if err := seedDrops(ctx, pool, o, begin, starts); err != nil {
		return res, err
	}

	// The load: transactions of rowsPerTx rows at rate rows per second, paced open-loop.
	var next atomic.Int64
	txs := total / o.rowsPerTx
	interval := time.Duration(float64(time.Second) * float64(o.rowsPerTx) / float64(o.rate))
	var producers sync.WaitGroup
	var writeErr atomic.Value
	for range o.producers {
		producers.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= int64(txs) {
					return
				}
				if d := time.Until(begin.Add(time.Duration(k) * interval)); d > 0 {
					time.Sleep(d)
				}
				events := make([]fanout.Event, o.rowsPerTx)
				first := int(k) * o.rowsPerTx
				for j := range events {
					n := first + j
					user := int64(1 + n%5000)
					typ := fanout.OrderConfirmed
					if j%2 == 1 {
						typ = fanout.FollowChanged
					}
					events[j] = fanout.Event{Type: typ, TS: time.Now(), CreatorID: 1 + int64(n%50), DropID: 1 + int64(n%50),
						UserID: user, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
				}
				if err := insert(ctx, pool, o.notify, events); err != nil {
					writeErr.Store(err)
					return
				}
				c := time.Now().UnixNano()
				for j := range events {
					commits[first+j].Store(c)
				}
			}
		})
	}
	producers.Wait()
	loadTime := time.Since(begin)
	if err, _ := writeErr.Load().(error); err != nil {
		return res, fmt.Errorf("write outbox rows: %w", err)
	}
	res.rows = txs * o.rowsPerTx
	res.rowsPerSec = float64(res.rows) / loadTime.Seconds()

	// Wait for the tail, then count.
	deadline := time.Now().Add(o.drain)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := len(dropsSeen) == len(starts)
		mu.Unlock()
		if done && received.Load() >= int64(res.rows+len(starts)) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // late duplicates, if any
	mu.Lock()
	defer mu.Unlock()
	for n := range res.rows {
		switch c := recvRows[n].Load(); {
		case c == 0:
			res.lost++
		case c > 1:
			res.duplicates += int(c - 1)
		}
	}
	for id := range starts {
		switch c := dropsSeen[id]; {
		case c == 0:
			res.lost++
		case c > 1:
			res.duplicates += c - 1
		}
	}
	res.relay, res.start, res.commit = relayLat, startLat, commitLag.samples()
	return res, nil
}

// lagRecorder measures the scheduler's part of the start lag: start_time → the start committed.
type lagRecorder struct {
	relay.Drops
	mu  sync.Mutex
	lag samples
}

func (l *lagRecorder) StartDue(ctx context.Context, now time.Time, limit int) ([]time.Time, error) {
	starts, err := l.Drops.StartDue(ctx, now, limit)
	committed := time.Now()
	l.mu.Lock()
	for _, s := range starts {
		l.lag = append(l.lag, float64(committed.Sub(s))/1e6)
	}
	l.mu.Unlock()
	return starts, err
}

func (l *lagRecorder) samples() samples {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lag)
}

// seedDrops creates o.drops drops of ten creators whose start times spread over [lead, lead+spread]
// after begin.
func seedDrops(ctx context.Context, pool *pgxpool.Pool, o options, begin time.Time, starts map[int64]time.Time) error {
	_, err := pool.Exec(ctx, `
INSERT INTO users (user_id, name, email) SELECT c, 'Creator ' || c, 'creator' || c || '@example.com' FROM generate_series(1, 10) c;
INSERT INTO creators (creator_id, profile_name) SELECT c, 'Shop ' || c FROM generate_series(1, 10) c;
INSERT INTO products (product_id, creator_id, title, price_cents) SELECT c, c, 'Hoodie', 4900 FROM generate_series(1, 10) c;`)
	if err != nil {
		return fmt.Errorf("seed creators: %w", err)
	}
	for i := range o.drops {
		start := begin.Add(o.lead + time.Duration(i)*o.spread/time.Duration(max(o.drops, 1))).Truncate(time.Millisecond)
		var id int64
		err := pool.QueryRow(ctx, `INSERT INTO drops (creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user)
			VALUES ($1, $1, $2, $3, 100, 100, 2) RETURNING drop_id`, 1+i%10, start, start.Add(time.Hour)).Scan(&id)
		if err != nil {
			return fmt.Errorf("seed drop: %w", err)
		}
		starts[id] = start
	}
	return nil
}

// insert writes events as postgres.InsertEvents does, or, without notify, the same rows without its
// NOTIFY (PostgreSQL serialises the commits of all notifying transactions of a database).
func insert(ctx context.Context, pool *pgxpool.Pool, notify bool, events []fanout.Event) error {
	if notify {
		return postgres.InsertEvents(ctx, pool, events...)
	}
	subjects, types, payloads := make([]string, len(events)), make([]string, len(events)), make([]string, len(events))
	for i, ev := range events {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		subjects[i], types[i], payloads[i] = ev.Subject(), string(ev.Type), string(b)
	}
	_, err := pool.Exec(ctx, `INSERT INTO outbox (subject, type, payload)
		SELECT s, t, p::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS e(s, t, p, n) ORDER BY n`,
		subjects, types, payloads)
	return err
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}
