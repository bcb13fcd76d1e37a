package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// The configuration parser takes whatever the environment and the command line hold: it never panics,
// a configuration it accepts is one it validated, and the start-up log line never shows the secret or a
// URL's password, whatever the input.
func FuzzParseConfig(f *testing.F) {
	f.Add("api", "postgres://u:pw-SECRET-1@h:5432/db", "redis://:pw-SECRET-2@h:6379/0", "nats://u:pw-SECRET-3@h:4222", "0123456789abcdef0123456789abcdef-SECRET-4", "10s")
	f.Add("hub", "postgresql://h/db?password=pw-SECRET-5", "redis://h:1?addr=h:2&password=pw-SECRET-6", "nats://a:4222,nats://b:4222", "", "0s")
	f.Add("worker", "postgres://h", "rediss://h", "tls://h", "x", "-1s")
	f.Add("all", "", "", "", "", "")
	f.Add("api", "postgres://%zz", "redis://[::1", "nats://:@", "short", "1h")
	f.Fuzz(func(t *testing.T, role, dbURL, redisURL, natsURL, secret, timeout string) {
		switch role {
		case "all", "api", "hub", "worker", "migrate":
		default:
			role = "api"
		}
		env := map[string]string{"DATABASE_URL": dbURL, "REDIS_URL": redisURL, "NATS_URL": natsURL,
			"LIVEDROPS_JWT_SECRET": secret, "LIVEDROPS_REQUEST_TIMEOUT": timeout}
		cfg, err := parseConfig(role, nil, func(k string) string { return env[k] }, io.Discard)
		var b strings.Builder
		logger := slog.New(slog.NewJSONHandler(&b, nil))
		if err != nil {
			logger.Error("invalid configuration", "err", err)
		} else {
			logger.Info("starting", "config", cfg)
		}
		line := b.String()
		for _, leak := range secretsIn(dbURL, redisURL, natsURL) {
			if strings.Contains(line, leak) {
				t.Fatalf("the log shows the password %q: %s", leak, line)
			}
		}
		if secret != "" && len(secret) >= 8 && strings.Contains(line, secret) {
			t.Fatalf("the log shows the JWT secret: %s", line)
		}
	})
}

// secretsIn returns the passwords of URLs (user:password@ and ?password=) at least 8 bytes long: a
// shorter one could appear in the log line for another reason.
func secretsIn(urls ...string) []string {
	var out []string
	for _, u := range urls {
		for _, part := range strings.Split(u, ",") {
			if at := strings.LastIndex(part, "@"); at > 0 {
				cred := part[:at]
				if i := strings.Index(cred, "://"); i >= 0 {
					cred = cred[i+3:]
				}
				if _, pw, ok := strings.Cut(cred, ":"); ok && len(pw) >= 8 {
					out = append(out, pw)
				}
			}
			if _, q, ok := strings.Cut(part, "password="); ok {
				if i := strings.IndexAny(q, "&#"); i >= 0 {
					q = q[:i]
				}
				if len(q) >= 8 {
					out = append(out, q)
				}
			}
		}
	}
	return out
}
