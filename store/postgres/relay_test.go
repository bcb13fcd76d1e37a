package postgres_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

// evPool is a pool on a fresh migrated database.
func evPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pool, err := postgres.Open(testContext(tb), storetest.NewMigratedDatabase(tb), postgres.PoolConfig{})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// evInsert writes events in one transaction and returns their rows' ids and event ids, in order.
func evInsert(tb testing.TB, pool *pgxpool.Pool, events ...fanout.Event) (ids []int64, eventIDs []string) {
	tb.Helper()
	ctx := testContext(tb)
	var before int64
	if err := pool.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM outbox").Scan(&before); err != nil {
		tb.Fatal(err)
	}
	if err := postgres.InsertEvents(ctx, pool, events...); err != nil {
		tb.Fatalf("InsertEvents: %v", err)
	}
	rows, err := pool.Query(ctx, "SELECT id, event_id FROM outbox WHERE id > $1 ORDER BY id", before)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var eid string
		if err := rows.Scan(&id, &eid); err != nil {
			tb.Fatal(err)
		}
		ids, eventIDs = append(ids, id), append(eventIDs, eid)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return ids, eventIDs
}

func evStock(dropID int64, sold int) fanout.Event {
	return fanout.Event{Type: fanout.StockChanged, TS: time.Now(), CreatorID: 1, DropID: dropID,
		Data: json.RawMessage(`{"stock_count":` + strconv.Itoa(100-sold) + `,"sold":` + strconv.Itoa(sold) + `}`)}
}

