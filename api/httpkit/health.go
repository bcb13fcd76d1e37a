package httpkit

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultCheckTimeout bounds a readiness probe when NewHealth is given none.
const DefaultCheckTimeout = 2 * time.Second

// Check is one readiness dependency, such as "postgres". Check returns nil
// when the dependency is usable and must honour ctx's deadline.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Health serves liveness and readiness probes. It is safe for concurrent use.
type Health struct {
	logger   *slog.Logger
	timeout  time.Duration
	checks   []Check
	draining atomic.Bool
}

// NewHealth returns a Health that runs checks on every readiness probe, all
// at once, under one deadline of timeout (zero means DefaultCheckTimeout).
func NewHealth(logger *slog.Logger, timeout time.Duration, checks ...Check) *Health {
	if timeout == 0 {
		timeout = DefaultCheckTimeout
	}
	return &Health{logger: logger, timeout: timeout, checks: checks}
}

// Healthz answers 200 {"status":"ok"} for as long as the process serves.
func (h *Health) Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, "application/json", http.StatusOK, struct {
		Status string `json:"status"`
	}{"ok"})
}

// SetDraining makes every later readiness probe fail, so load balancers stop
// sending traffic: the first step of a graceful shutdown. It cannot be undone.
func (h *Health) SetDraining() {
	if !h.draining.Swap(true) {
		h.logger.Info("draining: readiness probes now fail")
	}
}

// Readyz runs the checks and answers 200
// {"status":"ready","checks":{"postgres":"ok",...}}, or 503 problem+json with
// code "not_ready", the failed checks named in detail and every check's
// outcome ("ok", "failed" or "timeout") under "checks". Once SetDraining was
// called it answers 503 without running the checks. Check errors are logged,
// never sent.
func (h *Health) Readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if h.draining.Load() {
		WriteProblem(w, r, Problem{
			Status: http.StatusServiceUnavailable,
			Code:   "not_ready",
			Detail: "draining: the server is shutting down",
		})
		return
	}
	results, failed := h.run(r.Context())
	if len(failed) == 0 {
		writeJSON(w, "application/json", http.StatusOK, struct {
			Status string            `json:"status"`
			Checks map[string]string `json:"checks"`
		}{"ready", results})
		return
	}
	writeJSON(w, problemType, http.StatusServiceUnavailable, struct {
		Problem
		Checks map[string]string `json:"checks"`
	}{Problem{
		Status: http.StatusServiceUnavailable,
		Code:   "not_ready",
		Detail: "not ready: " + strings.Join(failed, ", "),
	}.withDefaults(), results})
}

// run runs every check concurrently and returns each one's outcome and the
// names of those that did not pass, in the order given to NewHealth. A check
// that ignores its deadline is reported as "timeout" and left to finish alone.
func (h *Health) run(ctx context.Context) (map[string]string, []string) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	type result struct {
		i   int
		err error
	}
	done := make(chan result, len(h.checks)) // buffered: a late check never blocks
	for i, c := range h.checks {
		go func() { done <- result{i, c.Check(ctx)} }()
	}
	errs := make([]error, len(h.checks))
	reported := make([]bool, len(h.checks))
collect:
	for range h.checks {
		select {
		case res := <-done:
			errs[res.i], reported[res.i] = res.err, true
		case <-ctx.Done():
			break collect
		}
	}
	results := make(map[string]string, len(h.checks))
	var failed []string
	for i, c := range h.checks {
		outcome := "ok"
		switch {
		case !reported[i] || errors.Is(errs[i], context.DeadlineExceeded):
			outcome = "timeout"
		case errs[i] != nil:
			outcome = "failed"
		}
		results[c.Name] = outcome
		if outcome != "ok" {
			failed = append(failed, c.Name)
			h.logger.LogAttrs(ctx, slog.LevelWarn, "readiness check failed",
				slog.String("check", c.Name), slog.String("outcome", outcome), slog.Any("error", errs[i]))
		}
	}
	return results, failed
}
