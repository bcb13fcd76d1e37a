package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/api/auth"
)

func TestCreateAndGetUser(t *testing.T) {
	e := newEnv(t)
	resp := e.do("POST", "/users", "", map[string]string{"name": "Ada", "email": "ada@example.com"})
	resp.expect(t, http.StatusCreated, "")
	var u struct {
		UserID int64  `json:"user_id"`
		Name   string `json:"name"`
		Email  string `json:"email"`
		Token  string `json:"token"`
	}
	resp.decode(t, &u)
	if u.UserID <= 0 || u.Name != "Ada" || u.Email != "ada@example.com" {
		t.Fatalf("got %+v, want Ada with an id", u)
	}
	if got, want := resp.header.Get("Location"), fmt.Sprintf("/users/%d", u.UserID); got != want {
		t.Errorf("got Location %q, want %q", got, want)
	}
	// The token is the new user's.
	if id, err := e.tokens.Verify(u.Token); err != nil || id != u.UserID {
		t.Errorf("token verifies as %d, %v; want %d", id, err, u.UserID)
	}

	got := e.do("GET", fmt.Sprintf("/users/%d", u.UserID), "", nil)
	got.expect(t, http.StatusOK, "")
	if want := fmt.Sprintf(`{"user_id":%d,"name":"Ada"}`, u.UserID); strings.TrimSpace(string(got.body)) != want {
		t.Errorf("got %s, want %s (no email: it is private)", got.body, want)
	}

	tests := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"email taken, other case", "POST", "/users", map[string]string{"name": "Eve", "email": "ADA@example.com"}, 409, "email_taken"},
		{"no name", "POST", "/users", map[string]string{"email": "x@example.com"}, 400, "invalid_argument"},
		{"null email", "POST", "/users", map[string]any{"name": "x", "email": nil}, 400, "invalid_argument"},
		{"bad email", "POST", "/users", map[string]string{"name": "x", "email": "nope"}, 400, "invalid_argument"},
		{"name too long", "POST", "/users", map[string]string{"name": strings.Repeat("n", 101), "email": "n@example.com"}, 400, "invalid_argument"},
		{"control character", "POST", "/users", map[string]string{"name": "a\u0007b", "email": "b@example.com"}, 400, "invalid_argument"},
		{"unknown user", "GET", fmt.Sprintf("/users/%d", u.UserID+100), nil, 404, "not_found"},
		{"id not a number", "GET", "/users/abc", nil, 400, "invalid_argument"},
		{"id zero", "GET", "/users/0", nil, 400, "invalid_argument"},
		{"id above 2^53", "GET", "/users/9007199254740992", nil, 400, "invalid_argument"},
		{"id overflows int64", "GET", "/users/99999999999999999999", nil, 400, "invalid_argument"},
		{"id negative", "GET", "/users/-1", nil, 400, "invalid_argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.do(tc.method, tc.path, "", tc.body).expect(t, tc.status, tc.code)
		})
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM users`).Scan(&n); err != nil || n != 1 {
		t.Errorf("got %d users (%v), want 1: a refused write writes nothing", n, err)
	}
}

func TestCreators(t *testing.T) {
	e := newEnv(t)
	id, token := e.newUser("dj")
	resp := e.do("POST", "/creators", token, map[string]string{"profile_name": "DJ Drop"})
	resp.expect(t, http.StatusCreated, "")
	want := fmt.Sprintf(`{"creator_id":%d,"profile_name":"DJ Drop","follower_count":0}`, id)
	if strings.TrimSpace(string(resp.body)) != want {
		t.Fatalf("got %s, want %s", resp.body, want)
	}
	got := e.do("GET", fmt.Sprintf("/creators/%d", id), "", nil)
	got.expect(t, http.StatusOK, "")
	if strings.TrimSpace(string(got.body)) != want {
		t.Errorf("GET: got %s, want %s", got.body, want)
	}

	_, other := e.newUser("other")
	ghost, err := e.tokens.Mint(id+1000, time.Hour) // a valid token of a user who does not exist
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		token  string
		body   any
		status int
		code   string
	}{
		{"twice", token, map[string]string{"profile_name": "Again"}, 409, "already_exists"},
		{"no token", "", map[string]string{"profile_name": "x"}, 401, "unauthorized"},
		{"bad token", "not-a-token", map[string]string{"profile_name": "x"}, 401, "unauthorized"},
		{"unknown user", ghost, map[string]string{"profile_name": "x"}, 404, "not_found"},
		{"blank name", other, map[string]string{"profile_name": "  "}, 400, "invalid_argument"},
		{"missing name", other, map[string]string{}, 400, "invalid_argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.do("POST", "/creators", tc.token, tc.body).expect(t, tc.status, tc.code)
		})
	}
	e.do("GET", fmt.Sprintf("/creators/%d", id+1000), "", nil).expect(t, 404, "not_found")
	e.do("GET", "/creators/x", "", nil).expect(t, 400, "invalid_argument")
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	id, _ := e.newUser("ada")
	mint := func(secret string, now time.Time) string {
		tokens, err := auth.New(auth.Config{Secret: []byte(secret), Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := tokens.Mint(id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expired := mint(strings.Repeat("s", 32), time.Now().Add(-time.Hour))
	wrongKey := mint(strings.Repeat("x", 32), time.Now())
	tests := []struct {
		name   string
		header string
	}{
		{"no header", ""},
		{"basic scheme", "Basic YWRhOnB3"},
		{"bearer without token", "Bearer "},
		{"garbage", "Bearer abc.def.ghi"},
		{"wrong key", "Bearer " + wrongKey},
		{"expired", "Bearer " + expired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.header != "" {
				hdr = []string{"Authorization", tc.header}
			}
			resp := e.raw("POST", "/creators", "", []byte(`{"profile_name":"x"}`), hdr...)
			resp.expect(t, http.StatusUnauthorized, "unauthorized")
			if !strings.HasPrefix(resp.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("got WWW-Authenticate %q, want a Bearer challenge", resp.header.Get("WWW-Authenticate"))
			}
		})
	}
	// The same request with the user's own valid token passes.
	e.do("POST", "/creators", mint(strings.Repeat("s", 32), time.Now()), map[string]string{"profile_name": "x"}).expect(t, http.StatusCreated, "")
}

func TestFollowRoutes(t *testing.T) {
	e := newEnv(t)
	star, starToken := e.newCreator("star")
	fan, fanToken := e.newUser("fan")
	_, otherToken := e.newUser("other")
	path := fmt.Sprintf("/users/%d/follow/%d", fan, star)

	tests := []struct {
		name   string
		method string
		path   string
		token  string
		status int
		code   string
	}{
		{"follow", "POST", path, fanToken, 204, ""},
		{"follow twice", "POST", path, fanToken, 204, ""},
		{"no token", "POST", path, "", 401, "unauthorized"},
		{"someone else's follow", "POST", path, otherToken, 403, "forbidden"},
		{"someone else's unfollow", "DELETE", path, otherToken, 403, "forbidden"},
		{"unknown creator", "POST", fmt.Sprintf("/users/%d/follow/%d", fan, star+1000), fanToken, 404, "not_found"},
		{"a user who is no creator", "POST", fmt.Sprintf("/users/%d/follow/%d", star, fan), starToken, 404, "not_found"},
		{"self follow", "POST", fmt.Sprintf("/users/%d/follow/%d", star, star), starToken, 400, "invalid_argument"},
		{"bad creator id", "POST", fmt.Sprintf("/users/%d/follow/x1", fan), fanToken, 400, "invalid_argument"},
		{"bad user id", "POST", fmt.Sprintf("/users/0/follow/%d", star), fanToken, 400, "invalid_argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.do(tc.method, tc.path, tc.token, nil).expect(t, tc.status, tc.code)
		})
	}
	var rows int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM follows`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("got %d follow rows (%v), want 1", rows, err)
	}
	creator := e.do("GET", fmt.Sprintf("/creators/%d", star), "", nil)
	var c struct {
		FollowerCount int64 `json:"follower_count"`
	}
	creator.decode(t, &c)
	if c.FollowerCount != 1 {
		t.Errorf("got follower_count %d, want 1", c.FollowerCount)
	}
	e.do("DELETE", path, fanToken, nil).expect(t, 204, "")
	e.do("DELETE", path, fanToken, nil).expect(t, 204, "") // also when not following
	e.do("DELETE", fmt.Sprintf("/users/%d/follow/%d", fan, star+1000), fanToken, nil).expect(t, 204, "")
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM follows`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("got %d follow rows (%v), want 0", rows, err)
	}
}

// page is a list answer.
type page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

type follower struct {
	UserID     int64  `json:"user_id"`
	Name       string `json:"name"`
	FollowedAt string `json:"followed_at"`
}

// walkFollowers reads every page of creator's followers with limit; between pages it calls between.
func walkFollowers(tb testing.TB, e *env, creator int64, limit int, between func()) []int64 {
	tb.Helper()
	var ids []int64
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10_000 {
			tb.Fatal("pagination does not end")
		}
		path := fmt.Sprintf("/creators/%d/followers?limit=%d", creator, limit)
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		resp := e.do("GET", path, "", nil)
		resp.expect(tb, http.StatusOK, "")
		var p page[follower]
		resp.decode(tb, &p)
		for _, f := range p.Items {
			ids = append(ids, f.UserID)
		}
		if p.NextCursor == "" {
			return ids
		}
		cursor = p.NextCursor
		if between != nil {
			between()
		}
	}
}

func TestFollowerAndFollowingLists(t *testing.T) {
	e := newEnv(t)
	star, _ := e.newCreator("star")
	// 130 followers straight in the database, every three in one millisecond (ties break on the id).
	if _, err := e.pool.Exec(t.Context(), `INSERT INTO users (name, email) SELECT 'u' || g, 'u' || g || '@x.io' FROM generate_series(1, 130) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(t.Context(), `INSERT INTO follows (creator_id, follower_id, followed_at)
SELECT $1, user_id, timestamptz '2026-01-01' + (user_id / 3) * interval '1 ms' FROM users WHERE user_id <> $1`, star); err != nil {
		t.Fatal(err)
	}
	var want []int64
	rows, err := e.pool.Query(t.Context(), `SELECT follower_id FROM follows WHERE creator_id = $1 ORDER BY followed_at DESC, follower_id DESC`, star)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	rows.Close()

	for _, limit := range []int{1, 20, 100} {
		got := walkFollowers(t, e, star, limit, nil)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("limit %d: got %v, want %v", limit, got, want)
		}
	}
	// Stable while follows arrive: the new ones land in front, never in the part still to read.
	i := 0
	got := walkFollowers(t, e, star, 17, func() {
		i++
		id, token := e.newUser(fmt.Sprintf("late%d", i))
		e.do("POST", fmt.Sprintf("/users/%d/follow/%d", id, star), token, nil).expect(t, 204, "")
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("while following: got %v, want %v", got, want)
	}

	// Following, newest first.
	fan, fanToken := e.newUser("fan")
	var creators []int64
	for i := range 3 {
		c, _ := e.newCreator(fmt.Sprint("c", i))
		creators = append(creators, c)
		e.do("POST", fmt.Sprintf("/users/%d/follow/%d", fan, c), fanToken, nil).expect(t, 204, "")
	}
	resp := e.do("GET", fmt.Sprintf("/users/%d/following?limit=2", fan), "", nil)
	resp.expect(t, 200, "")
	var fp page[struct {
		CreatorID   int64  `json:"creator_id"`
		ProfileName string `json:"profile_name"`
	}]
	resp.decode(t, &fp)
	if len(fp.Items) != 2 || fp.Items[0].CreatorID != creators[2] || fp.Items[1].CreatorID != creators[1] || fp.NextCursor == "" {
		t.Fatalf("got %+v, want c2, c1 and a cursor", fp)
	}
	resp = e.do("GET", fmt.Sprintf("/users/%d/following?limit=2&cursor=%s", fan, fp.NextCursor), "", nil)
	resp.expect(t, 200, "")
	fp = page[struct {
		CreatorID   int64  `json:"creator_id"`
		ProfileName string `json:"profile_name"`
	}]{}
	resp.decode(t, &fp)
	if len(fp.Items) != 1 || fp.Items[0].CreatorID != creators[0] || fp.Items[0].ProfileName != "c0" || fp.NextCursor != "" {
		t.Fatalf("last page: got %+v, want c0 and no cursor", fp)
	}

	bad := []struct {
		name, path string
		status     int
		code       string
	}{
		{"limit zero", fmt.Sprintf("/creators/%d/followers?limit=0", star), 400, "invalid_argument"},
		{"limit above 100", fmt.Sprintf("/creators/%d/followers?limit=101", star), 400, "invalid_argument"},
		{"limit not a number", fmt.Sprintf("/creators/%d/followers?limit=ten", star), 400, "invalid_argument"},
		{"forged cursor", fmt.Sprintf("/creators/%d/followers?cursor=AAAA", star), 400, "invalid_argument"},
		{"unknown creator", fmt.Sprintf("/creators/%d/followers", star+10_000), 404, "not_found"},
		{"unknown user", fmt.Sprintf("/users/%d/following", star+10_000), 404, "not_found"},
		{"user id not a number", "/users/me/following", 400, "invalid_argument"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) { e.do("GET", tc.path, "", nil).expect(t, tc.status, tc.code) })
	}
	// A creator nobody follows has an empty list, not a 404.
	lonely, _ := e.newCreator("lonely")
	resp = e.do("GET", fmt.Sprintf("/creators/%d/followers", lonely), "", nil)
	resp.expect(t, 200, "")
	if s := strings.TrimSpace(string(resp.body)); s != `{"items":[]}` {
		t.Errorf("got %s, want an empty list", s)
	}
}
