// Package notifier is the worker job that pushes a drop to the devices of every follower who has no
// open socket. It depends on small interfaces it declares; fanout/jetstream (the queues),
// store/postgres (followers and devices), store/redis (presence, dedupe, rate limits) and the provider
// packages (fanout/push/fcm, fanout/push/webpush) implement them, and cmd/livedrops wires them.
//
// # Flow
//
// A durable JetStream consumer reads the live events; one of the configured types (drop.started by
// default) becomes a split job on a work-queue stream. A split job cuts the creator's followers into
// pages (keyset ranges of follower ids, ends picked by one index scan in PostgreSQL, at most
// SplitPages pages per split job, then a continuation), and publishes one page job each: any number of
// workers share one celebrity's pages. A page job reads its follower ids, asks Redis in one batch which
// of them are online at that moment (not when the event was queued: a follower who connected meanwhile
// has the event on the socket), reads the devices of the rest, and queues them; senders (Concurrency
// per process) check each batch's presence once more just before sending, each provider within its
// rate limit.
//
// # Exactly once per (event, device)
//
// Before sending, a page claims each device for the event in Redis (SET NX with a lease); as soon as
// the provider's answer is final the pair is marked done (marks are written in batches within 2 ms),
// kept until an hour past the drop's end. A redelivered job (its worker died, or its ack was lost)
// skips the done pairs and waits out the lease of pairs another worker holds, so no device hears of
// one event twice, and a worker killed mid-job loses nothing: its job is redelivered after AckWait, and
// the pairs it had claimed but not finished are taken over when their lease ends. The one window left
// is a worker dying between the provider's acceptance and the done mark; then the device may be sent
// the message twice, which the per-drop collapse key / Topic turns into one notification on a device
// that was offline.
//
// # Answers
//
// Sent: counted, the lag from the event's ts observed. Gone: the device is deleted. Rejected: parked
// in the dead-letter stream with the reason, never retried. Retry: sent again after the provider's
// Retry-After or an exponential backoff with jitter, whichever is longer, up to MaxAttempts, then
// parked. AuthFailed: our credentials; the whole provider pauses (AuthPause) instead of every token
// retrying, the alert metric counts it, and the message is retried after the pause. A message whose
// drop has ended is dropped unsent (its TTL would be zero).
package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/push"
	"github.com/livedrops/livedrops/store"
)

// Queue carries the notifier's work (fanout/jetstream.PushQueue).
type Queue interface {
	// ConsumeEvents calls handle with every live event of the events stream from the durable
	// consumer's position, until ctx ends; a nil error acknowledges the event, an error redelivers it.
	ConsumeEvents(ctx context.Context, handle func(ctx context.Context, ev fanout.Event) error) error
	// ConsumeJobs calls handle with jobs of the work queue, up to concurrency at once, until ctx ends,
	// keeping each in progress while handle runs; a nil error removes the job, an error redelivers it.
	ConsumeJobs(ctx context.Context, concurrency int, handle func(ctx context.Context, data []byte) error) error
	// PublishJobs stores jobs (data[i] with dedupe id ids[i]: a second one within the window is dropped).
	PublishJobs(ctx context.Context, ids []string, data [][]byte) error
	// DeadLetter parks a message that will not be sent.
	DeadLetter(ctx context.Context, provider push.Provider, data []byte) error
	// Pending counts the jobs waiting or in progress.
	Pending(ctx context.Context) (uint64, error)
}

// Store reads followers and devices (store/postgres.Devices).
type Store interface {
	PageEnds(ctx context.Context, creatorID, after int64, pageSize, maxPages int) (ends []int64, more bool, err error)
	FollowerIDs(ctx context.Context, creatorID, after, last int64) ([]int64, error)
	UsersDevices(ctx context.Context, userIDs []int64) ([]push.Device, error)
	RemoveDevice(ctx context.Context, id int64, token string) (bool, error)
	PushDrop(ctx context.Context, dropID int64) (push.Drop, error)
}

// Presence tells which users have a socket open (store/redis.Presence).
type Presence interface {
	Online(ctx context.Context, userIDs []int64) ([]bool, error)
}

