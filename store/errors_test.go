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
