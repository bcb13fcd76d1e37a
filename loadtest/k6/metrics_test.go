package k6_test

import (
	"strings"
	"testing"

	"github.com/livedrops/livedrops/loadtest/k6"
)

func TestParseThreshold(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want k6.Threshold
		err  bool
	}{
		{in: "p(95)<=200", want: k6.Threshold{Agg: "p", P: 95, Op: "<=", Value: 200}},
		{in: "p(99.9) < 2000", want: k6.Threshold{Agg: "p", P: 99.9, Op: "<", Value: 2000}},
		{in: "rate<0.001", want: k6.Threshold{Agg: "rate", Op: "<", Value: 0.001}},
		{in: "count==0", want: k6.Threshold{Agg: "count", Op: "==", Value: 0}},
		{in: "avg>=1", want: k6.Threshold{Agg: "avg", Op: ">=", Value: 1}},
		{in: "med!=3", want: k6.Threshold{Agg: "med", Op: "!=", Value: 3}},
		{in: "max>5", want: k6.Threshold{Agg: "max", Op: ">", Value: 5}},
		{in: "p(101)<1", err: true},
		{in: "p(x)<1", err: true},
		{in: "mean<1", err: true},
		{in: "rate<", err: true},
		{in: "rate<NaN", err: true},
		{in: "<1", err: true},
		{in: "rate~1", err: true},
		{in: "", err: true},
	} {
		got, err := k6.ParseThreshold(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseThreshold(%q): error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && got != tc.want {
			t.Errorf("ParseThreshold(%q): got %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestEvaluate(t *testing.T) {
	m := k6.NewMetrics()
	for i := 1; i <= 100; i++ {
		kind := "read"
		if i > 90 {
			kind = "order"
		}
		m.Add("http_req_duration", map[string]string{"kind": kind, "name": "GET /x"}, float64(i))
		m.AddRate("http_req_failed", nil, i == 100)
	}
	m.AddRate("checks", map[string]string{"check": "books balance"}, true)
	m.AddRate("checks", map[string]string{"check": "other"}, false)
	m.Add("dropped_iterations", nil, 2)
	m.Add("dropped_iterations", nil, 1)

	for _, tc := range []struct {
		key, expr string
		ok        bool
		got       float64
	}{
		{"http_req_duration{kind:read}", "p(95)<=200", true, 85.55},
		{"http_req_duration{kind:read}", "max<90", false, 90},
		{"http_req_duration{kind:order}", "min>=91", true, 91},
		{"http_req_duration{kind:order,name:GET /x}", "med==95.5", true, 95.5},
		{"http_req_duration", "avg==50.5", true, 50.5},
		{"http_req_failed", "rate<0.001", false, 0.01},
		{"checks{check:books balance}", "rate==1", true, 1},
		{"dropped_iterations", "count<=3", true, 3},
	} {
		v := m.Evaluate(map[string][]string{tc.key: {tc.expr}})[0]
		if v.Err != nil || v.OK != tc.ok || v.Got < tc.got-1e-9 || v.Got > tc.got+1e-9 {
			t.Errorf("%s %s: got %v, want ok=%v value %v", tc.key, tc.expr, v, tc.ok, tc.got)
		}
	}
	// A metric the twin never measured fails rather than passing silently, as would a malformed key.
	for _, key := range []string{"delivery_ms", "checks{check:nobody}", "http_req_duration{kind}", "x{a:b"} {
		if v := m.Evaluate(map[string][]string{key: {"p(99)<2000"}})[0]; v.OK || v.Err == nil {
			t.Errorf("%s: got %v, want an error", key, v)
		}
	}
}

func FuzzParseThreshold(f *testing.F) {
	for _, s := range []string{"p(95)<=200", "rate<0.001", "count==0", "p(99.9)<2e3", "avg>=-1", "p()<1", "rate<=<1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		th, err := k6.ParseThreshold(s)
		if err != nil {
			return
		}
		if th.Op == "" || th.Agg == "" || (th.Agg == "p" && (th.P < 0 || th.P > 100)) {
			t.Fatalf("ParseThreshold(%q) = %+v: incomplete", s, th)
		}
		got, err := th.Aggregate([]float64{1, 2, 3})
		if err != nil {
			t.Fatalf("Aggregate of a parsed threshold %+v: %v", th, err)
		}
		_ = th.Holds(got)
	})
}

func FuzzMetricKey(f *testing.F) {
	for _, s := range []string{"http_req_duration{kind:read}", "checks{check:a b}", "x", "x{a:b,c:d}", "{", "x{:}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		m := k6.NewMetrics()
		m.Add("x", map[string]string{"a": "b"}, 1)
		values, err := m.Values(key)
		if err != nil {
			return
		}
		if key == "x" && len(values) != 1 {
			t.Fatalf("Values(x) = %v, want the one sample", values)
		}
		if !strings.HasPrefix(key, "x") && len(values) != 0 {
			t.Fatalf("Values(%q) = %v: matched another metric", key, values)
		}
	})
}
