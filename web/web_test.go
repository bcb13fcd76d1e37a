package web_test

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/web"
)

func newServer(t *testing.T) (*web.Site, *httptest.Server) {
	t.Helper()
	site, err := web.New()
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	site.Routes(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return site, srv
}

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "identity")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

var ref = regexp.MustCompile(`["'](/assets/[^"']+)["']`)

// TestAssetsAreHashedAndResolve follows every /assets/ reference from the page: each is served,
// immutable, and its name carries the hash of what it serves (a change changes the name).
func TestAssetsAreHashedAndResolve(t *testing.T) {
	_, srv := newServer(t)
	resp, page := get(t, srv.URL+"/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("GET / Cache-Control %q, want no-cache (the page must revalidate to see new asset names)", got)
	}
	seen := map[string]bool{}
	queue := []string{string(page)}
	for len(queue) > 0 {
		body := queue[0]
		queue = queue[1:]
		for _, m := range ref.FindAllStringSubmatch(body, -1) {
			p := m[1]
			if seen[p] {
				continue
			}
			seen[p] = true
			resp, b := get(t, srv.URL+p)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %d", p, resp.StatusCode)
				continue
			}
			if got := resp.Header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
				t.Errorf("GET %s Cache-Control %q, want a year, immutable", p, got)
			}
			if !regexp.MustCompile(`\.[0-9a-f]{10}\.(js|css|svg)$`).MatchString(p) {
				t.Errorf("%s carries no content hash", p)
			}
			queue = append(queue, string(b))
		}
	}
	for _, want := range []string{`^/assets/app\.\w+\.js$`, `^/assets/app\.\w+\.css$`, `^/assets/livedrops\.\w+\.js$`, `^/assets/icon\.\w+\.svg$`} {
		found := false
		for p := range seen {
			found = found || regexp.MustCompile(want).MatchString(p)
		}
		if !found {
			t.Errorf("no asset %q reached from the page (seen %v)", want, seen)
		}
	}
	if strings.Contains(string(page), `"./`) {
		t.Errorf("the page still has an unrewritten ./ reference:\n%s", page)
	}
}

func TestHeadersAndRevalidation(t *testing.T) {
	_, srv := newServer(t)
	tests := []struct {
		path, cache, ctype string
		cors               bool
	}{
		{"/", "no-cache", "text/html; charset=utf-8", false},
		{"/sw.js", "no-cache", "text/javascript; charset=utf-8", false},
		{"/sdk/livedrops.js", "public, max-age=300, must-revalidate", "text/javascript; charset=utf-8", true},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := get(t, srv.URL+tc.path)
			h := resp.Header
			if resp.StatusCode != 200 || h.Get("Cache-Control") != tc.cache || h.Get("Content-Type") != tc.ctype {
				t.Fatalf("got %d, Cache-Control %q, Content-Type %q; want 200, %q, %q", resp.StatusCode,
					h.Get("Cache-Control"), h.Get("Content-Type"), tc.cache, tc.ctype)
			}
			if h.Get("Content-Security-Policy") != web.CSP || h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("security headers: CSP %q, nosniff %q", h.Get("Content-Security-Policy"), h.Get("X-Content-Type-Options"))
			}
			if got := h.Get("Access-Control-Allow-Origin"); (got == "*") != tc.cors {
				t.Errorf("Access-Control-Allow-Origin %q, want * only on the SDK", got)
			}
			etag := h.Get("ETag")
			if !regexp.MustCompile(`^"[0-9a-f]{32}"$`).MatchString(etag) {
				t.Fatalf("ETag %q is not a strong content hash", etag)
			}
			again, rest := get(t, srv.URL+tc.path, "If-None-Match", etag)
			if again.StatusCode != http.StatusNotModified || len(rest) != 0 {
				t.Errorf("If-None-Match the ETag: got %d with %d bytes, want 304 and no body", again.StatusCode, len(rest))
			}
			req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
			req.Header.Set("Accept-Encoding", "gzip")
			gz, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer gz.Body.Close()
			if gz.Header.Get("Content-Encoding") != "gzip" || gz.Header.Get("ETag") == etag {
				t.Fatalf("gzip: Content-Encoding %q, ETag %q (must differ from %q)", gz.Header.Get("Content-Encoding"), gz.Header.Get("ETag"), etag)
			}
			zr, err := gzip.NewReader(gz.Body)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(zr)
			if err != nil || string(plain) != string(body) {
				t.Errorf("gzip body differs from the plain one (%v)", err)
			}
		})
	}
	resp, _ := get(t, srv.URL+"/assets/nothing.js")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown asset: %d, want 404", resp.StatusCode)
	}
}

// TestSDKSizeBudget keeps the SDK small: at most 8 KiB gzipped, as served.
func TestSDKSizeBudget(t *testing.T) {
	_, srv := newServer(t)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/sdk/livedrops.js", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("read: %v, encoding %q", err, resp.Header.Get("Content-Encoding"))
	}
	const budget = 8 << 10
	t.Logf("livedrops.js: %d bytes gzipped (budget %d)", len(b), budget)
	if len(b) > budget {
		t.Errorf("livedrops.js is %d bytes gzipped, over the budget of %d", len(b), budget)
	}
}

// FuzzServe feeds the request inputs the handler reads (path, Accept-Encoding, If-None-Match, Range):
// it never panics and answers only with the statuses a static file server may.
func FuzzServe(f *testing.F) {
	f.Add("/", "gzip, deflate", "", "")
	f.Add("/sdk/livedrops.js", "gzip;q=0", `"abc"`, "bytes=0-10")
	f.Add("/assets/x", "*", "*", "bytes=-5")
	site, err := web.New()
	if err != nil {
		f.Fatal(err)
	}
	r := chi.NewRouter()
	site.Routes(r)
	f.Fuzz(func(t *testing.T, path, enc, inm, rng string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path = "/" + strings.TrimPrefix(path, "/")
		req.Header.Set("Accept-Encoding", enc)
		req.Header.Set("If-None-Match", inm)
		req.Header.Set("Range", rng)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		switch w.Code {
		case 200, 206, 304, 404, 405, 416:
		default:
			t.Fatalf("%q: status %d", path, w.Code)
		}
	})
}
