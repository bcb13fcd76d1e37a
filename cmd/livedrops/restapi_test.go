package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/livedrops/livedrops/store/storetest"
)

func TestAPISettings(t *testing.T) {
	cfg, err := parseConfig("api", nil, env(map[string]string{
		"DATABASE_URL": "postgres://u@db/x", "REDIS_URL": "redis://r:6379", "NATS_URL": "nats://n:4222",
		"LIVEDROPS_JWT_SECRET": strings.Repeat("s", 32),
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Cache || cfg.CachePrefix != "ld:" || cfg.RateUser != 50 || cfg.RateIP != 2000 || cfg.CacheDropTTL.String() != "750ms" {
		t.Errorf("defaults: got cache %v prefix %q rates %d/%d drop ttl %s", cfg.Cache, cfg.CachePrefix, cfg.RateUser, cfg.RateIP, cfg.CacheDropTTL)
	}
	bad := []struct{ key, value, want string }{
		{"LIVEDROPS_CACHE", "maybe", `want "on" or "off"`},
		{"LIVEDROPS_RATE_USER", "-1", "from 0 (off)"},
		{"LIVEDROPS_RATE_IP", "lots", "from 0 (off)"},
		{"LIVEDROPS_CACHE_DROP_TTL", "0s", "at least 1ms"},
		{"LIVEDROPS_CACHE_PREFIX", " ", "must not be empty"},
		{"LIVEDROPS_REQUEST_TIMEOUT", "x", "not a duration"},
	}
	for _, tc := range bad {
		_, err := parseConfig("all", nil, env(map[string]string{tc.key: tc.value}), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s=%q: got %v, want an error naming it with %q", tc.key, tc.value, err, tc.want)
		}
	}
}

// TestAPIRoleWithoutCache: LIVEDROPS_CACHE=off serves the same API straight from PostgreSQL.
func TestAPIRoleWithoutCache(t *testing.T) {
	cfg := testConfig(t, "api", storetest.NewMigratedDatabase(t))
	cfg.Cache = false
	app := startApp(t, cfg)
	if app.cache != nil {
		t.Fatal("cache built although it is off")
	}
	base := "http://" + app.Addr()
	resp, body := get(t, base+"/products")
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != `{"items":[],"page":1,"per_page":20,"has_more":false}` {
		t.Fatalf("GET /products: got %d %s", resp.StatusCode, body)
	}
	_, body = get(t, base+"/metrics")
	if strings.Contains(string(body), "livedrops_cache_requests_total") {
		t.Error("cache metrics with the cache off")
	}
}
