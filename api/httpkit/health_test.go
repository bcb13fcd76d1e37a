package httpkit_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livedrops/livedrops/api/httpkit"
)

func TestHealthz(t *testing.T) {
	logger, _ := newLogger()
	h := httpkit.NewHealth(logger, 0)
	h.SetDraining() // liveness does not care

	w := httptest.NewRecorder()
	h.Healthz(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))

	if got, want := w.Code, http.StatusOK; got != want {
		t.Errorf("status: got %d, want %d", got, want)
	}
	if got, want := w.Body.String(), "{\"status\":\"ok\"}\n"; got != want {
		t.Errorf("body: got %q, want %q", got, want)
	}
	if got, want := w.Header().Get("Cache-Control"), "no-store"; got != want {
		t.Errorf("Cache-Control: got %q, want %q", got, want)
	}
}

func TestReadyz(t *testing.T) {
	pass := func(context.Context) error { return nil }
	fail := func(context.Context) error { return errors.New("dial tcp 10.0.0.7:5432: connection refused") }
	honoursDeadline := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	ignoresDeadline := func(context.Context) error { <-release; return nil }

	tests := []struct {
		name       string
		checks     []httpkit.Check
		draining   bool
		wantStatus int
		golden     string // compared when set
		wantChecks map[string]string
		wantDetail string // a substring of detail, for 503
	}{
		{
			name:       "all pass",
			checks:     []httpkit.Check{{"postgres", pass}, {"redis", pass}},
			wantStatus: http.StatusOK,
			golden:     "readyz_ready",
		},
		{
			name:       "no checks",
			wantStatus: http.StatusOK,
			wantChecks: map[string]string{},
		},
		{
			name:       "one fails",
			checks:     []httpkit.Check{{"postgres", pass}, {"redis", fail}},
			wantStatus: http.StatusServiceUnavailable,
			golden:     "readyz_not_ready",
		},
		{
			name:       "one times out honouring its context",
			checks:     []httpkit.Check{{"postgres", pass}, {"nats", honoursDeadline}},
			wantStatus: http.StatusServiceUnavailable,
			wantChecks: map[string]string{"postgres": "ok", "nats": "timeout"},
			wantDetail: "nats",
		},
		{
			name:       "one times out ignoring its context",
			checks:     []httpkit.Check{{"postgres", fail}, {"nats", ignoresDeadline}},
			wantStatus: http.StatusServiceUnavailable,
			wantChecks: map[string]string{"postgres": "failed", "nats": "timeout"},
			wantDetail: "postgres, nats",
		},
		{
			name:       "draining",
			checks:     []httpkit.Check{{"postgres", pass}},
			draining:   true,
			wantStatus: http.StatusServiceUnavailable,
			wantDetail: "draining",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := newLogger()
			var ran atomic.Int32
			checks := make([]httpkit.Check, len(tt.checks))
			for i, c := range tt.checks {
				checks[i] = httpkit.Check{Name: c.Name, Check: func(ctx context.Context) error {
					ran.Add(1)
					return c.Check(ctx)
				}}
			}
			h := httpkit.NewHealth(logger, 200*time.Millisecond, checks...)
			if tt.draining {
				h.SetDraining()
			}

			w := httptest.NewRecorder()
			h.Readyz(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))

			if w.Code != tt.wantStatus {
				t.Errorf("status: got %d, want %d", w.Code, tt.wantStatus)
			}
			if got, want := w.Header().Get("Cache-Control"), "no-store"; got != want {
				t.Errorf("Cache-Control: got %q, want %q", got, want)
			}
			if strings.Contains(w.Body.String(), "10.0.0.7") {
				t.Errorf("body: got %s, want no check error text", w.Body)
			}
			if tt.golden != "" {
				golden(t, tt.golden, w.Body.Bytes())
			}
			var body struct {
				Code   string            `json:"code"`
				Detail string            `json:"detail"`
				Checks map[string]string `json:"checks"`
			}
			if tt.wantStatus != http.StatusOK {
				p := decodeProblem(t, w.Header().Get("Content-Type"), w.Body.Bytes())
				if p["code"] != "not_ready" {
					t.Errorf("code: got %v, want not_ready", p["code"])
				}
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(body.Detail, tt.wantDetail) {
				t.Errorf("detail: got %q, want it to contain %q", body.Detail, tt.wantDetail)
			}
			if tt.wantChecks != nil && !maps.Equal(body.Checks, tt.wantChecks) {
				t.Errorf("checks: got %v, want %v", body.Checks, tt.wantChecks)
			}
			if tt.draining && ran.Load() != 0 {
				t.Errorf("checks run while draining: got %d, want 0", ran.Load())
			}
			logged := len(logs.withMsg(t, "readiness check failed")) > 0
			if wantLogged := tt.wantStatus != http.StatusOK && !tt.draining; logged != wantLogged {
				t.Errorf("check failure logged: got %v, want %v", logged, wantLogged)
			}
		})
	}
}
