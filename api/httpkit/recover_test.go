package httpkit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/livedrops/livedrops/api/httpkit"
)

func TestRecoverPanicBecomesProblem(t *testing.T) {
	logger, logs := newLogger()
	r := httpkit.NewRouter(httpkit.Options{Logger: logger})
	r.Get("/boom", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream") // set, never sent
		panic("secret: postgres password is hunter2")
	})

	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/boom", nil))

	if w.Code != http.StatusInternalServerError {
		t.Errorf("status: got %d, want 500", w.Code)
	}
	id := w.Header().Get(httpkit.RequestIDHeader)
	if id == "" {
		t.Error("X-Request-Id: got none, want one")
	}
	p := decodeProblem(t, w.Header().Get("Content-Type"), w.Body.Bytes())
	if p["code"] != "internal" || p["status"] != float64(500) {
		t.Errorf("problem: got %v, want code internal and status 500", p)
	}
	if strings.Contains(w.Body.String(), "hunter2") {
		t.Errorf("body: got %s, want no panic text", w.Body)
	}
	golden(t, "recover_500", w.Body.Bytes())

	panics := logs.withMsg(t, "panic serving request")
	if len(panics) != 1 {
		t.Fatalf("panic log lines: got %d, want 1", len(panics))
	}
	if got := panics[0]; got["level"] != "ERROR" || got["request_id"] != id ||
		!strings.Contains(got["panic"].(string), "hunter2") || !strings.Contains(got["stack"].(string), "recover_test.go") {
		t.Errorf("panic log line: got %v, want level ERROR, request_id %q, the panic value and a stack", got, id)
	}
	access := logs.withMsg(t, "http request")
	if len(access) != 1 || access[0]["status"] != float64(500) || access[0]["request_id"] != id {
		t.Errorf("access log: got %v, want one line with status 500 and request_id %q", access, id)
	}
}

// serveCatching serves one request through h and returns what panicked out
// of it, if anything.
func serveCatching(h http.Handler, w http.ResponseWriter, path string) (v any) {
	defer func() { v = recover() }()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return nil
}

func TestRecoverAbort(t *testing.T) {
	wrappedAbort := fmt.Errorf("client went away: %w", http.ErrAbortHandler)
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		wantPanic  any
		wantLogged bool
		wantStatus int
		wantBody   string
	}{
		{
			name:       "ErrAbortHandler passes through",
			handler:    func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) },
			wantPanic:  http.ErrAbortHandler,
			wantStatus: http.StatusOK, // the recorder's default: nothing was written
		},
		{
			name:       "wrapped ErrAbortHandler passes through",
			handler:    func(http.ResponseWriter, *http.Request) { panic(wrappedAbort) },
			wantPanic:  wrappedAbort,
			wantStatus: http.StatusOK,
		},
		{
			name: "panic after the header aborts without a second header",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusAccepted)
				_, _ = w.Write([]byte("partial"))
				panic("late")
			},
			wantPanic:  http.ErrAbortHandler,
			wantLogged: true,
			wantStatus: http.StatusAccepted,
			wantBody:   "partial",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := newLogger()
			w := httptest.NewRecorder()

			got := serveCatching(httpkit.Recover(logger)(tt.handler), w, "/")

			if got != tt.wantPanic {
				t.Errorf("panic: got %v, want %v", got, tt.wantPanic)
			}
			if n := len(logs.withMsg(t, "panic serving request")); (n == 1) != tt.wantLogged || n > 1 {
				t.Errorf("panic log lines: got %d, want logged %v", n, tt.wantLogged)
			}
			if w.Code != tt.wantStatus || w.Body.String() != tt.wantBody {
				t.Errorf("answer: got %d %q, want %d %q", w.Code, w.Body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

// An aborted request is still logged by AccessLog, which runs outside Recover.
func TestRecoverAbortStillLogged(t *testing.T) {
	logger, logs := newLogger()
	r := httpkit.NewRouter(httpkit.Options{Logger: logger})
	r.Get("/abort", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })

	if got := serveCatching(r, httptest.NewRecorder(), "/abort"); got != http.ErrAbortHandler {
		t.Errorf("panic: got %v, want http.ErrAbortHandler", got)
	}
	if got := logs.withMsg(t, "http request"); len(got) != 1 || got[0]["route"] != "/abort" {
		t.Errorf("access log: got %v, want one line for route /abort", got)
	}
}
