package postgres_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

// seed fills a migrated database with a small world the tests below refer to by id:
// users 1 alice, 2 bob, 3 carol; creators 1 and 2; product 10 of creator 1, product 20 of creator 2;
// drop 100 (creator 1, product 10, 10 in stock, 2 per user, live); order 1000 of bob on drop 100 with
// key "k1"; bob follows alice; outbox event "e1"; device fcm "tok1" of bob.
func seed(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for _, stmt := range []string{
		`INSERT INTO users (user_id, name, email) VALUES
			(1, 'alice', 'alice@example.com'), (2, 'bob', 'bob@example.com'), (3, 'carol', 'carol@example.com')`,
		`INSERT INTO creators (creator_id, profile_name) VALUES (1, 'Alice Shop'), (2, 'Bob Shop')`,
		`INSERT INTO products (product_id, creator_id, title, price_cents) VALUES
			(10, 1, 'Alice Tee', 2500), (20, 2, 'Bob Mug', 1200)`,
		`INSERT INTO drops (drop_id, creator_id, product_id, start_time, end_time,
			initial_stock, stock_count, max_per_user, status)
			VALUES (100, 1, 10, now(), now() + interval '1 hour', 10, 10, 2, 'live')`,
		`INSERT INTO orders (order_id, user_id, drop_id, quantity, status, idempotency_key, request_hash)
			VALUES (1000, 2, 100, 1, 'confirmed', 'k1', sha256('body'))`,
		`INSERT INTO follows (creator_id, follower_id) VALUES (1, 2)`,
		`INSERT INTO outbox (event_id, subject, type, payload) VALUES ('e1', 'ld.creator.1', 'drop.started', '{}')`,
		`INSERT INTO devices (user_id, platform, token) VALUES (2, 'fcm', 'tok1')`,
		// Rows above took explicit ids: move the identities past them.
		`SELECT setval(pg_get_serial_sequence('users', 'user_id'), 10000),
			setval(pg_get_serial_sequence('products', 'product_id'), 10000),
			setval(pg_get_serial_sequence('drops', 'drop_id'), 10000),
			setval(pg_get_serial_sequence('orders', 'order_id'), 10000)`,
	} {
		mustExec(t, pool, stmt)
	}
}

