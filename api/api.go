// Package api is the public REST API of LiveDrops (API.md; api/openapi.yaml describes it): users,
// creators, follows, the catalogue and drops. It turns HTTP into calls on the stores it is given
// through small interfaces declared here, and every error into problem+json in one place (errors.go).
// It publishes no events: the stores write them to the outbox in the transaction of the change.
//
// Mount the routes on a router from api/httpkit, which brings request ids, access logs, metrics,
// panic recovery and the body limit:
//
//	a, err := api.New(api.Config{...})
//	a.Routes(router)
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/api/httpkit"
	"github.com/livedrops/livedrops/store"
)

// Users stores accounts.
type Users interface {
	CreateUser(ctx context.Context, u store.NewUser) (store.User, error)
	User(ctx context.Context, id int64) (store.User, error)
}

// Creators stores creator profiles.
type Creators interface {
	CreateCreator(ctx context.Context, userID int64, profileName string) (store.Creator, error)
	Creator(ctx context.Context, id int64) (store.Creator, error)
}

// Follows stores the follow graph. Follow and Unfollow report whether they changed anything.
type Follows interface {
	Follow(ctx context.Context, userID, creatorID int64) (bool, error)
	Unfollow(ctx context.Context, userID, creatorID int64) (bool, error)
	Followers(ctx context.Context, creatorID int64, req store.PageRequest) (store.Page[store.Follower], error)
	Following(ctx context.Context, userID int64, req store.PageRequest) (store.Page[store.Following], error)
}

// Products stores the catalogue.
type Products interface {
	CreateProduct(ctx context.Context, creatorID int64, p store.NewProduct) (store.Product, error)
	Product(ctx context.Context, id int64) (store.Product, error)
	Products(ctx context.Context, page, perPage int) ([]store.Product, bool, error)
}

// Drops stores drops.
type Drops interface {
	CreateDrop(ctx context.Context, creatorID int64, d store.NewDrop) (store.Drop, error)
	Drop(ctx context.Context, id int64) (store.Drop, error)
	LiveDrops(ctx context.Context, creatorID int64, req store.PageRequest) (store.Page[store.Drop], error)
}

// Tokens mints and verifies bearer tokens (api/auth.Tokens).
type Tokens interface {
	Mint(userID int64, ttl time.Duration) (string, error)
	Verify(token string) (int64, error)
}

// Limiter takes one request from the budget of key. It returns how long to wait when the budget is
// spent (0: allowed), or an error when it cannot tell (the request then goes through: fail open).
type Limiter interface {
	Allow(ctx context.Context, key string) (retryAfter time.Duration, err error)
}

// Config is what New needs. The stores, Tokens and Logger are required; zero values of the rest are
// their documented defaults.
type Config struct {
	Logger *slog.Logger
	Tokens Tokens

	Users    Users
	Creators Creators
	Follows  Follows
	Products Products
	Drops    Drops
	Orders   Orders
	// Directory lists creators and a creator's drops (GET /creators, GET /creators/{id}/drops).
	Directory Directory

	// UserLimiter limits the writes of each authenticated user (key "user:<id>"); nil: no limit.
	UserLimiter Limiter
	// IPLimiter limits the writes from each client address (key "ip:<addr>"); nil: no limit.
	IPLimiter Limiter

	// RequestTimeout bounds each request; zero means 10 s.
	RequestTimeout time.Duration
	// TokenTTL is the lifetime of the token POST /users returns; zero means the Tokens default.
	TokenTTL time.Duration
	// Now is the clock that derives drop statuses; nil means time.Now.
	Now func() time.Time
}

// API serves the routes of Config's stores.
type API struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time
}

// New checks cfg and returns the API.
func New(cfg Config) (*API, error) {
	switch {
	case cfg.Logger == nil:
		return nil, errors.New("api: Config.Logger is required")
	case cfg.Tokens == nil:
		return nil, errors.New("api: Config.Tokens is required")
	case cfg.Users == nil, cfg.Creators == nil, cfg.Follows == nil, cfg.Products == nil, cfg.Drops == nil,
		cfg.Orders == nil, cfg.Directory == nil:
		return nil, errors.New("api: Config needs Users, Creators, Follows, Products, Drops, Orders and Directory")
	case cfg.RequestTimeout < 0:
		return nil, errors.New("api: Config.RequestTimeout must not be negative")
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &API{cfg: cfg, logger: cfg.Logger, now: cfg.Now}, nil
}

// Routes mounts the API on r (a router from httpkit.NewRouter). Writes pass the per-address limit,
// then authentication, then the per-user limit.
func (a *API) Routes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(httpkit.Timeout(a.cfg.RequestTimeout))

		r.With(a.limitIP).Post("/users", a.handle(a.createUser))
		r.Get("/users/{id}", a.handle(a.getUser))
		r.Get("/users/{id}/following", a.handle(a.listFollowing))
		r.Get("/creators/{id}", a.handle(a.getCreator))
		r.Get("/creators/{id}/followers", a.handle(a.listFollowers))
		r.Get("/creators", a.handle(a.listCreators))
		r.Get("/creators/{id}/drops", a.handle(a.listCreatorDrops))
		r.Get("/products", a.handle(a.listProducts))
		r.Get("/products/{id}", a.handle(a.getProduct))
		r.Get("/drops/live", a.handle(a.listLiveDrops))
		r.Get("/drops/{id}", a.handle(a.getDrop))

		r.Group(func(r chi.Router) {
			r.Use(a.limitIP, a.authenticate, a.limitUser)
			r.Post("/creators", a.handle(a.createCreator))
			r.Post("/users/{id}/follow/{creatorId}", a.handle(a.follow))
			r.Delete("/users/{id}/follow/{creatorId}", a.handle(a.unfollow))
			r.Post("/products", a.handle(a.createProduct))
			r.Post("/drops", a.handle(a.createDrop))
		})
		a.orderRoutes(r)
	})
}

// handle adapts a handler that returns its error to http.HandlerFunc; the error is answered by
// writeError, the one place errors become problem+json.
func (a *API) handle(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			a.writeError(w, r, err)
		}
	}
}
