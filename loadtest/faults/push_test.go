package faults_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/push/pushtest"
	"github.com/livedrops/livedrops/fanout/push/webpush"
)

// The push leg (docs/push.md). The providers' stand-ins of fanout/push/pushtest run in the test
// process: FCM's HTTP v1 API with its OAuth2 token endpoint (the workers hold its service-account key)
// and a Web Push service that checks VAPID and decrypts every message with the keys of the
// subscription it issued. Both answer a share of requests 503 with Retry-After 1, as providers under
// load do, so pushes are retried. Both workers send to them; both apis accept their endpoints.
//
// Offline followers (users from offlineFirst: no socket, never any presence) follow two creators each
// as the clients' users do, and the celebrity (creator w.creators+1, followed by them alone); each has
// one device, FCM and Web Push in turn. A tenth of the clients' users have a device too: they are
// online, so the notifier must skip them. Every device is registered through the api
// (POST /users/{id}/devices).

const (
	offlineFirst    = 100_000 // user id of the first offline follower
	pushUnavailable = 0.02    // share of push requests the stand-ins answer 503
	onlineDeviceOne = 10      // one in this many of the clients' users has a device
	// The workers' LIVEDROPS_PUSH_ACK_WAIT and LIVEDROPS_PUSH_LEASE: a killed worker's pushes are taken
	// over within seconds instead of the defaults' 30 s and 2 minutes.
	pushAckWait = 3 * time.Second
	pushLease   = 5 * time.Second
	// overMargin: a drop whose drop.soldout (or drop.ended) was written before its drop.started was
	// published, or less than this after, may have been over when the notifier read the event (it then
	// pushes nothing, docs/push.md), so its push is checked all or nothing; every other drop.started
	// must reach every offline device.
	overMargin = 5 * time.Second
)

// pushTypes are the pushed event types (the workers' LIVEDROPS_PUSH_TYPES).
var pushTypes = []string{string(fanout.DropStarted)}

// pushStandins are the FCM and Web Push stand-ins and what they accepted.
type pushStandins struct {
	fcm                 *pushtest.FCM
	wp                  *pushtest.WebPush
	keyFile             string
	vapidPub, vapidPriv string
	random              pushtest.Faults

	mu  sync.Mutex
	got map[[2]string]int // (device, event id) -> acceptances

	// A hold answers the first holdAfter requests from its start as usual and holds every later one
	// holdFor before accepting it (a slow provider): pushes stay in flight.
	holding   atomic.Bool
	holdReqs  atomic.Int64
	holdAfter atomic.Int64
	holdFor   atomic.Int64
}

