// Package store is the domain of LiveDrops' shop: its types (users, creators, products, drops, orders,
// devices) and the one error vocabulary every layer speaks. It uses the standard library only; adapters
// beneath it (store/postgres, store/redis) implement the storage, and api maps the errors to
// problem+json in one place.
package store

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with errors.Is; each has a stable machine code (Code).
var (
	ErrNotFound            = errors.New("not found")
	ErrInvalid             = errors.New("invalid argument")
	ErrForbidden           = errors.New("forbidden")
	ErrEmailTaken          = errors.New("email taken")
	ErrAlreadyExists       = errors.New("already exists")
	ErrSoldOut             = errors.New("sold out")
	ErrDropNotLive         = errors.New("drop not live")
	ErrLimitExceeded       = errors.New("per-user limit exceeded")
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	ErrRequestInProgress   = errors.New("a request with this idempotency key is in progress")
	ErrUnavailable         = errors.New("temporarily unavailable")
)

var codes = map[error]string{
	ErrNotFound:            "not_found",
	ErrInvalid:             "invalid_argument",
	ErrForbidden:           "forbidden",
	ErrEmailTaken:          "email_taken",
	ErrAlreadyExists:       "already_exists",
	ErrSoldOut:             "sold_out",
	ErrDropNotLive:         "drop_not_live",
	ErrLimitExceeded:       "limit_exceeded",
	ErrIdempotencyMismatch: "idempotency_mismatch",
	ErrRequestInProgress:   "request_in_progress",
	ErrUnavailable:         "unavailable",
}

// Code is the stable machine word of err's sentinel ("not_found", "sold_out", ...), or "" when err
// wraps none of them (an internal error).
func Code(err error) string {
	for sentinel, code := range codes {
		if errors.Is(err, sentinel) {
			return code
		}
	}
	return ""
}

// FieldError is bad input in one field; it wraps ErrInvalid. Detail is safe to show to the client.
type FieldError struct {
	Field  string
	Detail string
}

// Invalid returns a FieldError for field.
func Invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Detail: fmt.Sprintf(format, args...)}
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Detail }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Unwrap() error { return ErrInvalid }
