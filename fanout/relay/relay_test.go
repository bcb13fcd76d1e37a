package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/relay"
)

// mixed writes n transactions of events from four goroutines at once. Each goroutine has its own
// subjects (a creator and a user), so each subject's events commit in id order, as one drop's do when
// their writers hold its row lock: the stream must keep that order.
func mixed(e *env, n int) {
	e.tb.Helper()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			c := int64(1 + g)
			for i := range n / 4 {
				e.insert(ev(fanout.OrderConfirmed, c, 10*c, int64(100+g), `{"order_id":1}`),
					ev(fanout.DropScheduled, c, 10*c+int64(i), 0, `{}`))
			}
		})
	}
	wg.Wait()
}

func TestRelayPublishesEveryRowOnceInOrder(t *testing.T) {
	leakCheck(t)
	e := newEnv(t, jetstream.StreamConfig{})
	m, reg := newMetrics(t)
	e.insert(ev(fanout.DropStarted, 1, 10, 0, `{}`)) // committed before the relay starts
	r := e.runRelay(relayConfig(t, m), nil)
	mixed(e, 120)
	e.waitDrained(20 * time.Second)
	e.checkStream(e.eventIDs("true"))

	const rows = 1 + 2*120
	if got := metric(t, reg, "livedrops_relay_published_total"); got != rows {
		t.Errorf("published_total: got %v, want %d", got, rows)
	}
	if got := metric(t, reg, "livedrops_relay_publish_latency_seconds"); got != rows {
		t.Errorf("latency observations: got %v, want %d", got, rows)
	}
	if got := metric(t, reg, "livedrops_relay_leader"); got != 1 {
		t.Errorf("leader gauge while running: got %v, want 1", got)
	}
	r.stop(t)
	if got := metric(t, reg, "livedrops_relay_leader"); got != 0 {
		t.Errorf("leader gauge after stop: got %v, want 0", got)
	}
}

// stopAtMark stands for a relay that dies between the publication and its record: MarkPublished
// writes nothing and waits for the relay to be stopped.
type stopAtMark struct {
	relay.Outbox
	hit atomic.Bool
}

func (s *stopAtMark) MarkPublished(ctx context.Context, _ []int64, _ []uint64, _ time.Time) error {
	s.hit.Store(true)
	<-ctx.Done()
	return ctx.Err()
}

func TestRelayStoppedBetweenPublishAndRecordPublishesNothingTwice(t *testing.T) {
	tests := []struct {
		name       string
		duplicates time.Duration
	}{
		{"within the duplicates window", 0},
		// JetStream no longer drops the second publication: only the relay's check of the stream's tail
		// prevents it.
		{"after the duplicates window", 200 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			e := newEnv(t, jetstream.StreamConfig{Duplicates: tc.duplicates})
			m, reg := newMetrics(t)
			cfg := relayConfig(t, m)

			crash := &stopAtMark{}
			for i := range 10 {
				e.insert(ev(fanout.DropScheduled, 1, int64(i+1), 0, `{}`))
			}
			first := e.runRelay(cfg, func(o relay.Outbox) relay.Outbox { crash.Outbox = o; return crash })
			checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
				if !crash.hit.Load() {
					return errors.New("the relay has not published yet")
				}
				return nil
			})
			first.stop(t)
			if got := len(e.streamMessages()); got == 0 {
				t.Fatal("nothing reached the stream before the stop")
			}
			if n := e.pending(); n != 10 {
				t.Fatalf("pending rows after the stop: got %d, want 10 (published, not recorded)", n)
			}
			if tc.duplicates > 0 {
				time.Sleep(2 * tc.duplicates) // let JetStream forget the ids: nothing to poll for
			}

			e.runRelay(cfg, nil)
			e.waitDrained(20 * time.Second)
			e.insert(ev(fanout.DropEnded, 1, 1, 0, `{"stock_count":0}`))
			e.waitDrained(20 * time.Second)
			e.checkStream(e.eventIDs("true"))
			if got := metric(t, reg, "livedrops_relay_adopted_total"); got == 0 {
				t.Errorf("adopted_total: got 0, want the rows found in the stream")
			}
		})
	}
}

