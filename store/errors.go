// Package store is the domain of LiveDrops' shop: its types (users, creators, products, drops, orders,
// devices) and the one error vocabulary every layer speaks. It uses the standard library only; adapters
// beneath it (store/postgres, store/redis) implement the storage, and api maps the errors to
// problem+json in one place.
package store

import (
	"errors"
	"fmt"
	"reflect"
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

// sentinelType is the type errors.New returns, that of every sentinel.
var sentinelType = reflect.TypeOf(ErrNotFound)

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
// wraps none of them (an internal error). It walks err's tree once, in the order errors.Is does, and
// answers the first sentinel found (every error answer asks, so it is one pass, not one per sentinel).
func Code(err error) string {
	for err != nil {
		// Only an error of the sentinels' own type can be one of them (and is safe as a map key).
		if reflect.TypeOf(err) == sentinelType {
			if code, ok := codes[err]; ok {
				return code
			}
		}
		if is, ok := err.(interface{ Is(error) bool }); ok {
			for sentinel, code := range codes {
				if is.Is(sentinel) {
					return code
				}
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if code := Code(e); code != "" {
					return code
				}
			}
			return ""
		default:
			return ""
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
