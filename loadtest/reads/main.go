// Command reads is the read benchmark of LiveDrops (make bench-reads). It is self-contained: it seeds
// a fresh dev stack in a temporary data dir through the livedrops binary (a celebrity with 1,000,000
// followers by default), starts `livedrops all` on it, and drives a read mix of
//
//	GET /drops/{id}                       40%
//	GET /products?page=n                  20%
//	GET /creators/{id}                    20%
//	GET /creators/{id}/followers?cursor=  20%  deep pages of the celebrity's list
//
// with closed-loop workers at rising concurrency, once with the cache on and once with it off
// (LIVEDROPS_CACHE=off), then stops everything. For each mode the reported level is the one with the
// most requests per second whose p95 stays within -p95 and that saw no error (or, when none does, the
// one with the lowest p95). It prints one line per level and at the end
//
//	RESULT rps=... p50_ms=... p95_ms=... p99_ms=... errors=... cached_vs_uncached=...
//
// where the figures are the cached mode's and the ratio is cached rps / uncached rps. It speaks only
// HTTP to the binary (no LiveDrops package is imported).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type options struct {
	bin          string
	followers    int
	creators     int
	products     int
	drops        int
	walkPages    int
	duration     time.Duration
	warmup       time.Duration
	levels       []int
	p95          time.Duration
	keepData     bool
	dataDir      string
	serverLogDir string
}

func main() {
	var o options
	var levels string
	flag.StringVar(&o.bin, "bin", "bin/livedrops", "the livedrops binary")
	flag.IntVar(&o.followers, "followers", 1_000_000, "followers of the celebrity")
	flag.IntVar(&o.creators, "creators", 100, "creators")
	flag.IntVar(&o.products, "products", 2000, "products")
	flag.IntVar(&o.drops, "drops", 200, "drops")
	flag.IntVar(&o.walkPages, "walk-pages", 1000, "pages of 100 followers walked to collect deep cursors")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time of each concurrency level")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "unmeasured load before the first level of each mode")
	flag.StringVar(&levels, "levels", "2,4,8,16,32,64", "closed-loop concurrency levels, comma-separated")
	flag.DurationVar(&o.p95, "p95", 20*time.Millisecond, "the p95 a level must stay within to count")
	flag.BoolVar(&o.keepData, "keep-data", false, "keep the temporary data dir")
	flag.StringVar(&o.dataDir, "data-dir", "", "seed into and run on this dir instead of a temporary one (kept)")
	flag.Parse()
	for _, s := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "reads: bad -levels %q\n", levels)
			os.Exit(2)
		}
		o.levels = append(o.levels, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "reads:", err)
		os.Exit(1)
	}
}

// seedResult is what `livedrops seed` prints.
type seedResult struct {
	Creators    idRange `json:"creators"`
	CelebrityID int64   `json:"celebrity_id"`
	Followers   idRange `json:"followers"`
	Products    idRange `json:"products"`
	Drops       idRange `json:"drops"`
}

type idRange struct {
	First int64 `json:"first"`
	Last  int64 `json:"last"`
}

func (r idRange) pick(rng *rand.Rand) int64 { return r.First + rng.Int64N(r.Last-r.First+1) }

