package jsonw_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/livedrops/livedrops/internal/jsonw"
)

func TestString(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " and \ slash`, "<script>&amp;</script>", "tab\tnl\nbs\bff\fcr\r",
		"\x00\x01\x1f\x7f", "é 日本 🎉", "\u2028\u2029", "bad \xff\xfe utf-8 \xe2\x82", "sold_out"} {
		want, _ := json.Marshal(s)
		if got := jsonw.String(nil, s); string(got) != string(want) {
			t.Errorf("String(%q) = %s, want %s", s, got, want)
		}
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "<&>", "\xff", "\u2028x", "\x00\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := jsonw.String([]byte("x"), s); string(got) != "x"+string(want) {
			t.Fatalf("String(%q) = %s, want x%s", s, got, want)
		}
	})
}

func TestIntTimeKey(t *testing.T) {
	ts := time.Date(2026, 11, 25, 12, 0, 1, 234567890, time.FixedZone("X", 3600))
	got := string(jsonw.Time(jsonw.Int(jsonw.Key(nil, "n"), -42), ts, "2006-01-02T15:04:05.000Z07:00"))
	if want := `"n":-42"2026-11-25T11:00:01.234Z"`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
