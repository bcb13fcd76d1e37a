package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// orderRec is one buy intent: one idempotency key, tried until a final answer, against either api.
type orderRec struct {
	key      string
	user     int64
	drop     int64
	quantity int

	attempts int
	statuses []string // status (and code) of every attempt, "err" for a transport failure
	final    string   // "confirmed", "sold_out", "drop_not_live", "limit_exceeded"; "" while unresolved
	orderID  int64
	replayed bool
}

// answer is one HTTP exchange.
type answer struct {
	status      int
	code        string
	contentType string
	orderID     int64
	dropID      int64
	replayed    bool
	took        time.Duration
	err         error
}

// load places orders at a steady pace from buyer goroutines, each intent retried with the same key on
// the other api after a transport failure, a 5xx or a 409 request_in_progress, until it gets a final
// answer. It also creates the hot drops, as a creator would, over REST.
type load struct {
	t      *testing.T
	s      *stack
	w      *world
	client *http.Client
	pace   time.Duration

	mu      sync.Mutex
	hot     []int64 // drops orders go to
	records []*orderRec
	answers map[string]int // "status code" -> count, for the phase
	slow    []string       // answers that took longer than the request timeout allows
	seq     atomic.Int64

	stop   chan struct{}
	wg     sync.WaitGroup
	active atomic.Bool
}

