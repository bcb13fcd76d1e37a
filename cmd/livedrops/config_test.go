package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := parseConfig("all", nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"http addr", cfg.HTTPAddr, ":8080"},
		{"data dir", cfg.DataDir, "data"},
		{"log level", cfg.LogLevel, slog.LevelInfo},
		{"log format", cfg.LogFormat, "auto"},
		{"shutdown timeout", cfg.ShutdownTimeout, 25 * time.Second},
		{"drain delay", cfg.DrainDelay, time.Duration(0)},
		{"body limit", cfg.BodyLimit, int64(1 << 20)},
		{"nats sync", cfg.NatsSync, "always"},
		{"jwt issuer", cfg.JWTIssuer, "livedrops"},
		{"database url", cfg.DatabaseURL, ""},
		{"pprof addr (off)", cfg.PprofAddr, ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestConfigFlagWinsOverEnv(t *testing.T) {
	cfg, err := parseConfig("all", []string{"-http-addr", "127.0.0.1:9000"},
		env(map[string]string{"LIVEDROPS_HTTP_ADDR": "127.0.0.1:7000", "LIVEDROPS_LOG_LEVEL": "debug"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:9000" {
		t.Errorf("http addr: got %q, want the flag's 127.0.0.1:9000", cfg.HTTPAddr)
	}
	if cfg.LogLevel != slog.LevelDebug {
		t.Errorf("log level: got %v, want the env's debug", cfg.LogLevel)
	}
}

func TestConfigRejectsBadValues(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // in the error: the flag, its variable, the reason
	}{
		{"addr without port", map[string]string{"LIVEDROPS_HTTP_ADDR": "localhost"}, "-http-addr / LIVEDROPS_HTTP_ADDR"},
		{"database scheme", map[string]string{"DATABASE_URL": "mysql://h/db"}, `scheme "mysql", want postgres or postgresql`},
		{"database no host", map[string]string{"DATABASE_URL": "postgres:///db"}, "URL has no host"},
		{"redis scheme", map[string]string{"REDIS_URL": "http://h:6379"}, "-redis-url / REDIS_URL"},
		{"nats one of many bad", map[string]string{"NATS_URL": "nats://a:4222,http://b:4222"}, "-nats-url / NATS_URL"},
		{"short secret", map[string]string{"LIVEDROPS_JWT_SECRET": "short"}, "need at least 32"},
		{"log level", map[string]string{"LIVEDROPS_LOG_LEVEL": "loud"}, "-log-level / LIVEDROPS_LOG_LEVEL"},
		{"log format", map[string]string{"LIVEDROPS_LOG_FORMAT": "xml"}, `want "json", "text" or "auto"`},
		{"shutdown timeout", map[string]string{"LIVEDROPS_SHUTDOWN_TIMEOUT": "soon"}, "not a duration"},
		{"shutdown timeout tiny", map[string]string{"LIVEDROPS_SHUTDOWN_TIMEOUT": "1ms"}, "at least 1s"},
		{"negative drain", map[string]string{"LIVEDROPS_DRAIN_DELAY": "-1s"}, "at least 0s"},
		{"body limit", map[string]string{"LIVEDROPS_BODY_LIMIT": "1"}, "between 1024"},
		{"pool size", map[string]string{"LIVEDROPS_DB_MAX_CONNS": "-4"}, "want 0..1000"},
		{"nats sync", map[string]string{"LIVEDROPS_NATS_SYNC": "never"}, "always"},
		{"order mode", map[string]string{"LIVEDROPS_ORDER_MODE": "fast"}, `want "batched" or "single"`},
		{"replay window too short", map[string]string{"LIVEDROPS_REPLAY_WINDOW": "5m"}, "at least 10m"},
		{"stream replicas", map[string]string{"LIVEDROPS_STREAM_REPLICAS": "7"}, "want 1..5"},
		{"stock rate", map[string]string{"LIVEDROPS_STOCK_RATE": "0"}, "above 0"},
		{"empty data dir", map[string]string{"LIVEDROPS_DATA_DIR": " "}, "must not be empty"},
		{"pprof addr without port", map[string]string{"LIVEDROPS_PPROF_ADDR": "localhost"}, "-pprof-addr / LIVEDROPS_PPROF_ADDR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig("all", nil, env(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestConfigReportsEveryProblemAtOnce(t *testing.T) {
	_, err := parseConfig("all", nil, env(map[string]string{"LIVEDROPS_LOG_LEVEL": "loud", "LIVEDROPS_BODY_LIMIT": "x"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "LIVEDROPS_LOG_LEVEL") || !strings.Contains(err.Error(), "LIVEDROPS_BODY_LIMIT") {
		t.Fatalf("got %v, want both problems", err)
	}
}

func TestConfigRoleRequirements(t *testing.T) {
	full := map[string]string{
		"DATABASE_URL": "postgres://u@db:5432/livedrops", "REDIS_URL": "redis://r:6379/0",
		"NATS_URL": "nats://n:4222", "LIVEDROPS_JWT_SECRET": strings.Repeat("s", 32),
	}
	without := func(key string) map[string]string {
		m := map[string]string{}
		for k, v := range full {
			if k != key {
				m[k] = v
			}
		}
		return m
	}
	tests := []struct {
		role    string
		env     map[string]string
		wantErr string
	}{
		{"api", full, ""},
		{"hub", full, ""},
		{"worker", without("LIVEDROPS_JWT_SECRET"), ""},
		{"api", without("DATABASE_URL"), "DATABASE_URL is required for `livedrops api`"},
		{"hub", without("NATS_URL"), "NATS_URL is required"},
		{"worker", without("REDIS_URL"), "REDIS_URL is required"},
		{"api", without("LIVEDROPS_JWT_SECRET"), "LIVEDROPS_JWT_SECRET is required"},
		{"migrate", nil, "DATABASE_URL is required for `livedrops migrate`"},
		{"all", nil, ""},
	}
	for _, tc := range tests {
		_, err := parseConfig(tc.role, nil, env(tc.env), io.Discard)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: got %v, want no error", tc.role, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: got %v, want an error containing %q", tc.role, err, tc.wantErr)
		}
	}
}

func TestConfigTokenFlags(t *testing.T) {
	if _, err := parseConfig("token", nil, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "-user") {
		t.Fatalf("token without -user: got %v", err)
	}
	cfg, err := parseConfig("token", []string{"-user", "7", "-ttl", "1h"}, env(nil), io.Discard)
	if err != nil || cfg.TokenUser != 7 || cfg.TokenTTL != time.Hour {
		t.Fatalf("got %+v, %v", cfg, err)
	}
	if _, err := parseConfig("api", []string{"-user", "7"}, env(nil), io.Discard); !errors.Is(err, errUsage) {
		t.Fatalf("-user on api: got %v, want a usage error", err)
	}
	if _, err := parseConfig("all", []string{"stray"}, env(nil), io.Discard); !errors.Is(err, errUsage) {
		t.Fatalf("stray argument: got %v, want a usage error", err)
	}
}

func TestConfigSecretsNeverShown(t *testing.T) {
	const password, secret = "hunter2-pw", "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t"
	e := map[string]string{
		"DATABASE_URL":         "postgres://app:" + password + "@db:5432/livedrops?sslmode=disable",
		"REDIS_URL":            "redis://:" + password + "@r:6379/0",
		"NATS_URL":             "nats://u:" + password + "@n1:4222,nats://u:" + password + "@n2:4222",
		"LIVEDROPS_JWT_SECRET": secret,
	}
	cfg, err := parseConfig("api", nil, env(e), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", cfg)
	out := buf.String()
	if strings.Contains(out, password) || strings.Contains(out, secret) {
		t.Fatalf("log line shows a secret: %s", out)
	}
	if !strings.Contains(out, "db:5432") || !strings.Contains(out, "n2:4222") {
		t.Fatalf("log line lost the hosts: %s", out)
	}

	// A bad URL's error must not repeat its password either.
	_, err = parseConfig("api", nil, env(map[string]string{"DATABASE_URL": "postgres://app:" + password + "@db:port/x"}), io.Discard)
	if err == nil || strings.Contains(err.Error(), password) {
		t.Fatalf("error shows the password or is missing: %v", err)
	}
	// Neither may a short secret's.
	_, err = parseConfig("api", nil, env(map[string]string{"LIVEDROPS_JWT_SECRET": "tiny-secret"}), io.Discard)
	if err == nil || strings.Contains(err.Error(), "tiny-secret") {
		t.Fatalf("error shows the secret or is missing: %v", err)
	}
}

func TestMaskURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"},
		{"postgres://u@h/db?password=pw&sslmode=disable", "postgres://u@h/db?password=***&sslmode=disable"},
		{"redis://h:6379/0", "redis://h:6379/0"},
	}
	for _, tc := range tests {
		if got := maskURL(tc.in); got != tc.want {
			t.Errorf("maskURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
