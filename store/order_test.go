package store_test

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/store"
)

func TestPlaceOrderValidate(t *testing.T) {
	ok := store.PlaceOrder{UserID: 5, DropID: 42, Quantity: 1, IdempotencyKey: "6f1c2a8e-checkout"}
	tests := []struct {
		name  string
		edit  func(*store.PlaceOrder)
		field string // "" = valid
	}{
		{"valid", func(*store.PlaceOrder) {}, ""},
		{"longest key", func(p *store.PlaceOrder) { p.IdempotencyKey = strings.Repeat("é", store.MaxIdempotencyKeyLen) }, ""},
		{"largest quantity", func(p *store.PlaceOrder) { p.Quantity = store.MaxQuantity }, ""},
		{"no user", func(p *store.PlaceOrder) { p.UserID = 0 }, "user_id"},
		{"no drop", func(p *store.PlaceOrder) { p.DropID = 0 }, "drop_id"},
		{"drop above 2^53", func(p *store.PlaceOrder) { p.DropID = 1 << 53 }, "drop_id"},
		{"zero quantity", func(p *store.PlaceOrder) { p.Quantity = 0 }, "quantity"},
		{"negative quantity", func(p *store.PlaceOrder) { p.Quantity = -1 }, "quantity"},
		{"quantity above int32", func(p *store.PlaceOrder) { p.Quantity = store.MaxQuantity + 1 }, "quantity"},
		{"no key", func(p *store.PlaceOrder) { p.IdempotencyKey = "" }, "idempotency_key"},
		{"blank key", func(p *store.PlaceOrder) { p.IdempotencyKey = "   " }, "idempotency_key"},
		{"key too long", func(p *store.PlaceOrder) { p.IdempotencyKey = strings.Repeat("k", store.MaxIdempotencyKeyLen+1) }, "idempotency_key"},
		{"NUL in key", func(p *store.PlaceOrder) { p.IdempotencyKey = "a\x00b" }, "idempotency_key"},
		{"newline in key", func(p *store.PlaceOrder) { p.IdempotencyKey = "a\nb" }, "idempotency_key"},
		{"key not UTF-8", func(p *store.PlaceOrder) { p.IdempotencyKey = "\xff" }, "idempotency_key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.edit(&p)
			err := p.Validate()
			var fe *store.FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, store.ErrInvalid)):
				t.Fatalf("got %v, want a FieldError for %s", err, tc.field)
			}
		})
	}
}

// TestFingerprint: the fingerprint is stored with every order, so its value for a request never
// changes; it covers the drop and the quantity and nothing else.
func TestFingerprint(t *testing.T) {
	base := store.PlaceOrder{UserID: 5, DropID: 42, Quantity: 1, IdempotencyKey: "k"}
	got := base.Fingerprint()
	const want = "e1db2418111af55d200a1496fdfb0f0aa15779db49e11360b33257104fd43622" // sha256("v1 drop_id=42 quantity=1")
	if hex.EncodeToString(got[:]) != want {
		t.Errorf("Fingerprint = %x, want %s", got, want)
	}
	tests := []struct {
		name string
		edit func(*store.PlaceOrder)
		same bool
	}{
		{"other user", func(p *store.PlaceOrder) { p.UserID = 6 }, true},
		{"other key", func(p *store.PlaceOrder) { p.IdempotencyKey = "other" }, true},
		{"other drop", func(p *store.PlaceOrder) { p.DropID = 43 }, false},
		{"other quantity", func(p *store.PlaceOrder) { p.Quantity = 2 }, false},
		{"digits moved between fields", func(p *store.PlaceOrder) { p.DropID, p.Quantity = 4, 21 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := base
			tc.edit(&p)
			if same := p.Fingerprint() == got; same != tc.same {
				t.Errorf("same fingerprint: got %v, want %v", same, tc.same)
			}
		})
	}
}

