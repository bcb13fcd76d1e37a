package fanout_test

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != string(got)+"\n" {
		t.Fatalf("%s:\ngot  %s\nwant %s", name, got, want)
	}
}

var ts = time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))

// One envelope per event type, pinned byte for byte.
func TestEnvelopeGolden(t *testing.T) {
	drop := json.RawMessage(`{"drop_id":42,"creator_id":7,"product":{"product_id":3,"title":"Hoodie","price_cents":4900},"start_time":"2026-11-25T11:00:00.123Z","end_time":"2026-11-25T12:00:00.000Z","initial_stock":100,"stock_count":100,"max_per_user":2,"status":"live"}`)
	order := json.RawMessage(`{"order_id":9,"user_id":5,"drop_id":42,"quantity":1,"status":"confirmed","created_at":"2026-11-25T11:00:00.123Z"}`)
	tests := []struct {
		name string
		ev   fanout.Event
		subj string
	}{
		{"drop_scheduled", fanout.Event{ID: "1", Type: fanout.DropScheduled, TS: ts, CreatorID: 7, DropID: 42, Data: drop}, "ld.creator.7"},
		{"drop_started", fanout.Event{ID: "2", Type: fanout.DropStarted, TS: ts, CreatorID: 7, DropID: 42, Data: drop}, "ld.creator.7"},
		{"stock_changed", fanout.Event{ID: "3", Type: fanout.StockChanged, TS: ts, CreatorID: 7, DropID: 42, Data: json.RawMessage(`{"stock_count":90,"sold":10}`)}, "ld.drop.42"},
		{"stock_low", fanout.Event{ID: "4", Type: fanout.StockLow, TS: ts, CreatorID: 7, DropID: 42, Data: json.RawMessage(`{"stock_count":10}`)}, "ld.creator.7"},
		{"drop_soldout", fanout.Event{ID: "5", Type: fanout.DropSoldOut, TS: ts, CreatorID: 7, DropID: 42}, "ld.creator.7"},
		{"drop_ended", fanout.Event{ID: "6", Type: fanout.DropEnded, TS: ts, CreatorID: 7, DropID: 42, Data: json.RawMessage(`{"stock_count":0}`)}, "ld.creator.7"},
		{"order_confirmed", fanout.Event{ID: "7", Type: fanout.OrderConfirmed, TS: ts, CreatorID: 7, DropID: 42, UserID: 5, Data: order}, "ld.user.5"},
		{"order_failed", fanout.Event{ID: "8", Type: fanout.OrderFailed, TS: ts, CreatorID: 7, DropID: 42, UserID: 5, Data: json.RawMessage(`{"order_id":9,"status":"failed"}`)}, "ld.user.5"},
		{"follow_changed", fanout.Event{ID: "9", Type: fanout.FollowChanged, TS: ts, CreatorID: 7, UserID: 5, Data: json.RawMessage(`{"creator_id":7,"following":true}`)}, "ld.user.5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.ev.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := tc.ev.Subject(); got != tc.subj {
				t.Errorf("Subject: got %q, want %q", got, tc.subj)
			}
			b, err := json.Marshal(tc.ev)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, b)

			var back fanout.Event
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.ID != tc.ev.ID || back.Type != tc.ev.Type || back.CreatorID != tc.ev.CreatorID ||
				back.DropID != tc.ev.DropID || !back.TS.Equal(tc.ev.TS.Truncate(time.Millisecond)) {
				t.Errorf("round trip: got %+v, want %+v (ts to the millisecond)", back, tc.ev)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := fanout.Event{Type: fanout.DropStarted, TS: ts, CreatorID: 7, DropID: 42}
	with := func(f func(*fanout.Event)) fanout.Event { e := ok; f(&e); return e }
	tests := []struct {
		name string
		ev   fanout.Event
		want error
	}{
		{"valid", ok, nil},
		{"unknown type", with(func(e *fanout.Event) { e.Type = "drop.exploded" }), fanout.ErrUnknownType},
		{"no ts", with(func(e *fanout.Event) { e.TS = time.Time{} }), fanout.ErrInvalid},
		{"no creator", with(func(e *fanout.Event) { e.CreatorID = 0 }), fanout.ErrInvalid},
		{"no drop", with(func(e *fanout.Event) { e.DropID = 0 }), fanout.ErrInvalid},
		{"user event without user", with(func(e *fanout.Event) { e.Type = fanout.OrderConfirmed }), fanout.ErrInvalid},
		{"follow without drop is fine", fanout.Event{Type: fanout.FollowChanged, TS: ts, CreatorID: 7, UserID: 5}, nil},
		{"data not an object", with(func(e *fanout.Event) { e.Data = json.RawMessage(`[1]`) }), fanout.ErrInvalid},
		{"data not JSON", with(func(e *fanout.Event) { e.Data = json.RawMessage(`{oops`) }), fanout.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.ev.Validate()
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEnvelopeWithoutIDLeavesItOut(t *testing.T) {
	b, err := json.Marshal(fanout.Event{Type: fanout.DropSoldOut, TS: ts, CreatorID: 7, DropID: 42})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"type":"drop.soldout","ts":"2026-11-25T11:00:00.123Z","creator_id":7,"drop_id":42,"data":{}}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func FuzzUnmarshalEvent(f *testing.F) {
	f.Add([]byte(`{"id":"1","type":"drop.started","ts":"2026-11-25T11:00:00.123Z","creator_id":7,"drop_id":42,"data":{}}`))
	f.Add([]byte(`{"type":"follow.changed","ts":"2026-11-25T11:00:00Z","creator_id":7,"data":{"following":true}}`))
	f.Add([]byte(`{"type":"x"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"type":"stock.low","ts":"yesterday"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e fanout.Event
		if err := json.Unmarshal(b, &e); err != nil {
			return
		}
		// Whatever decodes must encode again and decode to the same event.
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", e, err)
		}
		var again fanout.Event
		if err := json.Unmarshal(out, &again); err != nil {
			t.Fatalf("decode of own encoding %s: %v", out, err)
		}
		if again.ID != e.ID || again.Type != e.Type || !again.TS.Equal(e.TS.Truncate(time.Millisecond)) {
			t.Fatalf("unstable: %+v then %+v", e, again)
		}
	})
}

// FuzzEventJSONEncoder: the hand-written envelope encoder writes what json.Marshal writes of the
// envelope's shape (data compacted and HTML-escaped), and refuses what it refuses.
func FuzzEventJSONEncoder(f *testing.F) {
	f.Add("", "order.confirmed", int64(1_764_072_000_123), int64(7), int64(42), []byte(`{"order_id":1}`))
	f.Add("0001-x", "stock.changed", int64(0), int64(-1), int64(0), []byte(" { \"a\" : [1, 2 ,\"<&>\u2028\"] } "))
	f.Add("<id>", "drop.soldout", int64(-1), int64(1), int64(1), []byte(nil))
	f.Add("", "x\"y", int64(5), int64(5), int64(5), []byte(`{"a":`))
	f.Fuzz(func(t *testing.T, id, typ string, ms, creator, drop int64, data []byte) {
		e := fanout.Event{ID: id, Type: fanout.Type(typ), TS: time.UnixMilli(ms), CreatorID: creator, DropID: drop,
			Data: data}
		raw := json.RawMessage(data)
		if data == nil {
			raw = json.RawMessage("{}")
		}
		want, wantErr := json.Marshal(struct {
			ID        string          `json:"id,omitempty"`
			Type      string          `json:"type"`
			TS        string          `json:"ts"`
			CreatorID int64           `json:"creator_id"`
			DropID    int64           `json:"drop_id,omitempty"`
			Data      json.RawMessage `json:"data"`
		}{id, typ, e.TS.UTC().Format(fanout.TimeFormat), creator, drop, raw})
		got, err := e.MarshalJSON()
		switch {
		case (err != nil) != (wantErr != nil):
			t.Fatalf("MarshalJSON error %v, json.Marshal error %v", err, wantErr)
		case err == nil && string(got) != string(want):
			t.Fatalf("MarshalJSON = %s\nwant            %s", got, want)
		}
		// The publisher sends MarshalJSON's bytes as they are, where it once sent json.Marshal's.
		if viaMarshal, err := json.Marshal(e); err == nil && string(viaMarshal) != string(got) {
			t.Fatalf("json.Marshal(event) = %s\nMarshalJSON      = %s", viaMarshal, got)
		}
	})
}
