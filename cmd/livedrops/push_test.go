package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout/push/pushtest"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestPushConfigDefaultsAndChecks(t *testing.T) {
	cfg, err := parseConfig("worker", nil, env(map[string]string{
		"DATABASE_URL": "postgres://h/db", "REDIS_URL": "redis://h:6379", "NATS_URL": "nats://h:4222"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Push
	if len(p.Types) != 1 || p.Types[0] != "drop.started" || p.FCMRate != 9000 || p.FCMBaseURL != "https://fcm.googleapis.com" ||
		p.Concurrency != 256 || p.PageSize != 1000 || p.MaxAttempts != 5 || p.AckWait != 30*time.Second ||
		p.Lease != 2*time.Minute || !p.Endpoints.Allows("https://fcm.googleapis.com/fcm/send/x") || p.VAPIDSubject == "" ||
		p.WebPushEncoder != "stdlib" {
		t.Errorf("defaults: %+v", p)
	}
	key := filepath.Join(t.TempDir(), "sa.json")
	for name, c := range map[string]struct {
		env  map[string]string
		want string
	}{
		"type of no creator event": {map[string]string{"LIVEDROPS_PUSH_TYPES": "order.confirmed"}, "LIVEDROPS_PUSH_TYPES"},
		"no type":                  {map[string]string{"LIVEDROPS_PUSH_TYPES": ","}, "at least one"},
		"missing key file":         {map[string]string{"LIVEDROPS_FCM_CREDENTIALS_FILE": key}, "LIVEDROPS_FCM_CREDENTIALS_FILE"},
		"bad base url":             {map[string]string{"LIVEDROPS_FCM_BASE_URL": "ftp://x"}, "LIVEDROPS_FCM_BASE_URL"},
		"short public key":         {map[string]string{"LIVEDROPS_VAPID_PUBLIC_KEY": "AAAA"}, "65 bytes"},
		"half a pair":              {map[string]string{"LIVEDROPS_VAPID_PUBLIC_KEY": strings.Repeat("A", 87)}, "go together"},
		"subject":                  {map[string]string{"LIVEDROPS_VAPID_SUBJECT": "ops@example.com"}, "mailto:"},
		"endpoint pattern":         {map[string]string{"LIVEDROPS_WEBPUSH_ENDPOINTS": "push.example.com"}, "LIVEDROPS_WEBPUSH_ENDPOINTS"},
		"rate":                     {map[string]string{"LIVEDROPS_FCM_RATE": "-1"}, "LIVEDROPS_FCM_RATE"},
		"ack wait":                 {map[string]string{"LIVEDROPS_PUSH_ACK_WAIT": "10ms"}, "at least 1s"},
		"encoder":                  {map[string]string{"LIVEDROPS_WEBPUSH_ENCODER": "openssl"}, "LIVEDROPS_WEBPUSH_ENCODER"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseConfig("all", nil, env(c.env), io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
	// The private key never shows.
	priv := strings.Repeat("B", 43)
	cfg, err = parseConfig("all", nil, env(map[string]string{"LIVEDROPS_VAPID_PUBLIC_KEY": strings.Repeat("A", 87),
		"LIVEDROPS_VAPID_PRIVATE_KEY": priv}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cfg.LogValue().Resolve().Any())
	if strings.Contains(fmt.Sprint(cfg.LogValue()), priv) || strings.Contains(string(b), priv) {
		t.Fatal("the log line shows the VAPID private key")
	}
}

func TestVAPIDKeysAreGeneratedOnce(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	keys := make([]vapidKeys, 8)
	errs := make([]error, 8)
	for i := range keys {
		wg.Go(func() { keys[i], errs[i] = loadOrCreateVAPID(dir) })
	}
	wg.Wait()
	for i := range keys {
		if errs[i] != nil || keys[i] != keys[0] || len(keys[0].PublicKey) != 87 {
			t.Fatalf("race %d: %+v %v, want one pair for all", i, keys[i], errs[i])
		}
	}
	st, err := os.Stat(filepath.Join(dir, vapidFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", st, err)
	}
}

// The whole path in one `all` process: a follower without a socket registers a Web Push subscription
// and an FCM token over REST; the creator's drop starts; both devices get the push from the worker,
// through the providers' stand-ins (FCM with its OAuth2 token endpoint).
func TestAllRolePushesAStartedDropToOfflineDevices(t *testing.T) {
	fcmSrv, err := pushtest.StartFCM(pushtest.FCMConfig{Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fcmSrv.Close()
	keyFile := filepath.Join(t.TempDir(), "service-account.json")
	if err := os.WriteFile(keyFile, fcmSrv.CredentialsJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "all", storetest.NewMigratedDatabase(t))
	_, cfg.CachePrefix = storetest.NewRedis(t) // event ids restart with every database; keys must not meet
	cfg.Push.FCMCredentialsFile, cfg.Push.FCMBaseURL = keyFile, fcmSrv.BaseURL()
	if err := devVAPID(&cfg); err != nil {
		t.Fatal(err)
	}
	wp, err := pushtest.StartWebPush(pushtest.WebPushConfig{VAPIDPublicKey: cfg.Push.VAPIDPublicKey, Seed: []byte("e2e"), Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	defer wp.Close()
	cfg.Push.Endpoints = append(cfg.Push.Endpoints, "http://127.0.0.1:*")
	app := startApp(t, cfg)
	base := "http://" + app.Addr()

	resp, body := get(t, base+"/push/config")
	var pc struct {
		WebPush struct {
			Enabled bool   `json:"enabled"`
			Key     string `json:"vapid_public_key"`
		} `json:"webpush"`
	}
	if err := json.Unmarshal(body, &pc); err != nil || resp.StatusCode != 200 || !pc.WebPush.Enabled || pc.WebPush.Key != cfg.Push.VAPIDPublicKey {
		t.Fatalf("/push/config: %d %s, want the dev stack's key", resp.StatusCode, body)
	}

	type user struct {
		UserID int64  `json:"user_id"`
		Token  string `json:"token"`
	}
	var creator, fan user
	call(t, "POST", base+"/users", "", map[string]string{"name": "Dee", "email": "dee@example.com"}, http.StatusCreated, &creator)
	call(t, "POST", base+"/users", "", map[string]string{"name": "Fan", "email": "fan@example.com"}, http.StatusCreated, &fan)
	call(t, "POST", base+"/creators", creator.Token, map[string]string{"profile_name": "Dee"}, http.StatusCreated, nil)
	call(t, "POST", fmt.Sprintf("%s/users/%d/follow/%d", base, fan.UserID, creator.UserID), fan.Token, nil, http.StatusNoContent, nil)
	sub, err := wp.Subscription("fan-browser")
	if err != nil {
		t.Fatal(err)
	}
	call(t, "POST", fmt.Sprintf("%s/users/%d/devices", base, fan.UserID), fan.Token, map[string]any{"platform": "webpush",
		"subscription": map[string]any{"endpoint": sub.Endpoint, "keys": map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth}}},
		http.StatusCreated, nil)
	fcmToken := "fan-phone-" + strings.Repeat("t", 100)
	call(t, "POST", fmt.Sprintf("%s/users/%d/devices", base, fan.UserID), fan.Token, map[string]any{"platform": "fcm", "token": fcmToken},
		http.StatusCreated, nil)
	var product struct {
		ProductID int64 `json:"product_id"`
	}
	call(t, "POST", base+"/products", creator.Token, map[string]any{"title": "Cap", "description": "", "price_cents": 1500},
		http.StatusCreated, &product)
	start := time.Now().Add(1500 * time.Millisecond).UTC().Truncate(time.Millisecond)
	var drop struct {
		DropID int64 `json:"drop_id"`
	}
	call(t, "POST", base+"/drops", creator.Token, map[string]any{
		"product_id": product.ProductID, "start_time": start.Format(time.RFC3339Nano),
		"end_time": start.Add(time.Hour).Format(time.RFC3339Nano), "stock_count": 5, "max_per_user": 1,
	}, http.StatusCreated, &drop)

	checkFor(t, 30*time.Second, func() error {
		if len(wp.Deliveries()) != 1 || len(fcmSrv.Deliveries()) != 1 {
			return fmt.Errorf("web push %d, fcm %d deliveries; want 1 each", len(wp.Deliveries()), len(fcmSrv.Deliveries()))
		}
		return nil
	})
	t.Logf("pushed %s after start_time", time.Since(start))
	var p map[string]any
	if err := json.Unmarshal(wp.Deliveries()[0].Payload, &p); err != nil {
		t.Fatal(err)
	}
	if p["type"] != "drop.started" || p["drop_id"] != float64(drop.DropID) || p["title"] != "Dee is live: Cap" ||
		p["url"] != fmt.Sprintf("/#/drops/%d", drop.DropID) {
		t.Errorf("payload %v", p)
	}
	if d := fcmSrv.Deliveries()[0]; d.Device != fcmToken || d.Topic != fmt.Sprintf("drop-%d", drop.DropID) {
		t.Errorf("fcm delivery %+v", d)
	}
	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{`livedrops_push_sent_total{provider="fcm"} 1`, `livedrops_push_sent_total{provider="webpush"} 1`,
		`livedrops_push_auth_failures_total{provider="fcm"} 0`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