func TestSchemaConstraints(t *testing.T) {
	pool := migrated(t, storetest.NewDatabase(t))
	seed(t, pool)

	const (
		insertDrop = `INSERT INTO drops (creator_id, product_id, start_time, end_time, initial_stock,
			stock_count, max_per_user) VALUES ($1, $2, $3::timestamptz, $4::timestamptz, $5, $6, $7)`
		insertOrder = `INSERT INTO orders (user_id, drop_id, quantity, status, idempotency_key, request_hash,
			failure_code) VALUES ($1, $2, $3, $4, $5, sha256($6::bytea), $7)`
		insertPurchase = `INSERT INTO drop_purchases (drop_id, user_id, quantity, max_per_user) VALUES ($1, $2, $3, $4)`
		insertDevice   = `INSERT INTO devices (user_id, platform, token, subscription) VALUES ($1, $2, $3, $4)`
		insertOutbox   = `INSERT INTO outbox (event_id, subject, type, payload, published_at, parked_at)
			VALUES ($1, 'ld.drop.100', 'stock.changed', '{}', $2::timestamptz, $3::timestamptz)`
		t0 = "2030-01-01T10:00:00Z"
		t1 = "2030-01-01T11:00:00Z"
	)
	var noFailure *string
	failed := "sold_out"

	tests := []struct {
		name           string
		sql            string
		args           []any
		wantCode       string // "" means the statement must succeed
		wantConstraint string
	}{
		// users and creators
		{"user email taken, other case", `INSERT INTO users (name, email) VALUES ('x', 'ALICE@example.com')`, nil,
			codeUnique, postgres.ConstraintUserEmailUnique},
		{"user blank name", `INSERT INTO users (name, email) VALUES ('  ', 'x@example.com')`, nil,
			codeCheck, postgres.ConstraintUserNameLength},
		{"user name too long", `INSERT INTO users (name, email) VALUES (repeat('n', 101), 'x@example.com')`, nil,
			codeCheck, postgres.ConstraintUserNameLength},
		{"user email without at", `INSERT INTO users (name, email) VALUES ('x', 'example.com')`, nil,
			codeCheck, postgres.ConstraintUserEmailValid},
		{"user valid", `INSERT INTO users (name, email) VALUES ('dave', 'dave@example.com')`, nil, "", ""},
		{"creator twice", `INSERT INTO creators (creator_id, profile_name) VALUES (1, 'again')`, nil,
			codeUnique, postgres.ConstraintCreatorUnique},
		{"creator unknown user", `INSERT INTO creators (creator_id, profile_name) VALUES (999, 'ghost')`, nil,
			codeForeignKey, postgres.ConstraintCreatorUser},
		{"creator empty profile name", `INSERT INTO creators (creator_id, profile_name) VALUES (3, '')`, nil,
			codeCheck, postgres.ConstraintCreatorProfileNameLength},

		// follows
		{"self-follow", `INSERT INTO follows (creator_id, follower_id) VALUES (1, 1)`, nil,
			codeCheck, postgres.ConstraintFollowNoSelf},
		{"follow unknown creator", `INSERT INTO follows (creator_id, follower_id) VALUES (3, 2)`, nil,
			codeForeignKey, postgres.ConstraintFollowCreator},
		{"follow by unknown user", `INSERT INTO follows (creator_id, follower_id) VALUES (1, 999)`, nil,
			codeForeignKey, postgres.ConstraintFollowFollower},
		{"follow keys changed", `UPDATE follows SET creator_id = 2 WHERE creator_id = 1 AND follower_id = 2`, nil,
			codeIntegrity, postgres.ConstraintFollowKeysImmutable},
		{"follow time changed", `UPDATE follows SET followed_at = now() WHERE creator_id = 1`, nil, "", ""},

		// products
		{"negative price", `INSERT INTO products (creator_id, title, price_cents) VALUES (1, 'x', -1)`, nil,
			codeCheck, postgres.ConstraintProductPriceNonNegative},
		{"free product", `INSERT INTO products (creator_id, title, price_cents) VALUES (1, 'x', 0)`, nil, "", ""},
		{"product of unknown creator", `INSERT INTO products (creator_id, title, price_cents) VALUES (3, 'x', 1)`, nil,
			codeForeignKey, postgres.ConstraintProductCreator},
		{"product blank title", `INSERT INTO products (creator_id, title, price_cents) VALUES (1, ' ', 1)`, nil,
			codeCheck, postgres.ConstraintProductTitleLength},

		// drops
		{"negative stock", `UPDATE drops SET stock_count = -1 WHERE drop_id = 100`, nil,
			codeCheck, postgres.ConstraintStockNonNegative},
		{"take more than the stock", `UPDATE drops SET stock_count = stock_count - 11 WHERE drop_id = 100`, nil,
			codeCheck, postgres.ConstraintStockNonNegative},
		{"stock above initial", `UPDATE drops SET stock_count = 11 WHERE drop_id = 100`, nil,
			codeCheck, postgres.ConstraintStockWithinInitial},
		{"drop ends before it starts", insertDrop, []any{1, 10, t1, t0, 5, 5, 1},
			codeCheck, postgres.ConstraintDropTimeOrder},
		{"drop ends as it starts", insertDrop, []any{1, 10, t0, t0, 5, 5, 1},
			codeCheck, postgres.ConstraintDropTimeOrder},
		{"drop without stock", insertDrop, []any{1, 10, t0, t1, 0, 0, 1},
			codeCheck, postgres.ConstraintDropInitialStockPositive},
		{"drop without per-user allowance", insertDrop, []any{1, 10, t0, t1, 5, 5, 0},
			codeCheck, postgres.ConstraintDropMaxPerUserPositive},
		{"drop of another creator's product", insertDrop, []any{1, 20, t0, t1, 5, 5, 1},
			codeForeignKey, postgres.ConstraintDropProductCreator},
		{"drop of unknown product", insertDrop, []any{1, 999, t0, t1, 5, 5, 1},
			codeForeignKey, postgres.ConstraintDropProductCreator},
		{"drop valid", insertDrop, []any{2, 20, t0, t1, 5, 5, 1}, "", ""},
		{"bad drop status", `UPDATE drops SET status = 'paused' WHERE drop_id = 100`, nil,
			codeCheck, postgres.ConstraintDropStatusValid},
		{"sold out with stock", `UPDATE drops SET status = 'sold_out' WHERE drop_id = 100`, nil,
			codeCheck, postgres.ConstraintDropSoldOutHasNoStock},
		{"sold out", `UPDATE drops SET status = 'sold_out', stock_count = 0 WHERE drop_id = 100`, nil, "", ""},

		// orders
		{"same user, same idempotency key", insertOrder, []any{2, 100, 1, "confirmed", "k1", "other", noFailure},
			codeUnique, postgres.ConstraintOrderUserIdempotencyKey},
		{"other user, same idempotency key", insertOrder, []any{3, 100, 1, "confirmed", "k1", "body", noFailure},
			"", ""},
		{"bad order status", insertOrder, []any{2, 100, 1, "shipped", "k2", "body", noFailure},
			codeCheck, postgres.ConstraintOrderStatusValid},
		{"order of nothing", insertOrder, []any{2, 100, 0, "confirmed", "k2", "body", noFailure},
			codeCheck, postgres.ConstraintOrderQuantityPositive},
		{"order of unknown drop", insertOrder, []any{2, 999, 1, "confirmed", "k2", "body", noFailure},
			codeForeignKey, postgres.ConstraintOrderDrop},
		{"order of unknown user", insertOrder, []any{999, 100, 1, "confirmed", "k2", "body", noFailure},
			codeForeignKey, postgres.ConstraintOrderUser},
		{"empty idempotency key", insertOrder, []any{2, 100, 1, "confirmed", "", "body", noFailure},
			codeCheck, postgres.ConstraintOrderIdempotencyKeyLength},
		{"idempotency key of 256", insertOrder, []any{2, 100, 1, "confirmed", strings.Repeat("k", 256), "body", noFailure},
			codeCheck, postgres.ConstraintOrderIdempotencyKeyLength},
		{"idempotency key of 255", insertOrder, []any{2, 100, 1, "confirmed", strings.Repeat("k", 255), "body", noFailure},
			"", ""},
		{"request hash not sha-256", `INSERT INTO orders (user_id, drop_id, quantity, status, idempotency_key,
			request_hash) VALUES (2, 100, 1, 'confirmed', 'k2', '\x00')`, nil,
			codeCheck, postgres.ConstraintOrderRequestHash},
		{"failure code on a confirmed order", insertOrder, []any{2, 100, 1, "confirmed", "k2", "body", &failed},
			codeCheck, postgres.ConstraintOrderFailureCode},
		{"failed order", insertOrder, []any{2, 100, 1, "failed", "k2", "body", &failed}, "", ""},

		// drop_purchases
		{"purchase above the limit", insertPurchase, []any{100, 3, 3, 2},
			codeCheck, postgres.ConstraintPurchaseWithinLimit},
		{"purchase with a wrong limit copy", insertPurchase, []any{100, 3, 3, 5},
			codeForeignKey, postgres.ConstraintPurchaseDropLimit},
		{"negative purchase", insertPurchase, []any{100, 3, -1, 2},
			codeCheck, postgres.ConstraintPurchaseQuantityNonNegative},
		{"purchase at the limit", insertPurchase, []any{100, 3, 2, 2}, "", ""},

		// outbox
		{"duplicate event id", insertOutbox, []any{"e1", nil, nil},
			codeUnique, postgres.ConstraintOutboxEventIDUnique},
		{"published and parked", insertOutbox, []any{"e2", t0, t0},
			codeCheck, postgres.ConstraintOutboxPublishedOrParked},
		{"empty event id", insertOutbox, []any{"", nil, nil},
			codeCheck, postgres.ConstraintOutboxEventIDLength},

		// devices
		{"bad platform", insertDevice, []any{2, "apns", "tok2", nil},
			codeCheck, postgres.ConstraintDevicePlatformValid},
		{"token registered twice", insertDevice, []any{3, "fcm", "tok1", nil},
			codeUnique, postgres.ConstraintDevicePlatformToken},
		{"same token, other platform", insertDevice, []any{3, "webpush", "tok1", nil}, "", ""},
		{"fcm with web push keys", insertDevice, []any{2, "fcm", "tok2", `{"p256dh":"k","auth":"a"}`},
			codeCheck, postgres.ConstraintDeviceSubscriptionValid},
		{"web push keys not an object", insertDevice, []any{2, "webpush", "https://push.example/1", `[]`},
			codeCheck, postgres.ConstraintDeviceSubscriptionValid},
		{"web push with keys", insertDevice, []any{2, "webpush", "https://push.example/1", `{"p256dh":"k","auth":"a"}`},
			"", ""},
		{"token too long", insertDevice, []any{2, "fcm", strings.Repeat("t", 2049), nil},
			codeCheck, postgres.ConstraintDeviceTokenLength},
		{"device of unknown user", insertDevice, []any{999, "fcm", "tok2", nil},
			codeForeignKey, postgres.ConstraintDeviceUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			// Each case runs in a transaction rolled back afterwards, so cases do not see each other.
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			_, err = tx.Exec(ctx, tt.sql, tt.args...)
			checkPgError(t, err, tt.wantCode, tt.wantConstraint)
		})
	}
}