func startPush(t *testing.T, dir string) *pushStandins {
	t.Helper()
	p := &pushStandins{got: map[[2]string]int{}, random: pushtest.RandomFaults(pushUnavailable, 0)}
	var err error
	if p.vapidPriv, p.vapidPub, err = webpush.GenerateKeys(); err != nil {
		t.Fatal(err)
	}
	if p.fcm, err = pushtest.StartFCM(pushtest.FCMConfig{Faults: p.faults, OnAccept: p.accepted}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.fcm.Close() })
	if p.wp, err = pushtest.StartWebPush(pushtest.WebPushConfig{VAPIDPublicKey: p.vapidPub, Seed: []byte("faults"),
		Faults: p.faults, OnAccept: p.accepted}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.wp.Close() })
	p.keyFile = filepath.Join(dir, "fcm-service-account.json")
	if err := os.WriteFile(p.keyFile, p.fcm.CredentialsJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// workerEnv points a worker at the stand-ins.
func (p *pushStandins) workerEnv() []string {
	return []string{
		"LIVEDROPS_FCM_CREDENTIALS_FILE=" + p.keyFile,
		"LIVEDROPS_FCM_BASE_URL=" + p.fcm.BaseURL(),
		"LIVEDROPS_VAPID_PUBLIC_KEY=" + p.vapidPub,
		"LIVEDROPS_VAPID_PRIVATE_KEY=" + p.vapidPriv,
		"LIVEDROPS_WEBPUSH_ENDPOINTS=http://127.0.0.1:*",
		"LIVEDROPS_PUSH_TYPES=" + strings.Join(pushTypes, ","),
		"LIVEDROPS_PUSH_ACK_WAIT=" + pushAckWait.String(),
		"LIVEDROPS_PUSH_LEASE=" + pushLease.String(),
		"LIVEDROPS_PUSH_PAGE_SIZE=100", // a creator's followers are several pages, shared by both workers
	}
}

// apiEnv lets an api accept the Web Push stand-in's subscriptions.
func (p *pushStandins) apiEnv() []string {
	return []string{"LIVEDROPS_VAPID_PUBLIC_KEY=" + p.vapidPub, "LIVEDROPS_WEBPUSH_ENDPOINTS=http://127.0.0.1:*"}
}

func (p *pushStandins) faults(device string, attempt int) pushtest.Fault {
	if p.holding.Load() && p.holdReqs.Add(1) > p.holdAfter.Load() {
		return pushtest.Fault{Delay: time.Duration(p.holdFor.Load())}
	}
	return p.random(device, attempt)
}

// hold starts a hold: after requests answered as usual, every request waits d before its answer.
func (p *pushStandins) hold(after int, d time.Duration) {
	p.holdAfter.Store(int64(after))
	p.holdFor.Store(int64(d))
	p.holdReqs.Store(0)
	p.holding.Store(true)
}

// release ends the hold for the requests to come (those held wait out their delay).
func (p *pushStandins) release() { p.holding.Store(false) }

func (p *pushStandins) accepted(d pushtest.Delivery) {
	p.mu.Lock()
	p.got[[2]string{d.Device, d.EventID}]++
	p.mu.Unlock()
}

// ledger is a copy of what was accepted.
func (p *pushStandins) ledger() map[[2]string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[[2]string]int, len(p.got))
	for k, v := range p.got {
		out[k] = v
	}
	return out
}

// stats are both stand-ins' counters added up.
func (p *pushStandins) stats() pushtest.Stats {
	a, b := p.fcm.Stats(), p.wp.Stats()
	return pushtest.Stats{Requests: a.Requests + b.Requests, Accepted: a.Accepted + b.Accepted, Refused: a.Refused + b.Refused,
		Abandoned: a.Abandoned + b.Abandoned, Invalid: a.Invalid + b.Invalid, Duplicates: a.Duplicates + b.Duplicates,
		Pairs: a.Pairs + b.Pairs}
}

// pushWorld is who has a device.
type pushWorld struct {
	celebrity int64   // creator followed by the offline followers alone
	offline   []int64 // followers with no socket
	online    []int64 // clients' users with a device
}

