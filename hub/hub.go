// Package hub is the real-time push server of LiveDrops: it holds the WebSocket (GET /ws) and
// Server-Sent Events (GET /events) connections of users and writes each live event to every local
// recipient. docs/protocol.md is the clients' reference; this comment is the map of the code.
//
// Setup (setup.go): a socket is set up inside a bounded stage (Config.MaxSetups at once); the first
// socket of a user hands the user to a loader that reads the follow lists of every user waiting in one
// call (the Redis cache, then one query), and one NATS round trip confirms the subscriptions of every
// socket waiting. A socket is greeted (hello) only once its subscriptions are in force at the server.
// After a connect burst the hub returns the burst's memory to the OS, and it collects garbage at quiet
// moments rather than during fan-outs.
//
// Interest (interest.go): a user's sockets on this hub share one entry that knows whom the user follows
// (loaded once, then kept current by follow.changed events). A sharded registry indexes users under the
// creators they follow and sockets under the drops they watch. The hub holds one NATS subscription per
// subject that at least one local socket needs (ld.user.<id>, ld.creator.<id>, ld.drop.<id>), reference
// counted; when most creators that publish have a local follower, one ld.creator.* subscription
// replaces the per-creator ones (and back, with hysteresis), without losing or doubling an event.
//
// Fan-out: an event is decoded once, its bytes are shared by every recipient (the WebSocket frame and the
// SSE record, each built once on first use), and the recipients are split into chunks that a few worker
// goroutines write in place, one write system call per socket; each socket belongs to one worker, so it
// gets its events in the stream's order (dispatch.go). Each socket has a bounded queue used only
// while it is busy; the hijacked connection never blocks a worker (transport.go): a socket whose kernel
// buffer is full gets a goroutine of its own until it catches up or stalls past Config.WriteTimeout.
// stock.changed is coalesced to the newest value per drop for a busy socket; any other event that does
// not fit closes the socket with CloseSlowReader, so its client resumes. Every drop and disconnect is
// counted. Keep-alive pings are frames like any other (keepalive.go).
//
// Gaps (gap.go): what is published while the hub's NATS connection is down or moving to another node
// never reaches its core subscriptions. After a reconnection the hub holds the live stream back, reads
// the gap from JetStream for every subject it holds and delivers it in order, each event once, then
// goes on live; if it cannot, it closes every socket with a reconnect code so that clients resume.
//
// Resume (resume.go): a socket that connects with ?since=<event id> (or Last-Event-ID) buffers its live
// events, replays from JetStream what it missed on its subjects (resumes arriving together share the
// reads), and then releases the buffer without the events the replay already sent: no gap and no
// duplicate, whichever hub the client lands on.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Verifier checks a bearer token and returns its user id (*auth.Tokens satisfies it). A Verifier that is
// also an ExpiringVerifier has its sockets closed when their token expires (expiry.go).
type Verifier interface {
	Verify(token string) (userID int64, err error)
}

// Follows lists whom users follow: for each of userIDs, every creator id the user follows (a user who
// follows nobody may be missing from the map). The hub asks for the users whose sockets arrive together
// at once (store/redis.FollowLists caches the lists, store/postgres.Hub reads them in one query).
type Follows interface {
	FollowLists(ctx context.Context, userIDs []int64) (map[int64][]int64, error)
}

// Drops names the creator of a drop; an unknown drop is an error wrapping store.ErrNotFound.
type Drops interface {
	DropCreator(ctx context.Context, dropID int64) (int64, error)
}

// Sequences maps an event id to the JetStream stream sequence its message got; an event the stream
// never got (unknown, pruned or not yet published) is an error wrapping store.ErrNotFound.
type Sequences interface {
	StreamSeq(ctx context.Context, eventID string) (uint64, error)
}

