package k6_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/loadtest/k6"
	"github.com/livedrops/livedrops/loadtest/livedropstest"
)

// The twins run small in make test against `livedrops all` (built from this module, seeded with
// `livedrops seed`, on a free port). For a bigger run, or against another deployment:
//
//	go test ./loadtest/k6 -run TestFlashSale -v -args -k6.base-url http://127.0.0.1:18012 \
//	    -k6.flash-sale STOCK=10000,BUYERS=2000,PEAK_RATE=2000,HOLD=30s
//
// (-k6.base-url skips starting a stack; browse then needs a seeded deployment.)
var (
	baseURL   = flag.String("k6.base-url", "", "run the twins against this deployment instead of a fresh livedrops all")
	browse    = flag.String("k6.browse", "RATE=100,DURATION=5s,MAX_VUS=50,FOLLOWER_PAGES=4", "browse settings, NAME=value,...")
	flashSale = flag.String("k6.flash-sale", "STOCK=200,BUYERS=100,MAX_PER_USER=2,PEAK_RATE=100,RAMP=2s,HOLD=5s,START_IN=2s,MAX_VUS=200",
		"flash-sale settings, NAME=value,...")
	followers = flag.String("k6.followers", "FOLLOWERS=100,SOCKETS_PER_VU=50,LEAD=6s,WAIT=10s", "followers settings, NAME=value,...")
)

// target is the base URL the tests drive: -k6.base-url, or the `livedrops all` TestMain started.
var target string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if *baseURL != "" {
		target = *baseURL
		return m.Run()
	}
	stop, err := startStack()
	if err != nil {
		fmt.Fprintln(os.Stderr, "k6 twins:", err)
		return 1
	}
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "k6 twins:", err)
		code = max(code, 1)
	}
	return code
}

// startStack builds livedrops, seeds a data dir (10 creators, 200 products, 50 drops, a creator with
// 1,000 followers) and starts `livedrops all` on it with its default settings.
func startStack() (stop func() error, err error) {
	dir, err := livedropstest.TempDir()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	bin, err := livedropstest.Build(dir)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if _, err := livedropstest.Seed(bin, data, "-users", "2000", "-creators", "10", "-products", "200", "-drops", "50",
		"-followers", "1000"); err != nil {
		return nil, err
	}
	p, err := livedropstest.StartAll(bin, data)
	if err != nil {
		return nil, err
	}
	target = p.URL
	return func() error { return errors.Join(p.Stop(), os.RemoveAll(dir)) }, nil
}

func settings(t *testing.T, s string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, kv := range strings.Split(s, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("setting %q: want NAME=value", kv)
		}
		out[k] = v
	}
	return out
}

// report logs every verdict and fails the test on each threshold that did not hold.
func report(t *testing.T, res k6.Result, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range res.Notes {
		t.Log(n)
	}
	for _, v := range res.Verdicts {
		t.Log(v)
	}
	for _, v := range res.Failed() {
		t.Errorf("threshold: %v", v)
	}
}

func TestBrowse(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := k6.Browse(ctx, k6.Target{BaseURL: target, Settings: settings(t, *browse)})
	report(t, res, err)
}

func TestFlashSale(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := k6.FlashSale(ctx, k6.Target{BaseURL: target, Settings: settings(t, *flashSale)}, nil)
	report(t, res, err)
	if err != nil {
		return
	}
	// Beyond the thresholds: the stock of the small run sells out (700 orders for 200 units), so the
	// confirmed answers are exactly the stock.
	confirmed, _ := res.Metrics.Values("orders_confirmed")
	if s := settings(t, *flashSale); *baseURL == "" && s["STOCK"] == "200" && len(confirmed) != 200 {
		t.Errorf("confirmed answers: got %d, want the whole stock of 200", len(confirmed))
	}
}

func TestFollowers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := k6.Followers(ctx, k6.Target{BaseURL: target, Settings: settings(t, *followers)}, nil, nil)
	report(t, res, err)
}

// The design's promises (API.md, the seed) are what scenarios.json holds; the twins and the scripts
// read it, so weakening a promise there is a visible change of this test.
func TestScenariosHoldTheDesignsThresholds(t *testing.T) {
	all, err := k6.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		"browse":     {"http_req_duration{kind:read}": "p(95)<=200", "http_req_failed": "rate<0.001"},
		"flash-sale": {"http_req_duration{kind:order}": "p(95)<=500", "http_req_failed": "rate<0.001", "checks{check:confirmed orders equal the stock taken}": "rate==1"},
		"followers":  {"delivery_ms": "p(99)<2000", "socket_errors": "rate<0.001"},
	}
	for name, th := range want {
		sc, ok := all[name]
		if !ok {
			t.Errorf("scenarios.json has no %s", name)
			continue
		}
		for key, expr := range th {
			if got := sc.Thresholds[key]; len(got) != 1 || got[0] != expr {
				t.Errorf("%s threshold %s: got %v, want [%s]", name, key, got, expr)
			}
		}
		if len(sc.Thresholds) != len(th) {
			t.Errorf("%s: got thresholds %v, want exactly %v", name, sc.Thresholds, th)
		}
	}
	if r := all["flash-sale"].DroppedIterationsMaxRatio; r != 0.001 {
		t.Errorf("flash-sale dropped_iterations_max_ratio: got %v, want 0.001", r)
	}
}

// Each k6 script takes its thresholds from scenarios.json, and uses what the issue asks of it.
func TestScriptsUseTheSharedScenarios(t *testing.T) {
	for file, needles := range map[string][]string{
		"browse.js":     {`const S = "browse"`, "thresholds: scenarios[S].thresholds", `executor: "constant-arrival-rate"`},
		"flash-sale.js": {`const S = "flash-sale"`, "...scenarios[S].thresholds", `executor: "ramping-arrival-rate"`, "dropped_iterations:", "export function teardown"},
		"followers.js":  {`const S = "followers"`, "thresholds: scenarios[S].thresholds", `from "k6/websockets"`, `new Trend("delivery_ms", true)`},
	} {
		b, err := os.ReadFile(filepath.Clean(file))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range needles {
			if !strings.Contains(string(b), n) {
				t.Errorf("%s does not contain %q", file, n)
			}
		}
		if regexp.MustCompile(`k6/experimental/websockets`).Match(b) {
			t.Errorf("%s imports the deprecated k6/experimental/websockets", file)
		}
	}
}