func evSeqs(recs []fanout.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func TestOutboxPendingAndItsOutcomes(t *testing.T) {
	ctx := testContext(t)
	pool := evPool(t)
	ob := postgres.NewOutbox(pool)
	ids, eventIDs := evInsert(t, pool, evStock(1, 1), evStock(1, 2), evStock(2, 1), evStock(3, 1))

	recs, err := ob.Pending(ctx, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := evSeqs(recs); !slices.Equal(got, ids) {
		t.Fatalf("pending: got rows %v, want %v", got, ids)
	}
	first := recs[0]
	if first.EventID != eventIDs[0] || first.Subject != "ld.drop.1" || first.Type != fanout.StockChanged ||
		first.Attempts != 0 || first.CreatedAt.IsZero() || first.StreamSeq != 0 {
		t.Errorf("first record: got %+v", first)
	}
	var ev fanout.Event
	if err := json.Unmarshal(first.Payload, &ev); err != nil || ev.ID != "" || ev.DropID != 1 {
		t.Errorf("payload %s: decoded %+v, %v; want the envelope without id", first.Payload, ev, err)
	}
	if recs, err := ob.Pending(ctx, 2, []int64{ids[0]}); err != nil || !slices.Equal(evSeqs(recs), ids[1:3]) {
		t.Errorf("pending with skip and limit: got %v, %v; want %v", evSeqs(recs), err, ids[1:3])
	}

	now := time.Now()
	if err := ob.MarkPublished(ctx, ids[:1], []uint64{7}, now); err != nil {
		t.Fatal(err)
	}
	if err := ob.MarkCoalesced(ctx, ids[1:2], now); err != nil {
		t.Fatal(err)
	}
	if err := ob.RecordFailure(ctx, ids[2], "refused once", false, now); err != nil {
		t.Fatal(err)
	}
	recs, err = ob.Pending(ctx, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := evSeqs(recs); !slices.Equal(got, ids[2:]) || recs[0].Attempts != 1 {
		t.Fatalf("pending after publish, coalesce, failure: got %v (attempts %d), want %v with 1 attempt", got, recs[0].Attempts, ids[2:])
	}
	if err := ob.RecordFailure(ctx, ids[2], "refused again", true, now); err != nil {
		t.Fatal(err)
	}
	if n, err := ob.Backlog(ctx); err != nil || n != 1 {
		t.Errorf("backlog: got %d, %v; want 1", n, err)
	}
	var attempts int64
	var lastError string
	var parked bool
	if err := pool.QueryRow(ctx, "SELECT attempts, last_error, parked_at IS NOT NULL FROM outbox WHERE id = $1", ids[2]).
		Scan(&attempts, &lastError, &parked); err != nil {
		t.Fatal(err)
	}
	if attempts != 2 || lastError != "refused again" || !parked {
		t.Errorf("parked row: got attempts %d, last_error %q, parked %v; want 2, \"refused again\", true", attempts, lastError, parked)
	}

	tests := []struct {
		eventID string
		seq     uint64
		found   bool
	}{
		{eventIDs[0], 7, true},  // published
		{eventIDs[1], 0, false}, // coalesced: never sent
		{eventIDs[2], 0, false}, // parked
		{eventIDs[3], 0, false}, // pending
		{"nope", 0, false},
	}
	for _, tc := range tests {
		seq, found, err := ob.StreamSeq(ctx, tc.eventID)
		if err != nil || seq != tc.seq || found != tc.found {
			t.Errorf("StreamSeq(%s): got %d, %v, %v; want %d, %v", tc.eventID, seq, found, err, tc.seq, tc.found)
		}
	}
	// A second publication (after NATS lost the first) moves the sequence and keeps published_at.
	if err := ob.MarkPublished(ctx, ids[:1], []uint64{3}, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if seq, _, _ := ob.StreamSeq(ctx, eventIDs[0]); seq != 3 {
		t.Errorf("stream_seq after republish: got %d, want 3", seq)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM outbox WHERE id = $1 AND published_at < now() + interval '1 minute'", ids[0]); n != 1 {
		t.Errorf("published_at was moved by the republish")
	}
}

// Pending reads only the rows of recent writers (migration 00014_hot_updates): a row written by a
// transaction that commits after later rows were read and published, with a smaller id, is still found;
// so are rows a relay deferred, and rows made pending again by Requeue or by a re-queue by hand.
func TestOutboxPendingFindsLateCommits(t *testing.T) {
	ctx := testContext(t)
	pool := evPool(t)
	ob := postgres.NewOutbox(pool)
	pending := func(skip ...int64) []int64 {
		t.Helper()
		recs, err := ob.Pending(ctx, 100, skip)
		if err != nil {
			t.Fatal(err)
		}
		return evSeqs(recs)
	}
	publish := func(ids ...int64) {
		t.Helper()
		seqs := make([]uint64, len(ids))
		for i, id := range ids {
			seqs[i] = uint64(id)
		}
		if err := ob.MarkPublished(ctx, ids, seqs, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// A transaction writes a row and stays open while later rows are written, read and published.
	late, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback(ctx)
	if err := postgres.InsertEvents(ctx, late, evStock(1, 1)); err != nil {
		t.Fatal(err)
	}
	var lateID int64
	if err := late.QueryRow(ctx, "SELECT max(id) FROM outbox").Scan(&lateID); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		ids, _ := evInsert(t, pool, evStock(2, round+1), evStock(3, round+1))
		if ids[0] <= lateID {
			t.Fatalf("row %d written after the open transaction's %d", ids[0], lateID)
		}
		if got := pending(); !slices.Equal(got, ids) {
			t.Fatalf("round %d: pending %v, want %v", round, got, ids)
		}
		publish(ids...)
	}
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := pending(); !slices.Equal(got, []int64{lateID}) {
		t.Fatalf("after the late commit: pending %v, want [%d]", got, lateID)
	}

	// A row the relay read and deferred (left out by skip from then on) stays found while rows after it
	// are published; so does one it never read.
	publish(lateID)
	ids, _ := evInsert(t, pool, evStock(4, 1), evStock(4, 2))
	if got := pending(); !slices.Equal(got, ids) {
		t.Fatalf("pending %v, want %v", got, ids)
	}
	publish(ids[1])
	for range 3 {
		more, _ := evInsert(t, pool, evStock(5, 1))
		if got := pending(ids[0]); !slices.Equal(got, more) {
			t.Fatalf("with row %d deferred: pending %v, want %v", ids[0], got, more)
		}
		publish(more...)
	}
	if got := pending(); !slices.Equal(got, ids[:1]) {
		t.Fatalf("the deferred row: pending %v, want %v", got, ids[:1])
	}
	publish(ids[0])
	unread, _ := evInsert(t, pool, evStock(4, 3))
	for range 2 {
		if got := pending(unread[0]); len(got) != 0 {
			t.Fatalf("pending %v, want none", got)
		}
		if _, err := pool.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil { // a transaction ends
			t.Fatal(err)
		}
	}
	ids = unread
	if got := pending(); !slices.Equal(got, ids[:1]) {
		t.Fatalf("the deferred row: pending %v, want %v", got, ids[:1])
	}
	publish(ids[0])

	// Rows published long ago, made pending again: by Requeue (NATS lost them), and by hand.
	if got := pending(); len(got) != 0 {
		t.Fatalf("pending %v, want none", got)
	}
	old, _ := evInsert(t, pool, evStock(6, 1))
	publish(old...)
	if got := pending(); len(got) != 0 {
		t.Fatalf("pending %v, want none", got)
	}
	if n, err := ob.Requeue(ctx, time.Now().Add(-time.Minute), 1, 0, nil, nil); err != nil || n == 0 {
		t.Fatalf("Requeue: %d, %v", n, err)
	}
	if got := pending(); !slices.Contains(got, old[0]) {
		t.Fatalf("after Requeue: pending %v, want row %d among them", got, old[0])
	}
	mustExec(t, pool, "UPDATE outbox SET published_at = now(), stream_seq = id")
	if got := pending(); len(got) != 0 {
		t.Fatalf("pending %v, want none", got)
	}
	mustExec(t, pool, "UPDATE outbox SET published_at = NULL, stream_seq = NULL, xid = pg_current_xact_id() WHERE id = $1", old[0])
	if got := pending(); !slices.Equal(got, old) {
		t.Fatalf("after a re-queue by hand: pending %v, want %v", got, old)
	}
	if n, err := ob.Backlog(ctx); err != nil || n != 1 {
		t.Errorf("backlog: %d, %v; want 1", n, err)
	}
}

func TestOutboxAdoptAndRequeue(t *testing.T) {
	type published struct {
		row int // index into the five rows
		seq uint64
	}
	tests := []struct {
		name       string
		published  []published
		old        []int // rows created before the window
		adoptIDs   []int // rows the stream holds unrecorded
		adoptSeqs  []uint64
		from, last uint64
		tail       map[uint64]int // stream sequence → row
		want       []int          // rows pending afterwards
	}{
		{name: "stream intact", published: []published{{0, 1}, {1, 2}, {2, 3}},
			from: 1, last: 3, tail: map[uint64]int{1: 0, 2: 1, 3: 2}, want: []int{3, 4}},
		{name: "crash between publish and record", published: []published{{0, 1}, {1, 2}},
			adoptIDs: []int{2, 3}, adoptSeqs: []uint64{3, 4},
			from: 1, last: 4, tail: map[uint64]int{1: 0, 2: 1, 3: 2, 4: 3}, want: []int{4}},
		{name: "tail lost", published: []published{{0, 1}, {1, 2}, {2, 3}, {3, 4}},
			from: 1, last: 2, tail: map[uint64]int{1: 0, 2: 1}, want: []int{2, 3, 4}},
		{name: "stream recreated empty", published: []published{{0, 1}, {1, 2}, {2, 3}},
			from: 1, last: 0, want: []int{0, 1, 2, 3, 4}},
		{name: "sequence reused by a later publication", published: []published{{0, 1}, {1, 2}, {2, 3}},
			adoptIDs: []int{4}, adoptSeqs: []uint64{3},
			from: 1, last: 3, tail: map[uint64]int{1: 0, 2: 1, 3: 4}, want: []int{2, 3}},
		{name: "outside the replay window stays", published: []published{{0, 1}, {1, 2}, {2, 3}}, old: []int{0, 1},
			from: 1, last: 0, want: []int{2, 3, 4}},
		{name: "only the checked tail is compared", published: []published{{0, 1}, {1, 2}, {2, 3}},
			from: 3, last: 3, tail: map[uint64]int{3: 2}, want: []int{3, 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			pool := evPool(t)
			ob := postgres.NewOutbox(pool)
			ids, eventIDs := evInsert(t, pool, evStock(1, 1), evStock(1, 2), evStock(1, 3), evStock(1, 4), evStock(1, 5))
			now := time.Now()
			for _, p := range tc.published {
				if err := ob.MarkPublished(ctx, []int64{ids[p.row]}, []uint64{p.seq}, now); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range tc.old {
				mustExec(t, pool, "UPDATE outbox SET created_at = now() - interval '1 hour' WHERE id = $1", ids[r])
			}
			var adoptIDs []string
			for _, r := range tc.adoptIDs {
				adoptIDs = append(adoptIDs, eventIDs[r])
			}
			n, err := ob.Adopt(ctx, adoptIDs, tc.adoptSeqs, now)
			if err != nil || n != int64(len(adoptIDs)) {
				t.Fatalf("Adopt: got %d, %v; want %d", n, err, len(adoptIDs))
			}
			var seqs []uint64
			var tailIDs []string
			for seq := tc.from; seq <= tc.last; seq++ {
				if r, ok := tc.tail[seq]; ok {
					seqs, tailIDs = append(seqs, seq), append(tailIDs, eventIDs[r])
				}
			}
			if _, err := ob.Requeue(ctx, now.Add(-10*time.Minute), tc.from, tc.last, seqs, tailIDs); err != nil {
				t.Fatal(err)
			}
			recs, err := ob.Pending(ctx, 10, nil)
			if err != nil {
				t.Fatal(err)
			}
			var want []int64
			for _, r := range tc.want {
				want = append(want, ids[r])
			}
			if got := evSeqs(recs); !slices.Equal(got, want) {
				t.Errorf("pending after adopt and requeue: got %v, want %v", got, want)
			}
		})
	}
}

func TestOutboxPrune(t *testing.T) {
	ctx := testContext(t)
	pool := evPool(t)
	ob := postgres.NewOutbox(pool)
	ids, _ := evInsert(t, pool, evStock(1, 1), evStock(1, 2), evStock(1, 3), evStock(1, 4), evStock(1, 5))
	now := time.Now()
	if err := ob.MarkPublished(ctx, ids[:2], []uint64{1, 2}, now); err != nil {
		t.Fatal(err)
	}
	if err := ob.RecordFailure(ctx, ids[2], "poison", true, now); err != nil {
		t.Fatal(err)
	}
	if err := ob.MarkPublished(ctx, ids[4:], []uint64{3}, now); err != nil {
		t.Fatal(err)
	}
	// Rows 0-3 are old: 0 and 1 published, 2 parked, 3 still pending. Row 4 is recent and published.
	mustExec(t, pool, "UPDATE outbox SET created_at = now() - interval '1 hour' WHERE id = ANY ($1)", ids[:4])

	steps := []struct {
		limit   int
		deleted int64
	}{{2, 2}, {2, 1}, {2, 0}}
	for i, s := range steps {
		n, err := ob.Prune(ctx, now.Add(-30*time.Minute), s.limit)
		if err != nil || n != s.deleted {
			t.Fatalf("prune %d: got %d, %v; want %d", i, n, err, s.deleted)
		}
	}
	rows, err := pool.Query(ctx, "SELECT id FROM outbox ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var left []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		left = append(left, id)
	}
	if want := []int64{ids[3], ids[4]}; !slices.Equal(left, want) {
		t.Errorf("rows left: got %v, want %v (the pending one and the recent one)", left, want)
	}
}

func TestOutboxListenWakes(t *testing.T) {
	pool := evPool(t)
	ob := postgres.NewOutbox(pool)
	ctx, cancel := context.WithCancel(testContext(t))
	wake := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() { errc <- ob.Listen(ctx, wake) }()

	waitWake := func(what string) {
		t.Helper()
		select {
		case <-wake:
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake-up %s", what)
		}
	}
	waitWake("when listening starts")
	evInsert(t, pool, evStock(1, 1))
	waitWake("after a commit")
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Listen after cancel: got %v, want nil", err)
	}
}

func TestLeaderIsExclusiveAndHandsOver(t *testing.T) {
	pool := evPool(t)
	cfg := postgres.LeaderConfig{RetryInterval: 20 * time.Millisecond, CheckInterval: 50 * time.Millisecond}
	a := postgres.NewLeader(pool, "relay", cfg)
	b := postgres.NewLeader(pool, "relay", cfg)
	other := postgres.NewLeader(pool, "another-job", cfg)
	ctx := testContext(t)

	aCtx, releaseA, err := a.Lead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Another job has its own lock.
	_, releaseOther, err := other.Lead(ctx)
	if err != nil {
		t.Fatalf("another job's leadership: %v", err)
	}
	releaseOther()

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, _, err = b.Lead(short)
	cancel()
	if err == nil {
		t.Fatal("b became leader while a leads")
	}

	type lead struct {
		ctx     context.Context
		release func()
		err     error
	}
	got := make(chan lead, 1)
	go func() {
		c, r, err := b.Lead(ctx)
		got <- lead{c, r, err}
	}()
	releaseA()
	if aCtx.Err() == nil {
		t.Error("a's leadership context still open after release")
	}
	var bLead lead
	select {
	case bLead = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("b did not take over within 5 s of a's release")
	}
	if bLead.err != nil {
		t.Fatal(bLead.err)
	}

	// b's session dies (as when its process or host does): b notices, and a takes over.
	go func() {
		c, r, err := a.Lead(ctx)
		got <- lead{c, r, err}
	}()
	mustExec(t, pool, `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()`)
	select {
	case <-bLead.ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("b still leads 5 s after its session was terminated")
	}
	bLead.release()
	var aLead lead
	select {
	case aLead = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("a did not take over within 5 s")
	}
	if aLead.err != nil {
		t.Fatal(aLead.err)
	}
	aLead.release()
}

func TestLeaderConcurrentElectionHasOneWinner(t *testing.T) {
	pool := evPool(t)
	ctx, cancel := context.WithTimeout(testContext(t), 2*time.Second)
	defer cancel()
	var mu sync.Mutex
	var releases []func()
	var wg sync.WaitGroup
	for range 5 {
		l := postgres.NewLeader(pool, "relay", postgres.LeaderConfig{RetryInterval: 10 * time.Millisecond})
		wg.Go(func() {
			if _, release, err := l.Lead(ctx); err == nil {
				mu.Lock()
				releases = append(releases, release)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(releases) != 1 {
		t.Errorf("leaders: got %d, want 1", len(releases))
	}
	for _, r := range releases {
		r()
	}
}
