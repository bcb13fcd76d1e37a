package httpkit_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/livedrops/livedrops/api/httpkit"
)

func TestBodyLimit(t *testing.T) {
	const limit = 64
	logger, _ := newLogger()
	r := httpkit.NewRouter(httpkit.Options{Logger: logger, BodyLimit: limit})
	var ran atomic.Int32
	r.Post("/things", func(w http.ResponseWriter, r *http.Request) {
		ran.Add(1)
		var v map[string]string
		if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
			if httpkit.IsBodyTooLarge(err) {
				httpkit.WriteBodyTooLarge(w, r, limit)
				return
			}
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	small := `{"name":"ok"}`
	big := fmt.Sprintf(`{"name":%q}`, strings.Repeat("x", 2*limit))
	tests := []struct {
		name        string
		body        io.Reader
		wantStatus  int
		wantHandler bool
	}{
		{"small with length", strings.NewReader(small), http.StatusCreated, true},
		{"small streamed", struct{ io.Reader }{strings.NewReader(small)}, http.StatusCreated, true},
		{"too large by length", strings.NewReader(big), http.StatusRequestEntityTooLarge, false},
		{"too large streamed", struct{ io.Reader }{strings.NewReader(big)}, http.StatusRequestEntityTooLarge, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ran.Store(0)
			resp, err := srv.Client().Post(srv.URL+"/things", "application/json", tt.body)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}

			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status: got %d %s, want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if got := ran.Load() == 1; got != tt.wantHandler {
				t.Errorf("handler ran: got %v, want %v", got, tt.wantHandler)
			}
			if tt.wantStatus == http.StatusRequestEntityTooLarge {
				decodeProblem(t, resp.Header.Get("Content-Type"), body)
				golden(t, "body_too_large", body)
			}
		})
	}
}

func TestIsBodyTooLarge(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"other", io.ErrUnexpectedEOF, false},
		{"MaxBytesError", &http.MaxBytesError{Limit: 1}, true},
		{"wrapped", fmt.Errorf("decode order: %w", &http.MaxBytesError{Limit: 1}), true},
		{"joined", errors.Join(io.EOF, &http.MaxBytesError{Limit: 1}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := httpkit.IsBodyTooLarge(tt.err); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
