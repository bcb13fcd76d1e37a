package postgres_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

// seedHubGraph makes users 1..7, creators 2..7, and user 1 following creators 2..6; drop 10 of creator 7.
func seedHubGraph(t *testing.T) *postgres.Hub {
	t.Helper()
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	mustExec(t, pool, `INSERT INTO users (user_id, name, email) SELECT g, 'u'||g, 'u'||g||'@x.test' FROM generate_series(1, 7) g`)
	mustExec(t, pool, `INSERT INTO creators (creator_id, profile_name) SELECT g, 'c'||g FROM generate_series(2, 7) g`)
	mustExec(t, pool, `INSERT INTO follows (creator_id, follower_id) SELECT g, 1 FROM generate_series(2, 6) g`)
	mustExec(t, pool, `INSERT INTO products (product_id, creator_id, title, price_cents) VALUES (1, 7, 'p', 100)`)
	mustExec(t, pool, `INSERT INTO drops (drop_id, creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user)
		VALUES (10, 7, 1, now() + interval '1 hour', now() + interval '2 hours', 5, 5, 1)`)
	mustExec(t, pool, `INSERT INTO outbox (event_id, subject, type, payload, stream_seq, published_at) VALUES
		('100', 'ld.creator.7', 'drop.scheduled', '{}', 41, now()),
		('101', 'ld.creator.7', 'drop.started', '{}', NULL, NULL),
		('102', 'ld.drop.10', 'stock.changed', '{}', NULL, now())`)
	return postgres.NewHub(pool)
}

func TestHubFollowedCreatorsPages(t *testing.T) {
	h := seedHubGraph(t)
	ctx := testContext(t)
	tests := []struct {
		name        string
		user, after int64
		limit       int
		want        []int64
	}{
		{"first page", 1, 0, 2, []int64{2, 3}},
		{"next page", 1, 3, 2, []int64{4, 5}},
		{"last page", 1, 5, 2, []int64{6}},
		{"past the end", 1, 6, 2, []int64{}},
		{"all at once", 1, 0, 100, []int64{2, 3, 4, 5, 6}},
		{"follows nobody", 2, 0, 10, []int64{}},
		{"unknown user", 999, 0, 10, []int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := h.FollowedCreators(ctx, tt.user, tt.after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := h.FollowedCreators(ctx, 1, 0, 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("limit 0: got %v, want ErrInvalid", err)
	}
}

func TestHubFollowLists(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	// users 1..9; creators 2..9; user 1 follows 2..9 (more than a page of 3), user 3 follows 2, user 4
	// follows exactly a page (5, 6, 7), user 5 follows nobody.
	mustExec(t, pool, `INSERT INTO users (user_id, name, email) SELECT g, 'u'||g, 'u'||g||'@x.test' FROM generate_series(1, 9) g`)
	mustExec(t, pool, `INSERT INTO creators (creator_id, profile_name) SELECT g, 'c'||g FROM generate_series(2, 9) g`)
	mustExec(t, pool, `INSERT INTO follows (creator_id, follower_id) SELECT g, 1 FROM generate_series(2, 9) g`)
	mustExec(t, pool, `INSERT INTO follows (creator_id, follower_id) VALUES (2, 3), (5, 4), (6, 4), (7, 4)`)
	ctx := testContext(t)
	for _, page := range []int{3, 1000} {
		h := postgres.NewHubPaged(pool, page)
		got, err := h.FollowLists(ctx, []int64{1, 3, 4, 5, 999})
		if err != nil {
			t.Fatal(err)
		}
		want := map[int64][]int64{1: {2, 3, 4, 5, 6, 7, 8, 9}, 3: {2}, 4: {5, 6, 7}}
		if len(got) != len(want) {
			t.Errorf("page %d: got %v, want %v", page, got, want)
		}
		for u, w := range want {
			if !slices.Equal(got[u], w) {
				t.Errorf("page %d: user %d follows %v, want %v", page, u, got[u], w)
			}
		}
	}
	got, err := postgres.NewHub(pool).FollowLists(ctx, nil)
	if err != nil || len(got) != 0 {
		t.Errorf("no users: got %v, %v, want an empty map", got, err)
	}
}

func TestHubDropCreator(t *testing.T) {
	h := seedHubGraph(t)
	ctx := testContext(t)
	got, err := h.DropCreator(ctx, 10)
	if err != nil || got != 7 {
		t.Errorf("DropCreator(10) = %d, %v, want 7, nil", got, err)
	}
	if _, err := h.DropCreator(ctx, 11); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DropCreator(11): got %v, want ErrNotFound", err)
	}
}

func TestHubStreamSeq(t *testing.T) {
	h := seedHubGraph(t)
	ctx := testContext(t)
	tests := []struct {
		id      string
		want    uint64
		wantErr error
	}{
		{"100", 41, nil},
		{"101", 0, store.ErrNotFound}, // not published yet
		{"102", 0, store.ErrNotFound}, // coalesced by the relay, never sent
		{"103", 0, store.ErrNotFound}, // unknown
	}
	for _, tt := range tests {
		got, err := h.StreamSeq(ctx, tt.id)
		if got != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("StreamSeq(%s) = %d, %v, want %d, %v", tt.id, got, err, tt.want, tt.wantErr)
		}
	}
}
