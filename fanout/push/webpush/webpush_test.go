package webpush_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout/push"
	"github.com/livedrops/livedrops/fanout/push/pushtest"
	"github.com/livedrops/livedrops/fanout/push/webpush"
)

type env struct {
	srv    *pushtest.WebPush
	sender *webpush.Sender
	now    time.Time
}

var encoders = []string{webpush.EncoderLibrary, webpush.EncoderStdlib}

// both runs f with each encoder: the push service must see the same messages from both.
func both(t *testing.T, f func(t *testing.T, encoder string)) {
	for _, enc := range encoders {
		t.Run(enc, func(t *testing.T) { f(t, enc) })
	}
}

func newEnv(t *testing.T, faults pushtest.Faults, encoder string) *env {
	t.Helper()
	priv, pub, err := webpush.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pushtest.StartWebPush(pushtest.WebPushConfig{VAPIDPublicKey: pub, Seed: []byte(t.Name()), Faults: faults, Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	e := &env{srv: srv, now: time.Now()}
	e.sender, err = webpush.New(webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: "mailto:ops@livedrops.example",
		Allow: func(ep string) bool { return strings.HasPrefix(ep, srv.Origin()+"/") }, Now: func() time.Time { return e.now },
		Encoder: encoder})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) device(t *testing.T, id string) push.Device {
	t.Helper()
	s, err := e.srv.Subscription(id)
	if err != nil {
		t.Fatal(err)
	}
	return push.Device{ID: 1, UserID: 2, Provider: push.WebPush, Token: s.Endpoint, P256dh: s.P256dh, Auth: s.Auth}
}

func notification(now time.Time) *push.Notification {
	return &push.Notification{EventID: "ev-1", Type: "drop.started", DropID: 42, CreatorID: 7,
		Title: "Cleo is live: Hoodie", Body: "Hoodie, $49.00", URL: "/#/drops/42", Tag: "drop-42",
		Expires: now.Add(90*time.Minute + 500*time.Millisecond)}
}

func TestSendIsEncryptedForTheSubscription(t *testing.T) {
	both(t, func(t *testing.T, encoder string) {
		e := newEnv(t, nil, encoder)
		n := notification(e.now)
		r := e.sender.Send(context.Background(), n, e.device(t, "sub-1"))
		if r.Outcome != push.Sent || r.Err != nil {
			t.Fatalf("got %+v, want sent", r)
		}
		got := e.srv.Deliveries()
		if len(got) != 1 {
			t.Fatalf("deliveries %d, want 1", len(got))
		}
		d := got[0]
		want, _ := n.Payload()
		if string(d.Payload) != string(want) {
			t.Errorf("decrypted %s, want %s", d.Payload, want)
		}
		var p map[string]any
		if err := json.Unmarshal(d.Payload, &p); err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]any{"type": "drop.started", "event_id": "ev-1", "drop_id": 42.0, "creator_id": 7.0,
			"title": "Cleo is live: Hoodie", "body": "Hoodie, $49.00", "url": "/#/drops/42", "tag": "drop-42"} {
			if p[k] != v {
				t.Errorf("payload %s = %v, want %v", k, p[k], v)
			}
		}
		if d.TTL != 90*time.Minute {
			t.Errorf("TTL %s, want the 90 min left of the drop (never 0, the library's default)", d.TTL)
		}
		if d.Topic != "drop-42" || d.Device != "sub-1" || d.EventID != "ev-1" {
			t.Errorf("delivery %+v", d)
		}
	})
}

func TestAnswersMeanWhatTheySay(t *testing.T) {
	faults := map[string]pushtest.Fault{
		"gone":     {Status: http.StatusGone},
		"expired":  {Status: http.StatusNotFound},
		"busy":     {Status: http.StatusServiceUnavailable, RetryAfter: "7"},
		"limited":  {Status: http.StatusTooManyRequests, RetryAfter: "30"},
		"windows":  {Status: http.StatusNotAcceptable},
		"toolarge": {Status: http.StatusRequestEntityTooLarge},
		"bad":      {Status: http.StatusBadRequest},
	}
	both(t, func(t *testing.T, encoder string) { answers(t, faults, encoder) })
}

func answers(t *testing.T, faults map[string]pushtest.Fault, encoder string) {
	e := newEnv(t, func(device string, _ int) pushtest.Fault { return faults[device] }, encoder)
	cases := []struct {
		device  string
		outcome push.Outcome
		reason  string
		after   time.Duration
	}{
		{"ok", push.Sent, "", 0},
		{"gone", push.Gone, "gone", 0},
		{"expired", push.Gone, "gone", 0},
		{"busy", push.Retry, "unavailable", 7 * time.Second},
		{"limited", push.Retry, "rate_limited", 30 * time.Second},
		{"windows", push.Retry, "rate_limited", 5 * time.Second},
		{"toolarge", push.Rejected, "payload_too_large", 0},
		{"bad", push.Rejected, "client_error", 0},
	}
	for _, c := range cases {
		r := e.sender.Send(context.Background(), notification(e.now), e.device(t, c.device))
		if r.Outcome != c.outcome || r.Reason != c.reason || r.RetryAfter != c.after {
			t.Errorf("%s: got %v %q after %s (%v), want %v %q after %s", c.device, r.Outcome, r.Reason, r.RetryAfter, r.Err,
				c.outcome, c.reason, c.after)
		}
	}
}