// seedPush writes the celebrity (user, creator and product w.creators+1) and n offline followers, each
// following two of the world's creators (the formula of world.follows) and the celebrity, and mints
// their tokens.
func seedPush(t *testing.T, s *stack, w *world, n int) *pushWorld {
	t.Helper()
	ctx := context.Background()
	pw := &pushWorld{celebrity: int64(w.creators + 1)}
	if pw.celebrity >= firstFollower {
		t.Fatalf("celebrity id %d is a follower's", pw.celebrity)
	}
	last := int64(offlineFirst + n - 1)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO users (user_id, name, email) VALUES ($1, 'celebrity', 'celebrity@faults.test')`, []any{pw.celebrity}},
		{`INSERT INTO creators (creator_id, profile_name) VALUES ($1, 'celebrity shop')`, []any{pw.celebrity}},
		{`INSERT INTO products (product_id, creator_id, title, price_cents) VALUES ($1, $1, 'signed tee', 4900)`, []any{pw.celebrity}},
		{`INSERT INTO users (user_id, name, email)
			SELECT g, 'offline ' || g, 'o' || g || '@faults.test' FROM generate_series($1::bigint, $2::bigint) g`, []any{offlineFirst, last}},
		{`INSERT INTO follows (creator_id, follower_id)
			SELECT c, g FROM generate_series($1::bigint, $2::bigint) g,
			LATERAL (VALUES (g % $3 + 1), ((g + 1) % $3 + 1), ($4::bigint)) AS f (c)`, []any{offlineFirst, last, w.creators, pw.celebrity}},
		{`SELECT setval(pg_get_serial_sequence('users', 'user_id'), (SELECT max(user_id) FROM users))`, nil},
		{`SELECT setval(pg_get_serial_sequence('products', 'product_id'), (SELECT max(product_id) FROM products))`, nil},
		{`ANALYZE`, nil},
	} {
		if _, err := s.db.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	tokens, err := auth.New(auth.Config{Secret: []byte(jwtSecret)})
	if err != nil {
		t.Fatal(err)
	}
	for u := int64(offlineFirst); u <= last; u++ {
		pw.offline = append(pw.offline, u)
	}
	for _, u := range append([]int64{pw.celebrity}, pw.offline...) {
		if w.tokens[u], err = tokens.Mint(u, 6*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i, u := range w.followerIDs() {
		if i%onlineDeviceOne == 0 {
			pw.online = append(pw.online, u)
		}
	}
	return pw
}

// registerDevices gives every offline follower and a tenth of the clients' users one device through
// the api, FCM and Web Push in turn (each Web Push subscription with keys of its own, which the
// stand-in decrypts with).
func registerDevices(t *testing.T, s *stack, w *world, pw *pushWorld, l *load) {
	t.Helper()
	type reg struct {
		user int64
		fcm  bool
	}
	var regs []reg
	for i, u := range pw.offline {
		regs = append(regs, reg{u, i%2 == 0})
	}
	for i, u := range pw.online {
		regs = append(regs, reg{u, i%2 == 0})
	}
	work := make(chan reg)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			base := s.apis[g%len(s.apis)].base()
			for r := range work {
				if err := registerDevice(l, base, r.user, w.tokens[r.user], r.fcm, s.push); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, r := range regs {
		work <- r
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d device registrations failed, e.g. %v", len(errs), len(regs), errs[0])
	}
}

func registerDevice(l *load, base string, user int64, token string, isFCM bool, p *pushStandins) error {
	var body any
	if isFCM {
		body = map[string]any{"platform": "fcm", "token": fmt.Sprintf("faults-%d-APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx", user)}
	} else {
		sub, err := p.wp.Subscription(fmt.Sprintf("u%d", user))
		if err != nil {
			return err
		}
		body = map[string]any{"platform": "webpush", "subscription": map[string]any{"endpoint": sub.Endpoint,
			"expirationTime": nil, "keys": map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth}}}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	a := l.post(fmt.Sprintf("%s/users/%d/devices", base, user), token, string(b))
	if a.err != nil {
		return a.err
	}
	if a.status != http.StatusCreated {
		return fmt.Errorf("POST /users/%d/devices: %d %s", user, a.status, a.code)
	}
	return nil
}

// pushCheck is how the stand-ins' records compare with the database.
type pushCheck struct {
	events   int // pushed events (drop.started) since the sockets connected
	expected int // (offline device, event) pairs that must be accepted once
	pushed   int // of them accepted
	// missing: expected and never accepted; twice: accepted more than once; online: accepted for a
	// user with an open socket; unexpected: accepted for an event or device it was not for; partial:
	// events checked all or nothing (their drop was over about when the notifier read it) that
	// reached some offline devices and not others.
	missing, twice, online, unexpected, partial int
	invalid                                     int64 // requests the stand-ins refused as malformed (a sender's bug)
	problems                                    []string
}

func (c *pushCheck) example(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c pushCheck) String() string {
	return fmt.Sprintf("%d pushed events, %d (offline device, event) pairs expected, %d pushed: missing %d, twice %d, "+
		"to online users %d, unexpected %d, partly pushed events %d; requests refused as invalid %d",
		c.events, c.expected, c.pushed, c.missing, c.twice, c.online, c.unexpected, c.partial, c.invalid)
}

// pushEvent is a pushed event the outbox holds.
type pushEvent struct {
	id      string
	creator int64
	drop    int64
	maybe   bool // its drop was over about when it was published: all or nothing
}

// pushDevice is a registered device as the stand-ins name it (FCM token, Web Push subscription id).
type pushDevice struct {
	key    string
	user   int64
	online bool
}

// checkPushes compares, over every pushed event written since the sockets connected, the stand-ins'
// acceptances with the database (outbox, follows, devices): each offline device of a follower of the
// event's creator was accepted exactly once for it, no device of a user with an open socket was, and
// nothing else was accepted. It waits up to wait for pushes still missing.
func (r *run) checkPushes(ctx context.Context, wait time.Duration) pushCheck {
	t := r.t
	t.Helper()
	rows, err := r.s.db.Query(ctx, `SELECT event_id, subject, (payload->>'drop_id')::bigint, published_at FROM outbox
		WHERE id > $1 AND subject LIKE 'ld.creator.%' AND type = ANY($2) ORDER BY id`, r.fromRow, pushTypes)
	if err != nil {
		t.Fatal(err)
	}
	type rawEvent struct {
		pushEvent
		published *time.Time // nil while unpublished
	}
	var raw []rawEvent
	for rows.Next() {
		var e rawEvent
		var subject string
		if err := rows.Scan(&e.id, &subject, &e.drop, &e.published); err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Sscanf(subject, fanout.CreatorPrefix+"%d", &e.creator); err != nil {
			t.Fatalf("subject %q: %v", subject, err)
		}
		raw = append(raw, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	over := map[int64]time.Time{}
	rows, err = r.s.db.Query(ctx, `SELECT (payload->>'drop_id')::bigint, min(created_at) FROM outbox
		WHERE id > $1 AND type IN ('drop.soldout', 'drop.ended') GROUP BY 1`, r.fromRow)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var drop int64
		var at time.Time
		if err := rows.Scan(&drop, &at); err != nil {
			t.Fatal(err)
		}
		over[drop] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var events []pushEvent
	for _, e := range raw {
		if at, ok := over[e.drop]; ok && (e.published == nil || at.Before(e.published.Add(overMargin))) {
			e.maybe = true
		}
		events = append(events, e.pushEvent)
	}

	byCreator := map[int64][]pushDevice{}
	rows, err = r.s.db.Query(ctx, `SELECT f.creator_id, d.user_id, d.platform, d.token FROM devices d
		JOIN follows f ON f.follower_id = d.user_id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c int64
		var d pushDevice
		var platform string
		if err := rows.Scan(&c, &d.user, &platform, &d.key); err != nil {
			t.Fatal(err)
		}
		if platform == "webpush" { // the endpoint <origin>/push/<subscription id>
			d.key = d.key[strings.LastIndexByte(d.key, '/')+1:]
		}
		d.online = d.user >= firstFollower && d.user < firstFollower+int64(r.w.followers)
		byCreator[c] = append(byCreator[c], d)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(wait)
	for {
		c := comparePushes(events, byCreator, r.s.push.ledger())
		c.invalid = r.s.push.stats().Invalid
		if c.invalid > 0 {
			c.example("the stand-ins refused %d requests as invalid (bad auth, body or encryption)", c.invalid)
		}
		if c.missing == 0 && c.partial == 0 || time.Now().After(deadline) {
			return c
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func comparePushes(events []pushEvent, byCreator map[int64][]pushDevice, got map[[2]string]int) pushCheck {
	c := pushCheck{events: len(events)}
	known := map[[2]string]bool{}
	for _, e := range events {
		var offline, reached int
		for _, d := range byCreator[e.creator] {
			k := [2]string{d.key, e.id}
			known[k] = true
			n := got[k]
			if d.online {
				if n > 0 {
					c.online++
					c.example("user %d, online, was pushed event %s (drop %d) %d times", d.user, e.id, e.drop, n)
				}
				continue
			}
			offline++
			if n > 0 {
				reached++
			}
			if n > 1 {
				c.twice++
				c.example("device %s of user %d was pushed event %s (drop %d) %d times", d.key, d.user, e.id, e.drop, n)
			}
			if !e.maybe {
				c.expected++
				if n == 0 {
					c.missing++
					c.example("device %s of user %d (offline) was not pushed event %s (drop %d)", d.key, d.user, e.id, e.drop)
				} else {
					c.pushed++
				}
			}
		}
		if e.maybe && reached > 0 && reached < offline {
			c.partial++
			c.example("event %s (drop %d, over about when it was published) reached %d of %d offline devices", e.id, e.drop, reached, offline)
		}
	}
	var extra []string
	for k, n := range got {
		if !known[k] {
			c.unexpected += n
			extra = append(extra, fmt.Sprintf("device %s was pushed event %s, not one it should hear of", k[0], k[1]))
		}
	}
	slices.Sort(extra)
	c.problems = append(c.problems, extra...)
	return c
}

// pushFigures are a phase's push counters: accepted, answered 503, given up by the client (its worker
// died during a held answer).
func pushFigures(now, before pushtest.Stats) string {
	return fmt.Sprintf("push_accepted=%d push_503=%d push_abandoned=%d", now.Accepted-before.Accepted,
		now.Refused-before.Refused, now.Abandoned-before.Abandoned)
}

// dropStartedEvent waits for the drop.started of drop in the outbox and returns its event id.
func (r *run) dropStartedEvent(drop int64, wait time.Duration) string {
	r.t.Helper()
	var id string
	checkFor(r.t, wait, 100*time.Millisecond, func() error {
		err := r.s.db.QueryRow(context.Background(), `SELECT event_id FROM outbox
			WHERE type = 'drop.started' AND subject = $1 AND (payload->>'drop_id')::bigint = $2`,
			fanout.CreatorSubject(r.pw.celebrity), drop).Scan(&id)
		if err != nil {
			return fmt.Errorf("drop.started of drop %d: %w", drop, err)
		}
		return nil
	})
	return id
}

// pushHoldAfter is how many push requests the stand-ins answer before they hold every later one.
const pushHoldAfter = 40

// workerKillMidPush SIGKILLs a worker while its pushes are in flight. A drop of the celebrity (only
// offline followers follow it) starts; the stand-ins answer the first pushHoldAfter requests and hold
// every later one 4 s (a slow provider), so pushes stay in flight with none being accepted; the worker
// with pushes in flight (the relay's leader if it has some: mid-relay and mid-push) is SIGKILLed, the
// hold lifted and the worker started again. Its page jobs come back after LIVEDROPS_PUSH_ACK_WAIT and
// its claims are taken over when LIVEDROPS_PUSH_LEASE ends: every device must get the push once.
func (r *run) workerKillMidPush(ph *phase) {
	t := r.t
	ps := r.s.push
	// The phase's hot drops are pushed first (the phase's check reports what is not): what is held is
	// the celebrity's push alone.
	r.checkPushes(context.Background(), 30*time.Second)
	before := ps.stats()
	ps.hold(pushHoldAfter, 4*time.Second)
	defer ps.release()
	drop := r.l.createDrop(r.pw.celebrity, time.Now().Add(time.Second), 100, 1)
	var victim *role
	var inFlight, leads float64
	checkFor(t, 45*time.Second, 50*time.Millisecond, func() error {
		st := ps.stats()
		if answered := st.Accepted + st.Refused - before.Accepted - before.Refused; answered < pushHoldAfter {
			return fmt.Errorf("%d push requests answered since drop %d was created, waiting for %d", answered, drop, pushHoldAfter)
		}
		victim, inFlight, leads = nil, 0, 0
		for _, w := range r.s.workers {
			n, err := w.metric("livedrops_push_in_flight")
			if err != nil || n == 0 {
				continue
			}
			l, _ := w.metric("livedrops_relay_leader")
			if victim == nil || l == 1 && leads == 0 || l == leads && n > inFlight {
				victim, inFlight, leads = w, n, l
			}
		}
		if victim == nil {
			return errors.New("no worker has a push in flight")
		}
		return nil
	})
	answered := ps.stats()
	dedupBefore := r.pushDeduplicated(victim)
	victim.kill()
	killedAt := time.Now()
	ps.release()
	ph.note("killed %s with %.0f pushes in flight (relay leader: %v) after %d accepted", victim.name, inFlight, leads == 1,
		answered.Accepted-before.Accepted)
	victim.start()
	victim.waitReady(t, time.Minute)
	ev := r.dropStartedEvent(drop, 30*time.Second)
	checkFor(t, time.Minute, 200*time.Millisecond, func() error {
		got := ps.ledger()
		n := 0
		for k := range got {
			if k[1] == ev {
				n++
			}
		}
		if n < len(r.pw.offline) {
			return fmt.Errorf("%d of the celebrity's %d devices pushed event %s", n, len(r.pw.offline), ev)
		}
		return nil
	})
	ph.note("every one of the celebrity's %d devices pushed %.1fs after the kill; %d held answers abandoned by the killed worker; "+
		"%.0f devices skipped as done since the kill (redelivered pages)", len(r.pw.offline), time.Since(killedAt).Seconds(),
		ps.stats().Abandoned-before.Abandoned, r.pushDeduplicated(nil)-dedupBefore)
	ph.recoveredAt = time.Now()
}

// pushDeduplicated sums livedrops_push_deduplicated_total over the workers but except (whose count
// restarts with the process).
func (r *run) pushDeduplicated(except *role) float64 {
	var sum float64
	for _, w := range r.s.workers {
		if w == except {
			continue
		}
		if v, err := w.metric("livedrops_push_deduplicated_total"); err == nil {
			sum += v
		}
	}
	return sum
}

// The push check finds each kind of fault it is there for (the fault test proper runs it against the
// stand-ins; this is the check alone, on made-up records).
func TestComparePushes(t *testing.T) {
	events := []pushEvent{{id: "10", creator: 1, drop: 7}, {id: "11", creator: 2, drop: 8, maybe: true}}
	byCreator := map[int64][]pushDevice{
		1: {{key: "a", user: offlineFirst}, {key: "b", user: offlineFirst + 1}, {key: "on", user: firstFollower, online: true}},
		2: {{key: "a", user: offlineFirst}, {key: "c", user: offlineFirst + 2}},
	}
	for _, tc := range []struct {
		name string
		got  map[[2]string]int
		want pushCheck // the counters only
	}{
		{"all once, the all-or-nothing event to none", map[[2]string]int{{"a", "10"}: 1, {"b", "10"}: 1},
			pushCheck{events: 2, expected: 2, pushed: 2}},
		{"all once, the all-or-nothing event to all", map[[2]string]int{{"a", "10"}: 1, {"b", "10"}: 1, {"a", "11"}: 1, {"c", "11"}: 1},
			pushCheck{events: 2, expected: 2, pushed: 2}},
		{"one missing", map[[2]string]int{{"a", "10"}: 1},
			pushCheck{events: 2, expected: 2, pushed: 1, missing: 1}},
		{"one twice", map[[2]string]int{{"a", "10"}: 2, {"b", "10"}: 1},
			pushCheck{events: 2, expected: 2, pushed: 2, twice: 1}},
		{"an online user pushed", map[[2]string]int{{"a", "10"}: 1, {"b", "10"}: 1, {"on", "10"}: 1},
			pushCheck{events: 2, expected: 2, pushed: 2, online: 1}},
		{"a push for another creator's event", map[[2]string]int{{"a", "10"}: 1, {"b", "10"}: 1, {"b", "11"}: 1, {"a", "99"}: 1},
			pushCheck{events: 2, expected: 2, pushed: 2, unexpected: 2}},
		{"the all-or-nothing event to some", map[[2]string]int{{"a", "10"}: 1, {"b", "10"}: 1, {"c", "11"}: 1},
			pushCheck{events: 2, expected: 2, pushed: 2, partial: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := comparePushes(events, byCreator, tc.got)
			problems := len(c.problems)
			c.problems = nil
			if c.String() != tc.want.String() {
				t.Errorf("got %s, want %s", c, tc.want)
			}
			faults := tc.want.missing + tc.want.twice + tc.want.online + tc.want.unexpected + tc.want.partial
			if (problems == 0) != (faults == 0) {
				t.Errorf("%d problems listed for %d faults", problems, faults)
			}
		})
	}
}
