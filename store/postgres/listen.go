package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// listen holds a dedicated connection LISTENing on channel and sends a token on wake (without blocking:
// one pending token is enough) once the LISTEN is in place, so the caller also catches up with what
// committed before, and at every notification after. It returns nil when ctx ends, an error when the
// connection fails; the caller listens again.
func listen(ctx context.Context, pool *pgxpool.Pool, channel string, wake chan<- struct{}) error {
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("listen %s: connect: %w", channel, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("listen %s: %w", channel, err)
	}
	for {
		select {
		case wake <- struct{}{}:
		default:
		}
		if _, err := conn.WaitForNotification(ctx); err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("listen %s: %w", channel, err)
		}
	}
}
