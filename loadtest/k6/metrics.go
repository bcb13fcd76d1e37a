// Package k6 holds the LiveDrops k6 scripts (browse.js, flash-sale.js, followers.js: run them with
// your own k6) and their Go twins: the same requests, sizes and thresholds, run from Go so that
// `make test` holds the scripts' promises against the real binary without k6. Both read
// scenarios.json (thresholds in k6's syntax, the read mix, the default sizes); this file evaluates
// those thresholds the way k6 does.
package k6

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Metrics collects samples as k6 does: a metric name, the sample's tags and a value (milliseconds
// for trends, 0 or 1 for rates, an amount for counters).
type Metrics struct {
	mu      sync.Mutex
	samples map[string][]sample
}

type sample struct {
	tags map[string]string
	v    float64
}

// NewMetrics returns an empty collection.
func NewMetrics() *Metrics { return &Metrics{samples: make(map[string][]sample)} }

// Add records one sample of metric name with tags (which Add keeps; do not change them after).
func (m *Metrics) Add(name string, tags map[string]string, v float64) {
	m.mu.Lock()
	m.samples[name] = append(m.samples[name], sample{tags, v})
	m.mu.Unlock()
}

// AddRate records a Rate sample: 1 when ok is true.
func (m *Metrics) AddRate(name string, tags map[string]string, ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.Add(name, tags, v)
}

// Values returns the values of the samples of a metric key, `name` or `name{tag:value,...}` (k6's
// sub-metric syntax: every listed tag must match).
func (m *Metrics) Values(key string) ([]float64, error) {
	name, filter, err := parseKey(key)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []float64
	for _, s := range m.samples[name] {
		if matches(s.tags, filter) {
			out = append(out, s.v)
		}
	}
	return out, nil
}

func matches(tags, filter map[string]string) bool {
	for k, v := range filter {
		if tags[k] != v {
			return false
		}
	}
	return true
}

// parseKey splits `name{a:b,c:d}` into the name and its tag filter.
func parseKey(key string) (string, map[string]string, error) {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		if key == "" || strings.ContainsAny(key, "}:,") {
			return "", nil, fmt.Errorf("metric key %q: not a metric name", key)
		}
		return key, nil, nil
	}
	name := key[:i]
	if name == "" || !strings.HasSuffix(key, "}") {
		return "", nil, fmt.Errorf("metric key %q: want name{tag:value,...}", key)
	}
	filter := make(map[string]string)
	for _, kv := range strings.Split(key[i+1:len(key)-1], ",") {
		k, v, ok := strings.Cut(kv, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return "", nil, fmt.Errorf("metric key %q: tag %q is not tag:value", key, kv)
		}
		filter[k] = v
	}
	return name, filter, nil
}

// Threshold is one k6 threshold expression such as `p(95)<=200`, `rate<0.001` or `count==0`.
type Threshold struct {
	Agg   string  // avg, min, max, med, count, rate, or p
	P     float64 // the percentile of p(N)
	Op    string  // <, <=, >, >=, ==, !=
	Value float64
}

// ParseThreshold parses k6's threshold syntax: an aggregation, an operator and a number.
func ParseThreshold(s string) (Threshold, error) {
	var t Threshold
	expr := strings.TrimSpace(s)
	j := strings.IndexAny(expr, "<>=!")
	if j <= 0 {
		return t, fmt.Errorf("threshold %q: want aggregation, operator, value", s)
	}
	agg := strings.TrimSpace(expr[:j])
	rest := expr[j:]
	for _, op := range []string{"<=", ">=", "==", "!=", "<", ">"} {
		if strings.HasPrefix(rest, op) {
			t.Op = op
			break
		}
	}
	if t.Op == "" {
		return t, fmt.Errorf("threshold %q: unknown operator", s)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(rest[len(t.Op):]), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return t, fmt.Errorf("threshold %q: value is not a number", s)
	}
	t.Value = v
	switch {
	case agg == "avg" || agg == "min" || agg == "max" || agg == "med" || agg == "count" || agg == "rate":
		t.Agg = agg
	case strings.HasPrefix(agg, "p(") && strings.HasSuffix(agg, ")"):
		p, err := strconv.ParseFloat(agg[2:len(agg)-1], 64)
		if err != nil || !(p >= 0 && p <= 100) {
			return t, fmt.Errorf("threshold %q: percentile must be 0 to 100", s)
		}
		t.Agg, t.P = "p", p
	default:
		return t, fmt.Errorf("threshold %q: unknown aggregation %q", s, agg)
	}
	return t, nil
}

// Aggregate computes t's aggregation over values (as k6: percentiles interpolate between ranks,
// rate is the share of non-zero values, count the sum).
func (t Threshold) Aggregate(values []float64) (float64, error) {
	if len(values) == 0 {
		// k6 passes a threshold without samples; a twin that never measured fails instead.
		return 0, errors.New("no samples")
	}
	switch t.Agg {
	case "count":
		sum := 0.0
		for _, v := range values {
			sum += v
		}
		return sum, nil
	case "rate":
		n := 0
		for _, v := range values {
			if v != 0 {
				n++
			}
		}
		return float64(n) / float64(len(values)), nil
	case "avg":
		sum := 0.0
		for _, v := range values {
			sum += v
		}
		return sum / float64(len(values)), nil
	case "min":
		return slices.Min(values), nil
	case "max":
		return slices.Max(values), nil
	case "med":
		return percentile(values, 50), nil
	case "p":
		return percentile(values, t.P), nil
	}
	return 0, fmt.Errorf("unknown aggregation %q", t.Agg)
}

func percentile(values []float64, p float64) float64 {
	s := slices.Clone(values)
	sort.Float64s(s)
	if len(s) == 1 {
		return s[0]
	}
	rank := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	return s[lo] + (s[hi]-s[lo])*(rank-float64(lo))
}

// Holds reports whether got satisfies the threshold.
func (t Threshold) Holds(got float64) bool {
	switch t.Op {
	case "<":
		return got < t.Value
	case "<=":
		return got <= t.Value
	case ">":
		return got > t.Value
	case ">=":
		return got >= t.Value
	case "==":
		return got == t.Value
	case "!=":
		return got != t.Value
	}
	return false
}

// Verdict is one threshold's outcome.
type Verdict struct {
	Key, Expr string
	Got       float64
	Samples   int
	OK        bool
	Err       error // malformed threshold, or no samples
}

func (v Verdict) String() string {
	switch {
	case v.Err != nil:
		return fmt.Sprintf("%s %s: %v", v.Key, v.Expr, v.Err)
	case v.OK:
		return fmt.Sprintf("%s %s: ok (%.4g over %d samples)", v.Key, v.Expr, v.Got, v.Samples)
	}
	return fmt.Sprintf("%s %s: FAILED (%.4g over %d samples)", v.Key, v.Expr, v.Got, v.Samples)
}

// Evaluate checks every threshold, in key order.
func (m *Metrics) Evaluate(thresholds map[string][]string) []Verdict {
	keys := make([]string, 0, len(thresholds))
	for k := range thresholds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []Verdict
	for _, k := range keys {
		for _, expr := range thresholds[k] {
			v := Verdict{Key: k, Expr: expr}
			t, err := ParseThreshold(expr)
			values, kerr := m.Values(k)
			switch {
			case err != nil:
				v.Err = err
			case kerr != nil:
				v.Err = kerr
			default:
				v.Samples = len(values)
				v.Got, v.Err = t.Aggregate(values)
				v.OK = v.Err == nil && t.Holds(v.Got)
			}
			out = append(out, v)
		}
	}
	return out
}
