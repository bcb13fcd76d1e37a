package store_test

import (
	"net/url"
	"testing"

	"github.com/livedrops/livedrops/store"
)

func TestEndpointPolicy(t *testing.T) {
	p, err := store.ParseEndpointPolicy(" https://fcm.googleapis.com, https://*.push.apple.com ,http://127.0.0.1:*,")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		endpoint string
		want     bool
	}{
		{"https://fcm.googleapis.com/fcm/send/abc", true},
		{"https://FCM.googleapis.com/fcm/send/abc", true},
		{"https://web.push.apple.com/QO", true},
		{"http://127.0.0.1:4567/push/1", true},
		{"http://fcm.googleapis.com/fcm/send/abc", false}, // scheme is part of the pattern
		{"https://fcm.googleapis.com.evil.example/x", false},
		{"https://push.apple.com/x", false}, // *. needs a label
		{"https://user@fcm.googleapis.com/x", false},
		{"https://fcm.googleapis.com/x#frag", false},
		{"http://127.0.0.2:4567/push/1", false},
		{"fcm.googleapis.com/x", false},
		{"", false},
	}
	for _, c := range cases {
		if got := p.Allows(c.endpoint); got != c.want {
			t.Errorf("Allows(%q) = %v, want %v", c.endpoint, got, c.want)
		}
	}
	for _, bad := range []string{"fcm.googleapis.com", "ftp://x", "https://", "https://a/b", "https://[", "https://u@h"} {
		if _, err := store.ParseEndpointPolicy(bad); err == nil {
			t.Errorf("ParseEndpointPolicy(%q) accepted", bad)
		}
	}
	for _, e := range []string{"https://fcm.googleapis.com/fcm/send/x", "https://updates.push.services.mozilla.com/wpush/v2/x",
		"https://web.push.apple.com/x", "https://wns2-par02p.notify.windows.com/w/?token=x"} {
		if !store.DefaultEndpointPolicy.Allows(e) {
			t.Errorf("the default policy refuses %s", e)
		}
	}
}

func FuzzEndpointPolicy(f *testing.F) {
	f.Add("https://fcm.googleapis.com,http://127.0.0.1:*", "https://fcm.googleapis.com/fcm/send/x")
	f.Add("https://*.push.apple.com", "https://web.push.apple.com/QO")
	f.Add("https://[", "https://u@h/")
	f.Fuzz(func(t *testing.T, policy, endpoint string) {
		p, err := store.ParseEndpointPolicy(policy)
		if err != nil {
			return
		}
		if p.Allows(endpoint) {
			u, err := url.Parse(endpoint)
			if err != nil || u.User != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
				t.Fatalf("policy %q allows %q", policy, endpoint)
			}
		}
	})
}
