package httpkit_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/livedrops/livedrops/api/httpkit"
)

func TestAccessLog(t *testing.T) {
	tests := []struct {
		name, method, path string
		wantRoute          string
		wantStatus         int
		wantBytes          int
	}{
		{"matched route", http.MethodPost, "/things/42", "/things/{id}", http.StatusCreated, len("created")},
		{"implicit 200", http.MethodGet, "/empty", "/empty", http.StatusOK, 0},
		{"unmatched", http.MethodGet, "/nope/42", "unmatched", http.StatusNotFound, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := newLogger()
			r := httpkit.NewRouter(httpkit.Options{Logger: logger})
			r.Post("/things/{id}", func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusCreated)
				_, _ = w.Write([]byte("created"))
			})
			r.Get("/empty", func(http.ResponseWriter, *http.Request) {})

			w := httptest.NewRecorder()
			r.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, nil))

			lines := logs.withMsg(t, "http request")
			if len(lines) != 1 {
				t.Fatalf("access lines: got %d, want 1", len(lines))
			}
			line := lines[0]
			wantBytes := tt.wantBytes
			if wantBytes < 0 {
				wantBytes = w.Body.Len()
			}
			want := map[string]any{
				"level":      "INFO",
				"request_id": w.Header().Get(httpkit.RequestIDHeader),
				"method":     tt.method,
				"route":      tt.wantRoute,
				"path":       tt.path,
				"status":     float64(tt.wantStatus),
				"bytes":      float64(wantBytes),
				"remote":     "192.0.2.1:1234", // httptest.NewRequest's
			}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("%s: got %v, want %v", k, line[k], v)
				}
			}
			if d, ok := line["duration_ms"].(float64); !ok || d < 0 {
				t.Errorf("duration_ms: got %v, want a number >= 0", line["duration_ms"])
			}
		})
	}
}