func TestRelayDrainsInOrderAfterANATSOutage(t *testing.T) {
	leakCheck(t)
	e := newEnv(t, jetstream.StreamConfig{})
	m, reg := newMetrics(t)
	cfg := relayConfig(t, m)
	cfg.BacklogInterval = 50 * time.Millisecond
	e.runRelay(cfg, nil)
	mixed(e, 20)
	e.waitDrained(20 * time.Second)

	e.nats.stop()
	mixed(e, 40) // orders keep committing
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := metric(t, reg, "livedrops_relay_publish_failures_total"); n == 0 {
			return errors.New("the relay has not failed to publish yet")
		}
		return nil
	})
	if n := e.pending(); n != 80 {
		t.Errorf("pending while NATS is down: got %d, want 80", n)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := metric(t, reg, "livedrops_outbox_backlog"); n != 80 {
			return fmt.Errorf("backlog gauge %v, want 80", n)
		}
		return nil
	})

	e.nats.start()
	e.waitDrained(30 * time.Second)
	e.checkStream(e.eventIDs("true"))
}

func TestRelayRefillsWhatNATSLost(t *testing.T) {
	tests := []struct {
		name string
		lose func(t *testing.T, streamDir string)
	}{
		{"stream files deleted", func(t *testing.T, dir string) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		}},
		{"message blocks truncated", func(t *testing.T, dir string) {
			blocks, err := filepath.Glob(filepath.Join(dir, "msgs", "*.blk"))
			if err != nil || len(blocks) == 0 {
				t.Fatalf("message blocks in %s: %v, %v", dir, blocks, err)
			}
			for _, b := range blocks {
				fi, err := os.Stat(b)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(b, fi.Size()/3); err != nil {
					t.Fatal(err)
				}
			}
			// The stream's saved state would otherwise claim the lost messages.
			_ = os.Remove(filepath.Join(dir, "msgs", "index.db"))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			e := newEnv(t, jetstream.StreamConfig{})
			m, reg := newMetrics(t)
			e.runRelay(relayConfig(t, m), nil)
			// Old events: published, then past the replay window when NATS loses them.
			for i := range 5 {
				e.insert(ev(fanout.DropScheduled, 9, int64(i+1), 0, `{}`))
			}
			e.waitDrained(20 * time.Second)
			mustExecIn(t, e, "UPDATE outbox SET created_at = now() - interval '17 minutes'")
			mixed(e, 60)
			e.waitDrained(20 * time.Second)
			before := len(e.streamMessages())

			e.nats.stop()
			tc.lose(t, filepath.Join(e.nats.dir, "jetstream", "$G", "streams", e.pub.StreamName()))
			e.nats.start()
			checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				if n := metric(t, reg, "livedrops_relay_recoveries_total"); n < 2 {
					return fmt.Errorf("%v recoveries, want the one at the start and one after the reconnection", n)
				}
				return nil
			})
			lost := before - len(e.streamMessages())
			e.waitDrained(20 * time.Second)
			mixed(e, 8)
			e.waitDrained(20 * time.Second)

			inWindow := e.eventIDs("created_at > now() - interval '15 minutes'")
			msgs := e.streamMessages()
			old := make(map[string]bool)
			for id := range e.eventIDs("created_at < now() - interval '15 minutes'") {
				old[id] = true
			}
			want := make(map[string]bool)
			for id := range inWindow {
				want[id] = true
			}
			// Old events that survived the loss stay; lost ones are not brought back.
			for _, m := range msgs {
				if old[m.ev.ID] {
					want[m.ev.ID] = true
				}
			}
			e.checkStream(want)
			if got := metric(t, reg, "livedrops_relay_requeued_total"); lost > 0 && got == 0 {
				t.Errorf("NATS lost %d messages and the relay re-queued none", lost)
			}
			t.Logf("NATS lost %d of %d messages; the relay re-queued %v", lost, before, metric(t, reg, "livedrops_relay_requeued_total"))
		})
	}
}

