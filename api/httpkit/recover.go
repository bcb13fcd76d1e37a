package httpkit

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
)

// Recover is middleware that turns a panic in the next handler into a 500
// problem+json with code "internal" and a generic detail, and logs the panic
// value and stack at Error with the request id. The panic text never reaches
// the client.
//
// A panic with http.ErrAbortHandler is passed on untouched, as net/http
// expects. When the answer had already started, a second header cannot be
// sent: Recover logs the panic and aborts the connection (like net/http does)
// so the client cannot take the partial answer for a whole one; a hijacked
// connection is left to its handler.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := wrap(w)
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				logger.LogAttrs(r.Context(), slog.LevelError, "panic serving request",
					slog.String("request_id", RequestIDFrom(r.Context())),
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.String("panic", fmt.Sprint(v)),
					slog.String("stack", string(debug.Stack())),
				)
				switch {
				case rec.hijacked:
				case rec.started:
					panic(http.ErrAbortHandler)
				default:
					WriteProblem(rec, r, Problem{
						Status: http.StatusInternalServerError,
						Code:   "internal",
						Detail: "an internal error occurred; quote the request id when reporting it",
					})
				}
			}()
			next.ServeHTTP(rec, r)
		})
	}
}
