package store_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/store"
)

func TestDropAt(t *testing.T) {
	start := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	end := start.Add(time.Hour)
	drop := func(status store.DropStatus, stock int) store.Drop {
		return store.Drop{StartTime: start, EndTime: end, InitialStock: 10, StockCount: stock, Status: status}
	}
	tests := []struct {
		name string
		d    store.Drop
		now  time.Time
		want store.DropStatus
	}{
		{"before start", drop(store.DropScheduled, 10), start.Add(-time.Second), store.DropScheduled},
		{"at start, not flipped yet", drop(store.DropScheduled, 10), start, store.DropLive},
		{"flipped live", drop(store.DropLive, 3), start.Add(time.Minute), store.DropLive},
		{"stock gone before the flip", drop(store.DropLive, 0), start.Add(time.Minute), store.DropSoldOut},
		{"stored sold out", drop(store.DropSoldOut, 0), start.Add(time.Minute), store.DropSoldOut},
		{"at end, not flipped yet", drop(store.DropLive, 3), end, store.DropEnded},
		{"sold out then past end", drop(store.DropSoldOut, 0), end.Add(time.Second), store.DropEnded},
		{"scheduled past end", drop(store.DropScheduled, 10), end.Add(time.Hour), store.DropEnded},
		{"stored ended", drop(store.DropEnded, 2), start.Add(time.Minute), store.DropEnded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.d.At(tc.now)
			if got.Status != tc.want {
				t.Errorf("got %s, want %s", got.Status, tc.want)
			}
			if again := got.At(tc.now); again.Status != got.Status {
				t.Errorf("deriving twice gave %s, want %s", again.Status, got.Status)
			}
		})
	}
}

func TestNewDropValidate(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	ok := store.NewDrop{ProductID: 1, StartTime: now.Add(time.Minute), EndTime: now.Add(time.Hour), StockCount: 5, MaxPerUser: 1}
	tests := []struct {
		name  string
		edit  func(*store.NewDrop)
		field string // "" = valid
	}{
		{"valid", func(*store.NewDrop) {}, ""},
		{"start within the grace", func(d *store.NewDrop) { d.StartTime = now.Add(-store.StartGrace + time.Millisecond) }, ""},
		{"start in the past", func(d *store.NewDrop) { d.StartTime = now.Add(-time.Hour) }, "start_time"},
		{"end before start", func(d *store.NewDrop) { d.EndTime = d.StartTime.Add(-time.Second) }, "end_time"},
		{"end equals start", func(d *store.NewDrop) { d.EndTime = d.StartTime }, "end_time"},
		{"no stock", func(d *store.NewDrop) { d.StockCount = 0 }, "stock_count"},
		{"stock above int32", func(d *store.NewDrop) { d.StockCount = 1 << 31 }, "stock_count"},
		{"max per user zero", func(d *store.NewDrop) { d.MaxPerUser = 0 }, "max_per_user"},
		{"no product", func(d *store.NewDrop) { d.ProductID = 0 }, "product_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := ok
			tc.edit(&d)
			checkField(t, d.Validate(now), tc.field)
		})
	}
}

func TestNewUserAndProductValidate(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		field string
	}{
		{"valid user", store.NewUser{Name: "Ada", Email: "ada@example.com"}.Validate(), ""},
		{"unicode name", store.NewUser{Name: "Zoë 李", Email: "z@x.io"}.Validate(), ""},
		{"blank name", store.NewUser{Name: "  ", Email: "ada@example.com"}.Validate(), "name"},
		{"long name", store.NewUser{Name: strings.Repeat("é", store.MaxNameLen+1), Email: "a@b.c"}.Validate(), "name"},
		{"name at the limit", store.NewUser{Name: strings.Repeat("é", store.MaxNameLen), Email: "a@b.c"}.Validate(), ""},
		{"control character", store.NewUser{Name: "Ada\x00", Email: "a@b.c"}.Validate(), "name"},
		{"newline in name", store.NewUser{Name: "Ada\nLovelace", Email: "a@b.c"}.Validate(), "name"},
		{"invalid UTF-8", store.NewUser{Name: "Ada\xff", Email: "a@b.c"}.Validate(), "name"},
		{"no at", store.NewUser{Name: "Ada", Email: "ada.example.com"}.Validate(), "email"},
		{"at first", store.NewUser{Name: "Ada", Email: "@example.com"}.Validate(), "email"},
		{"space in email", store.NewUser{Name: "Ada", Email: "a da@example.com"}.Validate(), "email"},
		{"valid product", store.NewProduct{Title: "Hoodie", Description: "Warm.\nSoft.", PriceCents: 4900}.Validate(), ""},
		{"free product", store.NewProduct{Title: "Sticker", PriceCents: 0}.Validate(), ""},
		{"negative price", store.NewProduct{Title: "Hoodie", PriceCents: -1}.Validate(), "price_cents"},
		{"price above 2^53", store.NewProduct{Title: "Hoodie", PriceCents: store.MaxID + 1}.Validate(), "price_cents"},
		{"empty title", store.NewProduct{Title: "", PriceCents: 1}.Validate(), "title"},
		{"long description", store.NewProduct{Title: "T", Description: strings.Repeat("a", store.MaxDescriptionLen+1)}.Validate(), "description"},
		{"bell in description", store.NewProduct{Title: "T", Description: "ring\a"}.Validate(), "description"},
		{"profile name", store.ValidateProfileName("DJ Drop"), ""},
		{"blank profile name", store.ValidateProfileName(""), "profile_name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkField(t, tc.err, tc.field) })
	}
}

func checkField(t *testing.T, err error, field string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("got %v, want no error", err)
		}
		return
	}
	var fe *store.FieldError
	if !errors.As(err, &fe) || fe.Field != field {
		t.Fatalf("got %v, want a FieldError for %s", err, field)
	}
}

func TestDropJSON(t *testing.T) {
	d := store.Drop{ID: 42, CreatorID: 7, Product: store.DropProduct{ID: 3, Title: "Hoodie", PriceCents: 4900},
		StartTime: time.Date(2026, 11, 25, 11, 0, 0, 123e6, time.UTC), EndTime: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
		InitialStock: 100, StockCount: 100, MaxPerUser: 2, Status: store.DropLive}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	// The drop of the drop.scheduled golden file in fanout/testdata: one shape everywhere.
	want := `{"drop_id":42,"creator_id":7,"product":{"product_id":3,"title":"Hoodie","price_cents":4900},"start_time":"2026-11-25T11:00:00.123Z","end_time":"2026-11-25T12:00:00.000Z","initial_stock":100,"stock_count":100,"max_per_user":2,"status":"live"}`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
	var back store.Drop
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != d {
		t.Fatalf("round trip: got %+v, want %+v", back, d)
	}
}