func TestRelayParksPoisonRowsWithoutBlockingOthers(t *testing.T) {
	tests := []struct {
		name     string
		subject  string
		typ      string
		payload  string
		attempts int // failed publications before parking
	}{
		{"payload without ts", "ld.creator.1", "drop.started", `{"type":"drop.started","creator_id":1,"drop_id":2,"data":{}}`, 1},
		{"payload of another type", "ld.creator.1", "drop.started", `{"type":"drop.ended","ts":"2026-11-25T12:00:00Z","creator_id":1,"drop_id":2,"data":{}}`, 1},
		{"data not an object", "ld.creator.1", "drop.ended", `{"type":"drop.ended","ts":"2026-11-25T12:00:00Z","creator_id":1,"drop_id":2,"data":[1]}`, 1},
		{"wrong subject", "ld.creator.2", "drop.ended", `{"type":"drop.ended","ts":"2026-11-25T12:00:00Z","creator_id":1,"drop_id":2,"data":{}}`, 1},
		{"unknown type", "ld.creator.1", "drop.exploded", `{"type":"drop.exploded","ts":"2026-11-25T12:00:00Z","creator_id":1,"drop_id":2,"data":{}}`, 1},
		{"too large for NATS", "ld.creator.1", "drop.ended",
			`{"type":"drop.ended","ts":"2026-11-25T12:00:00Z","creator_id":1,"drop_id":2,"data":{"pad":"` + strings.Repeat("x", 2<<20) + `"}}`, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			e := newEnv(t, jetstream.StreamConfig{})
			m, reg := newMetrics(t)
			cfg := relayConfig(t, m)
			cfg.MaxAttempts, cfg.RetryBackoff = 3, 10*time.Millisecond

			e.insert(ev(fanout.DropScheduled, 1, 1, 0, `{}`))
			var poison int64
			if err := e.pool.QueryRow(testContext(t), "INSERT INTO outbox (subject, type, payload) VALUES ($1, $2, $3) RETURNING id",
				tc.subject, tc.typ, tc.payload).Scan(&poison); err != nil {
				t.Fatal(err)
			}
			e.insert(ev(fanout.DropScheduled, 1, 3, 0, `{}`), ev(fanout.DropSoldOut, 2, 4, 0, `{}`))
			e.runRelay(cfg, nil)
			e.waitDrained(20 * time.Second)

			var attempts int
			var lastError string
			var parked bool
			if err := e.pool.QueryRow(testContext(t), "SELECT attempts, coalesce(last_error, ''), parked_at IS NOT NULL FROM outbox WHERE id = $1",
				poison).Scan(&attempts, &lastError, &parked); err != nil {
				t.Fatal(err)
			}
			if !parked || attempts != tc.attempts || lastError == "" {
				t.Errorf("poison row: got parked %v, attempts %d, last_error %q; want parked after %d attempts with the error",
					parked, attempts, lastError, tc.attempts)
			}
			e.checkStream(e.eventIDs("parked_at IS NULL"))
			if got := metric(t, reg, "livedrops_relay_parked_total"); got != 1 {
				t.Errorf("parked_total: got %v, want 1", got)
			}
		})
	}
}

