package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestSeed(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	ctx := testContext(t)
	existing := mustUser(t, postgres.NewUsers(pool), "before")
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	cfg := postgres.SeedConfig{Users: 40, Creators: 3, Products: 7, Drops: 8, Followers: 30, Now: func() time.Time { return now }}
	res, err := postgres.Seed(ctx, pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Users.Len() != 40 || res.Users.First <= existing.ID || res.Creators.Len() != 3 || res.Followers.Len() != 30 ||
		res.Products.Len() != 7 || res.Drops.Len() != 8 || res.CelebrityID != res.Creators.First {
		t.Fatalf("got %+v, want 40 users after %d, 3 creators, 30 followers, 7 products, 8 drops", res, existing.ID)
	}
	for table, want := range map[string]int64{"users": 41, "creators": 3, "products": 7, "drops": 8, "follows": 30} {
		if got := queryInt(t, pool, "SELECT count(*) FROM "+table); got != want {
			t.Errorf("%s: got %d rows, want %d", table, got, want)
		}
	}
	// The stores read the seed like anything else: the celebrity's count comes from the triggers.
	c, err := postgres.NewUsers(pool).Creator(ctx, res.CelebrityID)
	if err != nil || c.FollowerCount != 30 {
		t.Errorf("celebrity: got %+v, %v; want 30 followers", c, err)
	}
	page, err := postgres.NewFollows(pool, nil).Followers(ctx, res.CelebrityID, store.PageRequest{Limit: 5})
	if err != nil || len(page.Items) != 5 || page.Items[0].UserID != res.Followers.Last {
		t.Errorf("followers: got %+v, %v; want the last follower first", page, err)
	}
	catalog := postgres.NewCatalog(pool, func() time.Time { return now })
	for id := res.Drops.First; id <= res.Drops.Last; id++ {
		d, err := catalog.Drop(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := store.DropLive
		if (id-res.Drops.First)%4 == 3 {
			want = store.DropScheduled
		}
		if d.Status != want {
			t.Errorf("drop %d: got %s, want %s", id, d.Status, want)
		}
	}
	// The sequences moved past the seed: new rows do not collide.
	if _, err := postgres.NewUsers(pool).CreateUser(ctx, store.NewUser{Name: "after", Email: "after@example.com"}); err != nil {
		t.Errorf("user after the seed: %v", err)
	}
	// A second seed adds to the first.
	if _, err := postgres.Seed(ctx, pool, postgres.SeedConfig{Users: 5}); err != nil {
		t.Errorf("second seed: %v", err)
	}
	if got := queryInt(t, pool, "SELECT count(*) FROM users"); got != 47 {
		t.Errorf("got %d users, want 47", got)
	}
}

func TestSeedRefusesNonsense(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	for _, cfg := range []postgres.SeedConfig{{Users: -1}, {Followers: 5}, {Creators: 1, Drops: 2}} {
		if _, err := postgres.Seed(context.Background(), pool, cfg); err == nil {
			t.Errorf("Seed(%+v): got no error", cfg)
		}
	}
}
