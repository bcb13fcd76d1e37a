package postgres_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestUsers(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	users := postgres.NewUsers(pool)
	ctx := testContext(t)

	ada, err := users.CreateUser(ctx, store.NewUser{Name: "Ada", Email: "Ada@Example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if ada.ID <= 0 || ada.Name != "Ada" || ada.Email != "Ada@Example.com" {
		t.Fatalf("got %+v, want Ada with an id", ada)
	}
	got, err := users.User(ctx, ada.ID)
	if err != nil || got != ada {
		t.Fatalf("User(%d) = %+v, %v; want %+v", ada.ID, got, err, ada)
	}

	tests := []struct {
		name string
		u    store.NewUser
		want error
	}{
		{"same address, other case", store.NewUser{Name: "Eve", Email: "ada@example.COM"}, store.ErrEmailTaken},
		{"invalid email", store.NewUser{Name: "Eve", Email: "eve"}, store.ErrInvalid},
		{"control character", store.NewUser{Name: "E\tve", Email: "eve@example.com"}, store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := users.CreateUser(ctx, tc.u); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM users`); n != 1 {
		t.Errorf("got %d users, want 1 (no partial write)", n)
	}
	if _, err := users.User(ctx, ada.ID+100); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown user: got %v, want ErrNotFound", err)
	}
}

func TestCreators(t *testing.T) {
	pool := migrated(t, storetest.NewMigratedDatabase(t))
	users := postgres.NewUsers(pool)
	ctx := testContext(t)
	u := mustUser(t, users, "dj")

	c, err := users.CreateCreator(ctx, u.ID, "DJ Drop")
	if err != nil {
		t.Fatal(err)
	}
	if want := (store.Creator{ID: u.ID, ProfileName: "DJ Drop"}); c != want {
		t.Fatalf("got %+v, want %+v", c, want)
	}
	if _, err := users.CreateCreator(ctx, u.ID, "Again"); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("second time: got %v, want ErrAlreadyExists", err)
	}
	if _, err := users.CreateCreator(ctx, u.ID+100, "Ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown user: got %v, want ErrNotFound", err)
	}
	if _, err := users.CreateCreator(ctx, u.ID, " "); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("blank name: got %v, want ErrInvalid", err)
	}

	// The follower count is the sum of the trigger-kept shards.
	follows := postgres.NewFollows(pool, nil)
	for i := range 20 {
		f := mustUser(t, users, fmt.Sprintf("fan%d", i))
		if _, err := follows.Follow(ctx, f.ID, c.ID); err != nil {
			t.Fatal(err)
		}
	}
	got, err := users.Creator(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.FollowerCount != 20 || got.ProfileName != "DJ Drop" {
		t.Errorf("got %+v, want DJ Drop with 20 followers", got)
	}
	if _, err := users.Creator(ctx, c.ID+1000); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown creator: got %v, want ErrNotFound", err)
	}
}

func mustUser(tb testing.TB, users *postgres.Users, name string) store.User {
	tb.Helper()
	u, err := users.CreateUser(testContext(tb), store.NewUser{Name: name, Email: name + "@example.com"})
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

func mustCreator(tb testing.TB, pool *pgxpool.Pool, name string) store.Creator {
	tb.Helper()
	users := postgres.NewUsers(pool)
	u := mustUser(tb, users, name)
	c, err := users.CreateCreator(testContext(tb), u.ID, name)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