func TestRelayCoalescesStockChanges(t *testing.T) {
	leakCheck(t)
	e := newEnv(t, jetstream.StreamConfig{})
	m, reg := newMetrics(t)
	cfg := relayConfig(t, m)
	cfg.StockRate = 5 // at most one stock.changed every 200 ms per drop
	e.runRelay(cfg, nil)

	// What an order transaction writes: its order.confirmed, one stock.changed, stock.low once when stock
	// first reaches 10% of the initial 50, drop.soldout once at 0. Two drops sell at once.
	const initial = 50
	var wg sync.WaitGroup
	for _, drop := range []int64{7, 8} {
		wg.Go(func() {
			for sold := 1; sold <= initial; sold++ {
				left := initial - sold
				events := []fanout.Event{
					ev(fanout.OrderConfirmed, 1, drop, int64(sold), `{}`),
					ev(fanout.StockChanged, 1, drop, 0, fmt.Sprintf(`{"stock_count":%d,"sold":%d}`, left, sold)),
				}
				if left == initial/10 {
					events = append(events, ev(fanout.StockLow, 1, drop, 0, fmt.Sprintf(`{"stock_count":%d}`, left)))
				}
				if left == 0 {
					events = append(events, ev(fanout.DropSoldOut, 1, drop, 0, `{}`))
				}
				e.insert(events...)
			}
		})
	}
	wg.Wait()
	e.waitDrained(20 * time.Second)

	// Every row is accounted for: published or coalesced, never both, never lost.
	if n := e.count("SELECT count(*) FROM outbox WHERE type = 'stock.changed' AND published_at IS NULL"); n != 0 {
		t.Errorf("stock.changed rows not published nor coalesced: %d", n)
	}
	sent := e.count("SELECT count(*) FROM outbox WHERE type = 'stock.changed' AND stream_seq IS NOT NULL")
	coalesced := e.count("SELECT count(*) FROM outbox WHERE type = 'stock.changed' AND published_at IS NOT NULL AND stream_seq IS NULL")
	if sent+coalesced != 2*initial || coalesced == 0 {
		t.Errorf("stock.changed: %d sent + %d coalesced, want %d in all with some coalesced", sent, coalesced, 2*initial)
	}
	if got := metric(t, reg, "livedrops_relay_coalesced_total"); got != float64(coalesced) {
		t.Errorf("coalesced_total: got %v, want %d", got, coalesced)
	}

	type tick struct {
		sold int
		at   time.Time
	}
	ticks := make(map[string][]tick)
	counts := make(map[string]int)
	for _, msg := range e.streamMessages() {
		counts[msg.subject+" "+string(msg.ev.Type)+" "+strconv.FormatInt(msg.ev.DropID, 10)]++
		if msg.ev.Type != fanout.StockChanged {
			continue
		}
		var data struct {
			StockCount int `json:"stock_count"`
			Sold       int `json:"sold"`
		}
		if err := json.Unmarshal(msg.ev.Data, &data); err != nil {
			t.Fatal(err)
		}
		if data.StockCount != initial-data.Sold {
			t.Errorf("stock.changed %s: %+v", msg.ev.ID, data)
		}
		ticks[msg.subject] = append(ticks[msg.subject], tick{data.Sold, msg.at})
	}
	for _, drop := range []string{"7", "8"} {
		ts := ticks["ld.drop."+drop]
		for i := 1; i < len(ts); i++ {
			if ts[i].sold <= ts[i-1].sold {
				t.Errorf("drop %s: sold %d published after %d", drop, ts[i].sold, ts[i-1].sold)
			}
			if gap := ts[i].at.Sub(ts[i-1].at); gap < 190*time.Millisecond {
				t.Errorf("drop %s: two stock.changed %s apart, want at most 5 per second", drop, gap)
			}
		}
		if len(ts) == 0 || ts[len(ts)-1].sold != initial {
			t.Errorf("drop %s: last stock.changed %v, want the final value sold=%d", drop, ts, initial)
		}
		for _, typ := range []fanout.Type{fanout.StockLow, fanout.DropSoldOut} {
			if n := counts["ld.creator.1 "+string(typ)+" "+drop]; n != 1 {
				t.Errorf("drop %s: %d %s, want 1", drop, n, typ)
			}
		}
	}

	// A row older than the newest one sent (a writer that did not hold the drop's lock) is never sent.
	mustExecIn(t, e, `INSERT INTO outbox (id, subject, type, payload) VALUES
		((SELECT min(id) - 1 FROM outbox), 'ld.drop.7', 'stock.changed',
		 '{"type":"stock.changed","ts":"2026-11-25T12:00:00Z","creator_id":1,"drop_id":7,"data":{"stock_count":49,"sold":1}}')`)
	e.waitDrained(20 * time.Second)
	if n := e.count("SELECT count(*) FROM outbox WHERE id = (SELECT min(id) FROM outbox) AND stream_seq IS NULL AND published_at IS NOT NULL"); n != 1 {
		t.Error("an older stock.changed was not coalesced")
	}
}

func TestRelayStandbyTakesOver(t *testing.T) {
	leakCheck(t)
	e := newEnv(t, jetstream.StreamConfig{})
	mA, regA := newMetrics(t)
	mB, regB := newMetrics(t)
	a := e.runRelay(relayConfig(t, mA), nil)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if metric(t, regA, "livedrops_relay_leader") != 1 {
			return errors.New("a does not lead")
		}
		return nil
	})
	e.runRelay(relayConfig(t, mB), nil)
	mixed(e, 40)
	e.waitDrained(20 * time.Second)
	if metric(t, regB, "livedrops_relay_leader") != 0 || metric(t, regB, "livedrops_relay_published_total") != 0 {
		t.Error("the standby published while the leader ran")
	}

	a.stop(t)
	took := time.Now()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if metric(t, regB, "livedrops_relay_leader") != 1 {
			return errors.New("b does not lead")
		}
		return nil
	})
	t.Logf("the standby took over in %s", time.Since(took).Round(time.Millisecond))
	mixed(e, 40)
	e.waitDrained(20 * time.Second)
	e.checkStream(e.eventIDs("true"))
}

