package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

// countingLists is the real follow-list query, counting the users it is asked about.
type countingLists struct {
	*postgres.Hub
	users atomic.Int64
}

func (c *countingLists) FollowLists(ctx context.Context, ids []int64) (map[int64][]int64, error) {
	c.users.Add(int64(len(ids)))
	return c.Hub.FollowLists(ctx, ids)
}

func TestFollowListsCache(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	// Users a (follows 3 creators: more than a page of 2), b (follows 1), c (follows nobody).
	var creators []int64
	for i := range 3 {
		u, err := f.users.CreateUser(ctx, store.NewUser{Name: "c", Email: string(rune('a'+i)) + "c@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.users.CreateCreator(ctx, u.ID, "C"); err != nil {
			t.Fatal(err)
		}
		creators = append(creators, u.ID)
	}
	var users []int64
	for i := range 3 {
		u, err := f.users.CreateUser(ctx, store.NewUser{Name: "f", Email: string(rune('a'+i)) + "f@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u.ID)
	}
	a, b, c := users[0], users[1], users[2]
	for _, cr := range creators {
		if _, err := f.follows.Follow(ctx, a, cr); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.follows.Follow(ctx, b, creators[0]); err != nil {
		t.Fatal(err)
	}

	rdb, prefix := storetest.NewRedis(t)
	src := &countingLists{Hub: postgres.NewHub(f.pool)}
	lists, err := redis.NewFollowLists(rdb, src, redis.FollowListsConfig{Prefix: prefix, PageSize: 2}, f.registry)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, want map[int64][]int64, sourced int64) {
		t.Helper()
		before := src.users.Load()
		got, err := lists.FollowLists(ctx, []int64{a, b, c})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, u := range []int64{a, b, c} {
			if !slices.Equal(got[u], want[u]) {
				t.Errorf("%s: user %d follows %v, want %v", what, u, got[u], want[u])
			}
		}
		if n := src.users.Load() - before; n != sourced {
			t.Errorf("%s: %d users read from PostgreSQL, want %d", what, n, sourced)
		}
	}
	want := map[int64][]int64{a: creators, b: creators[:1]}
	check("cold", want, 3)
	check("warm", want, 0)
	if hits := f.count("following", "hit"); hits != 3 {
		t.Errorf("hits %d, want 3", hits)
	}

	// A follow through the API's cache gives b's list a new version; a and c stay cached.
	cache := f.cache(t, rdb, prefix, redis.CacheConfig{LocalTTL: -1})
	if _, err := cache.Follows(f.follows).Follow(ctx, b, creators[2]); err != nil {
		t.Fatal(err)
	}
	want[b] = []int64{creators[0], creators[2]}
	check("after b followed", want, 1)
	check("warm again", want, 0)

	// Invalidate (what the relay does before publishing follow.changed) does the same for an unfollow
	// made without the cache.
	if _, err := f.follows.Unfollow(ctx, a, creators[1]); err != nil {
		t.Fatal(err)
	}
	check("unfollow not yet invalidated", want, 0)
	if err := lists.Invalidate(ctx, a); err != nil {
		t.Fatal(err)
	}
	want[a] = []int64{creators[0], creators[2]}
	check("after invalidate", want, 1)
}

// With Redis down the lists come from PostgreSQL, counted as errors.
func TestFollowListsRedisDown(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	u, err := f.users.CreateUser(ctx, store.NewUser{Name: "f", Email: "down@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.follows.Follow(ctx, u.ID, f.creator); err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: closedAddr(t), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	lists, err := redis.NewFollowLists(rdb, postgres.NewHub(f.pool), redis.FollowListsConfig{}, f.registry)
	if err != nil {
		t.Fatal(err)
	}
	got, err := lists.FollowLists(ctx, []int64{u.ID})
	if err != nil || !slices.Equal(got[u.ID], []int64{f.creator}) {
		t.Fatalf("got %v, %v, want user %d following %d", got, err, u.ID, f.creator)
	}
	if f.count("following", "error") != 1 {
		t.Errorf("errors %d, want 1", f.count("following", "error"))
	}
	if err := lists.Invalidate(ctx, u.ID); err == nil {
		t.Error("Invalidate with Redis down: got no error")
	}
}

// Whatever a cached page holds (a value of another version, a truncated write, garbage), a read gets the
// true list: a page that is not a JSON array of ids is a miss, read again from PostgreSQL and rewritten.
// followListsPageSeeds are cached page values a hub may find: well-formed, empty, truncated, of another
// type, out of int64's range, not JSON.
var followListsPageSeeds = []string{"[]", "[1,2]", "null", "", "[1,", `["a"]`, "{}", "[9007199254740993]",
	"[9223372036854775808]", "x", " [1]", "[1.5]"}

// Whatever a cached page holds, FollowLists answers the page's ids when it is a well-formed list (Redis
// holds what the hub wrote) and reloads the list from PostgreSQL otherwise; it never fails or panics.
func TestFollowListsPageValues(t *testing.T) {
	fx := newFixture(t)
	ctx := testContext(t)
	rdb, prefix := storetest.NewRedis(t)
	lists, err := redis.NewFollowLists(rdb, postgres.NewHub(fx.pool), redis.FollowListsConfig{Prefix: prefix}, fx.registry)
	if err != nil {
		t.Fatal(err)
	}
	for i, page := range followListsPageSeeds {
		u, err := fx.users.CreateUser(ctx, store.NewUser{Name: "f", Email: fmt.Sprintf("page%d@example.com", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fx.follows.Follow(ctx, u.ID, fx.creator); err != nil {
			t.Fatal(err)
		}
		key := prefix + "following:" + strconv.FormatInt(u.ID, 10) + ":0:0" // version "0", page 0
		if err := rdb.Set(ctx, key, page, 0).Err(); err != nil {
			t.Fatal(err)
		}
		got, err := lists.FollowLists(ctx, []int64{u.ID})
		if err != nil {
			t.Fatalf("page %q: %v", page, err)
		}
		want := []int64{fx.creator}
		if ids, ok := redis.ParsePage([]byte(page)); ok {
			want = ids
		}
		if !slices.Equal(got[u.ID], want) && !(len(want) == 0 && len(got[u.ID]) == 0) {
			t.Errorf("page %q: got %v, want %v", page, got[u.ID], want)
		}
	}
}

// The page parser accepts exactly the JSON arrays of int64 that encoding/json reads, starting with '['.
// (It needs no server: fuzz workers start none.)
func FuzzFollowListsPage(f *testing.F) {
	for _, seed := range followListsPageSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, page []byte) {
		ids, ok := redis.ParsePage(page)
		var want []int64
		wantOK := len(page) > 0 && page[0] == '[' && json.Unmarshal(page, &want) == nil
		if ok != wantOK {
			t.Fatalf("ParsePage(%q) ok=%v, want %v", page, ok, wantOK)
		}
		if ok && !slices.Equal(ids, want) {
			t.Fatalf("ParsePage(%q) = %v, want %v", page, ids, want)
		}
		if ok {
			// What fill writes for these ids reads back the same.
			b, err := json.Marshal(ids)
			if err != nil {
				t.Fatal(err)
			}
			again, ok := redis.ParsePage(b)
			if !ok || !slices.Equal(again, ids) {
				t.Fatalf("ParsePage(%s) = %v, %v; want %v", b, again, ok, ids)
			}
		}
	})
}
