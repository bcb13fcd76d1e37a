package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livedrops/livedrops/api"
	"github.com/livedrops/livedrops/store/postgres/pglocal"
	"github.com/livedrops/livedrops/store/storetest"
)

// A request that fails because PostgreSQL (or Redis) cannot be reached is 503 problem+json, to be
// tried again, not a 500; the fault test (loadtest/faults) stops PostgreSQL and cuts its connections
// under load and counts the answers.
func TestUnreachableDependencyIs503(t *testing.T) {
	port, err := pglocal.FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, refused := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?connect_timeout=5", port))
	if refused == nil {
		t.Fatal("connected to a port nothing listens on")
	}
	// A pooled connection the server closed (PostgreSQL's fast shutdown, a cut connection) before the
	// request used it: the driver says "conn closed", nothing was sent.
	conn, err := pgx.Connect(ctx, storetest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_, closed := conn.Exec(ctx, "SELECT 1")
	if closed == nil {
		t.Fatal("a closed connection ran a statement")
	}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"connection refused", fmt.Errorf("place order: %w", refused), http.StatusServiceUnavailable},
		{"connection closed before use", fmt.Errorf("place order: %w", closed), http.StatusServiceUnavailable},
		{"connection closed mid-answer", fmt.Errorf("place order: %w", io.ErrUnexpectedEOF), http.StatusServiceUnavailable},
		{"server shutting down", fmt.Errorf("x: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}),
			http.StatusServiceUnavailable},
		{"server starting up", &pgconn.PgError{Code: "57P03"}, http.StatusServiceUnavailable},
		{"connection exception", &pgconn.PgError{Code: "08006"}, http.StatusServiceUnavailable},
		{"too many connections", &pgconn.PgError{Code: "53300"}, http.StatusServiceUnavailable},
		{"a constraint the code did not expect", &pgconn.PgError{Code: "23505"}, http.StatusInternalServerError},
		{"a plain bug", errors.New("nil map"), http.StatusInternalServerError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, ct := api.ErrorAnswer(tc.err)
			if status != tc.want || ct != "application/problem+json" {
				t.Errorf("got %d %s, want %d application/problem+json", status, ct, tc.want)
			}
		})
	}
}
