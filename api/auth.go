package api

import (
	"context"
	"net"
	"net/http"
	"strconv"

	"github.com/livedrops/livedrops/api/auth"
)

type userKey struct{}

// authenticate requires a valid bearer token and puts its user id in the request context; a missing
// or bad token is 401.
func (a *API) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		token, ok := auth.BearerToken(header)
		if !ok {
			detail := "this request needs an Authorization: Bearer <token> header"
			if header != "" {
				detail = "the Authorization header must be of the form Bearer <token>"
			}
			a.writeError(w, r, &requestError{code: "unauthorized", detail: detail})
			return
		}
		userID, err := a.cfg.Tokens.Verify(token)
		if err != nil {
			a.writeError(w, r, &requestError{code: "unauthorized", detail: "the bearer token is invalid or expired"})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, userID)))
	})
}

// caller is the authenticated user id (0 outside authenticate).
func caller(r *http.Request) int64 {
	id, _ := r.Context().Value(userKey{}).(int64)
	return id
}

// actAs checks that the caller is user id: acting as someone else is 403.
func actAs(r *http.Request, id int64) error {
	if caller(r) != id {
		return &requestError{code: "forbidden", detail: "you may only act as user " + strconv.FormatInt(caller(r), 10)}
	}
	return nil
}

// limitIP spends one unit of the client address's write budget.
func (a *API) limitIP(next http.Handler) http.Handler {
	if a.cfg.IPLimiter == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		if a.limited(w, r, a.cfg.IPLimiter, "ip:"+host) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitUser spends one unit of the caller's write budget; it runs after authenticate.
func (a *API) limitUser(next http.Handler) http.Handler {
	if a.cfg.UserLimiter == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.limited(w, r, a.cfg.UserLimiter, "user:"+strconv.FormatInt(caller(r), 10)) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limited asks l about key and answers 429 when the budget is spent. A limiter that cannot answer
// lets the request through (it counts its own errors).
func (a *API) limited(w http.ResponseWriter, r *http.Request, l Limiter, key string) bool {
	wait, err := l.Allow(r.Context(), key)
	if err != nil || wait <= 0 {
		return false
	}
	a.writeError(w, r, &requestError{code: "rate_limited", retryAfter: wait,
		detail: "too many writes; retry after the time in Retry-After"})
	return true
}
