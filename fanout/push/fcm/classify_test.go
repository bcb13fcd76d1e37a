package fcm

import (
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout/push"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The FCM HTTP v1 message the sender writes: a golden file.
func TestMessageBody(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	n := &push.Notification{EventID: "1234", Type: "drop.started", DropID: 42, CreatorID: 7, Title: "Cleo is live: Hoodie",
		Body: "Hoodie, $49.00. Tap to shop before it sells out.", URL: "/#/drops/42", Tag: "drop-42"}
	b, err := body(n, "fcm-registration-token", 90*time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	path := filepath.Join("testdata", "message.golden")
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(b) != string(want) {
		t.Fatalf("got\n%s\nwant\n%s", b, want)
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(404, "", []byte(`{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`))
	f.Add(400, "", []byte(`{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token"}]}]}}`))
	f.Add(429, "30", []byte(`{"error":{"status":"RESOURCE_EXHAUSTED"}}`))
	f.Add(503, "Fri, 04 Dec 2026 12:00:30 GMT", []byte(`<html>`))
	f.Add(200, "", []byte(`{"name":"projects/p/messages/1"}`))
	now := time.Now()
	f.Fuzz(func(t *testing.T, status int, retryAfter string, raw []byte) {
		if status < 100 || status > 599 {
			return
		}
		r := classify(status, retryAfter, raw, now)
		if r.Outcome < push.Sent || r.Outcome > push.AuthFailed {
			t.Fatalf("status %d %q: outcome %v", status, raw, r.Outcome)
		}
		if (r.Outcome == push.Sent) != (status == http.StatusOK) {
			t.Fatalf("status %d: outcome %v", status, r.Outcome)
		}
		// Only an explicit answer about the token deletes a device.
		if r.Outcome == push.Gone && status != 404 && status != 403 && status != 400 {
			t.Fatalf("status %d %q: gone", status, raw)
		}
		if r.Outcome != push.Sent && r.Reason == "" {
			t.Fatalf("status %d: no reason", status)
		}
		if r.RetryAfter < 0 {
			t.Fatalf("negative retry after")
		}
	})
}