func run(ctx context.Context, o options) error {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	dir := o.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "livedrops-bench-reads-"); err != nil {
			return err
		}
		if !o.keepData {
			defer os.RemoveAll(dir)
		}
	}
	// PostgreSQL runs as its own user when we are root and must reach the dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	o.serverLogDir = dir
	fmt.Printf("data dir %s\n", dir)

	start := time.Now()
	seedOut, err := runCommand(ctx, bin, []string{"seed", "-data-dir", dir, "-log-format", "text",
		"-users", strconv.Itoa(o.creators + o.followers), "-creators", strconv.Itoa(o.creators),
		"-products", strconv.Itoa(o.products), "-drops", strconv.Itoa(o.drops), "-followers", strconv.Itoa(o.followers)},
		filepath.Join(dir, "seed.log"))
	if err != nil {
		return fmt.Errorf("seed: %w (log in %s)", err, filepath.Join(dir, "seed.log"))
	}
	var seed seedResult
	if err := json.Unmarshal(seedOut, &seed); err != nil {
		return fmt.Errorf("seed printed %q: %w", seedOut, err)
	}
	fmt.Printf("seeded %d followers, %d products, %d drops in %s\n", o.followers, o.products, o.drops, time.Since(start).Round(time.Millisecond))

	var cursors []string
	var best [2]levelResult
	for i, mode := range []string{"on", "off"} {
		srv, err := startServer(ctx, bin, dir, mode, filepath.Join(dir, "server-cache-"+mode+".log"))
		if err != nil {
			return err
		}
		if cursors == nil {
			if cursors, err = walkCursors(ctx, srv.base, seed.CelebrityID, o.walkPages); err != nil {
				srv.stop()
				return err
			}
			fmt.Printf("collected %d follower cursors, up to %d followers deep\n", len(cursors), len(cursors)*100)
		}
		best[i], err = measure(ctx, o, srv.base, seed, cursors, "cache-"+mode)
		if stopErr := srv.stop(); err == nil {
			err = stopErr
		}
		if err != nil {
			return err
		}
	}
	cached, uncached := best[0], best[1]
	ratio := 0.0
	if uncached.rps > 0 {
		ratio = cached.rps / uncached.rps
	}
	fmt.Printf("best cache-on: %s\nbest cache-off: %s\n", cached, uncached)
	fmt.Printf("RESULT rps=%.0f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f errors=%d cached_vs_uncached=%.2f\n",
		cached.rps, ms(cached.p50), ms(cached.p95), ms(cached.p99), cached.errors+uncached.errors, ratio)
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// runCommand runs bin with args, its stderr to logPath, and returns its stdout.
func runCommand(ctx context.Context, bin string, args []string, logPath string) ([]byte, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = benchEnv("on")
	cmd.Stderr = logf
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	return cmd.Output()
}

// benchEnv is the environment of the binary: the dev stack (no URLs), the cache on or off, and no
// write limits in the way of the seed or the walk.
func benchEnv(cache string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "DATABASE_URL", "REDIS_URL", "NATS_URL", "LIVEDROPS_JWT_SECRET", "LIVEDROPS_CACHE", "LIVEDROPS_DATA_DIR":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LIVEDROPS_CACHE="+cache, "LIVEDROPS_LOG_LEVEL=warn")
}

type server struct {
	cmd  *exec.Cmd
	base string
	done chan error
}

// startServer starts `livedrops all` on dir with the cache on or off and waits for /readyz.
func startServer(ctx context.Context, bin, dir, cache, logPath string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "all", "-data-dir", dir, "-http-addr", addr)
	cmd.Env = benchEnv(cache)
	cmd.Stderr = logf
	cmd.Stdout = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s := &server{cmd: cmd, base: "http://" + addr, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Printf("livedrops all (cache %s) ready on %s\n", cache, addr)
				return s, nil
			}
		}
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("livedrops all exited before it was ready: %v (log in %s)", err, logPath)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("livedrops all not ready after 2 minutes (log in %s)", logPath)
		}
	}
}

// stop ends the server with SIGTERM (its graceful shutdown stops the dev stack too).
func (s *server) stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("livedrops all: %w", err)
		}
		return nil
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return errors.New("livedrops all did not stop within 60 s; killed")
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