// Dedupe remembers which (event, device) pairs were handled (store/redis.PushDedupe).
type Dedupe interface {
	// Claim takes each pair of event and devices for owner for lease, unless done or held by another.
	Claim(ctx context.Context, eventID string, devices []int64, owner string, lease time.Duration) ([]push.Claim, error)
	// Extend keeps owner's claims for another lease.
	Extend(ctx context.Context, eventID string, devices []int64, owner string, lease time.Duration) error
	// Finish marks the pairs done for keep.
	Finish(ctx context.Context, eventID string, devices []int64, keep time.Duration) error
	// Release gives up owner's claims (a worker stopping), so another worker takes over at once.
	Release(ctx context.Context, eventID string, devices []int64, owner string) error
}

// Limiter spaces the requests of each provider (store/redis.PushLimiter, or a local one).
type Limiter interface {
	// Wait blocks until provider may be sent one more request, or ctx ends.
	Wait(ctx context.Context, provider push.Provider) error
}

// Config tunes the notifier. Zero values are the documented defaults.
type Config struct {
	// Types are the event types pushed; nil means drop.started. Each must be a creator event (sent to
	// the creator's followers).
	Types []fanout.Type
	// PageSize is the followers of one page job; 0 means 1,000.
	PageSize int
	// SplitPages is how many page jobs one split job makes before it hands on; 0 means 100.
	SplitPages int
	// Jobs is how many jobs one process holds at once; 0 means 1,000. A page job is held until every
	// device of it has a final answer, while its sends wait in the process's queue: enough pages are
	// held for the presence scan of a celebrity's followers to run well ahead of the sends.
	Jobs int
	// Concurrency is how many provider requests one process has in flight; 0 means 256.
	Concurrency int
	// MaxAttempts is how many answers one message gets before it is parked; 0 means 5.
	MaxAttempts int
	// Backoff is the first retry wait, doubled per attempt with jitter, at most MaxBackoff; 0 means 1 s.
	Backoff time.Duration
	// MaxBackoff bounds a wait; 0 means 5 min.
	MaxBackoff time.Duration
	// AuthPause is how long a provider pauses after it refused our credentials; 0 means 30 s.
	AuthPause time.Duration
	// Lease is how long a claimed (event, device) pair waits for its worker before another takes it;
	// 0 means 2 min.
	Lease time.Duration
	// Owner names this worker in claims; "" means a random id.
	Owner string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the log; nil discards it.
	Logger *slog.Logger
	// Metrics are updated when set.
	Metrics *Metrics
}

// Deps are what the notifier talks to; all but Limiter are required.
type Deps struct {
	Queue    Queue
	Store    Store
	Presence Presence
	Dedupe   Dedupe
	Limiter  Limiter
	Senders  map[push.Provider]push.Sender
}

// Notifier is the job; Run runs it.
type Notifier struct {
	cfg   Config
	d     Deps
	log   *slog.Logger
	m     *Metrics
	types map[fanout.Type]bool
	queue *sendQueue
	// marks carries finished tasks to the marker, which writes their done marks in batches.
	marks chan *task
	// sendersDone is closed when the senders have stopped and every done mark is written (Run's end).
	sendersDone chan struct{}

	mu     sync.Mutex
	paused map[push.Provider]time.Time // provider -> until (auth failures)
}