// Bus delivers live messages: deliver is called with each message published on subject until
// unsubscribe is called, one call at a time across every subscription, in the order the messages
// arrived (the order each socket gets its events in). Flush returns once every earlier Subscribe is in
// force at the server. A Bus may also count its reconnections (Reconnects() uint64) and tell whether it
// is connected (Connected() bool): the hub then refills from the stream what a reconnection lost
// (gap.go). (fanout/jetstream.Subscriber implements all of it over core NATS.)
type Bus interface {
	Subscribe(subject string, deliver func(subject string, data []byte)) (unsubscribe func() error, err error)
	Flush(ctx context.Context) error
}

// Replayer reads what a stream still holds. Replay calls fn, oldest first, once per message (its
// sequence, subject and data), with each message stored after stream sequence after on one of subjects,
// and with only the newest such message of each of newest, up to at least what was stored when Replay
// was called; complete is false when it
// cannot give everything: more than limit messages, or the message at after is no longer stored (the gap
// is older than the stream keeps).
type Replayer interface {
	Replay(ctx context.Context, after uint64, subjects, newest []string, limit int,
		fn func(seq uint64, subject string, data []byte)) (complete bool, err error)
}

// Presence records which users have a socket on this hub, for the push notifier: Add when a user's
// first socket arrives (and again every Config.PresenceRefresh), Remove when the last one leaves, and a
// Heartbeat every Config.PresenceHeartbeat that keeps the hub's claims alive; a hub that stops beating
// (it died) has its users read offline soon after (store/redis: 30 s).
type Presence interface {
	Add(ctx context.Context, userIDs []int64) error
	Remove(ctx context.Context, userIDs []int64) error
	Heartbeat(ctx context.Context) error
}