func TestRefusedWithoutSending(t *testing.T) {
	both(t, func(t *testing.T, encoder string) {
		e := newEnv(t, nil, encoder)
		dev := e.device(t, "x")

		stale := notification(e.now)
		stale.Expires = e.now.Add(-time.Second)
		if r := e.sender.Send(context.Background(), stale, dev); r.Outcome != push.Rejected || r.Reason != "expired" {
			t.Errorf("stale notification: %+v, want rejected as expired", r)
		}
		big := notification(e.now)
		big.Body = strings.Repeat("x", push.MaxPayload)
		if r := e.sender.Send(context.Background(), big, dev); r.Outcome != push.Rejected || r.Reason != "payload_too_large" {
			t.Errorf("big payload: %+v", r)
		}
		elsewhere := dev
		elsewhere.Token = "https://169.254.169.254/latest/meta-data"
		if r := e.sender.Send(context.Background(), notification(e.now), elsewhere); r.Outcome != push.Rejected || r.Reason != "endpoint_not_allowed" {
			t.Errorf("endpoint outside the policy: %+v", r)
		}
		badKey := dev
		badKey.P256dh = "AAAA"
		if r := e.sender.Send(context.Background(), notification(e.now), badKey); r.Outcome != push.Rejected || r.Reason != "bad_subscription" {
			t.Errorf("bad key: %+v", r)
		}
		if n := e.srv.Stats().Requests; n != 0 {
			t.Errorf("the push service got %d requests, want none", n)
		}
	})
}

func TestAnotherVAPIDKeyIsRefused(t *testing.T) {
	both(t, func(t *testing.T, encoder string) {
		e := newEnv(t, nil, encoder)
		priv, pub, _ := webpush.GenerateKeys()
		other, err := webpush.New(webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: "ops@livedrops.example",
			Allow: func(string) bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		r := other.Send(context.Background(), notification(time.Now()), e.device(t, "s"))
		if r.Outcome != push.Rejected || r.Reason != "vapid_rejected" || !r.Credentials || r.Status != http.StatusForbidden {
			t.Fatalf("got %+v, want refused credentials", r)
		}
	})
}

func TestNetworkErrorIsRetried(t *testing.T) {
	both(t, func(t *testing.T, encoder string) {
		e := newEnv(t, nil, encoder)
		dev := e.device(t, "s")
		_ = e.srv.Close()
		if r := e.sender.Send(context.Background(), notification(e.now), dev); r.Outcome != push.Retry || r.Reason != "network" {
			t.Fatalf("got %+v, want retry for the network", r)
		}
	})
}

func TestConfigIsChecked(t *testing.T) {
	priv, pub, _ := webpush.GenerateKeys()
	priv2, _, _ := webpush.GenerateKeys()
	for name, cfg := range map[string]webpush.Config{
		"no subject":      {VAPIDPublicKey: pub, VAPIDPrivateKey: priv},
		"bad subject":     {VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: "ops"},
		"not a pair":      {VAPIDPublicKey: pub, VAPIDPrivateKey: priv2, Subject: "mailto:a@b.example"},
		"bad public key":  {VAPIDPublicKey: "AAAA", VAPIDPrivateKey: priv, Subject: "mailto:a@b.example"},
		"bad private key": {VAPIDPublicKey: pub, VAPIDPrivateKey: "!!", Subject: "mailto:a@b.example"},
	} {
		if _, err := webpush.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := webpush.New(webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: "https://livedrops.example/contact"}); err != nil {
		t.Errorf("https subject: %v", err)
	}
}

func BenchmarkSend(b *testing.B) {
	for _, enc := range encoders {
		b.Run(enc, func(b *testing.B) { benchSend(b, enc) })
	}
}

func benchSend(b *testing.B, encoder string) {
	priv, pub, _ := webpush.GenerateKeys()
	srv, err := pushtest.StartWebPush(pushtest.WebPushConfig{VAPIDPublicKey: pub, Seed: []byte("b")})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	s, _ := webpush.New(webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: "mailto:ops@livedrops.example",
		Allow: func(string) bool { return true }, Encoder: encoder})
	sub, _ := srv.Subscription("1")
	dev := push.Device{ID: 1, Provider: push.WebPush, Token: sub.Endpoint, P256dh: sub.P256dh, Auth: sub.Auth}
	n := notification(time.Now())
	b.ReportAllocs()
	for b.Loop() {
		if r := s.Send(context.Background(), n, dev); r.Outcome != push.Sent {
			b.Fatal(r)
		}
	}
}

// A payload at the largest size RFC 8291 allows fits the 4,096 bytes a push service must accept.
func TestLargestPayloadFits(t *testing.T) {
	both(t, func(t *testing.T, encoder string) {
		e := newEnv(t, nil, encoder)
		n := notification(e.now)
		base, _ := n.Payload()
		n.Body += strings.Repeat("x", push.MaxPayload-len(base))
		if p, _ := n.Payload(); len(p) != push.MaxPayload {
			t.Fatalf("payload %d bytes, want %d", len(p), push.MaxPayload)
		}
		if r := e.sender.Send(context.Background(), n, e.device(t, "big")); r.Outcome != push.Sent {
			t.Fatalf("largest payload: %+v", r)
		}
		if got := e.srv.Deliveries(); len(got) != 1 || len(got[0].Payload) != push.MaxPayload {
			t.Fatalf("deliveries %d", len(got))
		}
	})
}
