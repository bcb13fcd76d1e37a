package k6

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed scenarios.json
var scenariosJSON []byte

// Scenario is one entry of scenarios.json.
type Scenario struct {
	Thresholds map[string][]string `json:"thresholds"`
	Mix        []struct {
		Request string `json:"request"`
		Weight  int    `json:"weight"`
	} `json:"mix"`
	Defaults                  map[string]any `json:"defaults"`
	DroppedIterationsMaxRatio float64        `json:"dropped_iterations_max_ratio"`
}

// Scenarios returns scenarios.json by scenario name (browse, flash-sale, followers).
func Scenarios() (map[string]Scenario, error) {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(scenariosJSON, &all); err != nil {
		return nil, fmt.Errorf("scenarios.json: %w", err)
	}
	out := make(map[string]Scenario)
	for name, raw := range all {
		if name == "comment" {
			continue
		}
		var s Scenario
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("scenarios.json %s: %w", name, err)
		}
		out[name] = s
	}
	return out, nil
}

// Target is the deployment a twin drives and its settings, the k6 scripts' -e NAME=value.
type Target struct {
	BaseURL  string            // the REST base, http://host:port
	WSURL    string            // the socket endpoint; empty: BaseURL's /ws
	Settings map[string]string // overrides of the scenario's defaults
	Client   *http.Client      // nil: a client with enough idle connections per host
}

func (t Target) client() *http.Client {
	if t.Client != nil {
		return t.Client
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1000
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

func (t Target) wsURL() string {
	if t.WSURL != "" {
		return t.WSURL
	}
	return "ws" + strings.TrimPrefix(strings.TrimRight(t.BaseURL, "/"), "http") + "/ws"
}

// run is one twin run: the scenario, its settings and what it measured.
type run struct {
	t        Target
	sc       Scenario
	name     string
	c        *http.Client
	m        *Metrics
	settings map[string]string
}

func newRun(t Target, name string) (*run, error) {
	all, err := Scenarios()
	if err != nil {
		return nil, err
	}
	sc, ok := all[name]
	if !ok {
		return nil, fmt.Errorf("scenarios.json has no %s", name)
	}
	r := &run{t: t, sc: sc, name: name, c: t.client(), m: NewMetrics(), settings: make(map[string]string)}
	for k, v := range sc.Defaults {
		r.settings[k] = fmt.Sprint(v)
	}
	for k, v := range t.Settings {
		r.settings[k] = v
	}
	return r, nil
}

func (r *run) str(name string) (string, error) {
	v, ok := r.settings[name]
	if !ok || v == "" {
		return "", fmt.Errorf("no default for %s in scenarios.json %s", name, r.name)
	}
	return v, nil
}

func (r *run) int(name string) (int, error) {
	s, err := r.str(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s must be a positive integer, not %s", name, s)
	}
	return n, nil
}

func (r *run) dur(name string) (time.Duration, error) {
	s, err := r.str(name)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s must be a duration such as 5s, not %s", name, s)
	}
	return d, nil
}

// Result is a twin run's outcome: every threshold's verdict, and its metrics for more checks.
type Result struct {
	Verdicts []Verdict
	Metrics  *Metrics
	Notes    []string // what the run saw, as the k6 script would log it
}

// Failed returns the verdicts that did not hold.
func (r Result) Failed() []Verdict {
	var out []Verdict
	for _, v := range r.Verdicts {
		if !v.OK {
			out = append(out, v)
		}
	}
	return out
}

// response is a read answer.
type response struct {
	status int
	body   []byte
}

func (rs response) decode(v any) error {
	if err := json.Unmarshal(rs.body, v); err != nil {
		return fmt.Errorf("status %d, body %q: %w", rs.status, rs.body, err)
	}
	return nil
}

// do sends one request as the k6 scripts' params() does (JSON, the bearer token, tags name and kind)
// and records http_req_duration and http_req_failed like k6: failed unless the status is expected
// (nil: 200 to 399).
func (r *run) do(ctx context.Context, method, path string, body any, token, name, kind string, expected []int) (response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(r.t.BaseURL, "/")+path, rd)
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	tags := map[string]string{"name": name, "kind": kind, "method": method}
	start := time.Now()
	resp, err := r.c.Do(req)
	var rs response
	if err == nil {
		rs.status = resp.StatusCode
		rs.body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		// k6 records a failed request with status 0.
		r.m.AddRate("http_req_failed", tags, true)
		return rs, fmt.Errorf("%s %s: %w", method, path, err)
	}
	r.m.Add("http_req_duration", tags, float64(time.Since(start))/float64(time.Millisecond))
	ok := rs.status >= 200 && rs.status <= 399
	if expected != nil {
		ok = false
		for _, s := range expected {
			ok = ok || rs.status == s
		}
	}
	r.m.AddRate("http_req_failed", tags, !ok)
	return rs, nil
}

