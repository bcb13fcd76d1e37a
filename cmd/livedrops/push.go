package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sethvargo/go-retry"

	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/notifier"
	"github.com/livedrops/livedrops/fanout/push"
	"github.com/livedrops/livedrops/fanout/push/fcm"
	"github.com/livedrops/livedrops/fanout/push/webpush"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
)

// Compile-time checks that the adapters fit the interfaces package notifier declares.
var (
	_ notifier.Queue    = (*jetstream.PushQueue)(nil)
	_ notifier.Store    = (*postgres.Devices)(nil)
	_ notifier.Presence = (*redis.Presence)(nil)
	_ notifier.Dedupe   = (*redis.PushDedupe)(nil)
	_ notifier.Limiter  = (*redis.PushLimiter)(nil)
	_ push.Sender       = (*fcm.Sender)(nil)
	_ push.Sender       = (*webpush.Sender)(nil)
)

// vapidFile is where the dev stack keeps its generated VAPID key pair.
const vapidFile = "vapid-keys.json"

type vapidKeys struct {
	PublicKey  string `json:"public_key"`
	PrivateKey string `json:"private_key"`
}

// loadOrCreateVAPID returns the VAPID key pair kept in dir, generating it on first use (file mode
// 0600), so `make run` sends Web Push and browsers' subscriptions survive restarts. Two processes
// racing to create it agree on one pair.
func loadOrCreateVAPID(dir string) (vapidKeys, error) {
	path := filepath.Join(dir, vapidFile)
	if b, err := os.ReadFile(path); err == nil {
		var k vapidKeys
		if err := json.Unmarshal(b, &k); err != nil || k.PublicKey == "" || k.PrivateKey == "" {
			return vapidKeys{}, fmt.Errorf("VAPID keys in %s are unreadable; delete the file to generate new ones (browsers then subscribe again)", path)
		}
		return k, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return vapidKeys{}, fmt.Errorf("read VAPID keys: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return vapidKeys{}, fmt.Errorf("create data dir: %w", err)
	}
	var k vapidKeys
	var err error
	if k.PrivateKey, k.PublicKey, err = webpush.GenerateKeys(); err != nil {
		return vapidKeys{}, fmt.Errorf("generate VAPID keys: %w", err)
	}
	b, _ := json.MarshalIndent(k, "", "  ")
	tmp, err := os.CreateTemp(dir, vapidFile+".*")
	if err != nil {
		return vapidKeys{}, fmt.Errorf("write VAPID keys: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return vapidKeys{}, fmt.Errorf("write VAPID keys: %w", err)
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return vapidKeys{}, fmt.Errorf("write VAPID keys: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return vapidKeys{}, fmt.Errorf("write VAPID keys: %w", err)
	}
	return loadOrCreateVAPID(dir)
}

// devVAPID fills in the dev stack's VAPID keys for `all` when none are configured.
func devVAPID(cfg *Config) error {
	if cfg.Role != "all" || cfg.Push.VAPIDPublicKey != "" || cfg.Push.VAPIDPrivateKey != "" {
		return nil
	}
	k, err := loadOrCreateVAPID(cfg.DataDir)
	if err != nil {
		return err
	}
	cfg.Push.VAPIDPublicKey, cfg.Push.VAPIDPrivateKey = k.PublicKey, k.PrivateKey
	return nil
}

// senders builds the providers the configuration names: FCM with a key file, Web Push with a key pair.
func (a *App) senders() (map[push.Provider]push.Sender, error) {
	p := a.cfg.Push
	out := map[push.Provider]push.Sender{}
	if p.FCMCredentialsFile != "" {
		key, err := os.ReadFile(p.FCMCredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("fcm: %w", err)
		}
		s, err := fcm.New(fcm.Config{CredentialsJSON: key, ProjectID: p.FCMProjectID, BaseURL: p.FCMBaseURL, TokenURL: p.FCMTokenURL,
			Client: &http.Client{Transport: fcm.NewTransport(), Timeout: 15 * time.Second}})
		if err != nil {
			return nil, err
		}
		out[push.FCM] = s
		a.logger.Info("push: fcm on", "project_id", s.ProjectID(), "base_url", p.FCMBaseURL)
	}
	if p.VAPIDPrivateKey != "" {
		s, err := webpush.New(webpush.Config{VAPIDPublicKey: p.VAPIDPublicKey, VAPIDPrivateKey: p.VAPIDPrivateKey,
			Subject: p.VAPIDSubject, Allow: p.Endpoints.Allows, Encoder: p.WebPushEncoder,
			Client: &http.Client{Transport: webpush.NewTransport(p.Concurrency), Timeout: 15 * time.Second}})
		if err != nil {
			return nil, err
		}
		out[push.WebPush] = s
		a.logger.Info("push: webpush on", "vapid_public_key", p.VAPIDPublicKey, "encoder", p.WebPushEncoder)
	}
	return out, nil
}

// startNotifier starts the push notifier on w when a provider is configured.
func (a *App) startNotifier(ctx context.Context, w *worker) error {
	cfg := a.cfg
	senders, err := a.senders()
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	if len(senders) == 0 {
		a.logger.Info("push: no provider configured (LIVEDROPS_FCM_CREDENTIALS_FILE, LIVEDROPS_VAPID_*): the notifier is off")
		return nil
	}
	queue, err := jetstream.NewPushQueue(a.nc, jetstream.PushQueueConfig{AckWait: cfg.Push.AckWait, Replicas: cfg.StreamReplicas, Logger: a.logger})
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	host, _ := os.Hostname()
	presence, err := redis.NewPresence(a.rdb, redis.PresenceConfig{HubID: "notifier-" + host, Prefix: cfg.CachePrefix})
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	metrics, err := notifier.NewMetrics(a.registry)
	if err != nil {
		return err
	}
	n, err := notifier.New(notifier.Config{
		Types: cfg.Push.Types, PageSize: cfg.Push.PageSize, Concurrency: cfg.Push.Concurrency,
		MaxAttempts: cfg.Push.MaxAttempts, Lease: cfg.Push.Lease,
		Owner:  fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano()),
		Logger: a.logger, Metrics: metrics,
	}, notifier.Deps{
		Queue: queue, Store: postgres.NewDevices(a.pool), Presence: presence,
		Dedupe: redis.NewPushDedupe(a.rdb, cfg.CachePrefix),
		Limiter: redis.NewPushLimiter(a.rdb, redis.PushLimiterConfig{Prefix: cfg.CachePrefix,
			Rates: map[push.Provider]int{push.FCM: cfg.Push.FCMRate, push.WebPush: cfg.Push.WebPushRate}}),
		Senders: senders,
	})
	if err != nil {
		return err
	}
	// One attempt now, the rest (if it failed) in the background, the worker running meanwhile.
	first := queue.Ensure(ctx)
	a.pushPending.Store(first != nil)
	w.wg.Go(func() {
		if first != nil {
			if err := ensurePushQueue(ctx, queue, first, a.logger); err != nil {
				return // ctx ended: the worker is stopping
			}
			a.pushPending.Store(false)
		}
		if err := n.Run(ctx); err != nil {
			a.logger.Error("push notifier stopped", "err", err)
		}
	})
	return nil
}

// errPushPending: the readiness check's answer while the push streams are not created yet.
var errPushPending = errors.New("push streams not created yet")

// ensurePushQueue creates the push streams and consumers after a first attempt failed with first,
// retrying with capped exponential backoff and jitter until it succeeds or ctx ends. Not fatal, as for
// the relay's stream: workers started together on a new NATS cluster race to create the R3 streams and
// can all time out (seen in loadtest/faults), and the events consumer needs the events stream, which
// the leading relay creates; the relay, the scheduler and the rest of the worker run meanwhile.
func ensurePushQueue(ctx context.Context, q *jetstream.PushQueue, first error, log *slog.Logger) error {
	b := retry.WithCappedDuration(10*time.Second, retry.WithJitterPercent(20, retry.NewExponential(500*time.Millisecond)))
	attempt := 0
	return retry.Do(ctx, b, func(ctx context.Context) error {
		attempt++
		err := first // the first attempt is the caller's
		if attempt > 1 {
			err = q.Ensure(ctx)
		}
		if err != nil {
			log.Warn("push: cannot create the push streams yet; retrying", "attempt", attempt, "err", err)
			return retry.RetryableError(err)
		}
		log.Info("push: push streams ready", "attempts", attempt)
		return nil
	})
}
