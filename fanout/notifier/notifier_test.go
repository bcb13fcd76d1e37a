package notifier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/natstest"
	"github.com/livedrops/livedrops/fanout/notifier"
	"github.com/livedrops/livedrops/fanout/push"
	"github.com/livedrops/livedrops/fanout/push/fcm"
	"github.com/livedrops/livedrops/fanout/push/pushtest"
	"github.com/livedrops/livedrops/fanout/push/webpush"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// stack is a notifier on real PostgreSQL, Redis and NATS, with both providers' stand-ins.
type stack struct {
	t        *testing.T
	pool     *pgxpool.Pool
	nc       *nats.Conn
	pub      *jetstream.Publisher
	queue    *jetstream.PushQueue
	presence *redis.Presence
	fcm      *pushtest.FCM
	wp       *pushtest.WebPush
	reg      *prometheus.Registry
	metrics  *notifier.Metrics
	cfg      notifier.Config
	deps     notifier.Deps

	creator, drop int64
	nextUser      int64
	eventTS       map[string]time.Time
}

type options struct {
	fcmFaults, wpFaults pushtest.Faults
	cfg                 notifier.Config
}

func newStack(t *testing.T, o options) *stack {
	t.Helper()
	ctx := t.Context()
	s := &stack{t: t, nextUser: 1000, eventTS: map[string]time.Time{}}
	var err error
	if s.pool, err = postgres.Open(ctx, storetest.NewMigratedDatabase(t), postgres.PoolConfig{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.pool.Close)
	rdb, prefix := storetest.NewRedis(t)
	srv := natstest.Start(t)
	if s.nc, err = nats.Connect(srv.ClientURL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.nc.Close)
	if s.pub, err = jetstream.NewPublisher(s.nc, jetstream.PublisherConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := s.pub.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if s.queue, err = jetstream.NewPushQueue(s.nc, jetstream.PushQueueConfig{AckWait: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := s.queue.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if s.presence, err = redis.NewPresence(rdb, redis.PresenceConfig{HubID: "test-hub", Prefix: prefix}); err != nil {
		t.Fatal(err)
	}
	if err := s.presence.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if s.fcm, err = pushtest.StartFCM(pushtest.FCMConfig{Faults: o.fcmFaults, Keep: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.fcm.Close() })
	priv, pub, err := webpush.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	if s.wp, err = pushtest.StartWebPush(pushtest.WebPushConfig{VAPIDPublicKey: pub, Seed: []byte(t.Name()), Faults: o.wpFaults, Keep: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.wp.Close() })
	fcmSender, err := fcm.New(fcm.Config{CredentialsJSON: s.fcm.CredentialsJSON(), BaseURL: s.fcm.BaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	wpSender, err := webpush.New(webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: "mailto:ops@livedrops.example",
		Allow: func(ep string) bool { return strings.HasPrefix(ep, s.wp.Origin()+"/") }})
	if err != nil {
		t.Fatal(err)
	}
	s.reg = prometheus.NewRegistry()
	if s.metrics, err = notifier.NewMetrics(s.reg); err != nil {
		t.Fatal(err)
	}
	s.cfg = o.cfg
	s.cfg.Metrics = s.metrics
	if s.cfg.Backoff == 0 {
		s.cfg.Backoff = 50 * time.Millisecond
	}
	if s.cfg.Lease == 0 {
		s.cfg.Lease = 2 * time.Second
	}
	if s.cfg.PageSize == 0 {
		s.cfg.PageSize = 7 // several pages, and several splits, even for a few followers
		s.cfg.SplitPages = 2
	}
	s.cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s.deps = notifier.Deps{Queue: s.queue, Store: postgres.NewDevices(s.pool), Presence: s.presence,
		Dedupe: redis.NewPushDedupe(rdb, prefix),
		Limiter: redis.NewPushLimiter(rdb, redis.PushLimiterConfig{Prefix: prefix,
			Rates: map[push.Provider]int{push.FCM: 5000, push.WebPush: 5000}}),
		Senders: map[push.Provider]push.Sender{push.FCM: fcmSender, push.WebPush: wpSender}}

	// A creator with a live drop.
	s.exec(`INSERT INTO users (user_id, name, email) VALUES (1, 'Cleo', 'cleo@example.com')`)
	s.exec(`INSERT INTO creators (creator_id, profile_name) VALUES (1, 'Cleo')`)
	s.exec(`INSERT INTO products (product_id, creator_id, title, description, price_cents) VALUES (1, 1, 'Hoodie', '', 4900)`)
	s.exec(`INSERT INTO drops (drop_id, creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user, status)
VALUES (1, 1, 1, now(), now() + interval '1 hour', 100, 100, 1, 'live')`)
	s.creator, s.drop = 1, 1
	return s
}

// run starts a notifier (another worker) until the returned stop is called or the test ends.
func (s *stack) run(owner string) (stop func()) {
	s.t.Helper()
	cfg := s.cfg
	cfg.Owner = owner
	n, err := notifier.New(cfg, s.deps)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Run(ctx); err != nil {
			s.t.Errorf("notifier %s: %v", owner, err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				s.t.Errorf("notifier %s did not stop", owner)
			}
		})
	}
	s.t.Cleanup(stop)
	return stop
}

func (s *stack) exec(sql string, args ...any) {
	s.t.Helper()
	if _, err := s.pool.Exec(context.Background(), sql, args...); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

// follower is one follower of the creator and its device.
type follower struct {
	user   int64
	device int64
	kind   push.Provider
	token  string // FCM token or Web Push subscription id
}

// follower adds a follower, online or not, with one device of kind ("" for none).
func (s *stack) follower(online bool, kind push.Provider) follower {
	s.t.Helper()
	s.nextUser++
	f := follower{user: s.nextUser, kind: kind}
	s.exec(`INSERT INTO users (user_id, name, email) VALUES ($1, 'F', $2)`, f.user, fmt.Sprintf("f%d@example.com", f.user))
	s.exec(`INSERT INTO follows (creator_id, follower_id) VALUES ($1, $2)`, s.creator, f.user)
	switch kind {
	case push.FCM:
		f.token = "fcm-token-" + strconv.FormatInt(f.user, 10) + strings.Repeat("x", 40)
		if err := s.pool.QueryRow(context.Background(), `INSERT INTO devices (user_id, platform, token) VALUES ($1, 'fcm', $2) RETURNING device_id`,
			f.user, f.token).Scan(&f.device); err != nil {
			s.t.Fatal(err)
		}
	case push.WebPush:
		f.token = "u" + strconv.FormatInt(f.user, 10)
		sub, err := s.wp.Subscription(f.token)
		if err != nil {
			s.t.Fatal(err)
		}
		keys, _ := json.Marshal(map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth})
		if err := s.pool.QueryRow(context.Background(), `INSERT INTO devices (user_id, platform, token, subscription) VALUES ($1, 'webpush', $2, $3) RETURNING device_id`,
			f.user, sub.Endpoint, keys).Scan(&f.device); err != nil {
			s.t.Fatal(err)
		}
	}
	if online {
		if err := s.presence.Add(context.Background(), []int64{f.user}); err != nil {
			s.t.Fatal(err)
		}
	}
	return f
}

// start publishes drop.started of the stack's drop with event id id, as the relay does.
func (s *stack) start(id string) {
	s.t.Helper()
	s.eventTS[id] = time.Now()
	ev := fanout.Event{ID: id, Type: fanout.DropStarted, TS: s.eventTS[id], CreatorID: s.creator, DropID: s.drop, Data: json.RawMessage(`{}`)}
	if _, err := s.pub.Publish(context.Background(), []fanout.Event{ev}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) count(f follower, event string) int {
	if f.kind == push.FCM {
		return s.fcm.Count(f.token, event)
	}
	return s.wp.Count(f.token, event)
}

func (s *stack) deviceExists(id int64) bool {
	var n int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM devices WHERE device_id = $1`, id).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n == 1
}

func checkFor(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// idle waits until the work queue is empty.
func (s *stack) idle() {
	s.t.Helper()
	checkFor(s.t, 60*time.Second, func() error {
		n, err := s.queue.Pending(context.Background())
		if err != nil || n != 0 {
			return fmt.Errorf("%d jobs pending (%v)", n, err)
		}
		return nil
	})
}

func (s *stack) metric(name string, labels ...string) float64 {
	s.t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		s.t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			if m.Counter != nil {
				total += m.Counter.GetValue()
			} else if m.Gauge != nil {
				total += m.Gauge.GetValue()
			} else if m.Histogram != nil {
				total += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return total
}

func TestOfflineFollowersGetOnePushOnline(t *testing.T) {
	gone := map[string]bool{}
	faults := func(device string, _ int) pushtest.Fault {
		if gone[device] {
			return pushtest.Fault{Status: http.StatusGone, ErrorCode: "UNREGISTERED"}
		}
		return pushtest.Fault{}
	}
	s := newStack(t, options{fcmFaults: faults, wpFaults: faults})
	var offline, online, goneOnes []follower
	for i := range 30 {
		kind := push.FCM
		if i%2 == 1 {
			kind = push.WebPush
		}
		switch {
		case i%5 == 0:
			online = append(online, s.follower(true, kind))
		case i%7 == 3:
			f := s.follower(false, kind)
			gone[f.token] = true
			goneOnes = append(goneOnes, f)
		default:
			offline = append(offline, s.follower(false, kind))
		}
	}
	s.follower(false, "") // no device: nothing to do
	s.run("w1")
	s.start("ev-1")

	checkFor(t, 30*time.Second, func() error {
		for _, f := range offline {
			if s.count(f, "ev-1") != 1 {
				return fmt.Errorf("offline follower %d (%s) got %d pushes", f.user, f.kind, s.count(f, "ev-1"))
			}
		}
		for _, f := range goneOnes {
			if s.deviceExists(f.device) {
				return fmt.Errorf("gone device %d still there", f.device)
			}
		}
		return nil
	})
	s.idle()
	for _, f := range online {
		if n := s.count(f, "ev-1"); n != 0 {
			t.Errorf("online follower %d got %d pushes, want none (the socket has it)", f.user, n)
		}
		if !s.deviceExists(f.device) {
			t.Errorf("online follower %d lost its device", f.user)
		}
	}
	for _, st := range []pushtest.Stats{s.fcm.Stats(), s.wp.Stats()} {
		if st.Duplicates != 0 || st.Invalid != 0 {
			t.Errorf("stand-in stats %+v: want no duplicate and no protocol error", st)
		}
	}
	// What the devices received.
	var d pushtest.Delivery
	for _, x := range s.wp.Deliveries() {
		d = x
	}
	var p map[string]any
	if err := json.Unmarshal(d.Payload, &p); err != nil {
		t.Fatal(err)
	}
	if p["title"] != "Cleo is live: Hoodie" || p["url"] != "/#/drops/1" || p["tag"] != "drop-1" || p["event_id"] != "ev-1" ||
		p["body"] != "Hoodie, $49.00. Tap to shop before it sells out." || p["type"] != "drop.started" {
		t.Errorf("payload %s", d.Payload)
	}
	if d.TTL < 59*time.Minute || d.TTL > time.Hour || d.Topic != "drop-1" {
		t.Errorf("TTL %s topic %q: want the drop's remaining hour and its tag", d.TTL, d.Topic)
	}
	sent := s.metric("livedrops_push_sent_total")
	if int(sent) != len(offline) {
		t.Errorf("sent_total %v, want %d", sent, len(offline))
	}
	if got := s.metric("livedrops_push_skipped_online_total"); int(got) != len(online) {
		t.Errorf("skipped_online_total %v, want %d", got, len(online))
	}
	if got := s.metric("livedrops_push_devices_removed_total"); int(got) != len(goneOnes) {
		t.Errorf("devices_removed_total %v, want %d", got, len(goneOnes))
	}
	if got := s.metric("livedrops_push_lag_seconds"); int(got) != len(offline) {
		t.Errorf("lag observations %v, want %d", got, len(offline))
	}
	for _, name := range []string{"livedrops_push_failed_total", "livedrops_push_retried_total",
		"livedrops_push_dead_lettered_total", "livedrops_push_auth_failures_total", "livedrops_push_jobs_pending"} {
		if _, err := s.reg.Gather(); err != nil {
			t.Fatal(err)
		}
		found := false
		mfs, _ := s.reg.Gather()
		for _, mf := range mfs {
			found = found || mf.GetName() == name
		}
		if !found {
			t.Errorf("metric %s does not exist", name)
		}
	}

	// The same event again (a relay that republished past the stream's dedupe window, a job run twice):
	// nobody hears of it twice.
	jobs := s.metric("livedrops_push_pages_total")
	republish(t, s, "ev-1")
	checkFor(t, 30*time.Second, func() error {
		if s.metric("livedrops_push_pages_total") <= jobs {
			return fmt.Errorf("the pages did not run again")
		}
		return nil
	})
	s.idle()
	for _, f := range offline {
		if n := s.count(f, "ev-1"); n != 1 {
			t.Errorf("after redelivery follower %d has %d pushes, want 1", f.user, n)
		}
	}
	if got := s.metric("livedrops_push_deduplicated_total"); int(got) != len(offline) {
		t.Errorf("deduplicated_total %v, want %d", got, len(offline))
	}
}

// republish sends a page job of event id over every follower again, with another dedupe id, as a
// redelivery would (the same ids are dropped by the stream).
func republish(t *testing.T, s *stack, id string) {
	t.Helper()
	j := map[string]any{"kind": "page", "last": int64(1) << 53, "event_id": id, "type": "drop.started", "event_ts": s.eventTS[id], "drop_id": s.drop,
		"creator_id": s.creator, "title": "Cleo is live: Hoodie", "body": "b", "url": "/#/drops/1", "tag": "drop-1",
		"expires": time.Now().Add(time.Hour), "after": 0}
	b, _ := json.Marshal(j)
	if err := s.queue.PublishJobs(context.Background(), []string{"again-" + id}, [][]byte{b}); err != nil {
		t.Fatal(err)
	}
}

func TestTransientFailuresAreRetriedWithBackoff(t *testing.T) {
	var mu sync.Mutex
	first := map[string]time.Time{}
	var waited []time.Duration
	faults := func(device string, attempt int) pushtest.Fault {
		mu.Lock()
		defer mu.Unlock()
		if attempt == 1 {
			first[device] = time.Now()
		}
		if attempt <= 2 {
			return pushtest.Fault{Status: http.StatusServiceUnavailable, ErrorCode: "UNAVAILABLE", RetryAfter: "1"}
		}
		waited = append(waited, time.Since(first[device]))
		return pushtest.Fault{}
	}
	s := newStack(t, options{fcmFaults: faults, wpFaults: faults})
	fs := []follower{s.follower(false, push.FCM), s.follower(false, push.WebPush)}
	s.run("w1")
	s.start("ev-r")
	checkFor(t, 30*time.Second, func() error {
		for _, f := range fs {
			if s.count(f, "ev-r") != 1 {
				return fmt.Errorf("follower %d: %d pushes", f.user, s.count(f, "ev-r"))
			}
		}
		return nil
	})
	mu.Lock()
	for _, w := range waited {
		if w < 2*time.Second {
			t.Errorf("third attempt %s after the first; Retry-After 1 s twice means at least 2 s", w)
		}
	}
	mu.Unlock()
	if got := s.metric("livedrops_push_retried_total"); got != 4 {
		t.Errorf("retried_total %v, want 4", got)
	}
	if got := s.metric("livedrops_push_failed_total", "reason", "unavailable"); got != 4 {
		t.Errorf("failed_total{reason=unavailable} %v, want 4", got)
	}
}

func TestFailuresAreDeadLettered(t *testing.T) {
	faults := func(device string, _ int) pushtest.Fault {
		switch {
		case strings.HasPrefix(device, "fcm-"):
			return pushtest.Fault{Status: http.StatusBadRequest, ErrorCode: "INVALID_ARGUMENT"}
		default:
			return pushtest.Fault{Status: http.StatusInternalServerError}
		}
	}
	s := newStack(t, options{fcmFaults: faults, wpFaults: faults, cfg: notifier.Config{MaxAttempts: 3}})
	bad, down := s.follower(false, push.FCM), s.follower(false, push.WebPush)
	s.run("w1")
	s.start("ev-d")

	js, err := natsjs.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	dlq, err := js.Stream(context.Background(), jetstream.PushDLQStream)
	if err != nil {
		t.Fatal(err)
	}
	byReason := map[string]map[string]any{}
	checkFor(t, 30*time.Second, func() error {
		for _, subj := range []string{"push.dlq.fcm", "push.dlq.webpush"} {
			m, err := dlq.GetLastMsgForSubject(context.Background(), subj)
			if err != nil {
				return fmt.Errorf("%s: %v", subj, err)
			}
			var dl map[string]any
			if err := json.Unmarshal(m.Data, &dl); err != nil {
				return err
			}
			byReason[dl["reason"].(string)] = dl
		}
		return nil
	})
	inv, max := byReason["invalid_argument"], byReason["max_attempts"]
	if inv == nil || inv["device_id"] != float64(bad.device) || inv["event_id"] != "ev-d" || inv["attempts"] != 1.0 {
		t.Errorf("invalid argument parked as %v, want device %d after 1 attempt", inv, bad.device)
	}
	if max == nil || max["device_id"] != float64(down.device) || max["attempts"] != 3.0 || max["provider"] != "webpush" {
		t.Errorf("persistent 500 parked as %v, want device %d after 3 attempts", max, down.device)
	}
	s.idle()
	if !s.deviceExists(bad.device) || !s.deviceExists(down.device) {
		t.Error("a parked message removed its device; only gone devices are removed")
	}
	if got := s.metric("livedrops_push_dead_lettered_total"); got != 2 {
		t.Errorf("dead_lettered_total %v, want 2", got)
	}
	if got := s.fcm.Stats().Requests; got != 1 {
		t.Errorf("INVALID_ARGUMENT was sent %d times, want once (never retried)", got)
	}
}

func TestRefusedCredentialsPauseTheProvider(t *testing.T) {
	s := newStack(t, options{cfg: notifier.Config{AuthPause: 500 * time.Millisecond}})
	fs := []follower{s.follower(false, push.FCM), s.follower(false, push.FCM), s.follower(false, push.FCM)}
	stop := s.run("w1")
	s.start("ev-a0") // fetches an access token
	checkFor(t, 30*time.Second, func() error {
		if s.count(fs[0], "ev-a0") != 1 {
			return fmt.Errorf("not sent yet")
		}
		return nil
	})
	s.idle()
	stop()
	s.fcm.RevokeTokens(false) // the cached token is refused now: 401 once, then a new token works
	s.run("w2")
	s.start("ev-a1")
	checkFor(t, 30*time.Second, func() error {
		for _, f := range fs {
			if s.count(f, "ev-a1") != 1 {
				return fmt.Errorf("follower %d: %d pushes", f.user, s.count(f, "ev-a1"))
			}
		}
		return nil
	})
	if got := s.metric("livedrops_push_auth_failures_total", "provider", "fcm"); got < 1 {
		t.Errorf("auth_failures_total %v, want the refusal counted", got)
	}
	if got := s.metric("livedrops_push_dead_lettered_total"); got != 0 {
		t.Errorf("dead_lettered_total %v: an auth failure must not park the messages", got)
	}
}

// Two workers share the pages of one creator, and a job that another worker holds is waited for, not
// sent twice.
func TestWorkersShareTheCreator(t *testing.T) {
	s := newStack(t, options{fcmFaults: func(string, int) pushtest.Fault { return pushtest.Fault{Delay: 20 * time.Millisecond} }})
	var fs []follower
	for range 60 {
		fs = append(fs, s.follower(false, push.FCM))
	}
	s.run("w1")
	s.run("w2")
	s.start("ev-s")
	checkFor(t, 30*time.Second, func() error {
		for _, f := range fs {
			if n := s.count(f, "ev-s"); n != 1 {
				return fmt.Errorf("follower %d: %d pushes", f.user, n)
			}
		}
		return nil
	})
	s.idle()
	if st := s.fcm.Stats(); st.Duplicates != 0 || st.Accepted != int64(len(fs)) {
		t.Fatalf("stats %+v, want %d accepted, no duplicate", st, len(fs))
	}
}

// A follower who opens the app after the drop started, while the pushes are still being sent, is not
// pushed: presence is checked when the message is about to go, not when the event came.
func TestFollowerWhoComesOnlineMeanwhileIsSkipped(t *testing.T) {
	var first sync.Once
	firstSeen := make(chan struct{})
	release := make(chan struct{})
	faults := func(string, int) pushtest.Fault {
		first.Do(func() { close(firstSeen) })
		<-release // the first message is held until the others' users are online
		return pushtest.Fault{}
	}
	s := newStack(t, options{fcmFaults: faults, cfg: notifier.Config{Concurrency: 1, PageSize: 1, SplitPages: 10}})
	var fs []follower
	for range 5 {
		fs = append(fs, s.follower(false, push.FCM))
	}
	s.run("w1")
	s.start("ev-o")
	select {
	case <-firstSeen:
	case <-time.After(30 * time.Second):
		t.Fatal("no push was sent")
	}
	// One message is in flight; the other followers open the app now.
	var later []int64
	var sending follower
	for _, f := range fs {
		if s.count(f, "ev-o") == 0 {
			later = append(later, f.user)
		}
	}
	if err := s.presence.Add(context.Background(), later); err != nil {
		t.Fatal(err)
	}
	close(release)
	checkFor(t, 30*time.Second, func() error {
		n := 0
		for _, f := range fs {
			if c := s.count(f, "ev-o"); c > 0 {
				n += c
				sending = f
			}
		}
		if n != 1 {
			return fmt.Errorf("%d pushes accepted, want the one in flight", n)
		}
		return nil
	})
	s.idle()
	total := 0
	for _, f := range fs {
		total += s.count(f, "ev-o")
	}
	if total != 1 {
		t.Fatalf("%d pushes (one to user %d), want only the one in flight when the others came online", total, sending.user)
	}
	if got := s.metric("livedrops_push_skipped_online_total"); got != float64(len(fs)-1) {
		t.Errorf("skipped_online_total %v, want %d", got, len(fs)-1)
	}
}
