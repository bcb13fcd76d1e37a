package api_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/livedrops/livedrops/api"
	"github.com/livedrops/livedrops/store"
)

// Path ids ({id}, {creatorId}, {deviceId}, ?creator_id=): an accepted id is the canonical decimal of a
// positive integer below 2^53; anything else is a 400 problem, never a panic.
func FuzzPathID(f *testing.F) {
	for _, s := range []string{"1", "42", "9007199254740991", "9007199254740992", "0", "-1", "+1", "01", "", " 1", "1e3", "0x10", "١"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := api.ParseID("id", s)
		if err != nil {
			if status, ct := api.ErrorAnswer(err); status != http.StatusBadRequest || ct != "application/problem+json" {
				t.Fatalf("%q: refusal answered %d %s, want 400 problem+json", s, status, ct)
			}
			return
		}
		if !store.ValidID(id) || strconv.FormatInt(id, 10) != s {
			t.Fatalf("%q accepted as %d", s, id)
		}
	})
}

// Query strings of the lists: limit within 1..100 (default 20) and an opaque cursor, or a 400.
func FuzzPageQuery(f *testing.F) {
	for _, s := range []string{"", "limit=1", "limit=100", "limit=101", "limit=0", "limit=-5", "limit=abc", "limit=20&limit=30",
		"cursor=", "cursor=abc", "cursor=%ff", "limit=5&cursor=eyJpZCI6MX0", "%zz", "limit=1%00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		req, err := api.PageRequestOf(raw)
		if err != nil {
			if status, ct := api.ErrorAnswer(err); status != http.StatusBadRequest || ct != "application/problem+json" {
				t.Fatalf("%q: refusal answered %d %s, want 400 problem+json", raw, status, ct)
			}
			return
		}
		if req.Limit < 1 || req.Limit > store.MaxLimit {
			t.Fatalf("%q: limit %d accepted", raw, req.Limit)
		}
		if req.After != nil {
			// An accepted cursor is one the server could have written: it reads back the same.
			back, err := store.ParseCursor(req.After.String())
			if err != nil || back != *req.After {
				t.Fatalf("%q: cursor %+v does not round-trip: %+v, %v", raw, *req.After, back, err)
			}
		}
	})
}

// /products?page=&per_page=: integers within their bounds, defaults when absent, else a 400.
func FuzzProductsQuery(f *testing.F) {
	for _, s := range []string{"", "page=1", "page=0", "per_page=100", "per_page=101", "page=9999999999999999999", "page=1&per_page=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, p := range []struct {
			name        string
			def, lo, hi int
		}{{"page", 1, 1, 1 << 30}, {"per_page", 20, 1, 100}} {
			n, err := api.QueryIntOf(raw, p.name, p.def, p.lo, p.hi)
			if err != nil {
				if status, _ := api.ErrorAnswer(err); status != http.StatusBadRequest {
					t.Fatalf("%q %s: refusal answered %d, want 400", raw, p.name, status)
				}
				continue
			}
			q, _ := url.ParseQuery(raw)
			if n < p.lo || n > p.hi || (q.Get(p.name) == "" && n != p.def) {
				t.Fatalf("%q: %s = %d accepted", raw, p.name, n)
			}
		}
	})
}
