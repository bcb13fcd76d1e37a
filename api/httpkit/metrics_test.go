package httpkit_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livedrops/livedrops/api/httpkit"
)

// newMetricsRouter returns a router whose requests are counted on a fresh
// registry.
func newMetricsRouter(tb testing.TB) (http.Handler, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	m, err := httpkit.NewMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	logger, _ := newLogger()
	r := httpkit.NewRouter(httpkit.Options{Logger: logger, Metrics: m})
	r.Get("/things/{id}", func(http.ResponseWriter, *http.Request) {})
	r.Get("/boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	return r, reg
}

func TestMetricsLabels(t *testing.T) {
	tests := []struct {
		name     string
		requests [][2]string // method, path
		want     string      // the counter, in exposition format
	}{
		{
			name:     "ids collapse into the route pattern",
			requests: [][2]string{{http.MethodGet, "/things/1"}, {http.MethodGet, "/things/2"}},
			want:     `livedrops_http_requests_total{method="GET",route="/things/{id}",status="200"} 2`,
		},
		{
			name:     "unknown paths are unmatched",
			requests: [][2]string{{http.MethodGet, "/nope/1"}, {http.MethodGet, "/nope/2"}},
			want:     `livedrops_http_requests_total{method="GET",route="unmatched",status="404"} 2`,
		},
		{
			name:     "unknown methods are OTHER",
			requests: [][2]string{{"BREW", "/things/1"}},
			want:     `livedrops_http_requests_total{method="OTHER",route="unmatched",status="405"} 1`,
		},
		{
			name:     "a panic counts as a 500",
			requests: [][2]string{{http.MethodGet, "/boom"}},
			want:     `livedrops_http_requests_total{method="GET",route="/boom",status="500"} 1`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, reg := newMetricsRouter(t)
			for _, req := range tt.requests {
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(req[0], req[1], nil))
			}

			want := "# HELP livedrops_http_requests_total HTTP requests answered, by method, route pattern and status.\n" +
				"# TYPE livedrops_http_requests_total counter\n" + tt.want + "\n"
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "livedrops_http_requests_total"); err != nil {
				t.Error(err)
			}
			if got, want := sampleCount(t, reg), uint64(len(tt.requests)); got != want {
				t.Errorf("histogram count: got %v, want %v", got, want)
			}
			if got := gaugeValue(t, reg, "livedrops_http_requests_in_flight"); got != 0 {
				t.Errorf("in flight after the requests: got %v, want 0", got)
			}
		})
	}
}

// sampleCount returns how many durations the single duration series holds.
func sampleCount(tb testing.TB, reg *prometheus.Registry) uint64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "livedrops_http_request_duration_seconds" {
			if n := len(mf.GetMetric()); n != 1 {
				tb.Fatalf("duration series: got %d, want 1", n)
			}
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	tb.Fatal("no livedrops_http_request_duration_seconds")
	return 0
}

func gaugeValue(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	tb.Fatalf("no %s", name)
	return 0
}

func TestNewMetricsRegistries(t *testing.T) {
	t.Run("two registries", func(t *testing.T) {
		for range 2 {
			if _, err := httpkit.NewMetrics(prometheus.NewRegistry()); err != nil {
				t.Errorf("got %v, want no error", err)
			}
		}
	})
	t.Run("one registry twice", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if _, err := httpkit.NewMetrics(reg); err != nil {
			t.Fatal(err)
		}
		_, err := httpkit.NewMetrics(reg)
		if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
			t.Errorf("got %v, want a prometheus.AlreadyRegisteredError", err)
		}
	})
	t.Run("one registry, two roles", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		for _, role := range []string{"api", "hub"} {
			if _, err := httpkit.NewMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"role": role}, reg)); err != nil {
				t.Errorf("role %s: got %v, want no error", role, err)
			}
		}
	})
}