func newLoad(t *testing.T, s *stack, w *world, pace time.Duration) *load {
	return &load{t: t, s: s, w: w, pace: pace, answers: map[string]int{},
		client: &http.Client{Timeout: 3 * s.reqLimit, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
}

// start runs n buyer goroutines until halt.
func (l *load) start(n int) {
	l.stop = make(chan struct{})
	l.active.Store(true)
	for i := range n {
		l.wg.Go(func() { l.buyer(i) })
	}
}

// halt stops new intents and waits until every intent started has its final answer.
func (l *load) halt() {
	close(l.stop)
	l.wg.Wait()
	l.active.Store(false)
}

func (l *load) buyer(i int) {
	r := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
	ids := l.w.followerIDs()
	for {
		select {
		case <-l.stop:
			return
		case <-time.After(l.pace/2 + time.Duration(r.Int64N(int64(l.pace)))):
		}
		l.mu.Lock()
		hot := l.hot
		l.mu.Unlock()
		if len(hot) == 0 {
			continue
		}
		rec := &orderRec{key: fmt.Sprintf("faults-%d", l.seq.Add(1)), user: ids[r.IntN(len(ids))],
			drop: hot[r.IntN(len(hot))], quantity: 1}
		l.mu.Lock()
		l.records = append(l.records, rec)
		l.mu.Unlock()
		l.place(rec, r.IntN(len(l.s.apis)))
	}
}

// place tries rec until a final answer (or 2 minutes: then it stays unresolved and the check fails).
func (l *load) place(rec *orderRec, first int) {
	deadline := time.Now().Add(2 * time.Minute)
	pause := 100 * time.Millisecond
	for time.Now().Before(deadline) {
		api := l.s.apis[(first+rec.attempts)%len(l.s.apis)]
		rec.attempts++
		a := l.post(api.base()+"/orders", l.w.tokens[rec.user],
			fmt.Sprintf(`{"drop_id":%d,"quantity":%d,"idempotency_key":%q}`, rec.drop, rec.quantity, rec.key))
		label := "err"
		if a.err == nil {
			label = fmt.Sprintf("%d %s", a.status, a.code)
		}
		rec.statuses = append(rec.statuses, label)
		l.mu.Lock()
		l.answers[label]++
		if a.err == nil && a.took > l.s.reqLimit+time.Second {
			l.slow = append(l.slow, fmt.Sprintf("%s took %s", label, a.took))
		}
		l.mu.Unlock()
		switch {
		case a.err == nil && a.status == http.StatusCreated:
			rec.final, rec.orderID, rec.replayed = "confirmed", a.orderID, a.replayed
			return
		case a.err == nil && a.status == http.StatusConflict && a.code != "request_in_progress":
			rec.final = a.code
			return
		}
		time.Sleep(pause + time.Duration(rand.Int64N(int64(pause))))
		pause = min(2*pause, time.Second)
	}
}

func (l *load) post(url, token, body string) answer {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return l.do(req)
}

func (l *load) do(req *http.Request) answer {
	start := time.Now()
	resp, err := l.client.Do(req)
	if err != nil {
		return answer{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), took: time.Since(start),
		replayed: resp.Header.Get("Idempotent-Replayed") == "true"}
	var v struct {
		Code    string `json:"code"`
		OrderID int64  `json:"order_id"`
		DropID  int64  `json:"drop_id"`
	}
	if json.Unmarshal(b, &v) == nil {
		a.code, a.orderID, a.dropID = v.Code, v.OrderID, v.DropID
	}
	if resp.StatusCode >= 400 && !bytes.HasPrefix([]byte(a.contentType), []byte("application/problem+json")) {
		a.code = "not-problem-json:" + a.contentType
	}
	return a
}

// createDrop creates a drop of creator c over REST, retrying on the other api until it is created.
func (l *load) createDrop(c int64, start time.Time, stock, maxPerUser int) int64 {
	l.t.Helper()
	body := fmt.Sprintf(`{"product_id":%d,"start_time":%q,"end_time":%q,"stock_count":%d,"max_per_user":%d}`,
		c, start.UTC().Format(time.RFC3339Nano), start.Add(time.Hour).UTC().Format(time.RFC3339Nano), stock, maxPerUser)
	var last answer
	for i := range 50 {
		api := l.s.apis[i%len(l.s.apis)]
		if !api.running() {
			continue
		}
		last = l.post(api.base()+"/drops", l.w.tokens[c], body)
		if last.err == nil && last.status == http.StatusCreated {
			return last.dropID
		}
		time.Sleep(200 * time.Millisecond)
	}
	l.t.Fatalf("POST /drops: %+v", last)
	return 0
}

// setHot makes the orders go to drops.
func (l *load) setHot(drops ...int64) {
	l.mu.Lock()
	l.hot = drops
	l.mu.Unlock()
}

// takeAnswers returns and resets the phase's answer counts and slow answers.
func (l *load) takeAnswers() (map[string]int, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, s := l.answers, l.slow
	l.answers, l.slow = map[string]int{}, nil
	return a, s
}

// checkOrders compares every intent with the database: each confirmed answer is that order, confirmed;
// each refusal left no order under its key; every key holds at most one order; nothing is unresolved;
// and for every drop the confirmed quantities equal the stock taken, never above the initial stock.
func (l *load) checkOrders(ctx context.Context) (confirmed, refused int, problems []string) {
	l.t.Helper()
	l.mu.Lock()
	recs := append([]*orderRec(nil), l.records...)
	l.mu.Unlock()
	type dbOrder struct {
		id, user, drop int64
		qty            int
		status         string
	}
	rows, err := l.s.db.Query(ctx, `SELECT idempotency_key, order_id, user_id, drop_id, quantity, status FROM orders
		WHERE idempotency_key LIKE 'faults-%'`)
	if err != nil {
		l.t.Fatal(err)
	}
	byKey := map[string]dbOrder{}
	for rows.Next() {
		var k string
		var o dbOrder
		if err := rows.Scan(&k, &o.id, &o.user, &o.drop, &o.qty, &o.status); err != nil {
			l.t.Fatal(err)
		}
		if _, dup := byKey[k]; dup {
			problems = append(problems, fmt.Sprintf("key %s holds two orders", k))
		}
		byKey[k] = o
	}
	rows.Close()
	for _, r := range recs {
		o, inDB := byKey[r.key]
		switch {
		case r.final == "":
			problems = append(problems, fmt.Sprintf("%s unresolved after %d attempts: %v", r.key, r.attempts, r.statuses))
		case r.final == "confirmed":
			confirmed++
			if !inDB || o.id != r.orderID || o.user != r.user || o.drop != r.drop || o.qty != r.quantity || o.status != "confirmed" {
				problems = append(problems, fmt.Sprintf("%s answered confirmed order %d, database has %+v (found %v)", r.key, r.orderID, o, inDB))
			}
		default:
			refused++
			if inDB {
				problems = append(problems, fmt.Sprintf("%s answered %s after %v, yet order %d is in the database", r.key, r.final, r.statuses, o.id))
			}
		}
	}
	if len(byKey) != confirmed {
		problems = append(problems, fmt.Sprintf("%d orders in the database under the test's keys, %d confirmed answers", len(byKey), confirmed))
	}
	var bad int
	if err := l.s.db.QueryRow(ctx, `SELECT count(*) FROM drops d WHERE d.initial_stock - d.stock_count <>
		(SELECT coalesce(sum(quantity), 0) FROM orders o WHERE o.drop_id = d.drop_id AND o.status = 'confirmed')
		OR d.stock_count < 0 OR d.stock_count > d.initial_stock
		OR (d.stock_count = 0) <> (d.status IN ('sold_out', 'ended') AND d.stock_count = 0)`).Scan(&bad); err != nil {
		l.t.Fatal(err)
	}
	if bad != 0 {
		problems = append(problems, fmt.Sprintf("%d drops whose confirmed orders do not equal the stock taken (or oversold)", bad))
	}
	return confirmed, refused, problems
}
