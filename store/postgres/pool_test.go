package postgres_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestOpen(t *testing.T) {
	url := storetest.NewDatabase(t)
	defaultMax := max(4, 4*int32(runtime.GOMAXPROCS(0)))

	tests := []struct {
		name          string
		query         string // appended to the URL, which already has a query
		cfg           postgres.PoolConfig
		wantMaxConns  int32
		wantAppName   string
		wantTimeout   string
		wantLifetime  time.Duration
		wantIdleClose time.Duration
	}{
		{name: "defaults", wantMaxConns: defaultMax, wantAppName: "livedrops", wantTimeout: "0",
			wantLifetime: time.Hour, wantIdleClose: 30 * time.Minute},
		{name: "config", cfg: postgres.PoolConfig{MaxConns: 3, MinConns: 1, MaxConnLifetime: time.Minute,
			MaxConnIdleTime: time.Second, StatementTimeout: 1500 * time.Millisecond},
			wantMaxConns: 3, wantAppName: "livedrops", wantTimeout: "1500ms",
			wantLifetime: time.Minute, wantIdleClose: time.Second},
		{name: "url settings", query: "&pool_max_conns=7&application_name=other&statement_timeout=2000",
			wantMaxConns: 7, wantAppName: "other", wantTimeout: "2s",
			wantLifetime: time.Hour, wantIdleClose: 30 * time.Minute},
		{name: "config wins over url", query: "&pool_max_conns=7", cfg: postgres.PoolConfig{MaxConns: 2},
			wantMaxConns: 2, wantAppName: "livedrops", wantTimeout: "0",
			wantLifetime: time.Hour, wantIdleClose: 30 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			pool, err := postgres.Open(ctx, url+tt.query, tt.cfg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer pool.Close()
			if err := pool.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			cfg := pool.Config()
			if cfg.MaxConns != tt.wantMaxConns {
				t.Errorf("got MaxConns %d, want %d", cfg.MaxConns, tt.wantMaxConns)
			}
			if cfg.MaxConnLifetime != tt.wantLifetime {
				t.Errorf("got MaxConnLifetime %v, want %v", cfg.MaxConnLifetime, tt.wantLifetime)
			}
			if cfg.MaxConnIdleTime != tt.wantIdleClose {
				t.Errorf("got MaxConnIdleTime %v, want %v", cfg.MaxConnIdleTime, tt.wantIdleClose)
			}
			var appName, timeout string
			if err := pool.QueryRow(ctx,
				"SELECT current_setting('application_name'), current_setting('statement_timeout')").
				Scan(&appName, &timeout); err != nil {
				t.Fatal(err)
			}
			if appName != tt.wantAppName {
				t.Errorf("got application_name %q, want %q", appName, tt.wantAppName)
			}
			if timeout != tt.wantTimeout {
				t.Errorf("got statement_timeout %q, want %q", timeout, tt.wantTimeout)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := testContext(t)
	url := storetest.NewDatabase(t)
	tests := []struct {
		name string
		url  string
		cfg  postgres.PoolConfig
	}{
		{name: "malformed url", url: "postgres://%zz"},
		{name: "bad port", url: "postgres://postgres:secret@127.0.0.1:notaport/x"},
		{name: "bad pool setting", url: "postgres://postgres:secret@127.0.0.1/x?pool_max_conns=many"},
		{name: "nothing listening", url: "postgres://postgres:secret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"},
		{name: "unknown database", url: storetest.PostgresURL(t, "no_such_database")},
		{name: "negative max conns", url: url, cfg: postgres.PoolConfig{MaxConns: -1}},
		{name: "min above max", url: url, cfg: postgres.PoolConfig{MaxConns: 2, MinConns: 3}},
		{name: "min above url max", url: url + "&pool_max_conns=2", cfg: postgres.PoolConfig{MinConns: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := postgres.Open(ctx, tt.url, tt.cfg)
			if err == nil {
				pool.Close()
				t.Fatal("got nil error, want one")
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("got error %q, want the password left out", err)
			}
		})
	}
}
