package httpkit_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/api/httpkit"
)

func TestOriginAllowed(t *testing.T) {
	patterns := []string{"*.shop.test", "https://app.example.com", "127.0.0.1:9000"}
	tests := []struct {
		origin, host string
		want         bool
	}{
		{"http://localhost:8080", "localhost:8080", true}, // same host
		{"https://a.shop.test", "api.test", true},
		{"http://a.shop.test", "api.test", true},
		{"https://shop.test", "api.test", false},
		{"https://app.example.com", "api.test", true},
		{"http://app.example.com", "api.test", false}, // the scheme is part of the pattern
		{"http://127.0.0.1:9000", "api.test", true},
		{"http://127.0.0.1:9001", "api.test", false},
		{"https://evil.test", "api.test", false},
		{"null", "api.test", false},
		{"", "api.test", false},
	}
	for _, tc := range tests {
		if got := httpkit.OriginAllowed(tc.origin, tc.host, patterns); got != tc.want {
			t.Errorf("OriginAllowed(%q, %q) = %v, want %v", tc.origin, tc.host, got, tc.want)
		}
	}
}

func TestCORS(t *testing.T) {
	r := chi.NewRouter()
	r.Use(httpkit.CORS([]string{"https://shop.test"}))
	r.Post("/orders", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Idempotent-Replayed", "true")
		w.WriteHeader(http.StatusCreated)
	})
	srv := httptest.NewServer(r)
	defer srv.Close()

	do := func(method, origin string, header ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/orders", nil)
		req.Header.Set("Origin", origin)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	pre := do(http.MethodOptions, "https://shop.test", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
	if pre.StatusCode >= 300 || pre.Header.Get("Access-Control-Allow-Origin") != "https://shop.test" {
		t.Fatalf("preflight from an allowed origin: %d, allow-origin %q", pre.StatusCode, pre.Header.Get("Access-Control-Allow-Origin"))
	}
	if got := pre.Header.Get("Access-Control-Allow-Headers"); got == "" {
		t.Errorf("preflight allows no headers")
	}
	if pre.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("credentials allowed: tokens travel in headers, cookies are never needed")
	}
	post := do(http.MethodPost, "https://shop.test")
	if post.StatusCode != http.StatusCreated || post.Header.Get("Access-Control-Allow-Origin") != "https://shop.test" {
		t.Fatalf("POST from an allowed origin: %d, allow-origin %q", post.StatusCode, post.Header.Get("Access-Control-Allow-Origin"))
	}
	for _, h := range []string{"Idempotent-Replayed", "X-Request-Id"} {
		if !contains(post.Header.Values("Access-Control-Expose-Headers"), h) {
			t.Errorf("%s is not exposed: %q", h, post.Header.Values("Access-Control-Expose-Headers"))
		}
	}
	for _, m := range []string{http.MethodOptions, http.MethodPost} {
		resp := do(m, "https://evil.test", "Access-Control-Request-Method", "POST")
		for k := range resp.Header {
			if len(k) > 15 && k[:15] == "Access-Control-" {
				t.Errorf("%s from a foreign origin got %s", m, k)
			}
		}
	}
}

func contains(values []string, want string) bool {
	for _, v := range values {
		for _, part := range splitComma(v) {
			if http.CanonicalHeaderKey(part) == want {
				return true
			}
		}
	}
	return false
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			part := s[start:i]
			for len(part) > 0 && part[0] == ' ' {
				part = part[1:]
			}
			out = append(out, part)
			start = i + 1
		}
	}
	return out
}

// FuzzOriginAllowed: any Origin header and pattern is answered without a panic, the page's own host is
// always allowed, and no pattern list allows an origin without a host.
func FuzzOriginAllowed(f *testing.F) {
	f.Add("https://a.shop.test", "api.test", "*.shop.test")
	f.Add("http://[::1]:80", "[::1]:80", "[")
	f.Add("null", "x", "*")
	f.Fuzz(func(t *testing.T, origin, host, pattern string) {
		got := httpkit.OriginAllowed(origin, host, []string{pattern})
		if u, err := url.Parse(origin); err != nil || u.Host == "" {
			if got {
				t.Fatalf("origin %q without a host allowed", origin)
			}
		} else if strings.EqualFold(u.Host, host) && !got {
			t.Fatalf("the same host %q refused", host)
		}
	})
}
