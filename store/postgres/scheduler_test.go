package postgres_test

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store/postgres"
)

// evDrop creates a creator (with its user and a product, first time) and a drop; it returns the drop id.
func evDrop(tb testing.TB, pool *pgxpool.Pool, creatorID int64, start, end time.Time, stock int) int64 {
	tb.Helper()
	ctx := testContext(tb)
	mustExec(tb, pool, `INSERT INTO users (user_id, name, email) VALUES ($1::bigint, 'Creator', 'c' || $1::bigint || '@example.com')
		ON CONFLICT DO NOTHING`, creatorID)
	mustExec(tb, pool, `INSERT INTO creators (creator_id, profile_name) VALUES ($1, 'Shop') ON CONFLICT DO NOTHING`, creatorID)
	mustExec(tb, pool, `INSERT INTO products (product_id, creator_id, title, price_cents) VALUES ($1, $1, 'Hoodie', 4900)
		ON CONFLICT DO NOTHING`, creatorID)
	var id int64
	err := pool.QueryRow(ctx, `INSERT INTO drops (creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user)
		VALUES ($1, $1, $2, $3, $4, $4, 2) RETURNING drop_id`, creatorID, start, end, stock).Scan(&id)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

type evRow struct {
	subject, typ string
	payload      []byte
}

func evOutbox(tb testing.TB, pool *pgxpool.Pool, typ fanout.Type) []evRow {
	tb.Helper()
	rows, err := pool.Query(testContext(tb), "SELECT subject, type, payload FROM outbox WHERE type = $1 ORDER BY id", string(typ))
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var out []evRow
	for rows.Next() {
		var r evRow
		if err := rows.Scan(&r.subject, &r.typ, &r.payload); err != nil {
			tb.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestDropScheduleStartsAndEnds(t *testing.T) {
	ctx := testContext(t)
	pool := evPool(t)
	s := postgres.NewDropSchedule(pool)

	if _, ok, err := s.NextDeadline(ctx); err != nil || ok {
		t.Fatalf("NextDeadline with no drops: got ok %v, %v; want false", ok, err)
	}
	t0 := time.Date(2026, 11, 25, 11, 0, 0, 123_000_000, time.UTC)
	early := evDrop(t, pool, 7, t0, t0.Add(time.Hour), 100)
	late := evDrop(t, pool, 7, t0.Add(time.Minute), t0.Add(2*time.Hour), 5)

	steps := []struct {
		name      string
		do        func(context.Context, time.Time, int) ([]time.Time, error)
		now       time.Time
		want      []time.Time
		wantNext  time.Time
		wantState map[int64]string
	}{
		{"nothing due before the start", s.StartDue, t0.Add(-time.Millisecond), nil, t0,
			map[int64]string{early: "scheduled", late: "scheduled"}},
		{"the first start", s.StartDue, t0, []time.Time{t0}, t0.Add(time.Minute),
			map[int64]string{early: "live", late: "scheduled"}},
		{"started once", s.StartDue, t0, nil, t0.Add(time.Minute), nil},
		{"the second start, late", s.StartDue, t0.Add(10 * time.Minute), []time.Time{t0.Add(time.Minute)}, t0.Add(time.Hour),
			map[int64]string{early: "live", late: "live"}},
		{"nothing ends early", s.EndDue, t0.Add(59 * time.Minute), nil, t0.Add(time.Hour), nil},
		{"both end", s.EndDue, t0.Add(3 * time.Hour), []time.Time{t0.Add(time.Hour), t0.Add(2 * time.Hour)}, time.Time{},
			map[int64]string{early: "ended", late: "ended"}},
		{"ended once", s.EndDue, t0.Add(3 * time.Hour), nil, time.Time{}, nil},
	}
	for _, st := range steps {
		got, err := st.do(ctx, st.now, 100)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if !slices.EqualFunc(got, st.want, time.Time.Equal) {
			t.Errorf("%s: got %v, want %v", st.name, got, st.want)
		}
		next, ok, err := s.NextDeadline(ctx)
		if err != nil || ok != !st.wantNext.IsZero() || !next.Equal(st.wantNext) {
			t.Errorf("%s: next deadline got %v %v %v, want %v", st.name, next, ok, err, st.wantNext)
		}
		for id, want := range st.wantState {
			var status string
			if err := pool.QueryRow(ctx, "SELECT status FROM drops WHERE drop_id = $1", id).Scan(&status); err != nil || status != want {
				t.Errorf("%s: drop %d status %q (%v), want %q", st.name, id, status, err, want)
			}
		}
	}

	started := evOutbox(t, pool, fanout.DropStarted)
	if len(started) != 2 {
		t.Fatalf("drop.started rows: got %d, want 2", len(started))
	}
	var ev fanout.Event
	if err := json.Unmarshal(started[0].payload, &ev); err != nil {
		t.Fatal(err)
	}
	wantData := `{"drop_id":` + itoa(early) + `,"creator_id":7,"product":{"product_id":7,"title":"Hoodie","price_cents":4900},` +
		`"start_time":"2026-11-25T11:00:00.123Z","end_time":"2026-11-25T12:00:00.123Z","initial_stock":100,` +
		`"stock_count":100,"max_per_user":2,"status":"live"}`
	if started[0].subject != "ld.creator.7" || !ev.TS.Equal(t0) || ev.DropID != early || ev.CreatorID != 7 || !evSameJSON(t, ev.Data, wantData) {
		t.Errorf("drop.started: got subject %s, event %+v data %s; want ts %v and data %s", started[0].subject, ev, ev.Data, t0, wantData)
	}
	ended := evOutbox(t, pool, fanout.DropEnded)
	if len(ended) != 2 {
		t.Fatalf("drop.ended rows: got %d, want 2", len(ended))
	}
	if err := json.Unmarshal(ended[1].payload, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.DropID != late || !ev.TS.Equal(t0.Add(2*time.Hour)) || !evSameJSON(t, ev.Data, `{"stock_count":5}`) {
		t.Errorf("drop.ended: got %+v data %s; want drop %d, ts end_time, data {\"stock_count\":5}", ev, ev.Data, late)
	}
}

func TestDropScheduleRacingSchedulersMoveEachDropOnce(t *testing.T) {
	pool := evPool(t)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	const drops = 60
	for i := range drops {
		evDrop(t, pool, int64(1+i%3), t0.Add(time.Duration(i)*time.Millisecond), t0.Add(time.Second+time.Duration(i)*time.Millisecond), 10)
	}
	var mu sync.Mutex
	started, ended := 0, 0
	var wg sync.WaitGroup
	for range 3 {
		s := postgres.NewDropSchedule(pool)
		wg.Go(func() {
			ctx := context.Background()
			for range 5 {
				st, err := s.StartDue(ctx, time.Now(), 7)
				if err != nil {
					t.Error(err)
					return
				}
				en, err := s.EndDue(ctx, time.Now(), 7)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				started, ended = started+len(st), ended+len(en)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// 3 schedulers × 5 rounds × 7 drops = 105 ≥ 60: everything is due and moved, each once.
	if started != drops || ended != drops {
		t.Errorf("moves reported: started %d, ended %d; want %d each", started, ended, drops)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM (SELECT payload->>'drop_id' FROM outbox WHERE type = 'drop.started' GROUP BY 1 HAVING count(*) = 1) x"); n != drops {
		t.Errorf("drops with exactly one drop.started: got %d, want %d", n, drops)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM outbox"); n != 2*drops {
		t.Errorf("outbox rows: got %d, want %d", n, 2*drops)
	}
	if n := queryInt(t, pool, "SELECT count(*) FROM drops WHERE status = 'ended'"); n != drops {
		t.Errorf("ended drops: got %d, want %d", n, drops)
	}
}

func TestDropScheduleListenWakesOnNewDrop(t *testing.T) {
	pool := evPool(t)
	s := postgres.NewDropSchedule(pool)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	wake := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() { errc <- s.Listen(ctx, wake) }()
	for _, what := range []string{"when listening starts", "after a drop is created"} {
		select {
		case <-wake:
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake-up %s", what)
		}
		if what == "when listening starts" {
			evDrop(t, pool, 3, time.Now().Add(time.Hour), time.Now().Add(2*time.Hour), 1)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Listen after cancel: %v", err)
	}
}

// evSameJSON compares JSON by value: the outbox keeps payloads as jsonb, which reorders keys.
func evSameJSON(tb testing.TB, got json.RawMessage, want string) bool {
	tb.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		tb.Fatalf("decode %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		tb.Fatalf("decode %s: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
