package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/livedrops/livedrops/loadtest/livedropstest"
)

// pushNames are the metric names of the push contract (notes: CONTRACT-push-web.md) that the rules
// and the dashboard use, with the recording rules made of them alone. The push notifier registers them
// (issue 10); until a process here exports one, the checks skip what uses it. Once it is scraped, it is
// checked like every other name, recording rules and panels included.
var pushNames = map[string]bool{
	"livedrops_push_sent_total":                     true,
	"livedrops_push_failed_total":                   true,
	"livedrops_push_retried_total":                  true,
	"livedrops_push_dead_lettered_total":            true,
	"livedrops_push_devices_removed_total":          true,
	"livedrops_push_auth_failures_total":            true,
	"livedrops_push_skipped_online_total":           true,
	"livedrops_push_lag_seconds_bucket":             true,
	"livedrops_push_jobs_pending":                   true,
	"provider:livedrops_push_failed:rate5m":         true,
	"provider:livedrops_push_failures:ratio_rate5m": true,
	"livedrops_push_lag_seconds:p99_5m":             true,
}

var (
	stripStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	stripMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	stripRanges   = regexp.MustCompile(`\[[^\[\]]*\]`)
	stripGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	identifier    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	keywords      = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true, "Inf": true, "NaN": true}
)

// metricNames returns the metric names a PromQL expression selects (not functions, keywords, labels,
// strings or numbers), sorted and unique.
func metricNames(expr string) []string {
	e := stripStrings.ReplaceAllString(expr, `""`)
	e = stripMatchers.ReplaceAllString(e, " ")
	e = stripRanges.ReplaceAllString(e, " ")
	e = stripGrouping.ReplaceAllString(e, " ")
	seen := make(map[string]bool)
	for _, loc := range identifier.FindAllStringIndex(e, -1) {
		name := e[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsRune("0123456789.", rune(e[loc[0]-1])) {
			continue // the exponent or tail of a number such as 1e3
		}
		if keywords[name] || strings.HasPrefix(strings.TrimLeft(e[loc[1]:], " \t\n"), "(") {
			continue // a keyword or a function call
		}
		seen[name] = true
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (job) (rate(livedrops_http_requests_total{status=~"5.."}[5m])) / sum(up{job="a b"})`: "livedrops_http_requests_total up",
		`histogram_quantile(0.95, sum by (le) (rate(x_bucket{job=~"$job"}[$__rate_interval])))`:      "x_bucket",
		`count(up{job=~"livedrops-.+"} == 0) or vector(0)`:                                           "up",
		`a:b:c > 0.01 * d:e and on (job) f > 1e3`:                                                    "a:b:c d:e f",
		`livedrops_hub_slow_closes:rate5m * 300 > 0.01 * livedrops_hub_sockets:sum`:                  "livedrops_hub_slow_closes:rate5m livedrops_hub_sockets:sum",
		`sum without (instance) (increase(livedrops_relay_parked_total[15m])) offset 5m > bool 0`:    "livedrops_relay_parked_total",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("metricNames(%s): got %q, want %q", expr, got, want)
		}
	}
}

func FuzzMetricNames(f *testing.F) {
	f.Add(`sum by (job) (rate(livedrops_http_requests_total{status=~"5.."}[5m]))`)
	f.Add(`a:b > bool 1 or on() vector(0)`)
	f.Fuzz(func(t *testing.T, expr string) {
		for _, n := range metricNames(expr) {
			if !regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`).MatchString(n) || keywords[n] {
				t.Fatalf("metricNames(%q) returned %q", expr, n)
			}
		}
	})
}

// uses is every expression of the rules, the alerts and the dashboard, by where it comes from.
type use struct {
	where, expr string
	dashboard   bool
}

func allUses(t *testing.T) (uses []use, records map[string]string) {
	t.Helper()
	records = make(map[string]string)
	for _, file := range []string{"prometheus/rules.yml", "prometheus/alerts.yml"} {
		var rf ruleFile
		readYAML(t, file, &rf)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				uses = append(uses, use{where: file + " " + r.Record + r.Alert, expr: r.Expr})
				if r.Record != "" {
					records[r.Record] = r.Expr
				}
			}
		}
	}
	for _, p := range loadDashboard(t).Panels {
		for _, tg := range p.Targets {
			uses = append(uses, use{where: fmt.Sprintf("dashboard panel %q %s", p.Title, tg.RefID), expr: tg.Expr, dashboard: true})
		}
	}
	return uses, records
}

// dashboardQuery is a panel's expression as Prometheus gets it from Grafana here: every job, and a
// rate interval that spans a few of the test's one-second scrapes.
func dashboardQuery(expr string) string {
	return strings.NewReplacer(`"$job"`, `"livedrops-.+"`, "$__rate_interval", "1m").Replace(expr)
}

