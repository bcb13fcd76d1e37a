package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/notifier"
	"github.com/livedrops/livedrops/fanout/push/fcm"
	"github.com/livedrops/livedrops/fanout/push/webpush"
	"github.com/livedrops/livedrops/store"
)

// PushConfig is the push fallback's configuration (issue 10): the providers, where they are, and how
// the notifier paces them. README.md's table documents each setting.
type PushConfig struct {
	Types []fanout.Type

	FCMCredentialsFile string
	FCMProjectID       string
	FCMBaseURL         string
	FCMTokenURL        string
	FCMRate            int

	VAPIDPublicKey  string
	VAPIDPrivateKey string
	VAPIDSubject    string
	WebPushRate     int
	WebPushEncoder  string
	Endpoints       store.EndpointPolicy

	Concurrency int
	PageSize    int
	MaxAttempts int
	AckWait     time.Duration
	Lease       time.Duration
}

// defaultEndpoints is the default of -webpush-endpoints.
var defaultEndpoints = strings.Join(store.DefaultEndpointPolicy, ",")

func pushSettings() []setting {
	intSetting := func(get func(c *Config) *int, lo, hi int) func(c *Config, v string) error {
		return func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < lo || n > hi {
				return fmt.Errorf("want %d..%d", lo, hi)
			}
			*get(c) = n
			return nil
		}
	}
	httpURL := func(get func(c *Config) *string) func(c *Config, v string) error {
		return func(c *Config, v string) error {
			if v != "" {
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
					return errors.New("want an http(s) URL")
				}
			}
			*get(c) = v
			return nil
		}
	}
	return []setting{
		{"push-types", "LIVEDROPS_PUSH_TYPES", "drop.started", "comma-separated event types pushed to offline followers (drop.scheduled, drop.started, stock.low, drop.soldout, drop.ended)",
			func(c *Config, v string) error {
				c.Push.Types = nil
				for _, t := range strings.Split(v, ",") {
					if t = strings.TrimSpace(t); t == "" {
						continue
					}
					if !notifier.CreatorEvent(fanout.Type(t)) {
						return fmt.Errorf("%q is not an event of a creator's drop", t)
					}
					c.Push.Types = append(c.Push.Types, fanout.Type(t))
				}
				if len(c.Push.Types) == 0 {
					return errors.New("name at least one type")
				}
				return nil
			}},
		{"fcm-credentials-file", "LIVEDROPS_FCM_CREDENTIALS_FILE", "", "the Firebase service account's JSON key file; empty: no FCM",
			func(c *Config, v string) error { c.Push.FCMCredentialsFile = v; return nil }},
		{"fcm-project-id", "LIVEDROPS_FCM_PROJECT_ID", "", "Firebase project of the sends; empty: the key file's project_id",
			func(c *Config, v string) error { c.Push.FCMProjectID = v; return nil }},
		{"fcm-base-url", "LIVEDROPS_FCM_BASE_URL", fcm.DefaultBaseURL, "FCM HTTP v1 API base URL (a local stand-in in tests; http:// speaks HTTP/2 without TLS)",
			httpURL(func(c *Config) *string { return &c.Push.FCMBaseURL })},
		{"fcm-token-url", "LIVEDROPS_FCM_TOKEN_URL", "", "OAuth2 token endpoint of the service account; empty: the key file's token_uri",
			httpURL(func(c *Config) *string { return &c.Push.FCMTokenURL })},
		{"fcm-rate", "LIVEDROPS_FCM_RATE", "9000", "FCM messages per second over all workers (the default project quota is 600,000 a minute = 10,000/s); 0: no limit",
			intSetting(func(c *Config) *int { return &c.Push.FCMRate }, 0, 1_000_000)},
		{"vapid-public-key", "LIVEDROPS_VAPID_PUBLIC_KEY", "", "Web Push VAPID public key (base64url P-256 point); empty with `all`: generated once into the data dir; empty otherwise: no Web Push",
			func(c *Config, v string) error { c.Push.VAPIDPublicKey = v; return checkKey(v, 65) }},
		{"vapid-private-key", "LIVEDROPS_VAPID_PRIVATE_KEY", "", "Web Push VAPID private key (base64url, 32 bytes); the worker needs it with the public key",
			func(c *Config, v string) error { c.Push.VAPIDPrivateKey = v; return checkKey(v, 32) }},
		{"vapid-subject", "LIVEDROPS_VAPID_SUBJECT", "mailto:push@livedrops.example", "VAPID contact (mailto: or https:) push services may write to; Apple refuses localhost and .invalid addresses",
			func(c *Config, v string) error {
				if !strings.HasPrefix(v, "mailto:") && !strings.HasPrefix(v, "https://") {
					return errors.New("want mailto:address or an https URL")
				}
				c.Push.VAPIDSubject = v
				return nil
			}},
		{"webpush-endpoints", "LIVEDROPS_WEBPUSH_ENDPOINTS", defaultEndpoints, "comma-separated push services (scheme://host, * wildcards) subscriptions may name; the server sends nowhere else",
			func(c *Config, v string) error {
				p, err := store.ParseEndpointPolicy(v)
				if err != nil {
					return err
				}
				if len(p) == 0 {
					return errors.New("name at least one push service")
				}
				c.Push.Endpoints = p
				return nil
			}},
		{"webpush-rate", "LIVEDROPS_WEBPUSH_RATE", "5000", "Web Push messages per second over all workers; 0: no limit",
			intSetting(func(c *Config) *int { return &c.Push.WebPushRate }, 0, 1_000_000)},
		{"webpush-encoder", "LIVEDROPS_WEBPUSH_ENCODER", webpush.EncoderStdlib, "how Web Push messages are built: stdlib (RFC 8291 on crypto/ecdh, one VAPID signature per push service an hour) or webpush-go (the library, one signature per message: about 40% more CPU per push)",
			func(c *Config, v string) error {
				if v != webpush.EncoderLibrary && v != webpush.EncoderStdlib {
					return fmt.Errorf("want %s or %s", webpush.EncoderLibrary, webpush.EncoderStdlib)
				}
				c.Push.WebPushEncoder = v
				return nil
			}},
		{"push-concurrency", "LIVEDROPS_PUSH_CONCURRENCY", "256", "provider requests in flight per worker",
			intSetting(func(c *Config) *int { return &c.Push.Concurrency }, 1, 10_000)},
		{"push-page-size", "LIVEDROPS_PUSH_PAGE_SIZE", "1000", "followers per push job (page); the pages of one creator are shared by every worker",
			intSetting(func(c *Config) *int { return &c.Push.PageSize }, 10, 100_000)},
		{"push-max-attempts", "LIVEDROPS_PUSH_MAX_ATTEMPTS", "5", "provider answers one message gets before it goes to the dead-letter stream",
			intSetting(func(c *Config) *int { return &c.Push.MaxAttempts }, 1, 100)},
		{"push-ack-wait", "LIVEDROPS_PUSH_ACK_WAIT", "30s", "how long a push job of a worker that stopped answering waits before another worker takes it",
			func(c *Config, v string) error { return setDuration(&c.Push.AckWait, v, time.Second) }},
		{"push-lease", "LIVEDROPS_PUSH_LEASE", "2m", "how long a device claimed by a worker that died waits before another worker sends to it",
			func(c *Config, v string) error { return setDuration(&c.Push.Lease, v, time.Second) }},
	}
}