func followerCount(t *testing.T, pool *pgxpool.Pool, creatorID int64) int64 {
	t.Helper()
	return queryInt(t, pool,
		"SELECT coalesce(sum(followers), 0)::bigint FROM creator_follower_counts WHERE creator_id = $1", creatorID)
}

func TestFollows(t *testing.T) {
	pool := migrated(t, storetest.NewDatabase(t))
	seed(t, pool) // bob (2) follows alice (1)
	const follow = `INSERT INTO follows (creator_id, follower_id) VALUES ($1, $2)
		ON CONFLICT (creator_id, follower_id) DO NOTHING`

	mustExec(t, pool, follow, 1, 2) // again
	if got := queryInt(t, pool, "SELECT count(*) FROM follows WHERE creator_id = 1 AND follower_id = 2"); got != 1 {
		t.Errorf("after following twice: got %d rows, want 1", got)
	}
	if got := followerCount(t, pool, 1); got != 1 {
		t.Errorf("after following twice: got follower count %d, want 1", got)
	}

	// Without ON CONFLICT the duplicate is a unique violation on the partition's primary key.
	_, err := pool.Exec(testContext(t), "INSERT INTO follows (creator_id, follower_id) VALUES (1, 2)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != codeUnique || !strings.HasPrefix(pgErr.ConstraintName, "follows_p") {
		t.Errorf("duplicate follow: got %v, want unique violation on a follows_pNN_pkey", err)
	}

	mustExec(t, pool, follow, 1, 3)
	mustExec(t, pool, follow, 2, 3)
	if got := followerCount(t, pool, 1); got != 2 {
		t.Errorf("got follower count %d, want 2", got)
	}
	mustExec(t, pool, "DELETE FROM follows WHERE creator_id = 1 AND follower_id = 2")
	mustExec(t, pool, "DELETE FROM follows WHERE creator_id = 1 AND follower_id = 2") // unfollow twice
	if got := followerCount(t, pool, 1); got != 1 {
		t.Errorf("after unfollow: got follower count %d, want 1", got)
	}

	// Removing a user removes their follows, and the counts follow.
	mustExec(t, pool, "DELETE FROM users WHERE user_id = 3")
	for _, creator := range []int64{1, 2} {
		if got := followerCount(t, pool, creator); got != 0 {
			t.Errorf("creator %d after its follower left: got follower count %d, want 0", creator, got)
		}
	}

	// A bulk load keeps the count exact.
	mustExec(t, pool, `INSERT INTO users (user_id, name, email)
		SELECT i, 'u' || i, 'u' || i || '@example.com' FROM generate_series(1001, 1500) AS i`)
	mustExec(t, pool, `INSERT INTO follows (creator_id, follower_id, followed_at)
		SELECT 2, i, now() - i * interval '1 second' FROM generate_series(1001, 1500) AS i`)
	if got := followerCount(t, pool, 2); got != 500 {
		t.Errorf("after a bulk load: got follower count %d, want 500", got)
	}
	if got := queryInt(t, pool, "SELECT count(*) FROM creator_follower_counts WHERE creator_id = 2"); got != 16 {
		t.Errorf("got %d counter shards for creator 2, want 16", got)
	}
	var partitions int64
	if err := pool.QueryRow(testContext(t),
		"SELECT count(DISTINCT tableoid) FROM follows WHERE creator_id = 2").Scan(&partitions); err != nil {
		t.Fatal(err)
	}
	if partitions != 1 {
		t.Errorf("got creator 2's follows in %d partitions, want 1", partitions)
	}
}

