package store_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/livedrops/livedrops/store"
)

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{store.ErrSoldOut, "sold_out"},
		{fmt.Errorf("place order 7: %w", store.ErrLimitExceeded), "limit_exceeded"},
		{store.Invalid("email", "is not an address"), "invalid_argument"},
		{errors.New("disk on fire"), ""},
		{nil, ""},
		{errors.Join(errors.New("rollback failed"), fmt.Errorf("drop 3: %w", store.ErrSoldOut)), "sold_out"},
		{fmt.Errorf("a: %w; b: %w", errors.New("x"), store.ErrDropNotLive), "drop_not_live"},
		{fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", store.ErrNotFound)), "not_found"},
		{isError{target: store.ErrUnavailable}, "unavailable"},
		{sliceError{parts: []string{"a"}}, ""},
		{fmt.Errorf("wrapped: %w", sliceError{parts: []string{"b"}, err: store.ErrForbidden}), "forbidden"},
	}
	for _, tc := range tests {
		if got := store.Code(tc.err); got != tc.want {
			t.Errorf("Code(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestFieldError(t *testing.T) {
	err := fmt.Errorf("create user: %w", store.Invalid("name", "must not be empty"))
	var fe *store.FieldError
	if !errors.As(err, &fe) || fe.Field != "name" || !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("got %v, want a FieldError for name wrapping ErrInvalid", err)
	}
}

// isError says it is target through an Is method, as errors.Is allows.
type isError struct{ target error }

func (e isError) Error() string        { return "is " + e.target.Error() }
func (e isError) Is(target error) bool { return target == e.target }

// sliceError is not comparable: it cannot be a map key, and must not break Code.
type sliceError struct {
	parts []string
	err   error
}

func (e sliceError) Error() string { return fmt.Sprint(e.parts) }
func (e sliceError) Unwrap() error { return e.err }

// TestCodeAgreesWithErrorsIs: Code names a sentinel that errors.Is finds in err, and "" only when
// errors.Is finds none.
func TestCodeAgreesWithErrorsIs(t *testing.T) {
	sentinels := []error{store.ErrNotFound, store.ErrInvalid, store.ErrForbidden, store.ErrEmailTaken,
		store.ErrAlreadyExists, store.ErrSoldOut, store.ErrDropNotLive, store.ErrLimitExceeded,
		store.ErrIdempotencyMismatch, store.ErrRequestInProgress, store.ErrUnavailable}
	for _, err := range []error{store.ErrSoldOut, fmt.Errorf("x: %w", store.ErrLimitExceeded), store.Invalid("f", "d"),
		errors.New("other"), errors.Join(errors.New("a"), store.ErrEmailTaken), isError{target: store.ErrNotFound},
		sliceError{parts: []string{"c"}}} {
		code := store.Code(err)
		matched := false
		for _, s := range sentinels {
			if errors.Is(err, s) {
				matched = true
				if store.Code(s) == code {
					code = "ok"
				}
			}
		}
		switch {
		case !matched && code != "":
			t.Errorf("Code(%v) = %q, but errors.Is finds no sentinel", err, code)
		case matched && code != "ok":
			t.Errorf("Code(%v) = %q, not a sentinel errors.Is finds", err, code)
		}
	}
}
