package main

import (
	"fmt"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/api"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
)

// Compile-time checks that the adapters fit the interfaces package api declares.
var (
	_ api.Users     = (*postgres.Users)(nil)
	_ api.Creators  = (*postgres.Users)(nil)
	_ api.Follows   = (*postgres.Follows)(nil)
	_ api.Products  = (*postgres.Catalog)(nil)
	_ api.Drops     = (*postgres.Catalog)(nil)
	_ api.Creators  = (*redis.CachedCreators)(nil)
	_ api.Follows   = (*redis.CachedFollows)(nil)
	_ api.Products  = (*redis.CachedProducts)(nil)
	_ api.Drops     = (*redis.CachedDrops)(nil)
	_ api.Limiter   = (*redis.Limiter)(nil)
	_ api.Orders    = (*postgres.Orders)(nil)
	_ api.Directory = (*postgres.Directory)(nil)
)

// mountAPI mounts the REST API of the api role on r: the PostgreSQL stores, behind the Redis cache
// unless it is off (a.cache stays nil then), and the write rate limits.
func (a *App) mountAPI(r chi.Router) error {
	cfg := a.cfg
	users := postgres.NewUsers(a.pool)
	catalog := postgres.NewCatalog(a.pool, nil)
	follows := postgres.NewFollows(a.pool, nil)
	apiCfg := api.Config{
		Logger: a.logger, Tokens: a.tokens,
		Users: users, Creators: users, Follows: follows, Products: catalog, Drops: catalog,
		Directory:      postgres.NewDirectory(a.pool, nil),
		RequestTimeout: cfg.RequestTimeout,
	}
	if cfg.Cache {
		localTTL := cfg.CacheLocalTTL
		if localTTL == 0 {
			localTTL = -1 // off
		}
		cache, err := redis.NewCache(a.rdb, redis.CacheConfig{Prefix: cfg.CachePrefix, DropTTL: cfg.CacheDropTTL,
			LocalTTL: localTTL, Logger: a.logger}, a.registry)
		if err != nil {
			return err
		}
		a.cache = cache
		apiCfg.Creators = cache.Creators(users)
		apiCfg.Follows = cache.Follows(follows)
		apiCfg.Products = cache.Products(catalog)
		apiCfg.Drops = cache.Drops(catalog)
	}
	// Orders (issue 4) invalidate the drop cache after each stock commit.
	ordersCfg := postgres.OrdersConfig{Mode: postgres.OrderMode(cfg.OrderMode), Logger: a.logger, Registerer: a.registry}
	if a.cache != nil {
		ordersCfg.Cache = a.cache
	}
	orders, err := postgres.NewOrders(a.pool, ordersCfg)
	if err != nil {
		return err
	}
	apiCfg.Orders = orders
	a.orders = orders
	limit := func(name string, rate int) (api.Limiter, error) {
		if rate == 0 {
			return nil, nil
		}
		return redis.NewLimiter(a.rdb, redis.LimiterConfig{Name: name, Rate: rate, Prefix: cfg.CachePrefix}, a.registry)
	}
	if apiCfg.UserLimiter, err = limit("user", cfg.RateUser); err != nil {
		return err
	}
	if apiCfg.IPLimiter, err = limit("ip", cfg.RateIP); err != nil {
		return err
	}
	rest, err := api.New(apiCfg)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	rest.Routes(r)
	return nil
}