// TestStockNeverNegative races more buyers than units at a drop with unguarded decrements: the CHECK
// constraint alone lets exactly the stock through.
func TestStockNeverNegative(t *testing.T) {
	pool := migrated(t, storetest.NewDatabase(t))
	seed(t, pool) // drop 100 has 10 units
	ctx := testContext(t)

	const buyers = 25
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		sold, rejected  int
		unexpectedError error
	)
	for range buyers {
		wg.Go(func() {
			_, err := pool.Exec(ctx, "UPDATE drops SET stock_count = stock_count - 1 WHERE drop_id = 100")
			mu.Lock()
			defer mu.Unlock()
			var pgErr *pgconn.PgError
			switch {
			case err == nil:
				sold++
			case errors.As(err, &pgErr) && pgErr.ConstraintName == postgres.ConstraintStockNonNegative:
				rejected++
			default:
				unexpectedError = err
			}
		})
	}
	wg.Wait()
	if unexpectedError != nil {
		t.Fatalf("got error %v, want only %s violations", unexpectedError, postgres.ConstraintStockNonNegative)
	}
	if sold != 10 || rejected != buyers-10 {
		t.Errorf("got %d sold and %d rejected, want 10 and %d", sold, rejected, buyers-10)
	}
	if got := queryInt(t, pool, "SELECT stock_count FROM drops WHERE drop_id = 100"); got != 0 {
		t.Errorf("got stock %d, want 0", got)
	}
}

// TestPurchaseLimit runs the upsert the orders store uses to enforce max_per_user.
func TestPurchaseLimit(t *testing.T) {
	pool := migrated(t, storetest.NewDatabase(t))
	seed(t, pool) // drop 100 allows 2 per user
	const take = `INSERT INTO drop_purchases AS p (drop_id, user_id, quantity, max_per_user)
		SELECT d.drop_id, $2, $3, d.max_per_user FROM drops d WHERE d.drop_id = $1
		ON CONFLICT (drop_id, user_id) DO UPDATE SET quantity = p.quantity + excluded.quantity
		WHERE p.quantity + excluded.quantity <= p.max_per_user
		RETURNING quantity`

	tests := []struct {
		quantity int
		want     int // 0: limit exceeded
	}{
		{1, 1},
		{1, 2},
		{1, 0},
		{0, 2},
	}
	for i, tt := range tests {
		var got int
		err := pool.QueryRow(testContext(t), take, 100, 3, tt.quantity).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			got = 0
		} else if err != nil {
			t.Fatalf("take %d (step %d): %v", tt.quantity, i, err)
		}
		if got != tt.want {
			t.Errorf("take %d (step %d): got total %d, want %d", tt.quantity, i, got, tt.want)
		}
	}
}
