package httpkit_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/api/httpkit"
)

// Every answer of the stack, errors included, carries the request id that
// its access line names.
func TestRouterStackRequestID(t *testing.T) {
	logger, logs := newLogger()
	r := httpkit.NewRouter(httpkit.Options{Logger: logger, BodyLimit: 8})
	r.Get("/ok", func(http.ResponseWriter, *http.Request) {})
	r.Post("/ok", func(http.ResponseWriter, *http.Request) {})
	r.Get("/boom", func(http.ResponseWriter, *http.Request) { panic("boom") })

	tests := []struct {
		name, method, path, body string
		wantStatus               int
	}{
		{"ok", http.MethodGet, "/ok", "", http.StatusOK},
		{"not found", http.MethodGet, "/nope", "", http.StatusNotFound},
		{"method not allowed", http.MethodDelete, "/ok", "", http.StatusMethodNotAllowed},
		{"body too large", http.MethodPost, "/ok", "0123456789", http.StatusRequestEntityTooLarge},
		{"panic", http.MethodGet, "/boom", "", http.StatusInternalServerError},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			r.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))

			if w.Code != tt.wantStatus {
				t.Errorf("status: got %d, want %d", w.Code, tt.wantStatus)
			}
			id := w.Header().Get(httpkit.RequestIDHeader)
			if id == "" {
				t.Fatal("X-Request-Id: got none, want one")
			}
			access := logs.withMsg(t, "http request")
			if len(access) != i+1 || access[i]["request_id"] != id || access[i]["status"] != float64(tt.wantStatus) {
				t.Errorf("access line: got %v, want request_id %q and status %d", access[len(access)-1], id, tt.wantStatus)
			}
		})
	}
}

func TestNewRouterNeedsLogger(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewRouter without a Logger: got no panic, want one")
		}
	}()
	httpkit.NewRouter(httpkit.Options{})
}

func TestNewServer(t *testing.T) {
	tests := []struct {
		name                              string
		in                                httpkit.Timeouts
		readHeader, read, write, idleWant time.Duration
	}{
		{"defaults", httpkit.Timeouts{}, 5 * time.Second, 30 * time.Second, 0, 120 * time.Second},
		{"set", httpkit.Timeouts{ReadHeader: time.Second, Read: 2 * time.Second, Write: 3 * time.Second, Idle: 4 * time.Second},
			time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second},
		{"negative disables", httpkit.Timeouts{Read: -1, Idle: -1}, 5 * time.Second, -1, 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := newLogger()
			h := http.NotFoundHandler()
			srv := httpkit.NewServer(":8080", h, logger, tt.in)

			got := [4]time.Duration{srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout}
			if want := [4]time.Duration{tt.readHeader, tt.read, tt.write, tt.idleWant}; got != want {
				t.Errorf("read header, read, write, idle timeouts: got %v, want %v", got, want)
			}
			if srv.Addr != ":8080" || srv.Handler == nil || srv.MaxHeaderBytes != 64<<10 {
				t.Errorf("server: got addr %q, handler %v, max header bytes %d; want :8080, the handler, 65536",
					srv.Addr, srv.Handler, srv.MaxHeaderBytes)
			}
			srv.ErrorLog.Print("http: TLS handshake error")
			if got := logs.withMsg(t, "http: TLS handshake error"); len(got) != 1 || got[0]["level"] != "WARN" {
				t.Errorf("net/http error log: got %v, want one WARN line", got)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		wantStatus int
		wantBody   string // a substring
	}{
		{
			name:       "handler answers in time",
			handler:    func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("done")) },
			wantStatus: http.StatusOK,
			wantBody:   "done",
		},
		{
			name: "handler gives up silently",
			handler: func(_ http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			},
			wantStatus: http.StatusServiceUnavailable,
			wantBody:   `"code":"timeout"`,
		},
		{
			name: "handler answers the timeout itself",
			handler: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
				http.Error(w, "slow database", http.StatusGatewayTimeout)
			},
			wantStatus: http.StatusGatewayTimeout,
			wantBody:   "slow database",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var deadline time.Time
			h := httpkit.Timeout(20 * time.Millisecond)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				deadline, _ = r.Context().Deadline()
				tt.handler(w, r)
			}))
			w := httptest.NewRecorder()
			start := time.Now()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))

			if w.Code != tt.wantStatus || !bytes.Contains(w.Body.Bytes(), []byte(tt.wantBody)) {
				t.Errorf("answer: got %d %q, want %d containing %q", w.Code, w.Body, tt.wantStatus, tt.wantBody)
			}
			end := time.Now()
			if lo, hi := start.Add(20*time.Millisecond), end.Add(20*time.Millisecond); deadline.Before(lo) || deadline.After(hi) {
				t.Errorf("context deadline: got %v, want 20ms after the handler started, between %v and %v", deadline, lo, hi)
			}
		})
	}
}
