package postgres_test

import (
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

// schemaTables are the tables the migrations create.
var schemaTables = []string{
	"users", "creators", "follows", "creator_follower_counts", "products", "drops",
	"orders", "drop_purchases", "outbox", "devices",
}

// migrationVersions are the versions of the embedded migrations, in order, read from their file names
// (NNNNN_name.sql); numbers may have gaps.
func migrationVersions(t *testing.T) []int64 {
	t.Helper()
	files, err := fs.Glob(postgres.Migrations(), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("got no embedded migrations, want some")
	}
	versions := make([]int64, len(files))
	for i, f := range files {
		num, _, ok := strings.Cut(f, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil {
			t.Fatalf("migration file %q is not named NNNNN_name.sql", f)
		}
		versions[i] = v
	}
	return versions
}

func TestMigrateFromEmptyThenAgain(t *testing.T) {
	ctx := testContext(t)
	url := storetest.NewDatabase(t)
	versions := migrationVersions(t)
	want := len(versions)

	var first logRecorder
	if err := postgres.Migrate(ctx, url, first.logger()); err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	applied := first.records(t, "migration applied")
	if len(applied) != want {
		t.Fatalf("first Migrate logged %d applied migrations, want %d", len(applied), want)
	}
	for i, rec := range applied {
		if got, want := rec["version"], float64(versions[i]); got != want {
			t.Errorf("applied migration %d: got version %v, want %v", i, got, want)
		}
		if rec["file"] == "" || rec["file"] == nil {
			t.Errorf("applied migration %d: got no file in %v", i, rec)
		}
	}

	var second logRecorder
	if err := postgres.Migrate(ctx, url, second.logger()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if got := second.records(t, "migration applied"); len(got) != 0 {
		t.Errorf("second Migrate applied %d migrations, want 0: %v", len(got), got)
	}
	done := second.records(t, "database schema up to date")
	if latest := versions[len(versions)-1]; len(done) != 1 || done[0]["version"] != float64(latest) {
		t.Errorf("second Migrate: got summary %v, want version %d", done, latest)
	}

	pool := migrated(t, url) // a third run, through the helper, must also be a no-op
	for _, table := range schemaTables {
		var exists bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass('public.' || $1) IS NOT NULL", table).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if !exists {
			t.Errorf("table %s: got missing, want created", table)
		}
	}
}

func TestMigrateConcurrently(t *testing.T) {
	ctx := testContext(t)
	url := storetest.NewDatabase(t)
	wantVersions := migrationVersions(t)

	const runs = 3
	var (
		wg   sync.WaitGroup
		errs [runs]error
		logs [runs]logRecorder
	)
	for i := range runs {
		wg.Go(func() { errs[i] = postgres.Migrate(ctx, url, logs[i].logger()) })
	}
	wg.Wait()
	total := 0
	for i := range runs {
		if errs[i] != nil {
			t.Errorf("Migrate %d: %v", i, errs[i])
		}
		total += len(logs[i].records(t, "migration applied"))
	}
	if total != len(wantVersions) {
		t.Errorf("got %d migrations applied over %d concurrent runs, want %d", total, runs, len(wantVersions))
	}

	pool := migrated(t, url)
	var versions []int64
	rows, err := pool.Query(ctx, "SELECT version_id FROM goose_db_version WHERE version_id > 0 ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(versions, wantVersions) {
		t.Errorf("got versions recorded %v, want %v", versions, wantVersions)
	}
}

func TestMigrateErrors(t *testing.T) {
	ctx := testContext(t)
	tests := []struct {
		name string
		url  string
	}{
		{"malformed url", "postgres://%zz"},
		{"bad port", "postgres://postgres:secret@127.0.0.1:notaport/x"},
		{"nothing listening", "postgres://postgres:secret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"},
		{"unknown database", storetest.PostgresURL(t, "no_such_database")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := postgres.Migrate(ctx, tt.url, nil)
			if err == nil {
				t.Fatal("got nil error, want one")
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("got error %q, want the password left out", err)
			}
		})
	}
}

// TestMigrationsDownAndUp checks that every Down section undoes its Up: all the way down leaves no
// table behind, and the way back up works again.
func TestMigrationsDownAndUp(t *testing.T) {
	ctx := testContext(t)
	url := storetest.NewDatabase(t)
	pool := migrated(t, url)

	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	provider, err := goose.NewProvider(goose.DialectPostgres, db, postgres.Migrations(),
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provider.DownTo(ctx, 0); err != nil {
		t.Fatalf("DownTo(0): %v", err)
	}
	left := queryInt(t, pool, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> 'goose_db_version'`)
	if left != 0 {
		t.Errorf("after DownTo(0): got %d tables left, want 0", left)
	}
	fns := queryInt(t, pool, `SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'public'`)
	if fns != 0 {
		t.Errorf("after DownTo(0): got %d functions left, want 0", fns)
	}
	if _, err := provider.Up(ctx); err != nil {
		t.Fatalf("Up after DownTo(0): %v", err)
	}
}

func TestFollowsIsHashPartitioned(t *testing.T) {
	ctx := testContext(t)
	pool := migrated(t, storetest.NewDatabase(t))

	var strategy string
	if err := pool.QueryRow(ctx,
		"SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = 'follows'::regclass").Scan(&strategy); err != nil {
		t.Fatalf("follows in pg_partitioned_table: %v", err)
	}
	if strategy != "h" {
		t.Errorf("got partition strategy %q, want h (hash)", strategy)
	}
	if got := queryInt(t, pool, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'follows'::regclass"); got != 16 {
		t.Errorf("got %d partitions, want 16", got)
	}
	// Each partition carries the keyset indexes.
	if got := queryInt(t, pool, `SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid
		WHERE i.inhparent = 'follows'::regclass`); got != 16*3 {
		t.Errorf("got %d partition indexes, want %d (primary key and two keyset indexes each)", got, 16*3)
	}
}

// TestConstraintNames checks that every exported name exists in the migrated schema.
func TestConstraintNames(t *testing.T) {
	pool := migrated(t, storetest.NewDatabase(t))
	names := []string{
		postgres.ConstraintUserEmailUnique, postgres.ConstraintUserNameLength, postgres.ConstraintUserEmailValid,
		postgres.ConstraintCreatorUnique, postgres.ConstraintCreatorUser, postgres.ConstraintCreatorProfileNameLength,
		postgres.ConstraintFollowCreator, postgres.ConstraintFollowFollower, postgres.ConstraintFollowNoSelf,
		postgres.ConstraintFollowKeysImmutable,
		postgres.ConstraintProductCreator, postgres.ConstraintProductCreatorKey, postgres.ConstraintProductTitleLength,
		postgres.ConstraintProductDescriptionLength, postgres.ConstraintProductPriceNonNegative,
		postgres.ConstraintDropCreator, postgres.ConstraintDropProductCreator, postgres.ConstraintDropMaxPerUserKey,
		postgres.ConstraintDropTimeOrder, postgres.ConstraintDropInitialStockPositive,
		postgres.ConstraintStockNonNegative, postgres.ConstraintStockWithinInitial,
		postgres.ConstraintDropMaxPerUserPositive, postgres.ConstraintDropStatusValid,
		postgres.ConstraintDropSoldOutHasNoStock,
		postgres.ConstraintOrderUserIdempotencyKey, postgres.ConstraintOrderUser, postgres.ConstraintOrderDrop,
		postgres.ConstraintOrderQuantityPositive, postgres.ConstraintOrderStatusValid,
		postgres.ConstraintOrderFailureCode, postgres.ConstraintOrderIdempotencyKeyLength,
		postgres.ConstraintOrderRequestHash,
		postgres.ConstraintPurchaseWithinLimit, postgres.ConstraintPurchaseQuantityNonNegative,
		postgres.ConstraintPurchaseDropLimit, postgres.ConstraintPurchaseUser,
		postgres.ConstraintOutboxEventIDUnique, postgres.ConstraintOutboxEventIDLength,
		postgres.ConstraintOutboxSubjectLength, postgres.ConstraintOutboxTypeLength,
		postgres.ConstraintOutboxAttemptsNonNegative, postgres.ConstraintOutboxPublishedOrParked,
		postgres.ConstraintDevicePlatformToken, postgres.ConstraintDeviceUser,
		postgres.ConstraintDevicePlatformValid, postgres.ConstraintDeviceTokenLength,
		postgres.ConstraintDeviceSubscriptionValid,
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			// A constraint, a unique index on an expression, or the trigger that raises the name.
			n := queryInt(t, pool, `SELECT (SELECT count(*) FROM pg_constraint WHERE conname = $1)
				+ (SELECT count(*) FROM pg_class WHERE relname = $1 AND relkind = 'i')
				+ (SELECT count(*) FROM pg_trigger WHERE tgname = $1 AND NOT tgisinternal AND tgparentid = 0)`, name)
			if n == 0 {
				t.Errorf("got no constraint, index or trigger named %s, want one", name)
			}
		})
	}
}
