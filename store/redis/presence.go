package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// PresenceConfig configures a Presence. Zero values are the documented defaults.
type PresenceConfig struct {
	// HubID names this hub among all hubs (required), e.g. its host name, pid and start time.
	HubID string
	// Prefix starts every key. Default "livedrops:".
	Prefix string
	// TTL is how long a heartbeat keeps the hub alive: its users read offline at most TTL after it died.
	// The hub beats well within it. Default 30s.
	TTL time.Duration
	// ClaimTTL is how long a user's record lives without being added again; the hub adds its users again
	// well within it. Default 1h.
	ClaimTTL time.Duration
}

// Presence records which users have a socket on some hub, for the push notifier. It implements
// hub.Presence.
//
// Two kinds of keys: <prefix>presence:hub:<hub id> is the hub's heartbeat, a key that expires TTL after
// the hub's last beat; <prefix>presence:user:<user id> is a hash whose fields are the hubs that hold a
// socket of the user. A user is online while one of those hubs has its heartbeat. So a hub pays one
// command per beat however many users it holds, one per user at connect and disconnect, and one per user
// per ClaimTTL; and when a hub dies its users go offline within TTL, with nobody having to clean up.
// Every command touches one key: it works on a Redis Cluster as on one server.
//
// Redis is not the source of truth and may lose its data (a restart without persistence, a failover to
// a replica that had not caught up). Presence remembers the users it added, and a heartbeat that finds
// the hub's own key gone (lost, or expired because beats stalled) adds all of them again: presence is
// whole again within one heartbeat, not at the hub's next periodic refresh.
type Presence struct {
	rdb goredis.UniversalClient
	cfg PresenceConfig

	mu     sync.Mutex
	users  map[int64]struct{} // the users this hub holds, as told by Add and Remove
	beaten bool               // a heartbeat has set the hub key before
	resync bool               // the records may be lost: add every user again
}

// NewPresence returns the presence store of hub cfg.HubID.
func NewPresence(rdb goredis.UniversalClient, cfg PresenceConfig) (*Presence, error) {
	if cfg.HubID == "" {
		return nil, errors.New("redis: presence: HubID is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "livedrops:"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 30 * time.Second
	}
	if cfg.ClaimTTL <= 0 {
		cfg.ClaimTTL = time.Hour
	}
	return &Presence{rdb: rdb, cfg: cfg, users: map[int64]struct{}{}}, nil
}

func (p *Presence) userKey(userID int64) string {
	return p.cfg.Prefix + "presence:user:" + strconv.FormatInt(userID, 10)
}

func (p *Presence) hubKey(hubID string) string { return p.cfg.Prefix + "presence:hub:" + hubID }

// Heartbeat says this hub is alive for TTL. When the hub's key was gone (Redis lost its data, or the
// key expired), it also adds every user of the hub again.
func (p *Presence) Heartbeat(ctx context.Context) error {
	err := p.rdb.SetArgs(ctx, p.hubKey(p.cfg.HubID), "1", goredis.SetArgs{TTL: p.cfg.TTL, Get: true}).Err()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return fmt.Errorf("redis: presence heartbeat: %w", err)
	}
	p.mu.Lock()
	if errors.Is(err, goredis.Nil) && p.beaten {
		p.resync = true
	}
	p.beaten = true
	resync := p.resync
	var all []int64
	if resync {
		all = make([]int64, 0, len(p.users))
		for id := range p.users {
			all = append(all, id)
		}
	}
	p.mu.Unlock()
	if !resync {
		return nil
	}
	for rest := all; len(rest) > 0; {
		n := min(len(rest), resyncBatch)
		if err := p.write(ctx, rest[:n]); err != nil {
			return fmt.Errorf("redis: presence heartbeat: add the hub's users again: %w", err)
		}
		rest = rest[n:]
	}
	p.mu.Lock()
	p.resync = false
	p.mu.Unlock()
	return nil
}

// resyncBatch is how many users one pipeline of a resync writes.
const resyncBatch = 1000

// Add records that this hub holds sockets of userIDs (again: it also renews their records).
func (p *Presence) Add(ctx context.Context, userIDs []int64) error {
	if len(userIDs) == 0 {
		return nil
	}
	p.mu.Lock()
	for _, id := range userIDs {
		p.users[id] = struct{}{}
	}
	p.mu.Unlock()
	return p.write(ctx, userIDs)
}

// write sets the records of userIDs.
func (p *Presence) write(ctx context.Context, userIDs []int64) error {
	_, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for _, id := range userIDs {
			k := p.userKey(id)
			pipe.HSet(ctx, k, p.cfg.HubID, "1")
			pipe.Expire(ctx, k, p.cfg.ClaimTTL)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: presence add: %w", err)
	}
	return nil
}

// Remove records that this hub holds no socket of userIDs any more.
func (p *Presence) Remove(ctx context.Context, userIDs []int64) error {
	if len(userIDs) == 0 {
		return nil
	}
	p.mu.Lock()
	for _, id := range userIDs {
		delete(p.users, id)
	}
	p.mu.Unlock()
	_, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for _, id := range userIDs {
			pipe.HDel(ctx, p.userKey(id), p.cfg.HubID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: presence remove: %w", err)
	}
	return nil
}

// Online reports, for each of userIDs, whether a live hub holds a socket of the user. Two round trips
// whatever the number of users.
func (p *Presence) Online(ctx context.Context, userIDs []int64) ([]bool, error) {
	out := make([]bool, len(userIDs))
	if len(userIDs) == 0 {
		return out, nil
	}
	claims := make([]*goredis.StringSliceCmd, len(userIDs))
	if _, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for i, id := range userIDs {
			claims[i] = pipe.HKeys(ctx, p.userKey(id))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("redis: presence: %w", err)
	}
	alive := map[string]*goredis.IntCmd{}
	if _, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for _, c := range claims {
			for _, hub := range c.Val() {
				if alive[hub] == nil {
					alive[hub] = pipe.Exists(ctx, p.hubKey(hub))
				}
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("redis: presence: %w", err)
	}
	for i, c := range claims {
		for _, hub := range c.Val() {
			if alive[hub].Val() == 1 {
				out[i] = true
				break
			}
		}
	}
	return out, nil
}