func TestRelayPrunesAfterTheReplayWindow(t *testing.T) {
	leakCheck(t)
	e := newEnv(t, jetstream.StreamConfig{})
	m, reg := newMetrics(t)
	cfg := relayConfig(t, m)
	cfg.ReplayWindow, cfg.PruneMargin, cfg.PruneInterval, cfg.PruneBatch = 10*time.Minute, time.Minute, 20*time.Millisecond, 2
	for i := range 7 {
		e.insert(ev(fanout.DropScheduled, 1, int64(i+1), 0, `{}`))
	}
	// Five old rows: four published, one parked; and one old pending row, which is published first and
	// pruned after.
	mustExecIn(t, e, `UPDATE outbox SET created_at = now() - interval '12 minutes',
		published_at = CASE WHEN id <= 4 THEN now() END, stream_seq = CASE WHEN id <= 4 THEN id END,
		parked_at = CASE WHEN id = 5 THEN now() END
		WHERE id <= 6`)
	e.runRelay(cfg, nil)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := e.count("SELECT count(*) FROM outbox"); n != 1 {
			return fmt.Errorf("%d rows left, want the recent one", n)
		}
		return nil
	})
	if got := metric(t, reg, "livedrops_relay_pruned_total"); got != 6 {
		t.Errorf("pruned_total: got %v, want 6", got)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  relay.Config
		ok   bool
	}{
		{"defaults", relay.Config{}, true},
		{"replay window below ten minutes", relay.Config{ReplayWindow: 5 * time.Minute}, false},
		{"negative batch", relay.Config{BatchSize: -1}, false},
		{"tail check below the batch", relay.Config{BatchSize: 100, TailCheck: 10}, false},
		{"negative stock rate", relay.Config{StockRate: -1}, false},
		{"negative poll", relay.Config{PollInterval: -time.Second}, false},
	}
	for _, tc := range tests {
		_, err := relay.New(nil, nil, nil, tc.cfg)
		if (err == nil) != tc.ok {
			t.Errorf("%s: got %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestRelayWakesOnCommit(t *testing.T) {
	leakCheck(t)
	e := newEnv(t, jetstream.StreamConfig{})
	cfg := relayConfig(t, nil)
	cfg.PollInterval = time.Hour // only the commit's notification can wake it
	e.runRelay(cfg, nil)
	for i := range 3 {
		e.insert(ev(fanout.DropScheduled, 1, int64(i+1), 0, `{}`))
		e.waitDrained(5 * time.Second)
	}
	e.checkStream(e.eventIDs("true"))
}

// The worker's two jobs together: a drop starts on time and its drop.started reaches the stream.
func TestScheduledStartReachesTheStream(t *testing.T) {
	leakCheck(t)
	e := newEnv(t, jetstream.StreamConfig{})
	e.runRelay(relayConfig(t, nil), nil)
	d := &dropsEnv{tb: t, pool: e.pool}
	start := time.Now().Add(200 * time.Millisecond).Truncate(time.Millisecond)
	id := d.drop(4, start, start.Add(time.Hour))
	d.runScheduler(relay.SchedulerConfig{})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, m := range e.streamMessages() {
			if m.ev.Type == fanout.DropStarted && m.ev.DropID == id {
				if m.subject != fanout.CreatorSubject(4) || !m.ev.TS.Equal(start) {
					return fmt.Errorf("drop.started on %s at %v, want %s at %v", m.subject, m.ev.TS, fanout.CreatorSubject(4), start)
				}
				t.Logf("drop.started stored %s after start_time", m.at.Sub(start).Round(time.Millisecond))
				return nil
			}
		}
		return errors.New("no drop.started in the stream")
	})
}
