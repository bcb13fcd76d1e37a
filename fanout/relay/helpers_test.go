package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/natslocal"
	"github.com/livedrops/livedrops/fanout/relay"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// leakCheck fails the test if it leaves goroutines behind. Call it first: its check then runs after
// every other cleanup.
func leakCheck(tb testing.TB) {
	tb.Helper()
	ignore := goleak.IgnoreCurrent()
	tb.Cleanup(func() { goleak.VerifyNone(tb, ignore) })
}

// checkFor polls f until it returns nil or wait passes, then fails with f's last error.
func checkFor(tb testing.TB, wait, every time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(wait)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: %v", wait, err)
		}
		time.Sleep(every)
	}
}

func testLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", tb.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// natsServer is an embedded NATS that a test can stop and start again on the same store and port.
type natsServer struct {
	tb   testing.TB
	dir  string
	port int
	mu   sync.Mutex
	s    *natslocal.Server
}

func startNATS(tb testing.TB) *natsServer {
	tb.Helper()
	n := &natsServer{tb: tb, dir: tb.TempDir()}
	n.start()
	u, err := url.Parse(n.s.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	if n.port, err = strconv.Atoi(u.Port()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(n.stop)
	return n
}

func (n *natsServer) start() {
	n.tb.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	s, err := natslocal.Start(testContext(n.tb), natslocal.Config{Dir: n.dir, Port: n.port})
	if err != nil {
		n.tb.Fatalf("start NATS: %v", err)
	}
	n.s = s
}

func (n *natsServer) stop() {
	n.tb.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.s.Stop(ctx); err != nil {
		n.tb.Errorf("stop NATS: %v", err)
	}
	n.s = nil
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// env is a database, a NATS server, and what a relay needs of them.
type env struct {
	tb     testing.TB
	pool   *pgxpool.Pool
	nats   *natsServer
	nc     *nats.Conn
	pub    *jetstream.Publisher
	outbox *postgres.Outbox
}

func newEnv(tb testing.TB, stream jetstream.StreamConfig) *env {
	tb.Helper()
	ctx := testContext(tb)
	pool, err := postgres.Open(ctx, storetest.NewMigratedDatabase(tb), postgres.PoolConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	e := &env{tb: tb, pool: pool, nats: startNATS(tb), outbox: postgres.NewOutbox(pool)}
	if e.nc, err = jetstream.Connect(ctx, e.nats.url(), "relay-test", testLogger(tb)); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.nc.Close)
	if e.pub, err = jetstream.NewPublisher(e.nc, jetstream.PublisherConfig{Stream: stream, AckTimeout: 2 * time.Second}); err != nil {
		tb.Fatal(err)
	}
	return e
}

// relayConfig is fast enough for tests.
func relayConfig(tb testing.TB, m *relay.Metrics) relay.Config {
	return relay.Config{PollInterval: 50 * time.Millisecond, Logger: testLogger(tb), Metrics: m, BatchSize: 50}
}

func newLeader(e *env) *postgres.Leader {
	return postgres.NewLeader(e.pool, "relay", postgres.LeaderConfig{RetryInterval: 50 * time.Millisecond,
		CheckInterval: 100 * time.Millisecond})
}

// running is a relay (or scheduler) run in the background until stop.
type running struct {
	cancel  context.CancelFunc
	done    chan error
	stopped sync.Once
}

func (r *running) stop(tb testing.TB) {
	tb.Helper()
	r.stopped.Do(func() { r.wait(tb) })
}

func (r *running) wait(tb testing.TB) {
	tb.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			tb.Errorf("Run: got %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		var buf strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		tb.Fatalf("Run did not return within 30 s of its context's end; goroutines:\n%s", buf.String())
	}
}

func start(tb testing.TB, run func(context.Context) error) *running {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx) }()
	tb.Cleanup(func() { r.stop(tb) })
	return r
}

// runRelay starts a relay on e's outbox (through wrap, when given) and stream.
func (e *env) runRelay(cfg relay.Config, wrap func(relay.Outbox) relay.Outbox) *running {
	e.tb.Helper()
	var ob relay.Outbox = e.outbox
	if wrap != nil {
		ob = wrap(ob)
	}
	r, err := relay.New(ob, e.pub, newLeader(e), cfg)
	if err != nil {
		e.tb.Fatal(err)
	}
	return start(e.tb, r.Run)
}

// insert writes events in one transaction, as the stores do.
func (e *env) insert(events ...fanout.Event) {
	e.tb.Helper()
	if err := postgres.InsertEvents(testContext(e.tb), e.pool, events...); err != nil {
		e.tb.Fatal(err)
	}
}

func (e *env) count(sql string, args ...any) int64 {
	e.tb.Helper()
	var n int64
	if err := e.pool.QueryRow(testContext(e.tb), sql, args...).Scan(&n); err != nil {
		e.tb.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (e *env) pending() int64 {
	return e.count("SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL")
}

// waitDrained waits until no row is pending.
func (e *env) waitDrained(wait time.Duration) {
	e.tb.Helper()
	checkFor(e.tb, wait, 20*time.Millisecond, func() error {
		if n := e.pending(); n != 0 {
			return fmt.Errorf("%d outbox rows still pending", n)
		}
		return nil
	})
}

// stored is one message of the stream.
type stored struct {
	seq     uint64
	subject string
	msgID   string
	ev      fanout.Event
	at      time.Time
}

// streamMessages reads every message the stream holds, in order.
func (e *env) streamMessages() []stored {
	e.tb.Helper()
	ctx := testContext(e.tb)
	js, err := natsjs.New(e.nc)
	if err != nil {
		e.tb.Fatal(err)
	}
	s, err := js.Stream(ctx, e.pub.StreamName())
	if errors.Is(err, natsjs.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		e.tb.Fatal(err)
	}
	state := s.CachedInfo().State
	var out []stored
	for seq := state.FirstSeq; seq <= state.LastSeq && state.Msgs > 0; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if errors.Is(err, natsjs.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.tb.Fatal(err)
		}
		var ev fanout.Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			e.tb.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, stored{seq: seq, subject: msg.Subject, msgID: msg.Header.Get(natsjs.MsgIDHeader), ev: ev, at: msg.Time})
	}
	return out
}

// checkStream fails unless the stream holds exactly the events wantIDs, each once, each with its
// Nats-Msg-Id, each subject's events in increasing id order, and unless every published outbox row
// records the sequence its event is stored at.
func (e *env) checkStream(wantIDs map[string]bool) {
	e.tb.Helper()
	msgs := e.streamMessages()
	seen := make(map[string]uint64)
	lastBySubject := make(map[string]int64)
	for _, m := range msgs {
		if prev, dup := seen[m.ev.ID]; dup {
			e.tb.Errorf("event %s stored twice, at %d and %d", m.ev.ID, prev, m.seq)
		}
		seen[m.ev.ID] = m.seq
		if m.msgID != m.ev.ID {
			e.tb.Errorf("message %d: Nats-Msg-Id %q, event id %q", m.seq, m.msgID, m.ev.ID)
		}
		id, _ := strconv.ParseInt(m.ev.ID, 10, 64)
		if id <= lastBySubject[m.subject] {
			e.tb.Errorf("subject %s: event %d stored after %d", m.subject, id, lastBySubject[m.subject])
		}
		lastBySubject[m.subject] = id
		if !wantIDs[m.ev.ID] {
			e.tb.Errorf("event %s in the stream, not expected", m.ev.ID)
		}
	}
	for id := range wantIDs {
		if _, ok := seen[id]; !ok {
			e.tb.Errorf("event %s missing from the stream", id)
		}
	}
	rows, err := e.pool.Query(testContext(e.tb), "SELECT event_id, stream_seq FROM outbox WHERE stream_seq IS NOT NULL")
	if err != nil {
		e.tb.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			e.tb.Fatal(err)
		}
		if wantIDs[id] && seen[id] != uint64(seq) {
			e.tb.Errorf("outbox records event %s at %d, the stream holds it at %d", id, seq, seen[id])
		}
	}
}

// eventIDs returns the event ids of the outbox rows matching where.
func (e *env) eventIDs(where string) map[string]bool {
	e.tb.Helper()
	rows, err := e.pool.Query(testContext(e.tb), "SELECT event_id FROM outbox WHERE "+where)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer rows.Close()
	out := make(map[string]bool)
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			e.tb.Fatal(err)
		}
		out[id] = true
	}
	return out
}

func newMetrics(tb testing.TB) (*relay.Metrics, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	m, err := relay.NewMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	return m, reg
}

// metric reads one counter or gauge, summed over its label values, from reg.
func metric(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	families, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// ev builds an event of creator c (on the creator's subject unless it is a user or stock event).
func ev(typ fanout.Type, creator, drop, user int64, data string) fanout.Event {
	return fanout.Event{Type: typ, TS: time.Now(), CreatorID: creator, DropID: drop, UserID: user, Data: json.RawMessage(data)}
}

func mustExecIn(tb testing.TB, e *env, sql string, args ...any) {
	tb.Helper()
	if _, err := e.pool.Exec(testContext(tb), sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}
