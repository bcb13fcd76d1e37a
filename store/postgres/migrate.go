package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations returns the embedded migration files (goose SQL files at the root of the FS), for
// tools that inspect or run them; [Migrate] is the way to apply them.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		// fs.Sub fails only for an invalid path; "migrations" is a constant.
		panic(err)
	}
	return sub
}

// migrateLockTimeout bounds how long Migrate waits for another process's migration to finish.
const migrateLockTimeout = 5 * time.Minute

// Migrate applies every pending migration to the database at databaseURL and logs each version it
// applies. It is safe to call from several processes at once: they take turns under a PostgreSQL
// session advisory lock and the later ones find nothing left to do. A nil logger discards the log.
func Migrate(ctx context.Context, databaseURL string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	connConfig, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("migrate: parse database url: %w", err)
	}
	if _, ok := connConfig.RuntimeParams["application_name"]; !ok {
		connConfig.RuntimeParams["application_name"] = applicationName
	}
	db := stdlib.OpenDB(*connConfig)
	defer db.Close()
	// goose holds one connection (with the lock) and needs no more.
	db.SetMaxOpenConns(2)

	provider, err := newProvider(db, logger)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	results, err := provider.Up(ctx)
	if partial, ok := errors.AsType[*goose.PartialError](err); ok {
		results = partial.Applied
	}
	for _, r := range results {
		logger.InfoContext(ctx, "migration applied",
			slog.Int64("version", r.Source.Version),
			slog.String("file", path.Base(r.Source.Path)),
			slog.Duration("duration", r.Duration))
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	version, err := provider.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	logger.InfoContext(ctx, "database schema up to date",
		slog.Int64("version", version), slog.Int("applied", len(results)))
	return nil
}

func newProvider(db *sql.DB, logger *slog.Logger) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker(
		// Poll every second (the default is every 5 s) for the length of migrateLockTimeout.
		lock.WithLockTimeout(1, uint64(migrateLockTimeout/time.Second)),
	)
	if err != nil {
		return nil, fmt.Errorf("create session locker: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, Migrations(),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(logger.With(slog.String("component", "goose"))),
	)
	if err != nil {
		return nil, fmt.Errorf("create goose provider: %w", err)
	}
	return provider, nil
}
