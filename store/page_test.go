package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/store"
)

func TestCursorRoundTrip(t *testing.T) {
	tests := []store.Cursor{
		{At: time.Date(2026, 11, 25, 12, 0, 0, 123e6, time.UTC), ID: 1},
		{At: time.UnixMilli(0).UTC(), ID: store.MaxID},
		{At: time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC), ID: 42},
	}
	for _, c := range tests {
		s := c.String()
		got, err := store.ParseCursor(s)
		if err != nil {
			t.Fatalf("ParseCursor(%q) of %v: %v", s, c, err)
		}
		if !got.At.Equal(c.At) || got.ID != c.ID {
			t.Errorf("ParseCursor(String(%v)) = %v, want it back", c, got)
		}
	}
}

func TestParseCursorRejects(t *testing.T) {
	valid := store.Cursor{At: time.UnixMilli(1_700_000_000_000).UTC(), ID: 7}.String()
	tests := map[string]string{
		"empty":          "",
		"not base64":     "***",
		"padded":         valid + "=",
		"too long":       strings.Repeat("A", 100),
		"trailing bytes": store.Cursor{At: time.UnixMilli(1).UTC(), ID: 7}.String() + "AA",
		"zero id":        store.Cursor{At: time.UnixMilli(1).UTC(), ID: 0}.String(),
		"negative time":  store.Cursor{At: time.UnixMilli(-5).UTC(), ID: 3}.String(),
		"id above 2^53":  store.Cursor{At: time.UnixMilli(1).UTC(), ID: store.MaxID + 1}.String(),
		"wrong version":  "AgIO",
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := store.ParseCursor(s)
			var fe *store.FieldError
			if !errors.As(err, &fe) || fe.Field != "cursor" {
				t.Fatalf("ParseCursor(%q) = %v, want a FieldError for cursor", s, err)
			}
		})
	}
}

func FuzzParseCursor(f *testing.F) {
	f.Add(store.Cursor{At: time.UnixMilli(1_700_000_000_000).UTC(), ID: 7}.String())
	f.Add("")
	f.Add("AQ")
	f.Add("AYCAgICAgICAgAE")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := store.ParseCursor(s)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("ParseCursor(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if !store.ValidID(c.ID) || c.At.Before(time.Unix(0, 0)) {
			t.Fatalf("ParseCursor(%q) = %v, outside the valid range", s, c)
		}
		if got := c.String(); got != s {
			t.Fatalf("String(ParseCursor(%q)) = %q, want the input back", s, got)
		}
	})
}