// checkKey checks a base64url key of n bytes (empty is fine).
func checkKey(v string, n int) error {
	if v == "" {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
	if err != nil || len(b) != n {
		return fmt.Errorf("want %d bytes in base64url", n)
	}
	return nil
}

// validatePush checks what the push settings need of each other.
func (c Config) validatePush() error {
	var errs []error
	p := c.Push
	if (p.VAPIDPublicKey == "") != (p.VAPIDPrivateKey == "") && c.Role != "api" {
		errs = append(errs, errors.New("LIVEDROPS_VAPID_PUBLIC_KEY and LIVEDROPS_VAPID_PRIVATE_KEY go together"))
	}
	if p.FCMCredentialsFile != "" {
		if _, err := os.Stat(p.FCMCredentialsFile); err != nil {
			errs = append(errs, fmt.Errorf("-fcm-credentials-file / LIVEDROPS_FCM_CREDENTIALS_FILE: %w", err))
		}
	}
	return errors.Join(errs...)
}

// pushLogValue shows the push settings, the private key masked.
func (c Config) pushLogValue() slog.Value {
	p := c.Push
	return slog.GroupValue(
		slog.Any("types", p.Types),
		slog.String("fcm_credentials_file", p.FCMCredentialsFile),
		slog.String("fcm_project_id", p.FCMProjectID),
		slog.String("fcm_base_url", p.FCMBaseURL),
		slog.String("fcm_token_url", p.FCMTokenURL),
		slog.Int("fcm_rate", p.FCMRate),
		slog.String("vapid_public_key", p.VAPIDPublicKey),
		slog.String("vapid_private_key", maskSecret(p.VAPIDPrivateKey)),
		slog.String("vapid_subject", p.VAPIDSubject),
		slog.Any("webpush_endpoints", []string(p.Endpoints)),
		slog.Int("webpush_rate", p.WebPushRate),
		slog.String("webpush_encoder", p.WebPushEncoder),
		slog.Int("concurrency", p.Concurrency),
		slog.Int("page_size", p.PageSize),
		slog.Int("max_attempts", p.MaxAttempts),
		slog.Duration("ack_wait", p.AckWait),
		slog.Duration("lease", p.Lease),
	)
}