// mustPost is lib.js mustPost: a setup write whose status must be one of want.
func (r *run) mustPost(ctx context.Context, path string, body any, token, name string, want ...int) (response, error) {
	rs, err := r.do(ctx, http.MethodPost, path, body, token, name, "setup", nil)
	if err != nil {
		return rs, err
	}
	for _, w := range want {
		if rs.status == w {
			return rs, nil
		}
	}
	return rs, fmt.Errorf("%s: status %d, want %v: %s", name, rs.status, want, rs.body)
}

func (r *run) check(name string, ok bool) {
	r.m.AddRate("checks", map[string]string{"check": name}, ok)
}

// Account is a user and its token, as POST /users answers.
type Account struct {
	UserID int64  `json:"user_id"`
	Token  string `json:"token"`
}

func runID() string {
	return fmt.Sprintf("k6twin-%s-%s", strconv.FormatInt(time.Now().UnixMilli(), 36), strconv.FormatInt(rand.Int64N(1e9), 36))
}

// createAccounts is lib.js createAccounts: POST /users, 50 at a time.
func (r *run) createAccounts(ctx context.Context, prefix string, n int) ([]Account, error) {
	out := make([]Account, n)
	for i := 0; i < n; i += 50 {
		var wg sync.WaitGroup
		errs := make([]error, min(n, i+50)-i)
		for j := i; j < min(n, i+50); j++ {
			wg.Go(func() {
				rs, err := r.mustPost(ctx, "/users", map[string]string{"name": fmt.Sprintf("Buyer %d", j),
					"email": fmt.Sprintf("%s-%d@load.test", prefix, j)}, "", "POST /users", http.StatusCreated)
				if err == nil {
					err = rs.decode(&out[j])
				}
				errs[j-i] = err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// createCreator is lib.js createCreator: a new creator with one product.
func (r *run) createCreator(ctx context.Context, prefix string) (Account, int64, error) {
	var creator Account
	rs, err := r.mustPost(ctx, "/users", map[string]string{"name": "Load creator", "email": prefix + "-creator@load.test"},
		"", "POST /users", http.StatusCreated)
	if err == nil {
		err = rs.decode(&creator)
	}
	if err != nil {
		return creator, 0, err
	}
	product, err := r.addProduct(ctx, creator, prefix, http.StatusCreated)
	return creator, product, err
}

// addProduct makes the account a creator (want says which statuses of POST /creators are fine) and
// adds a product.
func (r *run) addProduct(ctx context.Context, creator Account, prefix string, want ...int) (int64, error) {
	if _, err := r.mustPost(ctx, "/creators", map[string]string{"profile_name": "Load shop " + prefix}, creator.Token,
		"POST /creators", want...); err != nil {
		return 0, err
	}
	rs, err := r.mustPost(ctx, "/products", map[string]any{"title": "Load-test hoodie", "description": "k6", "price_cents": 4900},
		creator.Token, "POST /products", http.StatusCreated)
	if err != nil {
		return 0, err
	}
	var p struct {
		ProductID int64 `json:"product_id"`
	}
	return p.ProductID, rs.decode(&p)
}

// createDrop is lib.js createDrop: a drop of the product starting startIn from now, for an hour.
func (r *run) createDrop(ctx context.Context, creator Account, product int64, startIn time.Duration, stock, maxPerUser int) (int64, time.Time, error) {
	start := time.Now().Add(startIn).UTC()
	rs, err := r.mustPost(ctx, "/drops", map[string]any{"product_id": product,
		"start_time": start.Format(time.RFC3339Nano), "end_time": start.Add(time.Hour).Format(time.RFC3339Nano),
		"stock_count": stock, "max_per_user": maxPerUser}, creator.Token, "POST /drops", http.StatusCreated)
	if err != nil {
		return 0, time.Time{}, err
	}
	var d struct {
		DropID    int64     `json:"drop_id"`
		StartTime time.Time `json:"start_time"`
	}
	return d.DropID, d.StartTime, rs.decode(&d)
}

// waitForStatus is lib.js waitForStatus.
func (r *run) waitForStatus(ctx context.Context, drop int64, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		rs, err := r.do(ctx, http.MethodGet, fmt.Sprintf("/drops/%d", drop), nil, "", "GET /drops/{id}", "setup", nil)
		if err != nil {
			return err
		}
		r.check("GET /drops/{id} is 200", rs.status == http.StatusOK)
		var d struct {
			Status string `json:"status"`
		}
		if rs.status == http.StatusOK && rs.decode(&d) == nil && d.Status == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drop %d not %s after %v", drop, want, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stage is one step of an arrival-rate executor: the rate moves linearly to target over d.
type stage struct {
	target float64
	d      time.Duration
}

// iterationsBy is how many iterations the stages have started d after the start: the area under the
// rate curve.
func iterationsBy(stages []stage, start float64, d time.Duration) float64 {
	n, rate := 0.0, start
	for _, s := range stages {
		if d <= 0 {
			break
		}
		span := min(d, s.d)
		secs := span.Seconds()
		slope := (s.target - rate) / s.d.Seconds()
		n += rate*secs + slope*secs*secs/2
		rate = s.target
		d -= s.d
	}
	return n
}

// arrivals is k6's arrival-rate executors (constant-arrival-rate is one flat stage): iteration i
// starts when the area under the rate curve reaches i, on a free VU of at most maxVUs; when none is
// free it is dropped and counted in dropped_iterations. It returns when every started iteration ended.
func (r *run) arrivals(ctx context.Context, startRate float64, stages []stage, maxVUs int, iter func(n int64)) {
	var total time.Duration
	for _, s := range stages {
		total += s.d
	}
	planned := int64(iterationsBy(stages, startRate, total) + 0.5)
	vus := make(chan struct{}, maxVUs)
	var wg sync.WaitGroup
	var next, dropped int64
	begin := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for next < planned && ctx.Err() == nil {
		<-tick.C
		due := min(planned, int64(iterationsBy(stages, startRate, time.Since(begin))))
		for ; next < due; next++ {
			n := next
			select {
			case vus <- struct{}{}:
				wg.Go(func() {
					defer func() { <-vus }()
					iter(n)
				})
			default:
				dropped++
			}
		}
	}
	wg.Wait()
	r.m.Add("dropped_iterations", nil, float64(dropped))
	r.m.Add("iterations", nil, float64(next-dropped))
}

func (r *run) result(notes ...string) Result {
	return Result{Verdicts: r.m.Evaluate(r.sc.Thresholds), Metrics: r.m, Notes: notes}
}

// rng is a per-run random source for the draws of the read mix (the k6 scripts use Math.random).
type rng struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (g *rng) intN(n int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.r.IntN(n)
}

func newRNG() *rng { return &rng{r: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))} }

func q(s string) string { return url.QueryEscape(s) }