// TestPrometheusScrapesEveryMetricInUse runs the real Prometheus (Debian's package) against `livedrops
// all` (the stack of make run, built from this module) with rules.yml and alerts.yml, drives a little
// of every kind of traffic, and then requires, from Prometheus's own answers: every metric name the
// rules, the alerts and the dashboard use exists; every recording rule has series; every dashboard
// query returns series. So no panel and no alert is silently empty.
func TestPrometheusScrapesEveryMetricInUse(t *testing.T) {
	dir, err := livedropstest.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin, err := livedropstest.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	app, err := livedropstest.StartAll(bin, filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := app.Stop(); err != nil {
			t.Error(err)
		}
	})
	prom := startPrometheus(t, dir, strings.TrimPrefix(app.URL, "http://"))
	traffic(t, app.URL)

	uses, records := allUses(t)
	// Wait until Prometheus has scraped the traffic and evaluated the rules on it: the order latency
	// recording exists once POST /orders was scraped twice.
	deadline := time.Now().Add(90 * time.Second)
	for {
		n, err := prom.count("livedrops_http_order_duration_seconds:p95_5m")
		if err == nil && n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus has no livedrops_http_order_duration_seconds:p95_5m after 90 s (%v)", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // a few more rule evaluations and scrapes

	names, err := prom.names()
	if err != nil {
		t.Fatal(err)
	}
	// pending: the push names no process exports yet, and the recording rules made of them.
	pending := make(map[string]bool)
	for name := range pushNames {
		if _, isRecord := records[name]; !isRecord && !names[name] {
			pending[name] = true
		}
	}
	for changed := true; changed; { // recording rules of pending names, of those, and so on
		changed = false
		for name := range pushNames {
			if expr, isRecord := records[name]; isRecord && !pending[name] {
				for _, n := range metricNames(expr) {
					if pending[n] && !pending[name] {
						pending[name], changed = true, true
					}
				}
			}
		}
	}
	usesPending := func(expr string) bool {
		for _, n := range metricNames(expr) {
			if pending[n] {
				return true
			}
		}
		return false
	}
	checked := 0
	for _, u := range uses {
		for _, n := range metricNames(u.expr) {
			_, isRecord := records[n]
			switch {
			case pending[n]:
			case strings.Contains(n, ":") && !isRecord:
				t.Errorf("%s: %s is no recording rule of rules.yml", u.where, n)
			case !strings.Contains(n, ":") && !names[n]:
				t.Errorf("%s: Prometheus has no metric %s", u.where, n)
			default:
				checked++
			}
		}
	}
	for record, expr := range records {
		if pending[record] || usesPending(expr) {
			continue
		}
		if n, err := prom.count(record); err != nil || n == 0 {
			t.Errorf("recording rule %s has no series (%v): its inputs are missing", record, err)
		}
	}
	for _, u := range uses {
		if !u.dashboard || usesPending(u.expr) {
			continue
		}
		n, err := prom.querySeries(dashboardQuery(u.expr))
		if err != nil || n == 0 {
			t.Errorf("%s returns no series (%v): %s", u.where, err, u.expr)
		}
	}
	t.Logf("%d metric references checked against %d names scraped; %d recording rules; pending (push, not exported yet): %v",
		checked, len(names), len(records), sortedKeys(pending))
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// prometheus is a running Prometheus server and its API.
type prometheus struct{ url string }

func startPrometheus(t *testing.T, dir, target string) prometheus {
	t.Helper()
	rules, _ := filepath.Abs("prometheus/rules.yml")
	alerts, _ := filepath.Abs("prometheus/alerts.yml")
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q, %q]
scrape_configs:
  - job_name: livedrops-all
    static_configs:
      - targets: [%q]
`, rules, alerts, target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var log bytes.Buffer
	cmd := exec.Command("prometheus", "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "prom"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	p := prometheus{url: "http://" + addr}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited: %v\n%s", err, log.String())
		default:
		}
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 60 s\n%s", log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (p prometheus) get(path string, q url.Values, v any) error {
	resp, err := http.Get(p.url + path + "?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s: %w: %s", path, err, b)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, v)
}

// names are the metric names Prometheus holds.
func (p prometheus) names() (map[string]bool, error) {
	var list []string
	if err := p.get("/api/v1/label/__name__/values", nil, &list); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(list))
	for _, n := range list {
		out[n] = true
	}
	return out, nil
}

// querySeries runs an instant query and returns how many series (or 1 for a scalar) it answered.
func (p prometheus) querySeries(q string) (int, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {q}}, &data); err != nil {
		return 0, err
	}
	if data.ResultType == "scalar" {
		return 1, nil
	}
	var series []json.RawMessage
	if err := json.Unmarshal(data.Result, &series); err != nil {
		return 0, err
	}
	return len(series), nil
}

// count is the number of series of a metric (NaN-valued ones included).
func (p prometheus) count(name string) (int, error) {
	return p.querySeries(name)
}

// traffic makes one of everything happen on the stack at base, through the public API: accounts, a
// creator, a product, a drop that starts (the scheduler and the relay run), a follower's socket that
// receives drop.started, an order, and the catalogue reads.
func traffic(t *testing.T, base string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := rest{t, ctx, base}
	creator, fan, product := r.shop("scrape")

	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + fan.Token}}})
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	defer conn.CloseNow()
	if _, _, err := conn.Read(ctx); err != nil { // hello
		t.Fatalf("hello: %v", err)
	}
	drop := r.drop(creator, product, 1500*time.Millisecond)
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("waiting for drop.started: %v", err)
		}
		if bytes.Contains(data, []byte(`"drop.started"`)) {
			break
		}
	}
	conn.Close(websocket.StatusNormalClosure, "")
	r.call("POST", "/orders", fan.Token, map[string]any{"drop_id": drop, "quantity": 1, "idempotency_key": "scrape-1"}, 201, nil)
	for range 3 {
		r.call("GET", fmt.Sprintf("/drops/%d", drop), "", nil, 200, nil)
		r.call("GET", fmt.Sprintf("/products/%d", product), "", nil, 200, nil)
		r.call("GET", "/products?page=1", "", nil, 200, nil)
		r.call("GET", fmt.Sprintf("/creators/%d", creator.UserID), "", nil, 200, nil)
		r.call("GET", fmt.Sprintf("/creators/%d/followers", creator.UserID), "", nil, 200, nil)
		r.call("GET", "/drops/live", "", nil, 200, nil)
	}
}
