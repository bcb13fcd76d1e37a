package relay_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/relay"
)

func record(subject string, typ fanout.Type, payload string) fanout.Record {
	return fanout.Record{Seq: 1, EventID: "17", Subject: subject, Type: typ, Payload: []byte(payload), CreatedAt: time.Now()}
}

func TestDecode(t *testing.T) {
	const ended = `{"type":"drop.ended","ts":"2026-11-25T12:00:00.5Z","creator_id":7,"drop_id":42,"data":{"stock_count":0}}`
	const order = `{"type":"order.confirmed","ts":"2026-11-25T12:00:00Z","creator_id":7,"drop_id":42,"data":{"order_id":3}}`
	tests := []struct {
		name   string
		rec    fanout.Record
		wantOK bool
		want   string // the envelope published
	}{
		{"creator event", record("ld.creator.7", fanout.DropEnded, ended), true,
			`{"id":"17","type":"drop.ended","ts":"2026-11-25T12:00:00.500Z","creator_id":7,"drop_id":42,"data":{"stock_count":0}}`},
		{"user event routed by its subject", record("ld.user.5", fanout.OrderConfirmed, order), true,
			`{"id":"17","type":"order.confirmed","ts":"2026-11-25T12:00:00.000Z","creator_id":7,"drop_id":42,"data":{"order_id":3}}`},
		{"user event without user", record("ld.user.x", fanout.OrderConfirmed, order), false, ""},
		{"wrong subject", record("ld.creator.8", fanout.DropEnded, ended), false, ""},
		{"creator event on a user subject", record("ld.user.7", fanout.DropEnded, ended), false, ""},
		{"type differs from the row", record("ld.creator.7", fanout.DropStarted, ended), false, ""},
		{"not JSON", record("ld.creator.7", fanout.DropEnded, `{`), false, ""},
		{"no event id", fanout.Record{Subject: "ld.creator.7", Type: fanout.DropEnded, Payload: []byte(ended)}, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := relay.Decode(tc.rec)
			if !tc.wantOK {
				if !errors.Is(err, relay.ErrPoison) {
					t.Fatalf("got %v, want ErrPoison", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(ev)
			if err != nil || string(got) != tc.want {
				t.Errorf("got %s (%v), want %s", got, err, tc.want)
			}
		})
	}
}

// FuzzDecode: whatever a row holds, Decode never panics, and what it accepts publishes on the row's
// subject with the row's id and decodes back to itself.
func FuzzDecode(f *testing.F) {
	f.Add("ld.creator.7", "drop.ended", `{"type":"drop.ended","ts":"2026-11-25T12:00:00Z","creator_id":7,"drop_id":42,"data":{}}`)
	f.Add("ld.user.5", "order.failed", `{"type":"order.failed","ts":"2026-11-25T12:00:00Z","creator_id":7,"drop_id":42,"data":{"code":"sold_out"}}`)
	f.Add("ld.drop.42", "stock.changed", `{"type":"stock.changed","ts":"2026-11-25T12:00:00Z","creator_id":7,"drop_id":42,"data":{"stock_count":1,"sold":9}}`)
	f.Add("ld.user.5", "follow.changed", `{"type":"follow.changed","ts":"2026-11-25T12:00:00Z","creator_id":7,"data":{"creator_id":7,"following":true}}`)
	f.Add("ld.creator.1", "drop.started", `{"type":"drop.started","ts":"nope","creator_id":1,"drop_id":2,"data":[]}`)
	f.Fuzz(func(t *testing.T, subject, typ, payload string) {
		rec := record(subject, fanout.Type(typ), payload)
		ev, err := relay.Decode(rec)
		if err != nil {
			if !errors.Is(err, relay.ErrPoison) {
				t.Fatalf("error %v does not wrap ErrPoison", err)
			}
			return
		}
		if ev.ID != rec.EventID || ev.Subject() != subject || ev.Type != rec.Type {
			t.Fatalf("accepted %+v for a row on %s", ev, subject)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		var back fanout.Event
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("published envelope %s does not decode: %v", b, err)
		}
		if back.ID != ev.ID || back.Type != ev.Type || back.DropID != ev.DropID || !back.TS.Equal(ev.TS.Truncate(time.Millisecond)) {
			t.Fatalf("round trip: got %+v, want %+v", back, ev)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	rec := record("ld.drop.42", fanout.StockChanged,
		`{"type":"stock.changed","ts":"2026-11-25T12:00:00.123Z","creator_id":7,"drop_id":42,"data":{"sold": 10, "stock_count": 90}}`)
	b.ReportAllocs()
	for b.Loop() {
		ev, err := relay.Decode(rec)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(ev); err != nil {
			b.Fatal(err)
		}
	}
}
