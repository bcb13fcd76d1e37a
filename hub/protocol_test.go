package hub_test

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/hub"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestParseClientFrame(t *testing.T) {
	tests := []struct {
		in   string
		want hub.ClientFrame
		ok   bool
	}{
		{`{"op":"watch","drop_id":42}`, hub.ClientFrame{Op: hub.OpWatch, DropID: 42}, true},
		{` {"op":"unwatch","drop_id":7,"extra":[1]} `, hub.ClientFrame{Op: hub.OpUnwatch, DropID: 7}, true},
		{`{"op":"ping"}`, hub.ClientFrame{Op: hub.OpPing}, true},
		{`{"op":"watch","drop_id":9007199254740991}`, hub.ClientFrame{Op: hub.OpWatch, DropID: 1<<53 - 1}, true},
		{`{"op":"watch","drop_id":9007199254740992}`, hub.ClientFrame{}, false},
		{`{"op":"watch","drop_id":0}`, hub.ClientFrame{}, false},
		{`{"op":"watch","drop_id":1.5}`, hub.ClientFrame{}, false},
		{`{"op":"watch","drop_id":"42"}`, hub.ClientFrame{}, false},
		{`{"op":"watch"}`, hub.ClientFrame{}, false},
		{`{"op":"WATCH","drop_id":1}`, hub.ClientFrame{}, false},
		{`{"drop_id":1}`, hub.ClientFrame{}, false},
		{`[]`, hub.ClientFrame{}, false},
		{``, hub.ClientFrame{}, false},
		{`{"op":"watch","drop_id":1`, hub.ClientFrame{}, false},
	}
	for _, tt := range tests {
		got, err := hub.ParseClientFrame([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseClientFrame(%q) = %+v, %v; want %+v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, hub.ErrBadFrame) {
			t.Errorf("ParseClientFrame(%q): error %v does not wrap ErrBadFrame", tt.in, err)
		}
	}
}

func FuzzParseClientFrame(f *testing.F) {
	for _, s := range []string{`{"op":"watch","drop_id":42}`, `{"op":"ping"}`, `{"op":"unwatch","drop_id":1e3}`, `{`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := hub.ParseClientFrame(b)
		if err != nil {
			if fr != (hub.ClientFrame{}) {
				t.Fatalf("error %v with a frame %+v", err, fr)
			}
			return
		}
		switch fr.Op {
		case hub.OpPing:
			if fr.DropID != 0 {
				t.Fatalf("ping with drop %d", fr.DropID)
			}
		case hub.OpWatch, hub.OpUnwatch:
			if fr.DropID <= 0 || fr.DropID > 1<<53-1 {
				t.Fatalf("drop id %d out of range", fr.DropID)
			}
		default:
			t.Fatalf("op %q accepted", fr.Op)
		}
		// What was accepted reads the same once re-encoded.
		again, err := hub.ParseClientFrame([]byte(`{"op":"` + string(fr.Op) + `","drop_id":` + strconv.FormatInt(fr.DropID, 10) + `}`))
		if fr.Op != hub.OpPing && (err != nil || again != fr) {
			t.Fatalf("re-encoded %+v reads %+v, %v", fr, again, err)
		}
	})
}

func TestParseEventID(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"1", true}, {"42", true}, {"9223372036854775807", true},
		{"9223372036854775808", false}, {"0", false}, {"042", false}, {"-1", false}, {"+1", false},
		{"1e3", false}, {"", false}, {" 1", false}, {"12345678901234567890", false}, {"abc", false},
	}
	for _, tt := range tests {
		got, ok := hub.ParseEventID(tt.in)
		if ok != tt.ok || (ok && got != tt.in) {
			t.Errorf("ParseEventID(%q) = %q, %v; want ok=%v", tt.in, got, ok, tt.ok)
		}
	}
}

func FuzzParseEventID(f *testing.F) {
	for _, s := range []string{"1", "42", "0", "9223372036854775808", "-5", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := hub.ParseEventID(s)
		if !ok {
			return
		}
		n, err := strconv.ParseInt(id, 10, 64)
		if id != s || err != nil || n <= 0 || strconv.FormatInt(n, 10) != s {
			t.Fatalf("ParseEventID(%q) accepted %q", s, id)
		}
	})
}

