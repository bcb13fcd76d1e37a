package httpkit

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts and times HTTP requests. Build it with NewMetrics and
// install Middleware.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

// NewMetrics registers on reg:
//
//	livedrops_http_requests_total{method,route,status}            counter
//	livedrops_http_request_duration_seconds{method,route,status}  histogram, 1ms to 10s
//	livedrops_http_requests_in_flight                             gauge
//
// Label values are bounded: route is the chi route pattern or "unmatched",
// method is a standard method or "OTHER". Two roles sharing one registry
// need distinct registerers, such as
// prometheus.WrapRegistererWith(prometheus.Labels{"role": "hub"}, reg).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	labels := []string{"method", "route", "status"}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "livedrops", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests answered, by method, route pattern and status.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "livedrops", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time from the start of the request to the end of its handler, by method, route pattern and status.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, labels),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "livedrops", Subsystem: "http", Name: "requests_in_flight",
			Help: "HTTP requests being served, open WebSocket and SSE streams included.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("httpkit: register http metrics: %w", err)
		}
	}
	return m, nil
}

// Middleware counts and times each request once the next handler returns
// (or a panic unwinds through), labelled with the route chi matched.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := wrap(w)
		m.inFlight.Inc()
		defer func() {
			m.inFlight.Dec()
			method, route, status := methodLabel(r.Method), routePattern(r), strconv.Itoa(rec.Status())
			m.requests.WithLabelValues(method, route, status).Inc()
			m.duration.WithLabelValues(method, route, status).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(rec, r)
	})
}

// methodLabel bounds the method label: unknown methods become "OTHER".
func methodLabel(method string) string {
	methods := standardMethods()
	if slices.Contains(methods[:], method) {
		return method
	}
	return "OTHER"
}
