package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// PresenceConfig configures a Presence. Zero values are the documented defaults.
type PresenceConfig struct {
	// HubID names this hub among all hubs (required), e.g. its host name and a random suffix.
	HubID string
	// Prefix starts every key. Default "livedrops:".
	Prefix string
	// TTL is how long a refresh keeps a user online; the hub refreshes well within it, so a user stays
	// online while a hub holds a socket of theirs and goes offline at most TTL after that hub dies.
	// Default 30s.
	TTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Presence records which users have a socket on some hub, for the push notifier. One hash per user,
// <prefix>presence:<user id>, maps each hub holding a socket of the user to the moment (Unix ms) its
// claim runs out; the key itself expires TTL after the last refresh of any hub. A user is online while
// some claim has not run out. It implements hub.Presence. Works on one Redis server and on a Cluster
// (every command touches one key).
type Presence struct {
	rdb goredis.UniversalClient
	cfg PresenceConfig
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Presence{rdb: rdb, cfg: cfg}, nil
}

func (p *Presence) key(userID int64) string {
	return p.cfg.Prefix + "presence:" + strconv.FormatInt(userID, 10)
}

// refreshScript claims a user for a hub until ARGV[2] (Unix ms), drops the claims of other hubs that ran
// out before ARGV[3] (now), and keeps the key ARGV[4] ms.
var refreshScript = goredis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HLEN', KEYS[1]) > 1 then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if tonumber(all[i+1]) < tonumber(ARGV[3]) then redis.call('HDEL', KEYS[1], all[i]) end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1`)

// Refresh marks userIDs online on this hub for TTL.
func (p *Presence) Refresh(ctx context.Context, userIDs []int64) error {
	if len(userIDs) == 0 {
		return nil
	}
	if err := refreshScript.Load(ctx, p.rdb).Err(); err != nil {
		return fmt.Errorf("redis: presence refresh: %w", err)
	}
	now := p.cfg.Now()
	until := strconv.FormatInt(now.Add(p.cfg.TTL).UnixMilli(), 10)
	nowMS := strconv.FormatInt(now.UnixMilli(), 10)
	ttl := strconv.FormatInt(p.cfg.TTL.Milliseconds(), 10)
	_, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for _, id := range userIDs {
			refreshScript.EvalSha(ctx, pipe, []string{p.key(id)}, p.cfg.HubID, until, nowMS, ttl)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: presence refresh: %w", err)
	}
	return nil
}

// Remove withdraws this hub's claim on userIDs (their last socket here closed).
func (p *Presence) Remove(ctx context.Context, userIDs []int64) error {
	if len(userIDs) == 0 {
		return nil
	}
	_, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for _, id := range userIDs {
			pipe.HDel(ctx, p.key(id), p.cfg.HubID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: presence remove: %w", err)
	}
	return nil
}

// Online reports, for each of userIDs, whether some hub holds a live socket of the user.
func (p *Presence) Online(ctx context.Context, userIDs []int64) ([]bool, error) {
	out := make([]bool, len(userIDs))
	if len(userIDs) == 0 {
		return out, nil
	}
	cmds := make([]*goredis.StringSliceCmd, len(userIDs))
	_, err := p.rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for i, id := range userIDs {
			cmds[i] = pipe.HVals(ctx, p.key(id))
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("redis: presence: %w", err)
	}
	now := p.cfg.Now().UnixMilli()
	for i, cmd := range cmds {
		for _, v := range cmd.Val() {
			if until, err := strconv.ParseInt(v, 10, 64); err == nil && until > now {
				out[i] = true
				break
			}
		}
	}
	return out, nil
}