func TestParseDropList(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want []int64
		ok   bool
	}{
		{"", 3, nil, true},
		{"1", 3, []int64{1}, true},
		{"1,2,1,3", 3, []int64{1, 2, 3}, true},
		{"1,2,3,4", 3, nil, false},
		{"1,,2", 3, nil, false},
		{"1,x", 3, nil, false},
		{"0", 3, nil, false},
		{"9007199254740992", 3, nil, false},
	}
	for _, tt := range tests {
		got, err := hub.ParseDropList(tt.in, tt.max)
		if (err == nil) != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("ParseDropList(%q, %d) = %v, %v; want %v ok=%v", tt.in, tt.max, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseDropList(f *testing.F) {
	for _, s := range []string{"1,2,3", "", ",", "1,1", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := hub.ParseDropList(s, 32)
		if err != nil {
			return
		}
		if len(ids) > 32 {
			t.Fatalf("%d ids past the max", len(ids))
		}
		seen := map[int64]bool{}
		for _, id := range ids {
			if id <= 0 || id > 1<<53-1 || seen[id] {
				t.Fatalf("ParseDropList(%q) = %v", s, ids)
			}
			seen[id] = true
		}
	})
}

func TestReconnect(t *testing.T) {
	for code, want := range map[int]bool{
		hub.CloseDraining: true, hub.CloseSlowReader: true, hub.CloseServerError: true,
		hub.CloseBadFrame: false, hub.CloseUnauthorized: false, hub.CloseForbidden: false, hub.CloseTooManySockets: false,
	} {
		if got := hub.Reconnect(code); got != want {
			t.Errorf("Reconnect(%d) = %v, want %v", code, got, want)
		}
	}
}

// TestWireGolden records what a client sees on the wire: the hello frames, the acks and errors, an
// event as WebSocket text and as SSE record, the SSE goodbye. Run with -update to rewrite.
func TestWireGolden(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	n := e.startHub(hub.Config{DrainSpread: 1})
	var out []string
	add := func(label, s string) { out = append(out, "# "+label+"\n"+s) }

	ws := n.dialWS(1, dialOpts{})
	add("ws hello", ws.hello().raw)
	again := n.dialWS(1, dialOpts{query: q("since", "77")})
	add("ws hello after a failed resume", again.hello().raw)
	ws.send(`{"op":"watch","drop_id":200}`)
	add("watch ack", ws.next().raw)
	ws.send(`{"op":"watch","drop_id":999}`)
	add("watch error", ws.next().raw)
	ws.send(`{"op":"ping"}`)
	add("pong", ws.next().raw)

	sse, _ := n.dialSSE(1, dialOpts{})
	add("sse hello", sse.hello().raw)
	ev := fanout.Event{Type: fanout.DropStarted, CreatorID: 10, DropID: 100, Data: json.RawMessage(`{"status":"live"}`)}
	ev.TS = mustTime(t, "2026-11-25T12:00:00.000Z")
	ev = e.publish(ev)
	add("ws event", ws.expect(ev).raw)
	s := sse.expect(ev)
	add("sse event", "id: "+s.sseID+"\ndata: "+s.raw)
	if err := n.h.Shutdown(e.ctx); err != nil {
		t.Fatal(err)
	}
	bye := sse.next()
	add("sse goodbye", "retry: "+bye.retry+"\nevent: "+bye.event+"\ndata: "+bye.raw)

	got := strings.Join(out, "\n") + "\n"
	got = regexp.MustCompile(`"conn_id":"[^"]*"`).ReplaceAllString(got, `"conn_id":"<conn>"`)
	got = regexp.MustCompile(`"server_time":"[^"]*"`).ReplaceAllString(got, `"server_time":"<now>"`)
	got = regexp.MustCompile(`"id":"\d+"`).ReplaceAllString(got, `"id":"<event id>"`)
	got = regexp.MustCompile(`id: \d+`).ReplaceAllString(got, `id: <event id>`)
	path := filepath.Join("testdata", "wire.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("wire format changed (run with -update if on purpose):\ngot:\n%s\nwant:\n%s", got, want)
	}
}