// Config tunes a Hub. Every zero value means the documented default.
type Config struct {
	// AllowedOrigins are host patterns (path.Match, e.g. "*.livedrops.example") of browser pages allowed
	// to connect besides the hub's own host; a pattern with "://" is matched against scheme://host.
	// Clients that send no Origin header (not browsers) are always allowed. Default: same origin only.
	AllowedOrigins []string
	// MaxSocketsPerUser caps one user's sockets on this hub. Default 16.
	MaxSocketsPerUser int
	// MaxWatches caps the drops one socket watches. Default 32.
	MaxWatches int
	// ReadLimit is the largest client frame in bytes. Default 1024.
	ReadLimit int64
	// FrameRate is how many frames a second a client may send on one WebSocket (its messages and
	// pings, a token bucket per socket), with bursts of FrameBurst; a socket over it is closed with
	// CloseTooManyFrames. Defaults 20 and 40; a negative FrameRate: no limit.
	FrameRate  float64
	FrameBurst int
	// NotFoundTTL is how long the hub remembers that a drop does not exist, so that watches of unknown
	// drops do not each cost a lookup. Default 2s.
	NotFoundTTL time.Duration
	// QueueLen is how many frames may wait for a busy socket before it is a slow reader. Default 256.
	QueueLen int
	// WriteTimeout is how long a socket whose kernel buffer is full may take nothing before it is closed
	// as a slow reader. Default 5s.
	WriteTimeout time.Duration
	// BacklogBytes caps the bytes of a frame a socket's kernel could not take at once. Default 64 KiB.
	BacklogBytes int
	// KeepAlive is the period of WebSocket pings and SSE comments. Default 25s.
	KeepAlive time.Duration
	// PongTimeout is how long a WebSocket ping may wait for its pong before the peer counts as dead.
	// Default 15s.
	PongTimeout time.Duration
	// Workers is the number of fan-out writers; each socket belongs to one of them (its events are
	// written in order). Default GOMAXPROCS, at most 256.
	Workers int
	// ChunkSize is how many recipients one worker writes as one batch. Default 128.
	ChunkSize int
	// Shards is the number of registry shards. Default 64.
	Shards int
	// ReplayWindow is how far back a resume reaches, announced in hello; the stream must keep at least
	// this much. Default 10m.
	ReplayWindow time.Duration
	// ReplayLimit is the most events one resume replays; a longer gap is answered recovered:false.
	// Default 1000.
	ReplayLimit int
	// MaxResumes is how many replay reads run at once; each serves every resume waiting when it starts
	// (up to ReplayBatch), so a reconnect storm queues for few reads of the stream (resume.go). Default 4.
	MaxResumes int
	// ReplayBatch is the most resumes one replay read serves. Default 256.
	ReplayBatch int
	// SetupTimeout bounds setting a socket up: waiting for the setup stage, loading follows, resuming.
	// Default 10s.
	SetupTimeout time.Duration
	// MaxSetups caps the sockets being set up at once (the setup stage, setup.go); more wait for a
	// place, at most AdmitTimeout, and are then closed with CloseServerError. Default 256.
	MaxSetups int
	// AdmitTimeout is how long a socket may wait for a place in the setup stage. Default SetupTimeout.
	AdmitTimeout time.Duration
	// SetupBatch is the most users whose follow lists one call to Follows reads. Default 256.
	SetupBatch int
	// SetupLoaders is how many follow-list batches are read at once. Default 2.
	SetupLoaders int
	// ReleaseAfter: once at least this many sockets were set up and none for a second, the hub forces a
	// garbage collection and returns the free memory to the operating system (debug.FreeOSMemory), so
	// a connect burst's garbage does not stay in the RSS (setup.go, releaseLoop). Default 1000;
	// negative: never.
	ReleaseAfter int
	// BurstGCPercent is the GOGC of the process while a connect burst lasts that fills the setup stage
	// (MaxSetups sockets in setup, others queueing: a reconnect storm), until a second without a setup:
	// the burst's heap only grows, so collections then cost much and free little; the process's own setting comes back after it, before the burst's
	// memory is returned (ReleaseAfter). GOGC is the process's: run one hub per process (the binary
	// does). Default 200; negative: GOGC is never changed.
	BurstGCPercent int
	// GCGrowth: when the heap has grown by this share of its live size since the last collection and
	// no event was fanned out for a second, the hub collects (runtime.GC) at that quiet moment rather
	// than in a later fan-out. Default 0.25; negative: never (GOGC alone decides).
	GCGrowth float64
	// DrainSpread is the span over which a draining hub spreads its clients' reconnect hints. Default 10s.
	DrainSpread time.Duration
	// PresenceHeartbeat is how often the hub tells the Presence store it is alive. Default 10s.
	PresenceHeartbeat time.Duration
	// PresenceRefresh is how often the hub adds all its users to the Presence store again, renewing their
	// records. Default 20m.
	PresenceRefresh time.Duration
	// RecentIDs is how many of the last event ids the hub remembers to drop a second publication of an
	// event (the relay publishes again after a failure; JetStream keeps one copy, live subscribers hear
	// both). Default 16384.
	RecentIDs int
	// RefillLimit is the most events a refill of a gap in the live stream reads (gap.go), and the most
	// live messages that may wait for it; past it every socket is closed so that its client resumes.
	// Default 20000.
	RefillLimit int
	// InterestCheck is how often the hub measures which share of the creators that published lately
	// has a local follower (Deps.Activity), to choose how it subscribes to creators. Default 30s.
	InterestCheck time.Duration
	// WildcardAbove is the share at or above which creator events come through one ld.creator.*
	// subscription; WildcardBelow the share at or below which they come through one subscription per
	// followed creator again (BENCHMARKS.md, Interest: the crossover is near one half). Defaults 0.5 and
	// two thirds of WildcardAbove (1/3).
	WildcardAbove, WildcardBelow float64
	// WildcardMinCreators is the fewest creators publishing lately for the wildcard: below it the hub
	// subscribes per creator (a handful of subscriptions either way). Default 100.
	WildcardMinCreators int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxSocketsPerUser, 16)
	def(&c.MaxWatches, 32)
	if c.ReadLimit <= 0 {
		c.ReadLimit = 1024
	}
	if c.FrameRate == 0 {
		c.FrameRate = 20
	}
	def(&c.FrameBurst, 40)
	defDur(&c.NotFoundTTL, 2*time.Second)
	def(&c.QueueLen, 256)
	defDur(&c.WriteTimeout, 5*time.Second)
	def(&c.BacklogBytes, 64<<10)
	defDur(&c.KeepAlive, 25*time.Second)
	defDur(&c.PongTimeout, 15*time.Second)
	def(&c.Workers, runtime.GOMAXPROCS(0))
	c.Workers = min(c.Workers, maxWorkers)
	def(&c.ChunkSize, 128)
	def(&c.Shards, 64)
	defDur(&c.ReplayWindow, 10*time.Minute)
	def(&c.ReplayLimit, 1000)
	def(&c.MaxResumes, 4)
	def(&c.ReplayBatch, 256)
	defDur(&c.SetupTimeout, 10*time.Second)
	defDur(&c.DrainSpread, 10*time.Second)
	def(&c.MaxSetups, 256)
	defDur(&c.AdmitTimeout, c.SetupTimeout)
	def(&c.SetupBatch, 256)
	def(&c.SetupLoaders, 2)
	if c.ReleaseAfter == 0 {
		c.ReleaseAfter = 1000
	}
	if c.GCGrowth == 0 {
		c.GCGrowth = 0.25
	}
	if c.BurstGCPercent == 0 {
		c.BurstGCPercent = 200
	}
	defDur(&c.PresenceHeartbeat, 10*time.Second)
	defDur(&c.PresenceRefresh, 20*time.Minute)
	def(&c.RecentIDs, 16384)
	def(&c.RefillLimit, 20000)
	defDur(&c.InterestCheck, 30*time.Second)
	if c.WildcardAbove <= 0 || c.WildcardAbove > 1 {
		c.WildcardAbove = 0.5
	}
	if c.WildcardBelow <= 0 || c.WildcardBelow >= c.WildcardAbove {
		c.WildcardBelow = c.WildcardAbove * 2 / 3
	}
	def(&c.WildcardMinCreators, 100)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Deps are the hub's collaborators. Logger, Verifier, Follows, Drops and Bus are required; without
