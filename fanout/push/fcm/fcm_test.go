package fcm_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout/push"
	"github.com/livedrops/livedrops/fanout/push/fcm"
	"github.com/livedrops/livedrops/fanout/push/pushtest"
)

func start(t *testing.T, cfg pushtest.FCMConfig) (*pushtest.FCM, *fcm.Sender) {
	t.Helper()
	cfg.Keep = true
	srv, err := pushtest.StartFCM(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	s, err := fcm.New(fcm.Config{CredentialsJSON: srv.CredentialsJSON(), BaseURL: srv.BaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	return srv, s
}

func notification() *push.Notification {
	return &push.Notification{EventID: "ev-9", Type: "drop.started", DropID: 42, CreatorID: 7, Title: "Cleo is live: Cap",
		Body: "Cap, $15.00", URL: "/#/drops/42", Tag: "drop-42", Expires: time.Now().Add(time.Hour + 500*time.Millisecond)}
}

func device(token string) push.Device {
	return push.Device{ID: 3, UserID: 4, Provider: push.FCM, Token: token}
}

func TestSendOverHTTP2WithOneAccessToken(t *testing.T) {
	srv, s := start(t, pushtest.FCMConfig{})
	var wg sync.WaitGroup
	results := make([]push.Result, 50)
	for i := range results {
		wg.Go(func() {
			results[i] = s.Send(context.Background(), notification(), device("tok-"+strings.Repeat("x", i+1)))
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.Outcome != push.Sent {
			t.Fatalf("send %d: %+v", i, r)
		}
	}
	if n := srv.TokensIssued(); n != 1 {
		t.Errorf("%d access tokens fetched for 50 sends, want 1 (cached)", n)
	}
	got := srv.Deliveries()
	if len(got) != 50 {
		t.Fatalf("%d deliveries, want 50", len(got))
	}
	d := got[0]
	if d.Proto != "HTTP/2.0" {
		t.Errorf("sent over %s, want HTTP/2", d.Proto)
	}
	if d.EventID != "ev-9" || d.Topic != "drop-42" || d.TTL != time.Hour {
		t.Errorf("delivery %+v: want event ev-9, collapse key drop-42, ttl 1h", d)
	}
	var m struct {
		Message struct {
			Notification struct{ Title, Body string }
			Data         map[string]string
			Android      struct{ Priority string }
			APNS         struct{ Headers map[string]string }
			Webpush      struct{ Headers map[string]string }
		}
	}
	if err := json.Unmarshal(d.Payload, &m); err != nil {
		t.Fatal(err)
	}
	if m.Message.Notification.Title != "Cleo is live: Cap" || m.Message.Data["url"] != "/#/drops/42" ||
		m.Message.Data["drop_id"] != "42" || m.Message.Android.Priority != "HIGH" ||
		m.Message.APNS.Headers["apns-collapse-id"] != "drop-42" || m.Message.Webpush.Headers["TTL"] != "3600" {
		t.Errorf("message %s", d.Payload)
	}
}

func TestAnswersMeanWhatTheySay(t *testing.T) {
	faults := map[string]pushtest.Fault{
		"unregistered": {Status: 404, ErrorCode: "UNREGISTERED"},
		"mismatch":     {Status: 403, ErrorCode: "SENDER_ID_MISMATCH"},
		"invalid":      {Status: 400, ErrorCode: "INVALID_ARGUMENT"},
		"quota":        {Status: 429, ErrorCode: "QUOTA_EXCEEDED", RetryAfter: "10"},
		"quota-long":   {Status: 429, ErrorCode: "QUOTA_EXCEEDED", RetryAfter: "90"},
		"busy":         {Status: 503, ErrorCode: "UNAVAILABLE", RetryAfter: "3"},
		"internal":     {Status: 500, ErrorCode: "INTERNAL"},
		"apns":         {Status: 401, ErrorCode: "THIRD_PARTY_AUTH_ERROR"},
		"denied":       {Status: 403},
	}
	_, s := start(t, pushtest.FCMConfig{Faults: func(tok string, _ int) pushtest.Fault { return faults[tok] }})
	cases := []struct {
		token   string
		outcome push.Outcome
		reason  string
		after   time.Duration
		creds   bool
	}{
		{"ok", push.Sent, "", 0, false},
		{"unregistered", push.Gone, "unregistered", 0, false},
		{"mismatch", push.Gone, "sender_id_mismatch", 0, false},
		{"invalid", push.Rejected, "invalid_argument", 0, false},
		{"quota", push.Retry, "quota_exceeded", time.Minute, false},
		{"quota-long", push.Retry, "quota_exceeded", 90 * time.Second, false},
		{"busy", push.Retry, "unavailable", 3 * time.Second, false},
		{"internal", push.Retry, "unavailable", 0, false},
		{"apns", push.AuthFailed, "third_party_auth_error", 0, true},
		{"denied", push.AuthFailed, "permission_denied", 0, true},
	}
	for _, c := range cases {
		r := s.Send(context.Background(), notification(), device(c.token))
		if r.Outcome != c.outcome || r.Reason != c.reason || r.RetryAfter != c.after || r.Credentials != c.creds {
			t.Errorf("%s: got %v %q after %s creds %v (%v); want %v %q after %s creds %v", c.token, r.Outcome, r.Reason,
				r.RetryAfter, r.Credentials, r.Err, c.outcome, c.reason, c.after, c.creds)
		}
	}
}

func TestRevokedTokenIsFetchedAgain(t *testing.T) {
	srv, s := start(t, pushtest.FCMConfig{})
	if r := s.Send(context.Background(), notification(), device("a")); r.Outcome != push.Sent {
		t.Fatal(r)
	}
	srv.RevokeTokens(false)
	r := s.Send(context.Background(), notification(), device("a"))
	if r.Outcome != push.AuthFailed || r.Reason != "unauthenticated" || !r.Credentials || r.Status != http.StatusUnauthorized {
		t.Fatalf("with a revoked token: %+v", r)
	}
	if r := s.Send(context.Background(), notification(), device("a")); r.Outcome != push.Sent {
		t.Fatalf("the next send should fetch a new token: %+v", r)
	}
	if n := srv.TokensIssued(); n != 2 {
		t.Errorf("%d tokens issued, want 2", n)
	}
	// A key the token endpoint refuses: our credentials, reported as such.
	srv.RevokeTokens(true)
	r = s.Send(context.Background(), notification(), device("a"))
	if r.Outcome != push.AuthFailed || !r.Credentials {
		t.Fatalf("with a refused key: %+v", r)
	}
}

func TestWrongProjectNeverDeletesTokens(t *testing.T) {
	srv, _ := start(t, pushtest.FCMConfig{})
	s, err := fcm.New(fcm.Config{CredentialsJSON: srv.CredentialsJSON(), BaseURL: srv.BaseURL(), ProjectID: "someone-else"})
	if err != nil {
		t.Fatal(err)
	}
	r := s.Send(context.Background(), notification(), device("a"))
	if r.Outcome != push.AuthFailed || r.Outcome == push.Gone {
		t.Fatalf("got %+v, want an auth failure, not a gone device", r)
	}
}

func TestStaleNotificationIsNotSent(t *testing.T) {
	srv, s := start(t, pushtest.FCMConfig{})
	n := notification()
	n.Expires = time.Now().Add(-time.Minute)
	if r := s.Send(context.Background(), n, device("a")); r.Outcome != push.Rejected || r.Reason != "expired" {
		t.Fatalf("got %+v", r)
	}
	if st := srv.Stats(); st.Requests != 0 {
		t.Fatalf("%d requests reached FCM", st.Requests)
	}
}

func TestConfigIsChecked(t *testing.T) {
	srv, _ := start(t, pushtest.FCMConfig{})
	for name, cfg := range map[string]fcm.Config{
		"no key":       {},
		"not json":     {CredentialsJSON: []byte("x")},
		"user account": {CredentialsJSON: []byte(`{"type":"authorized_user"}`)},
		"no project":   {CredentialsJSON: []byte(strings.Replace(string(srv.CredentialsJSON()), `"project_id"`, `"project"`, 1))},
	} {
		if _, err := fcm.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The token URL can be pointed elsewhere than the key's token_uri.
	s, err := fcm.New(fcm.Config{CredentialsJSON: srv.CredentialsJSON(), BaseURL: srv.BaseURL(), TokenURL: srv.BaseURL() + "/nowhere"})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Send(context.Background(), notification(), device("a")); r.Outcome != push.AuthFailed || r.Reason != "oauth" {
		t.Fatalf("token URL override: %+v", r)
	}
}
