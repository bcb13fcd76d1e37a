package httpkit

import (
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/go-chi/cors"
)

// OriginAllowed reports whether a browser page of origin may call a server reached as host: the same
// host, or a match of one of patterns (path.Match, case-insensitive): a pattern with "://" is matched
// against scheme://host[:port], any other against host[:port], so "*.example.com" allows every
// subdomain on any scheme. It is the rule the hub applies to sockets (LIVEDROPS_ALLOWED_ORIGINS).
func OriginAllowed(origin, host string, patterns []string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// CORS answers preflights and adds the CORS headers for pages of the allowed origins (OriginAllowed),
// so a page on another site (a creator's shop) can sign up, follow and buy with the SDK. Requests
// carry bearer tokens, never cookies, so credentials are not allowed. Pages of other origins get no
// CORS header at all, and the browser keeps the answer from them.
func CORS(patterns []string) func(http.Handler) http.Handler {
	return cors.Handler(cors.Options{
		AllowOriginFunc: func(r *http.Request, origin string) bool { return OriginAllowed(origin, r.Host, patterns) },
		AllowedMethods:  []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete},
		AllowedHeaders:  []string{"Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-Request-Id"},
		ExposedHeaders:  []string{"Idempotent-Replayed", "X-Request-Id", "Location", "Retry-After"},
		MaxAge:          600,
	})
}
