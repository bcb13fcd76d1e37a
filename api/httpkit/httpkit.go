// Package httpkit is the HTTP scaffolding shared by the api and hub roles:
// problem+json answers (RFC 9457), request ids, access logs, panic recovery,
// body limits, Prometheus metrics, health probes, and a router and server
// assembled with production defaults.
package httpkit

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// Options configures NewRouter.
type Options struct {
	// Logger receives access lines and panics. Required.
	Logger *slog.Logger
	// Metrics, when not nil, counts and times every request.
	Metrics *Metrics
	// BodyLimit caps request bodies in bytes; zero means DefaultBodyLimit.
	BodyLimit int64
}

// NewRouter returns a chi router with the standard middleware stack,
// outermost first: RequestID, AccessLog, Metrics, Recover, BodyLimit. So a
// panic is logged and counted as a 500 carrying its request id. Unknown paths
// and methods are answered by NotFound and MethodNotAllowed. No route is
// mounted. It panics if o.Logger is nil.
func NewRouter(o Options) chi.Router {
	if o.Logger == nil {
		panic("httpkit: NewRouter needs a Logger")
	}
	r := chi.NewRouter()
	r.Use(RequestID, AccessLog(o.Logger))
	if o.Metrics != nil {
		r.Use(o.Metrics.Middleware)
	}
	r.Use(Recover(o.Logger), BodyLimit(o.BodyLimit))
	r.NotFound(NotFound)
	r.MethodNotAllowed(MethodNotAllowed)
	return r
}

// Timeouts configures NewServer. A zero field means its documented default;
// a negative one means no limit.
type Timeouts struct {
	// ReadHeader bounds reading the request line and headers. Default 5s.
	ReadHeader time.Duration
	// Read bounds reading the whole request, body included. Default 30s.
	Read time.Duration
	// Write bounds writing the answer. Default none, because WebSocket and SSE
	// handlers stream for long and manage their own write deadlines; give
	// ordinary API routes a deadline with the Timeout middleware instead.
	Write time.Duration
	// Idle bounds how long a keep-alive connection waits for its next request.
	// Default 120s.
	Idle time.Duration
}

// MaxHeaderBytes is the request header size limit NewServer sets: 64 KiB.
const MaxHeaderBytes = 64 << 10

// NewServer returns an http.Server for h on addr with timeouts t (zero fields
// take their defaults), MaxHeaderBytes, and net/http's own errors logged to
// logger at Warn.
func NewServer(addr string, h http.Handler, logger *slog.Logger, t Timeouts) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: orDefault(t.ReadHeader, 5*time.Second),
		ReadTimeout:       orDefault(t.Read, 30*time.Second),
		WriteTimeout:      t.Write,
		IdleTimeout:       orDefault(t.Idle, 120*time.Second),
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Timeout is middleware for ordinary (non-streaming) routes: the request
// context gets a deadline d from now. If the deadline passes and the handler
// returns without answering, Timeout answers 503 problem+json with code
// "timeout". Handlers must watch their context; Timeout does not interrupt
// them.
func Timeout(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			rec := wrap(w)
			next.ServeHTTP(rec, r.WithContext(ctx))
			if !rec.started && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				WriteProblem(rec, r, Problem{
					Status: http.StatusServiceUnavailable,
					Code:   "timeout",
					Detail: "the request took too long; try again later",
				})
			}
		})
	}
}
