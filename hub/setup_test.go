package hub_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/hub"
)

// gatedFollows is the real follow-list query held at a gate until the test opens it, counting calls and
// the largest number of sockets in setup seen meanwhile.
type gatedFollows struct {
	hub.Follows
	gate  chan struct{}
	calls atomic.Int64
	users atomic.Int64
}

func (g *gatedFollows) FollowLists(ctx context.Context, ids []int64) (map[int64][]int64, error) {
	g.calls.Add(1)
	g.users.Add(int64(len(ids)))
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Follows.FollowLists(ctx, ids)
}

// Sockets arriving together share one follow-list read and few NATS confirmations, at most MaxSetups are
// in setup at once, and each is greeted only once its subscriptions are in force: the event published
// right after the last hello reaches every socket.
func TestSetupStageBatchesAndBounds(t *testing.T) {
	e := newEnv(t)
	const users = 40
	e.users(1)
	e.creators(1)
	e.drop(100, 1)
	for u := int64(2); u < 2+users; u++ {
		e.users(u)
		e.follow(u, 1)
	}
	gated := func(cfg hub.Config) (*node, *gatedFollows) {
		follows := &gatedFollows{gate: make(chan struct{})}
		n := e.startHubWith(cfg, func(d *hub.Deps) {
			follows.Follows = d.Follows
			d.Follows = follows
		})
		return n, follows
	}
	dialAll := func(n *node) []*client {
		var wg sync.WaitGroup
		clients := make([]*client, users)
		for i := range users {
			wg.Go(func() { clients[i] = n.dialWS(int64(2+i), dialOpts{}) })
		}
		wg.Wait()
		return clients
	}

	// Batching: every socket is in the stage while the store holds the first read; the users that came
	// after it wait for the loader together and are read in one call.
	n, follows := gated(hub.Config{MaxSetups: 64, SetupLoaders: 1})
	clients := dialAll(n)
	waitFor(t, "every user in the first read or waiting for the loader", func() bool {
		return float64(follows.users.Load())+n.metric("livedrops_hub_follow_loads_waiting") == users
	})
	close(follows.gate)
	for _, c := range clients {
		c.hello()
	}
	ev := e.publish(creatorEvent(fanout.DropStarted, 1, 100))
	for _, c := range clients {
		c.expect(ev)
	}
	if got := follows.users.Load(); got != users {
		t.Errorf("users read: %d, want %d (each once)", got, users)
	}
	if calls := follows.calls.Load(); calls != 2 {
		t.Errorf("%d follow-list reads for %d users arriving together, want 2 (the first, then the rest)", calls, users)
	}
	// One confirmation before each read and one for the creator's subject (the users' own are covered).
	if got := n.metric("livedrops_hub_confirmations_total"); got > 3 {
		t.Errorf("%v confirmations for %d sockets arriving together, want at most 3", got, users)
	}
	if got, want := n.histSum("livedrops_hub_follow_load_batch_users"), float64(users); got != want {
		t.Errorf("users over the load batches: %v, want %v", got, want)
	}
	if got := n.metric("livedrops_hub_setup_goroutines"); got < 1 || got > users {
		t.Errorf("goroutines of the setup stage: %v, want 1 to %d (one per socket in setup at most)", got, users)
	}
	for _, c := range clients {
		c.close()
	}

	// Bound: the stage fills up to MaxSetups and no further while the store holds the reads.
	n, follows = gated(hub.Config{MaxSetups: 16, SetupLoaders: 1})
	var wg sync.WaitGroup
	wg.Go(func() { clients = dialAll(n) })
	waitFor(t, "setup stage full", func() bool { return n.metric("livedrops_hub_setups_in_progress") == 16 })
	time.Sleep(100 * time.Millisecond)
	if got := n.metric("livedrops_hub_setups_in_progress"); got != 16 {
		t.Fatalf("sockets in setup: %v, want the bound 16", got)
	}
	close(follows.gate)
	wg.Wait()
	for _, c := range clients {
		c.hello()
	}
	if got := n.metric("livedrops_hub_setups_in_progress"); got != 0 {
		t.Errorf("sockets in setup after the hellos: %v, want 0", got)
	}
	// The setups ran on at most as many goroutines as the stage has places; idle through a second
	// without a setup, they end.
	if got := n.metric("livedrops_hub_setup_goroutines"); got < 1 || got > 16 {
		t.Errorf("goroutines of the setup stage: %v, want 1 to 16 (its places)", got)
	}
	waitFor(t, "the stage's idle goroutines ended", func() bool { return n.metric("livedrops_hub_setup_goroutines") == 0 })
}

// A socket that finds no place in the setup stage within AdmitTimeout is closed with 4002 (reconnect);
// the one in the stage is greeted once its follow list arrives; one whose list cannot be read within
// SetupTimeout is closed with 4002 too.
func TestSetupStageFullRefuses(t *testing.T) {
	e := newEnv(t)
	e.users(1, 2, 3)
	follows := &gatedFollows{gate: make(chan struct{})}
	n := e.startHubWith(hub.Config{MaxSetups: 1, AdmitTimeout: 200 * time.Millisecond, SetupTimeout: time.Minute},
		func(d *hub.Deps) {
			follows.Follows = d.Follows
			d.Follows = follows
		})
	first := n.dialWS(1, dialOpts{})
	waitFor(t, "first socket in setup", func() bool { return n.metric("livedrops_hub_setups_in_progress") == 1 })
	second := n.dialWS(2, dialOpts{})
	if code, _ := second.closed(); int(code) != hub.CloseServerError {
		t.Errorf("close code %d, want %d", code, hub.CloseServerError)
	}
	if got := n.metric("livedrops_hub_refused_total", "reason", "busy"); got != 1 {
		t.Errorf("refused busy: %v, want 1", got)
	}
	close(follows.gate)
	first.hello()

	short := e.startHubWith(hub.Config{SetupTimeout: 300 * time.Millisecond}, func(d *hub.Deps) {
		d.Follows = &gatedFollows{Follows: d.Follows, gate: make(chan struct{})}
	})
	if code, _ := short.dialWS(3, dialOpts{}).closed(); int(code) != hub.CloseServerError {
		t.Errorf("close code %d, want %d", code, hub.CloseServerError)
	}
	if got := short.metric("livedrops_hub_disconnects_total", "reason", "setup_error"); got != 1 {
		t.Errorf("setup errors: %v, want 1", got)
	}
}
