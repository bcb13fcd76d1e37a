// Command events measures the event pipeline on what users run: for each JetStream sync setting it
// seeds a fresh data dir with `livedrops seed`, starts `livedrops all` on it (the dev stack of make
// run: PostgreSQL, Redis and an embedded NATS; its worker role runs the outbox relay and the drop
// scheduler) with LIVEDROPS_NATS_SYNC set, and drives it through the REST API only:
//
//   - a steady load of writes, each committing one outbox row: POST /orders on a live drop
//     (order.confirmed) and POST /users/{id}/follow/{creatorId} (follow.changed), half each, paced
//     open-loop at -rate rows a second for -duration;
//   - meanwhile -drops drops of ten creators, posted with POST /drops, start -lead into the load,
//     spread over -spread; the scheduler starts them and writes their drop.started.
//
// A consumer reads the stream (an ordered JetStream consumer on the stream that holds ld.>, with the
// NATS client library): relay latency is from the write's 201/204 answer (the commit is before it)
// to the consumer receiving its event; start lag from the drop's start_time to the consumer receiving
// drop.started; start_commit the scheduler's part (start_time → its commit), read from the worker's
// own histogram livedrops_scheduler_lag_seconds{transition="start"} at /metrics (interpolated within
// its buckets), and relay_metric the relay's own livedrops_relay_publish_latency_seconds (outbox
// insert → stream acknowledgement) the same way, a cross-check of the relay latency. lost counts writes answered (and drops due) whose event never arrived, duplicates
// events received twice. It prints one line:
//
//	RESULT relay_p50_ms=... relay_p99_ms=... start_lag_p50_ms=... start_lag_p99_ms=... start_commit_p99_ms=... relay_metric_p99_ms=... lost=0 duplicates=0 rows_per_s=... interval_...
//
//	go run ./loadtest/events -bin bin/livedrops -rate 2000 -duration 20s -drops 200
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/loadtest/livedropstest"
)

type options struct {
	bin       string
	rate      int
	producers int
	duration  time.Duration
	drops     int
	lead      time.Duration
	spread    time.Duration
	syncs     []string
	drain     time.Duration
	buyers    int
	keep      bool
}

func main() {
	var o options
	var syncs string
	flag.StringVar(&o.bin, "bin", "bin/livedrops", "the livedrops binary to run")
	flag.IntVar(&o.rate, "rate", 2000, "outbox rows per second (one per write: half orders, half follows)")
	flag.IntVar(&o.producers, "producers", 256, "concurrent writers (enough that the pace, not the answers, sets the rate)")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "length of the load, per sync mode")
	flag.IntVar(&o.drops, "drops", 200, "drops starting during the load")
	flag.DurationVar(&o.lead, "lead", 3*time.Second, "how far into the load the first drop starts")
	flag.DurationVar(&o.spread, "spread", 2*time.Second, "the drops' start times spread over this span after -lead")
	flag.StringVar(&syncs, "syncs", "always,2m", "LIVEDROPS_NATS_SYNC settings to run, comma-separated; the first is reported without prefix, the others as interval_*")
	flag.DurationVar(&o.drain, "drain", 15*time.Second, "how long to wait for the last events after the load")
	flag.IntVar(&o.buyers, "buyers", 5000, "seeded accounts that buy and follow (each follows creators 2..10 once at most)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary dirs (data dir and server logs)")
	flag.Parse()
	o.syncs = strings.Split(syncs, ",")
	res, err := run(context.Background(), o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "events:", err)
		os.Exit(1)
	}
	fmt.Println(res)
}

func run(ctx context.Context, o options, out io.Writer) (string, error) {
	if o.rate < 1 || o.producers < 1 || o.drops < 0 || o.lead+o.spread >= o.duration || o.buyers < 1 {
		return "", errors.New("want positive -rate, -producers, -buyers and -lead + -spread below -duration")
	}
	if follows := o.rate / 2 * int(o.duration/time.Second); follows > o.buyers*9 {
		return "", fmt.Errorf("%d follows need more than -buyers %d × 9 creators", follows, o.buyers)
	}
	var fields []string
	for i, sync := range o.syncs {
		res, err := runMode(ctx, o, sync)
		if err != nil {
			return "", fmt.Errorf("sync %s: %w", sync, err)
		}
		fmt.Fprintf(out, "sync=%s: %d rows at %.0f rows/s: relay p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d events arrived before their write's answer); %d drops: start lag p50 %.1f ms, p99 %.1f ms, max %.1f ms (start committed p99 %.1f ms); the relay's own histogram: p99 %.1f ms; lost %d, duplicates %d\n",
			sync, res.rows, res.rowsPerSec, res.relay.p(50), res.relay.p(99), res.relay.p(100), res.early, o.drops,
			res.start.p(50), res.start.p(99), res.start.p(100), res.commitP99, res.metricP99, res.lost, res.duplicates)
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
			fmt.Sprintf("%sstart_commit_p99_ms=%.1f", prefix, res.commitP99),
			fmt.Sprintf("%srelay_metric_p99_ms=%.1f", prefix, res.metricP99),
			fmt.Sprintf("%slost=%d", prefix, res.lost),
			fmt.Sprintf("%sduplicates=%d", prefix, res.duplicates),
			fmt.Sprintf("%srows_per_s=%.0f", prefix, res.rowsPerSec))
	}
	return "RESULT " + strings.Join(fields, " "), nil
}