func TestOrderJSON(t *testing.T) {
	at := time.Date(2026, 11, 25, 11, 0, 0, 123e6, time.UTC)
	tests := []struct {
		name  string
		order store.Order
		want  string
	}{
		// The data of fanout/testdata/order_confirmed.golden: one shape for the answer and the event.
		{"confirmed", store.Order{ID: 9, UserID: 5, DropID: 42, Quantity: 1, Status: store.OrderConfirmed, CreatedAt: at},
			`{"order_id":9,"user_id":5,"drop_id":42,"quantity":1,"status":"confirmed","created_at":"2026-11-25T11:00:00.123Z"}`},
		{"failed, other zone, sub-millisecond", store.Order{ID: 10, UserID: 5, DropID: 42, Quantity: 2, Status: store.OrderFailed,
			CreatedAt: at.Add(999 * time.Microsecond).In(time.FixedZone("CET", 3600)), FailureCode: "sold_out"},
			`{"order_id":10,"user_id":5,"drop_id":42,"quantity":2,"status":"failed","created_at":"2026-11-25T11:00:00.123Z","failure_code":"sold_out"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.order)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("got %s\nwant %s", b, tc.want)
			}
			var back store.Order
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			want := tc.order
			want.CreatedAt = want.CreatedAt.UTC().Truncate(time.Millisecond)
			if back != want {
				t.Fatalf("round trip: got %+v, want %+v", back, want)
			}
		})
	}
}

// FuzzOrderJSON: decoding never panics, and what decodes encodes and decodes again to the same order.
func FuzzOrderJSON(f *testing.F) {
	f.Add(`{"order_id":9,"user_id":5,"drop_id":42,"quantity":1,"status":"confirmed","created_at":"2026-11-25T11:00:00.123Z"}`)
	f.Add(`{"order_id":1,"status":"failed","failure_code":"sold_out","created_at":"2026-11-25T11:00:00Z"}`)
	f.Add(`{"created_at":"not a time"}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, in string) {
		var o store.Order
		if err := json.Unmarshal([]byte(in), &o); err != nil {
			return
		}
		b, err := json.Marshal(o)
		if err != nil {
			// Only a time outside what RFC 3339 can write (years beyond 9999) may not encode.
			if o.CreatedAt.Year() < 0 || o.CreatedAt.Year() > 9999 {
				return
			}
			t.Fatalf("decoded %q to %+v, which does not encode: %v", in, o, err)
		}
		var again store.Order
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
		o.CreatedAt = o.CreatedAt.UTC().Truncate(time.Millisecond)
		if again != o {
			t.Fatalf("round trip of %q: got %+v, want %+v", in, again, o)
		}
	})
}

// FuzzOrderJSONEncoder: the hand-written encoder writes what json.Marshal writes of the order's wire shape,
// whatever the values, and it decodes back to the order.
func FuzzOrderJSONEncoder(f *testing.F) {
	f.Add(int64(1), int64(2), int64(3), 1, "confirmed", int64(1_764_072_000_123), "")
	f.Add(int64(1<<53-1), int64(0), int64(-5), -1, "failed", int64(-62_135_596_800_000), "sold_out")
	f.Add(int64(9), int64(8), int64(7), 2, "<&>\"\\\n\u2028\xff", int64(0), "code \x00 é")
	f.Fuzz(func(t *testing.T, id, user, drop int64, quantity int, status string, ms int64, failure string) {
		o := store.Order{ID: id, UserID: user, DropID: drop, Quantity: quantity, Status: store.OrderStatus(status),
			CreatedAt: time.UnixMilli(ms).UTC(), FailureCode: failure}
		got, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(struct {
			ID          int64  `json:"order_id"`
			UserID      int64  `json:"user_id"`
			DropID      int64  `json:"drop_id"`
			Quantity    int    `json:"quantity"`
			Status      string `json:"status"`
			CreatedAt   string `json:"created_at"`
			FailureCode string `json:"failure_code,omitempty"`
		}{id, user, drop, quantity, status, o.CreatedAt.Format(store.TimeFormat), failure})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("MarshalJSON = %s\nwant            %s", got, want)
		}
		if viaMarshal, err := json.Marshal(o); err != nil || string(viaMarshal) != string(want) {
			t.Fatalf("json.Marshal(order) = %s, %v; want %s", viaMarshal, err, want)
		}
	})
}