// walkCursors follows the celebrity's list for pages pages of 100 and keeps each next_cursor.
func walkCursors(ctx context.Context, base string, celebrity int64, pages int) ([]string, error) {
	var cursors []string
	cursor := ""
	for range pages {
		u := fmt.Sprintf("%s/creators/%d/followers?limit=100", base, celebrity)
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		var page struct {
			NextCursor string `json:"next_cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("walk followers: status %d, %v", resp.StatusCode, err)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
		cursors = append(cursors, cursor)
	}
	if len(cursors) == 0 {
		return nil, errors.New("walk followers: the celebrity has one page of followers or none")
	}
	return cursors, nil
}

type levelResult struct {
	mode               string
	concurrency        int
	requests, errors   int
	rps                float64
	p50, p95, p99, max time.Duration
}

func (r levelResult) String() string {
	return fmt.Sprintf("mode=%s concurrency=%d requests=%d rps=%.0f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f max_ms=%.2f errors=%d",
		r.mode, r.concurrency, r.requests, r.rps, ms(r.p50), ms(r.p95), ms(r.p99), ms(r.max), r.errors)
}

// measure runs every level and returns the best one (see the package comment).
func measure(ctx context.Context, o options, base string, seed seedResult, cursors []string, mode string) (levelResult, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute},
		Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	target := func(rng *rand.Rand) string {
		switch n := rng.IntN(10); {
		case n < 4:
			return fmt.Sprintf("%s/drops/%d", base, seed.Drops.pick(rng))
		case n < 6:
			pages := max(1, int(seed.Products.Last-seed.Products.First+1)/20)
			return fmt.Sprintf("%s/products?page=%d", base, 1+rng.IntN(pages))
		case n < 8:
			return fmt.Sprintf("%s/creators/%d", base, seed.Creators.pick(rng))
		default:
			// Deep pages: from the middle of the walk on.
			c := cursors[len(cursors)/2+rng.IntN(len(cursors)-len(cursors)/2)]
			return fmt.Sprintf("%s/creators/%d/followers?cursor=%s", base, seed.CelebrityID, url.QueryEscape(c))
		}
	}
	if o.warmup > 0 {
		if _, err := load(ctx, client, target, o.levels[len(o.levels)/2], o.warmup); err != nil {
			return levelResult{}, err
		}
	}
	var results []levelResult
	for _, c := range o.levels {
		r, err := load(ctx, client, target, c, o.duration)
		if err != nil {
			return levelResult{}, err
		}
		r.mode = mode
		fmt.Println("level", r)
		results = append(results, r)
	}
	var best *levelResult
	for i := range results {
		r := &results[i]
		if r.errors == 0 && r.p95 <= o.p95 && (best == nil || r.rps > best.rps) {
			best = r
		}
	}
	if best == nil {
		fmt.Printf("mode %s: no level kept p95 within %s without errors; reporting the lowest p95\n", mode, o.p95)
		best = &results[0]
		for i := range results {
			if results[i].p95 < best.p95 {
				best = &results[i]
			}
		}
	}
	return *best, nil
}

// load runs concurrency closed-loop workers for d and measures every answer.
func load(ctx context.Context, client *http.Client, target func(*rand.Rand) string, concurrency int, d time.Duration) (levelResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var all []time.Duration
	errs := 0
	var firstErr string
	var wg sync.WaitGroup
	start := time.Now()
	for w := range concurrency {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			lat := make([]time.Duration, 0, 1<<14)
			bad := 0
			var why string
			for ctx.Err() == nil {
				u := target(rng)
				t := time.Now()
				resp, err := client.Get(u)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s: status %d", u, resp.StatusCode)
					}
				}
				if ctx.Err() != nil {
					break // the level ended during this request: not counted
				}
				lat = append(lat, time.Since(t))
				if err != nil {
					bad++
					why = err.Error()
				}
			}
			mu.Lock()
			all = append(all, lat...)
			errs += bad
			if why != "" && firstErr == "" {
				firstErr = why
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return levelResult{}, err
	}
	if firstErr != "" {
		fmt.Println("first error:", firstErr)
	}
	slices.Sort(all)
	q := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(p*float64(len(all))))]
	}
	r := levelResult{concurrency: concurrency, requests: len(all), errors: errs, rps: float64(len(all)) / elapsed.Seconds(),
		p50: q(0.50), p95: q(0.95), p99: q(0.99)}
	if len(all) > 0 {
		r.max = all[len(all)-1]
	}
	return r, nil
}
