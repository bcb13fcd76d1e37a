// Package web serves the browser side of LiveDrops from files embedded in the binary: the live drop
// page at /, the SDK at /sdk/livedrops.js (web/README.md documents it) and the service worker at
// /sw.js.
//
// The page's own files are served under /assets/ with a content hash in their names (app.3f9a0c1d2e.js)
// and cached for a year as immutable, so a CDN can front them; the references between them are
// rewritten to those names when the package starts. What must keep its URL (/, /sw.js, /sdk/...) is
// served with a strong ETag and revalidated. Every answer carries a Content-Security-Policy that lets
// the page load only its own files and talk only to its own origin (REST and sockets).
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/api/httpkit"
)

//go:embed index.html app.js app.css livedrops.js sw.js icon.svg
var files embed.FS

// hashed are the files served under /assets/ by content hash, each after the files it refers to (a
// reference is written "./name" or './name' in the source).
var hashed = []string{"livedrops.js", "icon.svg", "app.css", "app.js"}

// CSP is the Content-Security-Policy of every answer: only the page's own scripts, styles and images;
// fetch, WebSocket and EventSource only to its own origin ('self' covers ws: and wss: of the same host).
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; worker-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; " +
	"frame-ancestors 'none'"

// Cache-Control values.
const (
	cacheImmutable  = "public, max-age=31536000, immutable"
	cacheRevalidate = "no-cache"
	cacheSDK        = "public, max-age=300, must-revalidate"
)

type asset struct {
	body, gz []byte
	etag     string // strong, of body; the gzip form's is etag with "-gz" inside the quotes
	ctype    string
	cache    string
}

// Site is the set of assets, ready to serve.
type Site struct {
	assets map[string]*asset // by URL path
}

// New reads the embedded files, hashes them and rewrites their references.
func New() (*Site, error) {
	s := &Site{assets: map[string]*asset{}}
	renames := map[string]string{} // "./app.js" -> "/assets/app.<hash>.js"
	read := func(name string) ([]byte, error) {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("web: %w", err)
		}
		for from, to := range renames {
			for _, q := range []string{`"`, `'`} {
				b = bytes.ReplaceAll(b, []byte(q+from+q), []byte(q+to+q))
			}
		}
		return b, nil
	}
	for _, name := range hashed {
		b, err := read(name)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:5])
		ext := path.Ext(name)
		p := "/assets/" + strings.TrimSuffix(name, ext) + "." + h + ext
		renames["./"+name] = p
		s.add(p, b, cacheImmutable)
		if name == "livedrops.js" {
			s.add("/sdk/livedrops.js", b, cacheSDK)
			s.add("/sdk/livedrops."+h+".js", b, cacheImmutable)
		}
	}
	for _, f := range []struct{ name, path string }{{"index.html", "/"}, {"sw.js", "/sw.js"}} {
		b, err := read(f.name)
		if err != nil {
			return nil, err
		}
		a := s.add(f.path, b, cacheRevalidate)
		if f.path == "/" {
			a.ctype = "text/html; charset=utf-8"
		}
	}
	return s, nil
}

func (s *Site) add(p string, body []byte, cache string) *asset {
	sum := sha256.Sum256(body)
	tag := hex.EncodeToString(sum[:16])
	ctype := mime.TypeByExtension(path.Ext(p))
	if ctype == "" || strings.HasSuffix(p, ".js") {
		ctype = "text/javascript; charset=utf-8"
	}
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	_, _ = w.Write(body)
	_ = w.Close()
	a := &asset{body: body, gz: gz.Bytes(), etag: `"` + tag + `"`, ctype: ctype, cache: cache}
	s.assets[p] = a
	return a
}

// Paths lists the URL paths the site serves.
func (s *Site) Paths() []string {
	out := make([]string, 0, len(s.assets))
	for p := range s.assets {
		out = append(out, p)
	}
	return out
}

// Routes mounts GET and HEAD of every asset on r, under patterns that do not change with the content
// hashes (the route label of the request metrics stays the same from one release to the next).
func (s *Site) Routes(r chi.Router) {
	for _, p := range []string{"/", "/sw.js", "/assets/{file}", "/sdk/{file}"} {
		r.Get(p, s.serve)
		r.Head(p, s.serve)
	}
}

func (s *Site) serve(w http.ResponseWriter, r *http.Request) {
	a := s.assets[r.URL.Path]
	if a == nil {
		httpkit.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Cache-Control", a.cache)
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Add("Vary", "Accept-Encoding")
	if strings.HasPrefix(r.URL.Path, "/sdk/") {
		// The SDK is for other sites' pages too: a module script is fetched in CORS mode.
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	}
	body, etag := a.body, a.etag
	if acceptsGzip(r) {
		body, etag = a.gz, strings.TrimSuffix(a.etag, `"`)+`-gz"`
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("ETag", etag)
	// ServeContent answers If-None-Match (304), ranges and HEAD.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			return strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0"
		}
	}
	return false
}