type samples []float64 // milliseconds

func (s samples) p(q float64) float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	return c[int(q/100*float64(len(c)-1))]
}

type result struct {
	rows             int
	rowsPerSec       float64
	relay, start     samples
	early            int // events received before their write's answer (latency counted as 0)
	commitP99        float64
	metricP99        float64 // the relay's own p99, outbox insert → stream acknowledgement
	lost, duplicates int
}

// stack is one sync mode's `livedrops all` and what the bench needs of it.
type stack struct {
	proc     *livedropstest.Process
	base     string
	buyers   []account
	creators []account // seeded creators: creators[0] sells, all ten drop
	products map[int64]int64
}

type account struct {
	id    int64
	token string
}

func startStack(o options, sync string) (_ *stack, cleanup func(), err error) {
	dir, err := livedropstest.TempDir()
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() {
		if !o.keep {
			os.RemoveAll(dir)
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	data := filepath.Join(dir, "data")
	tokens := filepath.Join(dir, "tokens.txt")
	seed, err := livedropstest.Seed(o.bin, data, "-users", strconv.Itoa(o.buyers+10), "-creators", "10", "-products", "10",
		"-drops", "0", "-followers", strconv.Itoa(o.buyers), "-tokens-file", tokens)
	if err != nil {
		return nil, nil, err
	}
	st := &stack{products: make(map[int64]int64)}
	if st.buyers, err = readTokens(tokens); err != nil {
		return nil, nil, err
	}
	var creators struct{ First, Last int64 }
	if b, err := json.Marshal(seed["creators"]); err != nil || json.Unmarshal(b, &creators) != nil {
		return nil, nil, fmt.Errorf("seed printed creators %v", seed["creators"])
	}
	for id := creators.First; id > 0 && id <= creators.Last; id++ {
		tok, err := livedropstest.Token(o.bin, data, id)
		if err != nil {
			return nil, nil, err
		}
		st.creators = append(st.creators, account{id, tok})
	}
	if len(st.creators) != 10 {
		return nil, nil, fmt.Errorf("seed wrote creators %v, want 10", seed["creators"])
	}
	// Every buyer comes from 127.0.0.1 at well above a person's rate: the write limits are off.
	st.proc, err = livedropstest.StartAll(o.bin, data, "LIVEDROPS_NATS_SYNC="+sync, "LIVEDROPS_RATE_USER=0", "LIVEDROPS_RATE_IP=0")
	if err != nil {
		return nil, nil, err
	}
	st.base = st.proc.URL
	stop := cleanup
	cleanup = func() {
		if err := st.proc.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "events:", err)
		}
		stop()
	}
	return st, cleanup, nil
}

func readTokens(path string) ([]account, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []account
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, tok, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.ParseInt(id, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		out = append(out, account{n, tok})
	}
	return out, sc.Err()
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0}, Timeout: time.Minute}

