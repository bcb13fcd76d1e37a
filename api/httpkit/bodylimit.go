package httpkit

import (
	"errors"
	"fmt"
	"net/http"
)

// DefaultBodyLimit is the request body limit used when none is given: 1 MiB.
const DefaultBodyLimit int64 = 1 << 20

// BodyLimit is middleware that caps request bodies at n bytes (n <= 0 means
// DefaultBodyLimit). A request whose Content-Length exceeds n is answered 413
// before the next handler runs; any other body is wrapped with
// http.MaxBytesReader, so reading past n fails with an error for which
// IsBodyTooLarge reports true.
func BodyLimit(n int64) func(http.Handler) http.Handler {
	if n <= 0 {
		n = DefaultBodyLimit
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > n {
				WriteBodyTooLarge(w, r, n)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, n)
			next.ServeHTTP(w, r)
		})
	}
}

// IsBodyTooLarge reports whether err comes from reading past a body limit
// (an *http.MaxBytesError in its chain).
func IsBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// WriteBodyTooLarge answers 413 problem+json with code "payload_too_large",
// naming the limit in bytes. Handlers call it when IsBodyTooLarge is true;
// the limit is also in the error's *http.MaxBytesError.
func WriteBodyTooLarge(w http.ResponseWriter, r *http.Request, limit int64) {
	WriteProblem(w, r, Problem{
		Status: http.StatusRequestEntityTooLarge,
		Code:   "payload_too_large",
		Detail: fmt.Sprintf("the request body exceeds the limit of %d bytes", limit),
	})
}
