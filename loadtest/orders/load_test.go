package main

// A command cannot be imported, so these tests sit in package main. They check the bookkeeping that
// decides the RESULT line's correctness figures.

import (
	"net/http"
	"testing"
	"time"
)

func newTestBuyer() *buyer {
	return &buyer{codes: map[string]int{}, fresh: map[int64]time.Duration{}}
}

func TestCheckRetry(t *testing.T) {
	created := func(id int64) answer { return answer{status: http.StatusCreated, orderID: id} }
	replayed := func(id int64) answer { return answer{status: http.StatusCreated, orderID: id, replayed: true} }
	refused := answer{status: http.StatusConflict, code: "sold_out"}
	failed := answer{status: http.StatusServiceUnavailable, code: "timeout"}
	tests := []struct {
		name               string
		first, again       answer
		wantDup, wantWrong int
		wantFresh          []int64
	}{
		{"replay of an order", created(7), replayed(7), 0, 0, nil},
		{"second order for a key", created(7), created(8), 1, 0, []int64{8}},
		{"order not replayed", created(7), created(7), 0, 1, nil},
		{"order answered as refused", created(7), refused, 0, 1, nil},
		{"refusal repeated", refused, refused, 0, 0, nil},
		{"refusal then an order", refused, created(9), 0, 1, []int64{9}},
		{"unknown first, order on retry", failed, created(9), 0, 0, []int64{9}},
		{"unknown first, replay on retry", failed, replayed(9), 0, 0, []int64{9}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBuyer()
			b.record(tc.first)
			b.checkRetry(tc.first, tc.again)
			if b.duplicates != tc.wantDup || b.wrongReplays != tc.wantWrong {
				t.Errorf("got %d duplicates, %d wrong replays; want %d, %d", b.duplicates, b.wrongReplays, tc.wantDup, tc.wantWrong)
			}
			for _, id := range tc.wantFresh {
				if _, ok := b.fresh[id]; !ok {
					t.Errorf("order %d not counted as sold", id)
				}
			}
		})
	}
}

func TestCheckPair(t *testing.T) {
	created := func(id int64) answer { return answer{status: http.StatusCreated, orderID: id} }
	replayed := func(id int64) answer { return answer{status: http.StatusCreated, orderID: id, replayed: true} }
	refused := answer{status: http.StatusConflict, code: "sold_out"}
	tests := []struct {
		name               string
		x, y               answer
		wantDup, wantWrong int
		wantSold           int
	}{
		{"one order, one replay", created(7), replayed(7), 0, 0, 1},
		{"two orders", created(7), created(8), 1, 0, 2},
		{"both claim to be new", created(7), created(7), 0, 1, 1},
		{"both replays", replayed(7), replayed(7), 0, 1, 1},
		{"order and refusal", created(7), refused, 0, 1, 1},
		{"both refused", refused, refused, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBuyer()
			b.checkPair(tc.x, tc.y)
			if b.duplicates != tc.wantDup || b.wrongReplays != tc.wantWrong || len(b.fresh) != tc.wantSold {
				t.Errorf("got %d duplicates, %d wrong replays, %d sold; want %d, %d, %d",
					b.duplicates, b.wrongReplays, len(b.fresh), tc.wantDup, tc.wantWrong, tc.wantSold)
			}
		})
	}
}

func TestUsersNeeded(t *testing.T) {
	tests := []struct {
		buyers       []int
		stock, limit int
		want         int
	}{
		{[]int{2000, 500}, 10_000, 5, 4000}, // 2000 × (1 + 1); 500 × (4 + 1) = 2500
		{[]int{500}, 10_000, 5, 2500},
		{[]int{3}, 10, 5, 6},
	}
	for _, tc := range tests {
		if got := usersNeeded(options{buyers: tc.buyers, stock: tc.stock, maxPerUser: tc.limit}); got != tc.want {
			t.Errorf("usersNeeded(%v buyers, stock %d, limit %d) = %d, want %d", tc.buyers, tc.stock, tc.limit, got, tc.want)
		}
	}
}

func TestMedianOf(t *testing.T) {
	rs := func(v ...float64) []runResult {
		out := make([]runResult, len(v))
		for i, x := range v {
			out[i].sellingPerSec = x
		}
		return out
	}
	tests := []struct {
		in   []runResult
		want float64
	}{
		{nil, 0}, {rs(3), 3}, {rs(5, 1, 3), 3}, {rs(4, 1, 3, 2), 2.5},
	}
	for _, tc := range tests {
		if got := medianSelling(tc.in); got != tc.want {
			t.Errorf("median of %v = %v, want %v", tc.in, got, tc.want)
		}
	}
}
