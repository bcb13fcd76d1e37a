package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/hub"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
)

// Compile-time checks that the adapters fit the interfaces package hub declares.
var (
	_ hub.Verifier  = (*auth.Tokens)(nil)
	_ hub.Follows   = (*postgres.Hub)(nil)
	_ hub.Follows   = (*redis.FollowLists)(nil)
	_ hub.Drops     = (*postgres.Hub)(nil)
	_ hub.Sequences = (*postgres.Hub)(nil)
	_ hub.Bus       = (*jetstream.Subscriber)(nil)
	_ hub.Replayer  = (*jetstream.Replayer)(nil)
	_ hub.Activity  = (*jetstream.Replayer)(nil)
	_ hub.Presence  = (*redis.Presence)(nil)
)

// hubNode is the hub role: the socket hub and the NATS adapters it owns.
type hubNode struct {
	hub      *hub.Hub
	bus      *jetstream.Subscriber
	replayer *jetstream.Replayer
}

// mountHub starts the hub and mounts GET /ws and GET /events on r.
func (a *App) mountHub(r chi.Router) error {
	cfg := a.cfg
	host, _ := os.Hostname()
	presence, err := redis.NewPresence(a.rdb, redis.PresenceConfig{
		HubID:  fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano()),
		Prefix: cfg.CachePrefix,
	})
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	replayer, err := jetstream.NewReplayer(a.nc, jetstream.ReplayerConfig{})
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	bus := jetstream.NewSubscriber(a.nc, a.logger, jetstream.SubscriberConfig{})
	queries := postgres.NewHub(a.pool)
	var follows hub.Follows = queries
	if cfg.Cache {
		lists, err := redis.NewFollowLists(a.rdb, queries, redis.FollowListsConfig{Prefix: cfg.CachePrefix,
			Logger: a.logger}, a.registry)
		if err != nil {
			bus.Close()
			replayer.Close()
			return fmt.Errorf("hub: %w", err)
		}
		follows = lists
	}
	gcGrowth := cfg.HubGCGrowth
	if gcGrowth == 0 {
		gcGrowth = -1 // off
	}
	burstGOGC := cfg.HubBurstGOGC
	if burstGOGC == 0 {
		burstGOGC = -1 // never changed
	}
	var activity hub.Activity = replayer
	if cfg.HubInterest == "per-creator" {
		activity = nil
	}
	h, err := hub.New(hub.Config{
		AllowedOrigins:    cfg.AllowedOrigins,
		MaxSocketsPerUser: cfg.MaxSocketsPerUser,
		ReplayWindow:      cfg.ReplayWindow,
		Workers:           cfg.HubWorkers,
		MaxSetups:         cfg.HubMaxSetups,
		GCGrowth:          gcGrowth,
		BurstGCPercent:    burstGOGC,
	}, hub.Deps{
		Logger: a.logger, Registerer: a.registry, Verifier: a.tokens,
		Follows: follows, Drops: queries, Sequences: queries,
		Bus: bus, Replayer: replayer, Presence: presence, Activity: activity,
	})
	if err != nil {
		bus.Close()
		replayer.Close()
		return fmt.Errorf("hub: %w", err)
	}
	a.hub = &hubNode{hub: h, bus: bus, replayer: replayer}
	r.Get("/ws", h.ServeWS)
	r.Get("/events", h.ServeSSE)
	return nil
}

// parseOrigins splits a comma-separated list of origin patterns.
func parseOrigins(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