// call sends one request and decodes a JSON answer into out (when not nil).
func call(ctx context.Context, method, url, token string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// createDrop posts a drop of the creator's product and returns its id.
func (st *stack) createDrop(ctx context.Context, c account, start time.Time, stock int) (int64, error) {
	var d struct {
		DropID int64 `json:"drop_id"`
	}
	_, err := call(ctx, http.MethodPost, st.base+"/drops", c.token, map[string]any{
		"product_id": st.products[c.id], "start_time": start.UTC().Format(time.RFC3339Nano),
		"end_time": start.Add(time.Hour).UTC().Format(time.RFC3339Nano), "stock_count": stock, "max_per_user": math.MaxInt32,
	}, &d)
	return d.DropID, err
}

// key names one write's event: ("o", order id) or ("f", user id, creator id).
type key struct {
	kind       byte
	id, second int64
}

func runMode(ctx context.Context, o options, syncMode string) (result, error) {
	var res result
	st, cleanup, err := startStack(o, syncMode)
	if err != nil {
		return res, err
	}
	defer cleanup()

	var page struct {
		Items []struct {
			ProductID int64 `json:"product_id"`
			CreatorID int64 `json:"creator_id"`
		} `json:"items"`
	}
	if _, err := call(ctx, http.MethodGet, st.base+"/products?per_page=100", "", nil, &page); err != nil {
		return res, err
	}
	for _, p := range page.Items {
		st.products[p.CreatorID] = p.ProductID
	}
	// The drop every order buys from: live a second from now, stock for the whole run.
	sale, err := st.createDrop(ctx, st.creators[0], time.Now().Add(time.Second), o.rate*int(o.duration/time.Second)+1000)
	if err != nil {
		return res, err
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		var d struct {
			Status string `json:"status"`
		}
		if _, err := call(ctx, http.MethodGet, fmt.Sprintf("%s/drops/%d", st.base, sale), "", nil, &d); err != nil {
			return res, err
		}
		if d.Status == "live" {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("drop %d not live after 30 s", sale)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The consumer: every stored message, in order, from the stream that holds ld.>.
	nc, err := nats.Connect(st.proc.NatsURL, nats.Name("bench-events-consumer"))
	if err != nil {
		return res, fmt.Errorf("nats %s: %w", st.proc.NatsURL, err)
	}
	defer nc.Close()
	js, err := natsjs.New(nc)
	if err != nil {
		return res, err
	}
	stream, err := js.StreamNameBySubject(ctx, "ld.>")
	if err != nil {
		return res, fmt.Errorf("the stream of ld.>: %w", err)
	}
	var mu sync.Mutex
	answered := make(map[key]time.Time) // write → its answer
	received := make(map[key]time.Time) // event → its first receipt
	counts := make(map[key]int)
	starts := make(map[int64]time.Time) // drop → start_time
	var startLat samples
	cons, err := js.OrderedConsumer(ctx, stream, natsjs.OrderedConsumerConfig{DeliverPolicy: natsjs.DeliverNewPolicy})
	if err != nil {
		return res, err
	}
	cc, err := cons.Consume(func(msg natsjs.Msg) {
		now := time.Now()
		var ev struct {
			Type   string    `json:"type"`
			TS     time.Time `json:"ts"`
			DropID int64     `json:"drop_id"`
			Data   struct {
				OrderID   int64 `json:"order_id"`
				CreatorID int64 `json:"creator_id"`
			} `json:"data"`
		}
		if json.Unmarshal(msg.Data(), &ev) != nil {
			return
		}
		var k key
		switch ev.Type {
		case "drop.started":
			k = key{kind: 'd', id: ev.DropID}
		case "order.confirmed":
			k = key{kind: 'o', id: ev.Data.OrderID}
		case "follow.changed":
			user, err := strconv.ParseInt(strings.TrimPrefix(msg.Subject(), "ld.user."), 10, 64)
			if err != nil {
				return
			}
			k = key{kind: 'f', id: user, second: ev.Data.CreatorID}
		default:
			return
		}
		mu.Lock()
		defer mu.Unlock()
		counts[k]++
		if counts[k] > 1 {
			return
		}
		received[k] = now
		if k.kind == 'd' {
			if s, ok := starts[ev.DropID]; ok {
				startLat = append(startLat, float64(now.Sub(s))/1e6)
			}
		}
	})
	if err != nil {
		return res, err
	}
	defer cc.Stop()

	// The drops, starting a few seconds into the load, posted before it begins.
	begin := time.Now().Add(500 * time.Millisecond)
	for i := range o.drops {
		start := begin.Add(o.lead + time.Duration(i)*o.spread/time.Duration(max(o.drops, 1))).Truncate(time.Millisecond)
		id, err := st.createDrop(ctx, st.creators[i%len(st.creators)], start, 100)
		if err != nil {
			return res, err
		}
		mu.Lock()
		starts[id] = start
		mu.Unlock()
	}
	lagBefore, err1 := readHistogram(ctx, st.base, "livedrops_scheduler_lag_seconds", `transition="start"`)
	pubBefore, err2 := readHistogram(ctx, st.base, "livedrops_relay_publish_latency_seconds", "")
	if err := errors.Join(err1, err2); err != nil {
		return res, err
	}
	if d := time.Until(begin); d > 0 {
		time.Sleep(d)
	}

	// The load: rate writes a second, paced open-loop; even tickets order, odd ones follow.
	total := o.rate * int(o.duration/time.Second)
	interval := time.Second / time.Duration(o.rate)
	var next, follows atomic.Int64
	var writeErr atomic.Value
	var producers sync.WaitGroup
	for range o.producers {
		producers.Go(func() {
			for {
				n := next.Add(1) - 1
				if n >= int64(total) || writeErr.Load() != nil {
					return
				}
				if d := time.Until(begin.Add(time.Duration(n) * interval)); d > 0 {
					time.Sleep(d)
				}
				var k key
				var err error
				if n%2 == 0 {
					b := st.buyers[int(n/2)%len(st.buyers)]
					var ord struct {
						OrderID int64 `json:"order_id"`
					}
					_, err = call(ctx, http.MethodPost, st.base+"/orders", b.token,
						map[string]any{"drop_id": sale, "quantity": 1, "idempotency_key": fmt.Sprintf("ev-%d", n)}, &ord)
					k = key{kind: 'o', id: ord.OrderID}
				} else {
					// Follow number f: buyer f mod B follows creator 2 + f / B (each pair once).
					f := follows.Add(1) - 1
					b := st.buyers[int(f)%len(st.buyers)]
					c := st.creators[1+int(f)/len(st.buyers)]
					_, err = call(ctx, http.MethodPost, fmt.Sprintf("%s/users/%d/follow/%d", st.base, b.id, c.id), b.token, nil, nil)
					k = key{kind: 'f', id: b.id, second: c.id}
				}
				if err != nil {
					writeErr.Store(err)
					return
				}
				at := time.Now()
				mu.Lock()
				answered[k] = at
				mu.Unlock()
			}
		})
	}
	producers.Wait()
	loadTime := time.Since(begin)
	if err, _ := writeErr.Load().(error); err != nil {
		return res, fmt.Errorf("write: %w", err)
	}
	res.rows = total
	res.rowsPerSec = float64(total) / loadTime.Seconds()

	// Wait for the tail, then count.
	complete := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for k := range answered {
			if counts[k] == 0 {
				return false
			}
		}
		for id := range starts {
			if counts[key{kind: 'd', id: id}] == 0 {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(o.drain); !complete() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // late duplicates, if any
	lagAfter, err1 := readHistogram(ctx, st.base, "livedrops_scheduler_lag_seconds", `transition="start"`)
	pubAfter, err2 := readHistogram(ctx, st.base, "livedrops_relay_publish_latency_seconds", "")
	if err := errors.Join(err1, err2); err != nil {
		return res, err
	}
	res.commitP99 = lagAfter.minus(lagBefore).quantile(0.99) * 1000
	res.metricP99 = pubAfter.minus(pubBefore).quantile(0.99) * 1000
	mu.Lock()
	defer mu.Unlock()
	for k, at := range answered {
		got, ok := received[k]
		if !ok {
			res.lost++
			continue
		}
		res.duplicates += counts[k] - 1
		if got.Before(at) {
			res.early++ // the event beat the write's answer to us: commit → stream took less than 0
			got = at
		}
		res.relay = append(res.relay, float64(got.Sub(at))/1e6)
	}
	for id := range starts {
		switch c := counts[key{kind: 'd', id: id}]; {
		case c == 0:
			res.lost++
		case c > 1:
			res.duplicates += c - 1
		}
	}
	res.start = startLat
	return res, nil
}

// histogram is a Prometheus histogram's cumulative bucket counts by upper bound.
type histogram map[float64]float64

// readHistogram reads the buckets of histogram name (whose series contains filter, "" for any) from
// base's /metrics.
func readHistogram(ctx context.Context, base, name, filter string) (histogram, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	h := make(histogram)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"_bucket{") || !strings.Contains(line, filter) {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.LastIndexByte(line, ' ')
		if i < 0 || j < 0 {
			continue
		}
		le, _, _ := strings.Cut(line[i+4:], `"`)
		bound, err1 := strconv.ParseFloat(le, 64)
		count, err2 := strconv.ParseFloat(line[j+1:], 64)
		if err1 == nil && err2 == nil {
			h[bound] = count
		}
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("no %s{%s} at /metrics", name, filter)
	}
	return h, sc.Err()
}

func (h histogram) minus(before histogram) histogram {
	out := make(histogram, len(h))
	for b, c := range h {
		out[b] = c - before[b]
	}
	return out
}

// quantile interpolates linearly within the bucket that holds q, as PromQL's histogram_quantile.
func (h histogram) quantile(q float64) float64 {
	bounds := make([]float64, 0, len(h))
	for b := range h {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	total := h[math.Inf(1)]
	if total == 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range bounds {
		if h[b] >= rank {
			if math.IsInf(b, 1) {
				return lower
			}
			return lower + (b-lower)*(rank-below)/(h[b]-below)
		}
		lower, below = b, h[b]
	}
	return lower
}
