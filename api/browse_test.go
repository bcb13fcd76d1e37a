package api_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestListCreators(t *testing.T) {
	e := newEnv(t)
	var ids []int64
	for _, name := range []string{"Ana", "Ben", "Cai"} {
		id, _ := e.newCreator(name)
		ids = append(ids, id)
	}
	fan, fanToken := e.newUser("Fan")
	e.do("POST", fmt.Sprintf("/users/%d/follow/%d", fan, ids[1]), fanToken, nil).expect(t, http.StatusNoContent, "")

	type creator struct {
		CreatorID     int64  `json:"creator_id"`
		ProfileName   string `json:"profile_name"`
		FollowerCount int64  `json:"follower_count"`
	}
	type page struct {
		Items      []creator `json:"items"`
		NextCursor string    `json:"next_cursor"`
	}
	var first, second page
	resp := e.do("GET", "/creators?limit=2", "", nil)
	resp.expect(t, http.StatusOK, "")
	resp.decode(t, &first)
	want := []creator{{ids[2], "Cai", 0}, {ids[1], "Ben", 1}}
	if len(first.Items) != 2 || first.Items[0] != want[0] || first.Items[1] != want[1] || first.NextCursor == "" {
		t.Fatalf("first page: got %+v, want %+v and a cursor", first, want)
	}
	resp = e.do("GET", "/creators?limit=2&cursor="+first.NextCursor, "", nil)
	resp.expect(t, http.StatusOK, "")
	resp.decode(t, &second)
	if len(second.Items) != 1 || second.Items[0] != (creator{ids[0], "Ana", 0}) || second.NextCursor != "" {
		t.Fatalf("second page: got %+v, want Ana alone and no cursor", second)
	}

	for _, tc := range []struct{ name, query string }{
		{"bad cursor", "?cursor=zz"},
		{"limit too big", "?limit=101"},
		{"limit zero", "?limit=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.do("GET", "/creators"+tc.query, "", nil).expect(t, http.StatusBadRequest, "invalid_argument")
		})
	}
}

func TestListCreatorDrops(t *testing.T) {
	e := newEnv(t)
	creator, token := e.newCreator("Dee")
	other, _ := e.newCreator("Eli")
	product := e.newProduct(token, "Cap")
	now := time.Now().UTC()
	newDrop := func(start, end time.Time) int64 {
		t.Helper()
		resp := e.do("POST", "/drops", token, map[string]any{"product_id": product, "start_time": start.Format(time.RFC3339Nano),
			"end_time": end.Format(time.RFC3339Nano), "stock_count": 5, "max_per_user": 1})
		resp.expect(t, http.StatusCreated, "")
		var d struct {
			DropID int64 `json:"drop_id"`
		}
		resp.decode(t, &d)
		return d.DropID
	}
	live := newDrop(now.Add(-time.Second), now.Add(time.Hour))
	later := newDrop(now.Add(time.Hour), now.Add(2*time.Hour))

	type drop struct {
		DropID int64  `json:"drop_id"`
		Status string `json:"status"`
	}
	var got struct {
		Items      []drop `json:"items"`
		NextCursor string `json:"next_cursor"`
	}
	resp := e.do("GET", fmt.Sprintf("/creators/%d/drops", creator), "", nil)
	resp.expect(t, http.StatusOK, "")
	resp.decode(t, &got)
	if len(got.Items) != 2 || got.Items[0] != (drop{later, "scheduled"}) || got.Items[1] != (drop{live, "live"}) {
		t.Fatalf("got %+v, want the scheduled drop %d then the live drop %d", got.Items, later, live)
	}

	resp = e.do("GET", fmt.Sprintf("/creators/%d/drops?limit=1", creator), "", nil)
	resp.decode(t, &got)
	if len(got.Items) != 1 || got.Items[0].DropID != later || got.NextCursor == "" {
		t.Fatalf("limit 1: got %+v, want drop %d and a cursor", got, later)
	}
	resp = e.do("GET", fmt.Sprintf("/creators/%d/drops?limit=1&cursor=%s", creator, got.NextCursor), "", nil)
	got.NextCursor = ""
	resp.decode(t, &got)
	if len(got.Items) != 1 || got.Items[0].DropID != live || got.NextCursor != "" {
		t.Fatalf("second page: got %+v, want drop %d alone", got, live)
	}

	resp = e.do("GET", fmt.Sprintf("/creators/%d/drops", other), "", nil)
	resp.expect(t, http.StatusOK, "")
	resp.decode(t, &got)
	if len(got.Items) != 0 {
		t.Fatalf("a creator without drops: got %+v, want an empty list", got.Items)
	}
	e.do("GET", "/creators/987654/drops", "", nil).expect(t, http.StatusNotFound, "not_found")
	e.do("GET", "/creators/x/drops", "", nil).expect(t, http.StatusBadRequest, "invalid_argument")
}