// Sequences and Replayer every resume answers recovered:false; without Presence none is recorded;
// without Activity the hub always subscribes per creator; without Registerer no metrics are exported.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Verifier   Verifier
	Follows    Follows
	Drops      Drops
	Bus        Bus
	Sequences  Sequences
	Replayer   Replayer
	Presence   Presence
	Activity   Activity
}

// Hub is one hub node. Its ServeWS and ServeSSE handlers serve /ws and /events; Shutdown closes every
// socket and stops it.
type Hub struct {
	cfg Config
	d   Deps
	log *slog.Logger
	m   *metrics

	reg        *registry
	interest   *interest
	queues     []workerQueue // one per fan-out worker
	evSeq      atomic.Uint64
	connSeq    atomic.Uint64
	replays    chan *replayReq // resumes waiting for a replay read
	setups     chan struct{}   // semaphore of the setup stage
	setupsDone atomic.Uint64
	lastFanOut atomic.Int64 // unix ns of the last fan-out to many sockets
	burst      atomic.Bool  // a connect burst raised GOGC
	gcPercent  atomic.Int64 // the GOGC to restore after it
	loads      chan *user   // users whose follow list is to be read
	flushes    *flushGroup
	stage      stagePool // the setup stage's goroutines

	recent       *recentIDs // the last event ids delivered, to drop re-publications
	dropCreators sync.Map   // drop id -> creator id (a drop never changes creator)
	dropCacheN   counter
	dropMisses   sync.Map // drop id -> unix ns until which it is known not to exist
	dropMissN    counter
	dropLookups  singleflight.Group
	seqCache     *seqCache

	presence *presenceTracker
	gap      gapState
	expiries expiries

	draining atomic.Bool
	stop     chan struct{}
	bg       sync.WaitGroup // workers, keepalive, presence
	conns    sync.WaitGroup // every goroutine a socket owns
	stopOnce sync.Once
}