// New checks cfg and deps.
func New(cfg Config, d Deps) (*Notifier, error) {
	if d.Queue == nil || d.Store == nil || d.Presence == nil || d.Dedupe == nil || len(d.Senders) == 0 {
		return nil, errors.New("notifier: Queue, Store, Presence, Dedupe and at least one sender are required")
	}
	def := func(v *int, x int) {
		if *v <= 0 {
			*v = x
		}
	}
	def(&cfg.PageSize, 1000)
	def(&cfg.SplitPages, 100)
	def(&cfg.Jobs, 1000)
	def(&cfg.Concurrency, 256)
	def(&cfg.MaxAttempts, 5)
	defD := func(v *time.Duration, x time.Duration) {
		if *v <= 0 {
			*v = x
		}
	}
	defD(&cfg.Backoff, time.Second)
	defD(&cfg.MaxBackoff, 5*time.Minute)
	defD(&cfg.AuthPause, 30*time.Second)
	defD(&cfg.Lease, 2*time.Minute)
	if cfg.Types == nil {
		cfg.Types = []fanout.Type{fanout.DropStarted}
	}
	types := map[fanout.Type]bool{}
	for _, t := range cfg.Types {
		if !CreatorEvent(t) {
			return nil, fmt.Errorf("notifier: %q is not an event of a creator's drop; push types are %v", t, pushable)
		}
		types[t] = true
	}
	if cfg.Owner == "" {
		cfg.Owner = "w" + strconv.FormatUint(rand.Uint64(), 36)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := cfg.Metrics
	if m == nil {
		var err error
		if m, err = NewMetrics(prometheus.NewRegistry()); err != nil {
			return nil, err
		}
	}
	return &Notifier{cfg: cfg, d: d, log: log, m: m, types: types, queue: newSendQueue(), marks: make(chan *task, 4096), sendersDone: make(chan struct{}),
		paused: map[push.Provider]time.Time{}}, nil
}

var pushable = []fanout.Type{fanout.DropScheduled, fanout.DropStarted, fanout.StockLow, fanout.DropSoldOut, fanout.DropEnded}

// CreatorEvent reports whether t goes to a creator's followers, and so can be pushed.
func CreatorEvent(t fanout.Type) bool { return slices.Contains(pushable, t) }

// Run consumes events and jobs until ctx ends, then returns nil once the jobs in hand are released.
func (n *Notifier) Run(ctx context.Context) error {
	var senders sync.WaitGroup
	for range n.cfg.Concurrency {
		senders.Go(func() { n.sender(ctx) })
	}
	stopSenders := context.AfterFunc(ctx, n.queue.close)
	defer stopSenders()
	marked := make(chan struct{})
	go func() {
		defer close(marked)
		n.marker()
	}()
	go func() {
		senders.Wait()
		close(n.marks) // the senders are the only writers
		<-marked
		close(n.sendersDone)
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	run := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				n.log.Error("push: notifier part stopped", "part", name, "err", err)
				errs <- fmt.Errorf("notifier: %s: %w", name, err)
			}
		})
	}
	run("events", func(ctx context.Context) error { return n.d.Queue.ConsumeEvents(ctx, n.handleEvent) })
	run("jobs", func(ctx context.Context) error { return n.d.Queue.ConsumeJobs(ctx, n.cfg.Jobs, n.handleJob) })
	run("pending", n.watchPending)
	wg.Wait()
	<-n.sendersDone
	close(errs)
	return errors.Join(slices.Collect(func(yield func(error) bool) {
		for e := range errs {
			if !yield(e) {
				return
			}
		}
	})...)
}

