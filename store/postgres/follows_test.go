package postgres_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

// outboxEvents returns the events in the outbox, in id order, with their subjects.
func outboxEvents(tb testing.TB, pool *pgxpool.Pool) (events []fanout.Event, subjects []string) {
	tb.Helper()
	rows, err := pool.Query(testContext(tb), `SELECT subject, payload FROM outbox ORDER BY id`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var subject string
		var payload []byte
		if err := rows.Scan(&subject, &payload); err != nil {
			tb.Fatal(err)
		}
		var ev fanout.Event
		if err := json.Unmarshal(payload, &ev); err != nil {
			tb.Fatalf("outbox payload %s: %v", payload, err)
		}
		events, subjects = append(events, ev), append(subjects, subject)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return events, subjects
}

func TestFollowUnfollow(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	users := postgres.NewUsers(pool)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	follows := postgres.NewFollows(pool, func() time.Time { return now })
	ctx := testContext(t)
	c := mustCreator(t, pool, "star")
	u := mustUser(t, users, "fan")

	steps := []struct {
		name        string
		do          func() (bool, error)
		wantChanged bool
		wantErr     error
		wantRows    int64
	}{
		{"follow", func() (bool, error) { return follows.Follow(ctx, u.ID, c.ID) }, true, nil, 1},
		{"follow again", func() (bool, error) { return follows.Follow(ctx, u.ID, c.ID) }, false, nil, 1},
		{"self follow", func() (bool, error) { return follows.Follow(ctx, c.ID, c.ID) }, false, store.ErrInvalid, 1},
		{"unknown creator", func() (bool, error) { return follows.Follow(ctx, u.ID, u.ID+1000) }, false, store.ErrNotFound, 1},
		{"not a creator", func() (bool, error) { return follows.Follow(ctx, c.ID, u.ID) }, false, store.ErrNotFound, 1},
		{"unknown user", func() (bool, error) { return follows.Follow(ctx, u.ID+1000, c.ID) }, false, store.ErrNotFound, 1},
		{"unfollow", func() (bool, error) { return follows.Unfollow(ctx, u.ID, c.ID) }, true, nil, 0},
		{"unfollow again", func() (bool, error) { return follows.Unfollow(ctx, u.ID, c.ID) }, false, nil, 0},
	}
	for _, s := range steps {
		changed, err := s.do()
		if !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) {
			t.Fatalf("%s: got error %v, want %v", s.name, err, s.wantErr)
		}
		if changed != s.wantChanged {
			t.Errorf("%s: got changed %v, want %v", s.name, changed, s.wantChanged)
		}
		if n := queryInt(t, pool, `SELECT count(*) FROM follows`); n != s.wantRows {
			t.Errorf("%s: got %d follow rows, want %d", s.name, n, s.wantRows)
		}
		if n := queryInt(t, pool, `SELECT coalesce(sum(followers), 0) FROM creator_follower_counts WHERE creator_id = $1`, c.ID); n != s.wantRows {
			t.Errorf("%s: got follower count %d, want %d", s.name, n, s.wantRows)
		}
	}

	// Only the two real changes wrote events.
	events, subjects := outboxEvents(t, pool)
	if len(events) != 2 {
		t.Fatalf("got %d events, want 2 (follow and unfollow)", len(events))
	}
	for i, following := range []bool{true, false} {
		ev := events[i]
		if ev.Type != fanout.FollowChanged || ev.CreatorID != c.ID || !ev.TS.Equal(now) ||
			subjects[i] != fanout.UserSubject(u.ID) {
			t.Errorf("event %d: got %+v on %s, want follow.changed of creator %d to %s", i, ev, subjects[i], c.ID, fanout.UserSubject(u.ID))
		}
		var data struct {
			CreatorID int64 `json:"creator_id"`
			Following *bool `json:"following"`
		}
		if err := json.Unmarshal(ev.Data, &data); err != nil || data.CreatorID != c.ID || data.Following == nil || *data.Following != following {
			t.Errorf("event %d data: got %s, want creator_id %d and following %v", i, ev.Data, c.ID, following)
		}
	}
}

