package httpkit_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/api/httpkit"
)

func TestWriteProblem(t *testing.T) {
	tests := []struct {
		name       string
		problem    httpkit.Problem
		wantStatus int
	}{
		{
			name:       "problem_full",
			problem:    httpkit.Problem{Type: "https://livedrops.dev/problems/sold-out", Title: "Sold out", Status: http.StatusConflict, Detail: "drop 42 has no stock left", Code: "sold_out"},
			wantStatus: http.StatusConflict,
		},
		{
			name:       "problem_defaults",
			problem:    httpkit.Problem{Status: http.StatusNotFound, Code: "not_found"},
			wantStatus: http.StatusNotFound,
		},
		{
			name:       "problem_zero",
			wantStatus: http.StatusInternalServerError,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			w.Header().Set("Content-Length", "999") // stale, from a handler that gave up
			httpkit.WriteProblem(w, httptest.NewRequest(http.MethodGet, "/", nil), tt.problem)

			if got := w.Code; got != tt.wantStatus {
				t.Errorf("status: got %d, want %d", got, tt.wantStatus)
			}
			if got, want := w.Header().Get("Content-Type"), "application/problem+json"; got != want {
				t.Errorf("Content-Type: got %q, want %q", got, want)
			}
			if got := w.Header().Get("Content-Length"); got != "" {
				t.Errorf("Content-Length: got %q, want it dropped", got)
			}
			golden(t, tt.name, w.Body.Bytes())
		})
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	logger, _ := newLogger()
	r := httpkit.NewRouter(httpkit.Options{Logger: logger})
	r.Get("/things/{id}", func(http.ResponseWriter, *http.Request) {})
	r.Put("/things/{id}", func(http.ResponseWriter, *http.Request) {})
	r.Route("/admin", func(r chi.Router) {
		r.Post("/users", func(http.ResponseWriter, *http.Request) {})
	})

	tests := []struct {
		name, method, path string
		wantStatus         int
		wantCode           string
		wantAllow          string
	}{
		{"unknown path", http.MethodGet, "/nope", http.StatusNotFound, "not_found", ""},
		{"unknown sub path", http.MethodGet, "/admin/nope", http.StatusNotFound, "not_found", ""},
		{"wrong method", http.MethodDelete, "/things/7", http.StatusMethodNotAllowed, "method_not_allowed", "GET, PUT"},
		{"wrong method in sub router", http.MethodGet, "/admin/users", http.StatusMethodNotAllowed, "method_not_allowed", "POST"},
		{"unknown method", "BREW", "/things/7", http.StatusMethodNotAllowed, "method_not_allowed", "GET, PUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			r.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, nil))

			if w.Code != tt.wantStatus {
				t.Errorf("status: got %d, want %d", w.Code, tt.wantStatus)
			}
			p := decodeProblem(t, w.Header().Get("Content-Type"), w.Body.Bytes())
			if p["code"] != tt.wantCode || p["status"] != float64(tt.wantStatus) {
				t.Errorf("problem: got %v, want code %q and status %d", p, tt.wantCode, tt.wantStatus)
			}
			if got := w.Header().Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow: got %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

// FuzzProblemEncoding: WriteProblem writes what json.NewEncoder(w).Encode writes of the problem.
func FuzzProblemEncoding(f *testing.F) {
	f.Add("", "", 0, "", "")
	f.Add("about:blank", "Conflict", 409, "place order: drop 7: sold out", "sold_out")
	f.Add("t<&>", "ti\"tle\\", -1, "line\nsep\u2028 \xff", "c\x00")
	f.Fuzz(func(t *testing.T, typ, title string, status int, detail, code string) {
		if status != 0 && (status < 100 || status > 999) {
			return // WriteHeader refuses such codes
		}
		p := httpkit.Problem{Type: typ, Title: title, Status: status, Detail: detail, Code: code}
		rec := httptest.NewRecorder()
		httpkit.WriteProblem(rec, httptest.NewRequest(http.MethodGet, "/", nil), p)
		want := p
		if want.Status == 0 {
			want.Status = http.StatusInternalServerError
		}
		if want.Type == "" {
			want.Type = "about:blank"
		}
		if want.Title == "" {
			want.Title = http.StatusText(want.Status)
		}
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(want); err != nil {
			t.Fatal(err)
		}
		if rec.Body.String() != buf.String() {
			t.Fatalf("WriteProblem wrote %q\nwant              %q", rec.Body.String(), buf.String())
		}
	})
}