// New checks deps and starts a hub: its fan-out workers, keep-alive and presence loops.
func New(cfg Config, deps Deps) (*Hub, error) {
	switch {
	case deps.Logger == nil:
		return nil, errors.New("hub: Deps.Logger is required")
	case deps.Verifier == nil:
		return nil, errors.New("hub: Deps.Verifier is required")
	case deps.Follows == nil:
		return nil, errors.New("hub: Deps.Follows is required")
	case deps.Drops == nil:
		return nil, errors.New("hub: Deps.Drops is required")
	case deps.Bus == nil:
		return nil, errors.New("hub: Deps.Bus is required")
	}
	cfg = cfg.withDefaults()
	if _, err := matchOrigin("", "", cfg.AllowedOrigins); err != nil {
		return nil, fmt.Errorf("hub: AllowedOrigins: %w", err)
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry() // metrics kept, not exported
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	h := &Hub{
		cfg:      cfg,
		d:        deps,
		log:      deps.Logger,
		m:        m,
		reg:      newRegistry(cfg.Shards),
		queues:   make([]workerQueue, cfg.Workers),
		replays:  make(chan *replayReq, cfg.MaxSetups),
		setups:   make(chan struct{}, cfg.MaxSetups),
		loads:    make(chan *user, cfg.MaxSetups),
		stage:    stagePool{jobs: make(chan func())},
		flushes:  &flushGroup{bus: deps.Bus, timeout: cfg.SetupTimeout, m: m},
		seqCache: newSeqCache(4096),
		recent:   newRecentIDs(cfg.RecentIDs),
		stop:     make(chan struct{}),
	}
	h.interest = newInterest(cfg.Shards, deps.Bus, h.deliver, m)
	h.flushes.gen = &h.interest.gen
	h.gap.epoch.Store(h.flushes.busReconnects())
	h.presence = newPresenceTracker(h)
	for i := range h.queues {
		h.queues[i].jobs = make(chan job, 4096)
		h.bg.Add(1)
		go h.worker(&h.queues[i])
	}
	for range cfg.SetupLoaders {
		h.bg.Add(1)
		go h.loader()
	}
	for range cfg.MaxResumes {
		h.bg.Add(1)
		go h.replayer()
	}
	if deps.Activity != nil {
		h.bg.Add(1)
		go h.adaptLoop()
	}
	h.bg.Add(4)
	go h.releaseLoop()
	go h.expiryLoop()
	go h.keepAliveLoop()
	go h.presence.loop()
	return h, nil
}

// Shutdown drains the hub: new sockets are refused with CloseDraining, every open socket is closed with
// CloseDraining and a reconnect hint spread uniformly over Config.DrainSpread (SSE: the retry field),
// and Shutdown waits for them to be gone. When ctx ends first the rest are cut. Then it gives up its
// subscriptions, removes its users from presence and stops its goroutines. Safe to call twice.
func (h *Hub) Shutdown(ctx context.Context) error {
	var err error
	h.stopOnce.Do(func() { err = h.shutdown(ctx) })
	return err
}

func (h *Hub) shutdown(ctx context.Context) error {
	h.draining.Store(true)
	start := h.cfg.Now()
	conns := h.reg.allConns()
	sem := make(chan struct{}, 128) // close handshakes in flight, like Centrifugo
	for _, c := range conns {
		after := jitter(h.cfg.DrainSpread)
		c.closeWith(CloseDraining, drainReason(after), reasonDrain, sem)
	}
	done := make(chan struct{})
	go func() { h.conns.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		for _, c := range h.reg.allConns() {
			c.cut()
		}
		for _, c := range conns {
			c.cut()
		}
		<-done
		err = fmt.Errorf("hub: drain: %w", ctx.Err())
	}
	h.stage.mu.Lock()
	h.stage.stopped = true // before h.bg.Wait: no goroutine of the stage starts after it
	h.stage.mu.Unlock()
	close(h.stop)
	h.bg.Wait()
	h.flushes.wg.Wait()
	if h.burst.Load() {
		debug.SetGCPercent(int(h.gcPercent.Load()))
	}
	h.interest.releaseAll()
	h.log.Info("hub drained", "sockets", len(conns), "duration_ms", h.cfg.Now().Sub(start).Milliseconds())
	return err
}

// newConnID returns a process-unique, unguessable connection id.
func newConnID(seq uint64) string {
	return fmt.Sprintf("%x-%08x", seq, rand.Uint32())
}