func TestFollowConcurrentlyIsOneRow(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	follows := postgres.NewFollows(pool, nil)
	c := mustCreator(t, pool, "star")
	u := mustUser(t, postgres.NewUsers(pool), "fan")
	var wg sync.WaitGroup
	var mu sync.Mutex
	changes := 0
	for range 8 {
		wg.Go(func() {
			changed, err := follows.Follow(testContext(t), u.ID, c.ID)
			if err != nil {
				t.Error(err)
			}
			if changed {
				mu.Lock()
				changes++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if changes != 1 {
		t.Errorf("got %d changes, want 1", changes)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM outbox`); n != 1 {
		t.Errorf("got %d events, want 1", n)
	}
}

// seedFollowers makes n users follow creator c with distinct followed_at, some sharing a time to test
// the id tie-break; it returns the follower ids newest first.
func seedFollowers(tb testing.TB, pool *pgxpool.Pool, c int64, n int) []int64 {
	tb.Helper()
	ctx := testContext(tb)
	mustExec(tb, pool, `INSERT INTO users (name, email) SELECT 'u' || g, 'u' || g || '@x.io' FROM generate_series(1, $1) g`, n)
	// Every three followers share a millisecond.
	mustExec(tb, pool, `INSERT INTO follows (creator_id, follower_id, followed_at)
SELECT $1, user_id, timestamptz '2026-01-01' + ((row_number() OVER (ORDER BY user_id)) / 3) * interval '1 ms'
FROM users WHERE user_id <> $1`, c)
	rows, err := pool.Query(ctx, `SELECT follower_id FROM follows WHERE creator_id = $1 ORDER BY followed_at DESC, follower_id DESC`, c)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestFollowersPagination(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	follows := postgres.NewFollows(pool, nil)
	c := mustCreator(t, pool, "star")
	want := seedFollowers(t, pool, c.ID, 250)
	ctx := testContext(t)

	for _, limit := range []int{1, 7, 20, 100, 250} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			var got []int64
			req := store.PageRequest{Limit: limit}
			for pages := 0; ; pages++ {
				if pages > len(want)+1 {
					t.Fatal("pagination does not end")
				}
				page, err := follows.Followers(ctx, c.ID, req)
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Items) > min(limit, store.MaxLimit) {
					t.Fatalf("got %d items, want at most %d", len(page.Items), limit)
				}
				for _, f := range page.Items {
					got = append(got, f.UserID)
					if f.Name == "" || f.FollowedAt.IsZero() {
						t.Fatalf("incomplete follower %+v", f)
					}
				}
				if page.Next == nil {
					break
				}
				// Cursors travel as their opaque string.
				next, err := store.ParseCursor(page.Next.String())
				if err != nil {
					t.Fatal(err)
				}
				req.After = &next
			}
			checkSameIDs(t, got, want)
		})
	}
}

func TestFollowersStableWhileFollowsArrive(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	follows := postgres.NewFollows(pool, nil)
	users := postgres.NewUsers(pool)
	c := mustCreator(t, pool, "star")
	want := seedFollowers(t, pool, c.ID, 120)
	ctx := testContext(t)

	var got []int64
	req := store.PageRequest{Limit: 25}
	for i := 0; ; i++ {
		page, err := follows.Followers(ctx, c.ID, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range page.Items {
			got = append(got, f.UserID)
		}
		if page.Next == nil {
			break
		}
		req.After = page.Next
		// New follows land in front of the list (newest first), never inside the part still to walk.
		u := mustUser(t, users, fmt.Sprintf("late%d", i))
		if _, err := follows.Follow(ctx, u.ID, c.ID); err != nil {
			t.Fatal(err)
		}
	}
	checkSameIDs(t, got, want)
}

func checkSameIDs(t *testing.T, got, want []int64) {
	t.Helper()
	seen := map[int64]bool{}
	for _, id := range got {
		if seen[id] {
			t.Fatalf("id %d twice", id)
		}
		seen[id] = true
	}
	if len(got) != len(want) {
		t.Fatalf("got %d ids, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("position %d: got %d, want %d (newest first)", i, got[i], want[i])
		}
	}
}

func TestFollowingAndNotFound(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	follows := postgres.NewFollows(pool, nil)
	users := postgres.NewUsers(pool)
	ctx := testContext(t)
	fan := mustUser(t, users, "fan")
	var creators []store.Creator
	for i := range 5 {
		c := mustCreator(t, pool, fmt.Sprint("c", i))
		creators = append(creators, c)
		if _, err := follows.Follow(ctx, fan.ID, c.ID); err != nil {
			t.Fatal(err)
		}
	}
	var got []store.Following
	req := store.PageRequest{Limit: 2}
	for {
		page, err := follows.Following(ctx, fan.ID, req)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page.Items...)
		if page.Next == nil {
			break
		}
		req.After = page.Next
	}
	if len(got) != 5 {
		t.Fatalf("got %d, want 5", len(got))
	}
	for i, f := range got { // newest first: the last followed comes first
		want := creators[4-i]
		if f.CreatorID != want.ID || f.ProfileName != want.ProfileName {
			t.Errorf("position %d: got %+v, want creator %+v", i, f, want)
		}
	}

	lonely := mustUser(t, users, "lonely")
	page, err := follows.Following(ctx, lonely.ID, store.PageRequest{})
	if err != nil || len(page.Items) != 0 || page.Next != nil {
		t.Errorf("user following nobody: got %+v, %v; want an empty last page", page, err)
	}
	if _, err := follows.Following(ctx, lonely.ID+1000, store.PageRequest{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown user: got %v, want ErrNotFound", err)
	}
	fp, err := follows.Followers(ctx, creators[0].ID, store.PageRequest{})
	if err != nil || len(fp.Items) != 1 {
		t.Errorf("followers of c0: got %+v, %v; want one", fp, err)
	}
	if _, err := follows.Followers(ctx, fan.ID, store.PageRequest{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("followers of a non-creator: got %v, want ErrNotFound", err)
	}
}