func (n *Notifier) watchPending(ctx context.Context) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		if p, err := n.d.Queue.Pending(ctx); err == nil {
			n.m.pending.Set(float64(p))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// job is one unit of the work queue: a split (cut the followers after After into pages) or a page
// (send to the followers in (After, Last]).
type job struct {
	Kind      string    `json:"kind"` // "split" or "page"
	EventID   string    `json:"event_id"`
	Type      string    `json:"type"`
	EventTS   time.Time `json:"event_ts"`
	DropID    int64     `json:"drop_id"`
	CreatorID int64     `json:"creator_id"`
	Title     string    `json:"title"`
	Body      string    `json:"body"`
	URL       string    `json:"url"`
	Tag       string    `json:"tag"`
	Expires   time.Time `json:"expires"`
	After     int64     `json:"after"`
	Last      int64     `json:"last,omitempty"`
}

func (j *job) id() string {
	return j.EventID + ":" + j.Kind + ":" + strconv.FormatInt(j.After, 10)
}

func (j *job) notification() *push.Notification {
	return &push.Notification{EventID: j.EventID, Type: j.Type, DropID: j.DropID, CreatorID: j.CreatorID,
		Title: j.Title, Body: j.Body, URL: j.URL, Tag: j.Tag, Expires: j.Expires, EventTS: j.EventTS}
}

// handleEvent turns an event of a pushed type into the first split job.
func (n *Notifier) handleEvent(ctx context.Context, ev fanout.Event) error {
	if !n.types[ev.Type] || ev.DropID <= 0 {
		return nil
	}
	d, err := n.d.Store.PushDrop(ctx, ev.DropID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	now := n.cfg.Now()
	if !d.EndTime.After(now) || d.Over && ev.Type == fanout.DropStarted {
		n.log.Info("push: drop over, nothing to push", "drop_id", ev.DropID, "event_id", ev.ID, "type", ev.Type)
		return nil
	}
	title, body := Content(ev.Type, d)
	j := &job{Kind: "split", EventID: ev.ID, Type: string(ev.Type), EventTS: ev.TS, DropID: ev.DropID, CreatorID: ev.CreatorID,
		Title: title, Body: body, URL: "/#/drops/" + strconv.FormatInt(ev.DropID, 10),
		Tag: "drop-" + strconv.FormatInt(ev.DropID, 10), Expires: d.EndTime}
	n.log.Info("push: event", "event_id", ev.ID, "type", ev.Type, "drop_id", ev.DropID, "creator_id", ev.CreatorID)
	return n.publish(ctx, []*job{j})
}

// dedupeKey names the event in the dedupe store: its id and its time, so that event ids a fresh
// database hands out again (they are a sequence) never meet the marks of an older life.
func dedupeKey(n *push.Notification) string {
	return n.EventID + "." + strconv.FormatInt(n.EventTS.UnixMilli(), 36)
}

// Content is the title and body of a pushed event about drop d.
func Content(t fanout.Type, d push.Drop) (title, body string) {
	price := fmt.Sprintf("$%d.%02d", d.PriceCents/100, d.PriceCents%100)
	switch t {
	case fanout.DropScheduled:
		return d.CreatorName + " announced a drop", d.ProductTitle + ", " + price + ". We will tell you when it starts."
	case fanout.StockLow:
		return "Almost gone: " + d.ProductTitle, "The last units of " + d.CreatorName + "'s drop, " + price + "."
	case fanout.DropSoldOut:
		return "Sold out: " + d.ProductTitle, d.CreatorName + "'s drop sold out."
	case fanout.DropEnded:
		return "Drop ended: " + d.ProductTitle, d.CreatorName + "'s drop is over."
	}
	return d.CreatorName + " is live: " + d.ProductTitle, d.ProductTitle + ", " + price + ". Tap to shop before it sells out."
}

func (n *Notifier) publish(ctx context.Context, jobs []*job) error {
	ids := make([]string, len(jobs))
	data := make([][]byte, len(jobs))
	for i, j := range jobs {
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		ids[i], data[i] = j.id(), b
	}
	return n.d.Queue.PublishJobs(ctx, ids, data)
}

func (n *Notifier) handleJob(ctx context.Context, data []byte) error {
	var j job
	if err := json.Unmarshal(data, &j); err != nil || j.EventID == "" {
		n.log.Error("push: undecodable job dropped", "err", err, "job", string(data))
		return nil
	}
	if !j.Expires.After(n.cfg.Now()) {
		return nil // the drop ended: nothing of this job is worth sending any more
	}
	switch j.Kind {
	case "split":
		return n.split(ctx, &j)
	case "page":
		return n.page(ctx, &j)
	}
	n.log.Error("push: job of unknown kind dropped", "kind", j.Kind)
	return nil
}

// split publishes the page jobs of up to SplitPages pages after j.After, and a split job for the rest.
func (n *Notifier) split(ctx context.Context, j *job) error {
	ends, more, err := n.d.Store.PageEnds(ctx, j.CreatorID, j.After, n.cfg.PageSize, n.cfg.SplitPages)
	if err != nil {
		return err
	}
	jobs := make([]*job, 0, len(ends)+1)
	after := j.After
	for _, end := range ends {
		p := *j
		p.Kind, p.After, p.Last = "page", after, end
		jobs = append(jobs, &p)
		after = end
	}
	if more {
		s := *j
		s.After, s.Last = after, 0
		jobs = append(jobs, &s)
	}
	if len(jobs) == 0 {
		return nil
	}
	return n.publish(ctx, jobs)
}

// page sends to the offline followers of (j.After, j.Last]: their ids from the follows index, one
// presence check for all of them in Redis, and the devices of those offline only (at a drop's start
// most followers are on the page, and a presence check costs less than a device lookup).
func (n *Notifier) page(ctx context.Context, j *job) error {
	followers, err := n.d.Store.FollowerIDs(ctx, j.CreatorID, j.After, j.Last)
	if err != nil {
		return err
	}
	n.m.pages.Inc()
	if len(followers) == 0 {
		return nil
	}
	start := time.Now()
	online, err := n.d.Presence.Online(ctx, followers)
	n.m.presence.Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	away := followers[:0:0]
	for i, u := range followers {
		if online[i] {
			n.m.skipped.Inc()
			continue
		}
		away = append(away, u)
	}
	if len(away) == 0 {
		return nil
	}
	offline, err := n.d.Store.UsersDevices(ctx, away)
	if err != nil {
		return err
	}
	if len(offline) == 0 {
		return nil
	}
	notif := j.notification()
	keep := max(time.Until(j.Expires)+time.Hour, time.Hour)
	// One owner per run of this job: a copy of the job redelivered to this same worker while it still
	// runs (its wait in the prefetch buffer outlasted AckWait) finds the pairs busy, not its own.
	owner := n.cfg.Owner + ":" + strconv.FormatUint(rand.Uint64(), 36)
	for len(offline) > 0 {
		ids := make([]int64, len(offline))
		for i, d := range offline {
			ids[i] = d.ID
		}
		claims, err := n.d.Dedupe.Claim(ctx, dedupeKey(notif), ids, owner, n.cfg.Lease)
		if err != nil {
			return err
		}
		var mine, busy []push.Device
		for i, c := range claims {
			switch c {
			case push.Claimed:
				mine = append(mine, offline[i])
			case push.Done:
				n.m.deduplicated.Inc()
			default:
				busy = append(busy, offline[i])
			}
		}
		if err := n.sendAll(ctx, notif, mine, keep, owner); err != nil {
			return err
		}
		offline = busy
		if len(busy) > 0 {
			// Another worker holds these (a job redelivered while its first worker still runs, or one
			// that died): wait for its lease, then look again.
			if err := sleep(ctx, n.cfg.Lease/4+time.Duration(rand.Int64N(int64(time.Second)))); err != nil {
				return err
			}
		}
	}
	return nil
}

// backoff is the wait before retry number attempt: base·2^(attempt-1) with equal jitter, at most
// MaxBackoff, and never less than the provider's Retry-After.
func (n *Notifier) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := n.cfg.Backoff << min(attempt-1, 20)
	d = min(d, n.cfg.MaxBackoff)
	d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	return max(d, retryAfter)
}

func (n *Notifier) pause(p push.Provider, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	until := n.cfg.Now().Add(d)
	if until.After(n.paused[p]) {
		n.paused[p] = until
	}
}

// waitProvider waits out a pause of the provider, then its rate limit.
func (n *Notifier) waitProvider(ctx context.Context, p push.Provider) error {
	n.mu.Lock()
	until := n.paused[p]
	n.mu.Unlock()
	if wait := until.Sub(n.cfg.Now()); wait > 0 {
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
	if n.d.Limiter != nil {
		return n.d.Limiter.Wait(ctx, p)
	}
	return nil
}

// deadLetter is a message given up on, as the dead-letter stream keeps it.
type deadLetter struct {
	EventID   string    `json:"event_id"`
	Type      string    `json:"type"`
	DropID    int64     `json:"drop_id"`
	CreatorID int64     `json:"creator_id"`
	DeviceID  int64     `json:"device_id"`
	UserID    int64     `json:"user_id"`
	Provider  string    `json:"provider"`
	Reason    string    `json:"reason"`
	Attempts  int       `json:"attempts"`
	Error     string    `json:"error,omitempty"`
	At        time.Time `json:"at"`
}

func (n *Notifier) deadLetter(ctx context.Context, notif *push.Notification, d push.Device, reason string, attempts int, cause error) {
	dl := deadLetter{EventID: notif.EventID, Type: notif.Type, DropID: notif.DropID, CreatorID: notif.CreatorID,
		DeviceID: d.ID, UserID: d.UserID, Provider: string(d.Provider), Reason: reason, Attempts: attempts, At: n.cfg.Now().UTC()}
	if cause != nil {
		dl.Error = cause.Error()
	}
	b, _ := json.Marshal(dl)
	n.m.deadLettered.WithLabelValues(string(d.Provider), reason).Inc()
	if err := n.d.Queue.DeadLetter(context.WithoutCancel(ctx), d.Provider, b); err != nil {
		n.log.Error("push: dead-letter", "device_id", d.ID, "event_id", notif.EventID, "reason", reason, "err", err)
		return
	}
	n.log.Warn("push: dead-lettered", "device_id", d.ID, "event_id", notif.EventID, "provider", d.Provider,
		"reason", reason, "attempts", attempts, "err", cause)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
