package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/store"
)

// Users stores accounts and creator profiles.
type Users struct {
	pool *pgxpool.Pool
}

// NewUsers returns the user store on pool.
func NewUsers(pool *pgxpool.Pool) *Users { return &Users{pool: pool} }

// CreateUser adds an account. An address already in use, whatever its case, is store.ErrEmailTaken;
// invalid input is a *store.FieldError.
func (s *Users) CreateUser(ctx context.Context, u store.NewUser) (store.User, error) {
	if err := u.Validate(); err != nil {
		return store.User{}, err
	}
	out := store.User{Name: u.Name, Email: u.Email}
	err := s.pool.QueryRow(ctx, `INSERT INTO users (name, email) VALUES ($1, $2) RETURNING user_id`,
		u.Name, u.Email).Scan(&out.ID)
	if err != nil {
		if constraint(err) == ConstraintUserEmailUnique {
			return store.User{}, fmt.Errorf("create user: %w", store.ErrEmailTaken)
		}
		return store.User{}, fmt.Errorf("create user: %w", mapCheck(err))
	}
	return out, nil
}

// User returns the account id, or store.ErrNotFound.
func (s *Users) User(ctx context.Context, id int64) (store.User, error) {
	u := store.User{ID: id}
	err := s.pool.QueryRow(ctx, `SELECT name, email FROM users WHERE user_id = $1`, id).Scan(&u.Name, &u.Email)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.User{}, fmt.Errorf("user %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.User{}, fmt.Errorf("user %d: %w", id, err)
	}
	return u, nil
}

// CreateCreator makes user userID a creator with profileName. An unknown user is store.ErrNotFound,
// one who already is a creator store.ErrAlreadyExists.
func (s *Users) CreateCreator(ctx context.Context, userID int64, profileName string) (store.Creator, error) {
	if err := store.ValidateProfileName(profileName); err != nil {
		return store.Creator{}, err
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO creators (creator_id, profile_name) VALUES ($1, $2)`, userID, profileName)
	switch constraint(err) {
	case "":
	case ConstraintCreatorUnique:
		return store.Creator{}, fmt.Errorf("create creator %d: user %d already is a creator: %w", userID, userID, store.ErrAlreadyExists)
	case ConstraintCreatorUser:
		return store.Creator{}, fmt.Errorf("create creator: user %d: %w", userID, store.ErrNotFound)
	default:
		return store.Creator{}, fmt.Errorf("create creator %d: %w", userID, mapCheck(err))
	}
	if err != nil {
		return store.Creator{}, fmt.Errorf("create creator %d: %w", userID, err)
	}
	return store.Creator{ID: userID, ProfileName: profileName}, nil
}

// Creator returns creator id with its follower count (the sum of its counter shards), or
// store.ErrNotFound.
func (s *Users) Creator(ctx context.Context, id int64) (store.Creator, error) {
	c := store.Creator{ID: id}
	err := s.pool.QueryRow(ctx, `
SELECT c.profile_name,
       coalesce((SELECT sum(n.followers) FROM creator_follower_counts n WHERE n.creator_id = c.creator_id), 0)::bigint
FROM creators c WHERE c.creator_id = $1`, id).Scan(&c.ProfileName, &c.FollowerCount)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Creator{}, fmt.Errorf("creator %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Creator{}, fmt.Errorf("creator %d: %w", id, err)
	}
	return c, nil
}

// constraint is the name of the constraint err violated, or "" when err is no constraint violation.
func constraint(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.ConstraintName
	}
	return ""
}

// checkFields maps CHECK constraints that guard input to the field they concern, for the violations
// input validation should have caught first.
var checkFields = map[string]string{
	ConstraintUserNameLength:           "name",
	ConstraintUserEmailValid:           "email",
	ConstraintCreatorProfileNameLength: "profile_name",
	ConstraintProductTitleLength:       "title",
	ConstraintProductDescriptionLength: "description",
	ConstraintProductPriceNonNegative:  "price_cents",
	ConstraintDropTimeOrder:            "end_time",
	ConstraintDropInitialStockPositive: "stock_count",
	ConstraintDropMaxPerUserPositive:   "max_per_user",
}

// mapCheck turns an input CHECK violation into a *store.FieldError and leaves other errors as they are.
func mapCheck(err error) error {
	if field, ok := checkFields[constraint(err)]; ok {
		return fmt.Errorf("%w (%w)", store.Invalid(field, "is not accepted"), err)
	}
	return err
}
