package httpkit

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// AccessLog is middleware that writes one Info line per request to logger,
// with the keys request_id, method, route, path, status, bytes, duration_ms
// and remote. The route is the chi route pattern ("unmatched" when no route
// matched). The line is written even when a panic unwinds through, so an
// aborted request is logged with the status sent so far.
func AccessLog(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := wrap(w)
			defer func() {
				logger.LogAttrs(r.Context(), slog.LevelInfo, "http request",
					slog.String("request_id", RequestIDFrom(r.Context())),
					slog.String("method", r.Method),
					slog.String("route", routePattern(r)),
					slog.String("path", r.URL.Path),
					slog.Int("status", rec.Status()),
					slog.Int64("bytes", rec.bytes),
					slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
					slog.String("remote", r.RemoteAddr),
				)
			}()
			next.ServeHTTP(rec, r)
		})
	}
}

// routePattern returns the chi route pattern r matched, read after routing,
// or "unmatched". Unlike the raw path it holds no ids, so it is a bounded
// label value.
func routePattern(r *http.Request) string {
	if p := chi.RouteContext(r.Context()).RoutePattern(); p != "" {
		return p
	}
	return "unmatched"
}
