package httpkit_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/api/httpkit"
)

// newStackServer serves h at /x behind the full NewRouter stack, metrics and
// Timeout included, so every wrapper of the ResponseWriter is in the way.
func newStackServer(tb testing.TB, h http.HandlerFunc) *httptest.Server {
	tb.Helper()
	logger, _ := newLogger()
	m, err := httpkit.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	r := httpkit.NewRouter(httpkit.Options{Logger: logger, Metrics: m})
	r.With(httpkit.Timeout(time.Minute)).Get("/x", h)
	srv := httptest.NewServer(r)
	tb.Cleanup(srv.Close)
	return srv
}

func TestHijackThroughStack(t *testing.T) {
	tests := []struct {
		name   string
		hijack func(http.ResponseWriter) (io.ReadWriteCloser, *bufio.ReadWriter, error)
	}{
		{"http.Hijacker", func(w http.ResponseWriter) (io.ReadWriteCloser, *bufio.ReadWriter, error) {
			hj, ok := w.(http.Hijacker)
			if !ok {
				return nil, nil, fmt.Errorf("%T is no http.Hijacker", w)
			}
			return hj.Hijack()
		}},
		{"http.ResponseController", func(w http.ResponseWriter) (io.ReadWriteCloser, *bufio.ReadWriter, error) {
			return http.NewResponseController(w).Hijack()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hijackErr := make(chan error, 1)
			srv := newStackServer(t, func(w http.ResponseWriter, _ *http.Request) {
				conn, buf, err := tt.hijack(w)
				hijackErr <- err
				if err != nil {
					return
				}
				defer conn.Close()
				_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
				_ = buf.Flush()
			})

			resp, err := srv.Client().Get(srv.URL + "/x")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-hijackErr; err != nil {
				t.Fatalf("hijack: %v", err)
			}
			if string(body) != "hijacked" {
				t.Errorf("body: got %q, want %q", body, "hijacked")
			}
		})
	}
}

func TestFlushThroughStack(t *testing.T) {
	tests := []struct {
		name  string
		flush func(http.ResponseWriter) error
	}{
		{"http.Flusher", func(w http.ResponseWriter) error {
			f, ok := w.(http.Flusher)
			if !ok {
				return fmt.Errorf("%T is no http.Flusher", w)
			}
			f.Flush()
			return nil
		}},
		{"http.ResponseController", func(w http.ResponseWriter) error {
			return http.NewResponseController(w).Flush()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			flushErr := make(chan error, 1)
			srv := newStackServer(t, func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "first;")
				err := tt.flush(w)
				flushErr <- err
				if err != nil {
					return
				}
				<-release // the client must read "first;" before the handler returns
				_, _ = io.WriteString(w, "second")
			})
			unblock := sync.OnceFunc(func() { close(release) })
			t.Cleanup(unblock) // runs before srv.Close, which waits for the handler
			client := srv.Client()
			client.Timeout = 10 * time.Second // an unflushed write fails the test instead of hanging it

			resp, err := client.Get(srv.URL + "/x")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if err := <-flushErr; err != nil {
				t.Fatalf("flush: %v", err)
			}
			first := make([]byte, len("first;"))
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("reading the flushed part: %v", err)
			}
			unblock()
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(first) + string(rest); got != "first;second" {
				t.Errorf("body: got %q, want %q", got, "first;second")
			}
		})
	}
}

// The deadline and full-duplex controls have no method on the wrapper: they
// work only because it unwraps.
func TestResponseControllerUnwrapsThroughStack(t *testing.T) {
	srv := newStackServer(t, func(w http.ResponseWriter, _ *http.Request) {
		rc := http.NewResponseController(w)
		for name, err := range map[string]error{
			"SetReadDeadline":  rc.SetReadDeadline(time.Now().Add(time.Minute)),
			"SetWriteDeadline": rc.SetWriteDeadline(time.Now().Add(time.Minute)),
			"EnableFullDuplex": rc.EnableFullDuplex(),
		} {
			if err != nil {
				http.Error(w, name+": "+err.Error(), http.StatusTeapot)
				return
			}
		}
		_, _ = io.WriteString(w, "ok")
	})

	resp, err := srv.Client().Get(srv.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Errorf("answer: got %d %q, want 200 \"ok\"", resp.StatusCode, body)
	}
}
