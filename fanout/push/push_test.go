package push_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout/push"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got\n%s\nwant (%s)\n%s", got, path, want)
	}
}

// The payload is the contract with the service worker (CONTRACT-push-web.md): a golden file.
func TestPayload(t *testing.T) {
	n := &push.Notification{EventID: "1234", Type: "drop.started", DropID: 42, CreatorID: 7, Title: "Cleo is live: Hoodie",
		Body: "Hoodie, $49.00. Tap to shop before it sells out.", URL: "/#/drops/42", Tag: "drop-42",
		Expires: time.Now().Add(time.Hour), EventTS: time.Now()}
	b, err := n.Payload()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "payload", append(b, '\n'))
	n.Body = strings.Repeat("é", push.MaxPayload/2)
	if _, err := n.Payload(); err == nil {
		t.Fatal("a payload over 3,993 bytes was accepted")
	}
}

func TestTTL(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		left time.Duration
		want time.Duration
	}{
		{90*time.Minute + 900*time.Millisecond, 90 * time.Minute},
		{500 * time.Millisecond, 0},
		{-time.Minute, -time.Minute},
		{60 * 24 * time.Hour, push.MaxTTL},
	} {
		n := &push.Notification{Expires: now.Add(c.left)}
		if got := n.TTL(now); got != c.want {
			t.Errorf("TTL with %s left = %s, want %s", c.left, got, c.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"": 0, "7": 7 * time.Second, " 60 ": time.Minute, "0": 0, "-5": 0, "soon": 0,
		"999999999": 24 * time.Hour, "Fri, 04 Dec 2026 12:00:30 GMT": 30 * time.Second,
		"Fri, 04 Dec 2026 11:00:00 GMT": 0,
	} {
		if got := push.ParseRetryAfter(in, now); got != want {
			t.Errorf("ParseRetryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "1", "120", "Fri, 04 Dec 2026 12:00:30 GMT", "-1", "1e9", "9223372036854775807"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		if d := push.ParseRetryAfter(s, now); d < 0 || d > 24*time.Hour {
			t.Fatalf("ParseRetryAfter(%q) = %s, outside 0..24h", s, d)
		}
	})
}
