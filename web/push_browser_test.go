package web_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/serviceworker"
	"github.com/chromedp/chromedp"

	"github.com/livedrops/livedrops/fanout/push"
	"github.com/livedrops/livedrops/fanout/push/pushtest"
	"github.com/livedrops/livedrops/fanout/push/webpush"
)

// TestPushReachesTheServiceWorker is the worker's side of "notify me" in a real browser. Our machines
// reach no real push service, so the message takes the rest of the way as it would: our Web Push sender
// encrypts a drop's notification with the server's VAPID key (the one GET /push/config publishes, from
// the dev stack's data dir) for a subscription of a push service (the stand-in, which checks the VAPID
// signature and decrypts it as Chrome's push service and the browser would), and the plaintext is
// delivered to the page's service worker through DevTools (ServiceWorker.deliverPushMessage). The
// service worker must show the notification the contract describes.
func TestPushReachesTheServiceWorker(t *testing.T) {
	s := liveStack(t)
	ctx := tab(t)
	open(t, s, ctx, "#/creators", `h1`)

	var cfg struct {
		WebPush struct {
			Enabled bool   `json:"enabled"`
			Key     string `json:"vapid_public_key"`
		} `json:"webpush"`
	}
	s.call(t, "GET", "/push/config", "", nil, 200, &cfg)
	if !cfg.WebPush.Enabled || cfg.WebPush.Key == "" {
		t.Fatalf("GET /push/config: %+v, want Web Push on with the dev stack's key", cfg)
	}

	// The page's permissions to receive pushes and show notifications, as a person's click on Allow
	// gives them.
	for _, p := range []*cdpbrowser.PermissionDescriptor{{Name: "notifications"}, {Name: "push", UserVisibleOnly: true}} {
		if _, err := chromedp.CallBrowser(ctx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
			Permission: p, Setting: cdpbrowser.PermissionSettingGranted,
			Origin: s.base, BrowserContextID: chromedp.FromContext(ctx).BrowserContextID,
		}); err != nil {
			t.Fatalf("grant %s: %v", p.Name, err)
		}
	}
	// The service worker's registration id, from the ServiceWorker domain.
	evCtx, stopEvents := context.WithTimeout(ctx, 20*time.Second)
	defer stopEvents()
	regs := chromedp.Events(evCtx, serviceworker.WorkerRegistrationUpdated)
	if _, err := chromedp.Call(ctx, serviceworker.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("ServiceWorker.enable: %v", err)
	}
	scope := eval[string](t, ctx, `(async () => {
		const reg = await navigator.serviceWorker.register('/sw.js')
		await navigator.serviceWorker.ready
		return reg.scope
	})()`)
	// Every live registration of the page's scope this target reports (other tests' pages in other browser
	// contexts may have registered the same scope: a push goes to each, only ours can show here).
	ids := map[serviceworker.RegistrationID]bool{}
	var settle sync.Once
	for ev, err := range regs {
		if err != nil {
			break // the events' context ended: half a second after the first match, or the timeout
		}
		for _, r := range ev.Registrations {
			if r.ScopeURL == scope {
				ids[r.RegistrationID] = !r.IsDeleted
				settle.Do(func() { time.AfterFunc(500*time.Millisecond, stopEvents) })
			}
		}
	}
	stopEvents()
	if len(ids) == 0 {
		t.Fatalf("no service worker registration for %s", scope)
	}

	// Our sender, with the server's own VAPID pair, to a subscription of the push service.
	keyFile, err := os.ReadFile(filepath.Join(s.dataDir, "vapid-keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vapid struct {
		Public  string `json:"public_key"`
		Private string `json:"private_key"`
	}
	if err := json.Unmarshal(keyFile, &vapid); err != nil || vapid.Public != cfg.WebPush.Key {
		t.Fatalf("the data dir's VAPID pair (%v) is not the one /push/config publishes", err)
	}
	service, err := pushtest.StartWebPush(pushtest.WebPushConfig{VAPIDPublicKey: vapid.Public, Seed: []byte(t.Name()), Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	defer service.Close()
	sender, err := webpush.New(webpush.Config{VAPIDPublicKey: vapid.Public, VAPIDPrivateKey: vapid.Private,
		Subject: "mailto:ops@livedrops.example", Allow: func(ep string) bool { return strings.HasPrefix(ep, service.Origin()+"/") }})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := service.Subscription("chromium")
	if err != nil {
		t.Fatal(err)
	}
	n := &push.Notification{EventID: "4711", Type: "drop.started", DropID: 42, CreatorID: 7, Title: "Cora is live: Vinyl",
		Body: "Vinyl, $25.00. Tap to shop before it sells out.", URL: "/#/drops/42", Tag: "drop-42",
		Expires: time.Now().Add(time.Hour), EventTS: time.Now()}
	if r := sender.Send(context.Background(), n, push.Device{ID: 1, UserID: 2, Provider: push.WebPush, Token: sub.Endpoint,
		P256dh: sub.P256dh, Auth: sub.Auth}); r.Outcome != push.Sent {
		t.Fatalf("send: %+v", r)
	}
	got := service.Deliveries()
	if len(got) != 1 {
		t.Fatalf("the push service accepted %d messages, want 1", len(got))
	}
	if d := got[0]; d.Topic != "drop-42" || d.TTL < 59*time.Minute {
		t.Errorf("delivery topic %q TTL %s, want drop-42 and the drop's remaining hour", d.Topic, d.TTL)
	}

	shows := `navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns => ns.length > 0)`
	for attempt := 1; ; attempt++ {
		for id, live := range ids {
			if !live {
				continue
			}
			if _, err := chromedp.Call(ctx, serviceworker.DeliverPushMessage, serviceworker.DeliverPushMessageParams{
				Origin: s.base, RegistrationID: id, Data: string(got[0].Payload)}); err != nil {
				t.Logf("ServiceWorker.deliverPushMessage to %s: %v", id, err)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for !eval[bool](t, ctx, shows) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if eval[bool](t, ctx, shows) {
			break
		}
		if attempt == 3 {
			t.Fatalf("no notification after 3 deliveries to the registrations %v of %s", ids, scope)
		}
	}
	shown := eval[map[string]any](t, ctx, `navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns => {
		const x = ns[0]
		return {count: ns.length, title: x.title, body: x.body, tag: x.tag, url: x.data && x.data.url, drop_id: x.data && x.data.drop_id}
	})`)
	want := map[string]any{"count": 1.0, "title": n.Title, "body": n.Body, "tag": "drop-42", "url": "/#/drops/42", "drop_id": 42.0}
	for k, v := range want {
		if shown[k] != v {
			t.Errorf("notification %s = %v, want %v (shown %v)", k, shown[k], v, shown)
		}
	}
}
