package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/livedrops/livedrops/api/httpkit"
	"github.com/livedrops/livedrops/store"
)

// statusOf is the HTTP status of each stable error code.
var statusOf = map[string]int{
	"invalid_argument":       http.StatusBadRequest,
	"unauthorized":           http.StatusUnauthorized,
	"forbidden":              http.StatusForbidden,
	"not_found":              http.StatusNotFound,
	"email_taken":            http.StatusConflict,
	"already_exists":         http.StatusConflict,
	"sold_out":               http.StatusConflict,
	"drop_not_live":          http.StatusConflict,
	"limit_exceeded":         http.StatusConflict,
	"request_in_progress":    http.StatusConflict,
	"payload_too_large":      http.StatusRequestEntityTooLarge,
	"unsupported_media_type": http.StatusUnsupportedMediaType,
	"idempotency_mismatch":   http.StatusUnprocessableEntity,
	"rate_limited":           http.StatusTooManyRequests,
	"unavailable":            http.StatusServiceUnavailable,
	"timeout":                http.StatusServiceUnavailable,
}

// requestError is a problem with the request itself (its body, path, query or credentials), found
// before any store is asked.
type requestError struct {
	code   string
	detail string
	// retryAfter, when positive, is sent as Retry-After (rate_limited).
	retryAfter time.Duration
}

func (e *requestError) Error() string { return e.code + ": " + e.detail }

func badRequest(format string, args ...any) error {
	return &requestError{code: "invalid_argument", detail: fmt.Sprintf(format, args...)}
}

// writeError answers err as problem+json: a *requestError as it says; a *store.FieldError as 400
// naming the field; an error wrapping a store sentinel with the sentinel's code and status; a deadline
// as 503 timeout; a dependency that cannot be reached (dependencyDown) as 503 unavailable with
// Retry-After. Anything else is logged with the request id and answered as a plain 500.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p := httpkit.Problem{}
	var re *requestError
	var fe *store.FieldError
	code := store.Code(err)
	switch {
	case errors.As(err, &re):
		p.Code, p.Detail = re.code, re.detail
		if re.code == "unauthorized" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="livedrops"`)
		}
		if re.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(re.retryAfter.Seconds()))))
		}
	case errors.As(err, &fe):
		p.Code, p.Detail = "invalid_argument", fe.Field+": "+fe.Detail
	case code != "":
		p.Code, p.Detail = code, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		p.Code, p.Detail = "timeout", "the request took too long; try again later"
	case dependencyDown(err):
		a.logger.LogAttrs(r.Context(), slog.LevelWarn, "request failed: a dependency is unreachable",
			slog.String("request_id", httpkit.RequestIDFrom(r.Context())),
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("err", err))
		p.Code, p.Detail = "unavailable", "a service this request needs cannot be reached; try again shortly (an order with the same idempotency key)"
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer. 499 in the access log, as nginx says.
		w.WriteHeader(499)
		return
	default:
		a.logger.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("request_id", httpkit.RequestIDFrom(r.Context())),
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("err", err))
		p.Code, p.Detail = "internal", "an internal error occurred; quote the request id when reporting it"
	}
	p.Status = statusOf[p.Code]
	if p.Status == 0 {
		p.Status = http.StatusInternalServerError
	}
	httpkit.WriteProblem(w, r, p)
}

// dependencyDown reports whether err says that a server the request needs (PostgreSQL, Redis) could not
// be reached or dropped the connection: a network error, a connection closed mid-answer or before its
// use (an error whose SafeToRetry method says nothing was sent: pgconn's "conn closed"), or a
// PostgreSQL refusal of the connection itself (SQLSTATE class 08, 53300 too many connections, 57P01-03
// shutting down or starting up). Such a request may be tried again as it is; its answer is 503, not a
// 500 that would say the request itself broke something. It reads the SQLSTATE and SafeToRetry
// through the error's methods (pgconn's errors have them), so api does not depend on the driver.
func dependencyDown(err error) bool {
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	// The driver's word that the request failed before anything reached the server (pgconn: a pooled
	// connection the server had already closed, "conn closed"): it may be tried again as it is.
	var retryable interface{ SafeToRetry() bool }
	if errors.As(err, &retryable) && retryable.SafeToRetry() {
		return true
	}
	var coded interface{ SQLState() string }
	if errors.As(err, &coded) {
		switch state := coded.SQLState(); {
		case strings.HasPrefix(state, "08"), state == "53300", state == "57P01", state == "57P02", state == "57P03":
			return true
		}
	}
	return false
}
