// Package postgres is the PostgreSQL adapter of the store: the schema, its migrations and the
// connection pool the stores share.
//
// The schema lives in migrations/*.sql, embedded in the binary and applied by [Migrate], which any
// number of processes may call at once (a PostgreSQL advisory lock serialises them). [Open] returns
// the pgx pool every store uses; its Ping method is the readiness check.
//
// The database enforces the invariants that must hold whatever the code does: stock never below zero
// or above the initial stock, one order per (user, idempotency key), a buyer never above a drop's
// max_per_user, a drop only of its creator's product, no self-follow. Constraint names are exported
// (constraints.go) so code can map a *pgconn.PgError to a domain error by its ConstraintName.
package postgres
