// Command orderfloor is the yardstick of `make bench-orders`: the least order service this machine can
// run on PostgreSQL, so the product's figures can be read as ratios to it, measured in the same sitting
// on the same database server with the same settings and durability. It is NOT a product path and
// imports no LiveDrops package.
//
// What it keeps: one Go process, net/http and encoding/json like the product, one pgx pool, one batcher
// goroutine per drop that takes whatever is queued (up to -max-batch) and sells it in ONE statement
// (one round trip, one commit flush: lock the drop's row, take the stock for the longest prefix of the
// batch that fits, insert those orders), a sold-out flag in memory, and idempotency keys answered from
// memory (a retry gets the same order with `Idempotent-Replayed: true`, two requests with one key at
// once get one order), backed by a UNIQUE (user_id, idempotency_key) index. Nothing is oversold: the
// stock column has a CHECK (stock >= 0) and is only taken under the row lock.
//
// What it leaves out, on purpose: token verification (the user is read from the JWT's payload without
// checking its signature), rate limits, per-user limits (max_per_user), the outbox and its events, the
// drop's status and times, request ids, access logs, metrics, and the stored request fingerprint.
//
// Its tables, created when missing: floor_drops (drop_id, stock) and floor_orders. The load generator
// (loadtest/orders) creates the drop row and reads the books.
//
//	orderfloor -http-addr 127.0.0.1:0 -database-url postgres://... [-pool 4] [-max-batch 500]
//
// It prints `listening <addr>` once it serves, and stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const schema = `
CREATE TABLE IF NOT EXISTS floor_drops (
    drop_id bigint PRIMARY KEY,
    stock   integer NOT NULL CHECK (stock >= 0)
);
CREATE TABLE IF NOT EXISTS floor_orders (
    order_id        bigserial PRIMARY KEY,
    drop_id         bigint NOT NULL,
    user_id         bigint NOT NULL,
    quantity        integer NOT NULL CHECK (quantity >= 1),
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);`

// sellSQL sells one batch in one statement: $1 the drop, $2..$4 the batch's users, quantities and keys
// in queue order. It answers, for each order sold, its position in the batch, its id and its time.
const sellSQL = `
WITH d AS (
    SELECT stock FROM floor_drops WHERE drop_id = $1 FOR UPDATE
), req AS (
    SELECT r.n, r.user_id, r.quantity, r.key, sum(r.quantity) OVER (ORDER BY r.n) AS upto
    FROM unnest($2::bigint[], $3::int[], $4::text[]) WITH ORDINALITY AS r (user_id, quantity, key, n)
), ok AS (
    SELECT req.* FROM req, d WHERE req.upto <= d.stock
), upd AS (
    UPDATE floor_drops SET stock = stock - (SELECT coalesce(sum(quantity), 0) FROM ok) WHERE drop_id = $1
)
INSERT INTO floor_orders (drop_id, user_id, quantity, idempotency_key)
SELECT $1, user_id, quantity, key FROM ok ORDER BY n
RETURNING order_id, created_at, idempotency_key, user_id, quantity`

func main() {
	addr := flag.String("http-addr", "127.0.0.1:0", "address to listen on")
	dbURL := flag.String("database-url", "", "PostgreSQL URL (required)")
	poolSize := flag.Int("pool", 4, "PostgreSQL connections")
	maxBatch := flag.Int("max-batch", 500, "most orders of one batch")
	pprofAddr := flag.String("pprof-addr", "", "serve net/http/pprof on this address too (empty: off)")
	flag.Parse()
	if *dbURL == "" || *poolSize < 1 || *maxBatch < 1 {
		fmt.Fprintln(os.Stderr, "orderfloor: -database-url is required; -pool and -max-batch must be positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *pprofAddr != "" {
		runtime.SetBlockProfileRate(10_000)
		runtime.SetMutexProfileFraction(100)
		go func() { _ = http.ListenAndServe(*pprofAddr, nil) }() // net/http/pprof's handlers on the default mux
	}
	if err := run(ctx, *addr, *dbURL, int32(*poolSize), *maxBatch); err != nil {
		fmt.Fprintln(os.Stderr, "orderfloor:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, dbURL string, poolSize int32, maxBatch int) error {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return err
	}
	cfg.MaxConns = poolSize
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	f := &floor{pool: pool, maxBatch: maxBatch, lanes: map[int64]*lane{}, keys: map[orderKey]*entry{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", f.placeOrder)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 120 * time.Second}
	fmt.Println("listening", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return srv.Shutdown(shutCtx)
}

type floor struct {
	pool     *pgxpool.Pool
	maxBatch int

	mu    sync.Mutex
	lanes map[int64]*lane
	keys  map[orderKey]*entry // every key seen: its one answer, once known
}

type orderKey struct {
	user int64
	key  string
}

// entry is the one answer of a key; done is closed once it is set.
type entry struct {
	done   chan struct{}
	body   []byte // request body the key was first used with
	status int
	answer []byte
}

type lane struct {
	dropID  int64
	pending []*request
	wake    chan struct{}
	soldOut bool
}

type request struct {
	key      orderKey
	quantity int
	e        *entry
}

type orderBody struct {
	DropID         int64  `json:"drop_id"`
	Quantity       int    `json:"quantity"`
	IdempotencyKey string `json:"idempotency_key"`
}

func (f *floor) placeOrder(w http.ResponseWriter, r *http.Request) {
	user, ok := userOf(r.Header.Get("Authorization"))
	if !ok {
		problem(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var req orderBody
	if err != nil || json.Unmarshal(body, &req) != nil || req.DropID < 1 || req.Quantity < 1 || req.IdempotencyKey == "" {
		problem(w, http.StatusBadRequest, "invalid_argument")
		return
	}
	k := orderKey{user, req.IdempotencyKey}
	f.mu.Lock()
	if e, ok := f.keys[k]; ok {
		f.mu.Unlock()
		<-e.done
		switch {
		case string(e.body) != string(body):
			problem(w, http.StatusUnprocessableEntity, "idempotency_mismatch")
		case e.status == http.StatusCreated:
			w.Header().Set("Idempotent-Replayed", "true")
			writeJSON(w, e.status, e.answer)
		default:
			writeJSON(w, e.status, e.answer)
		}
		return
	}
	e := &entry{done: make(chan struct{}), body: body}
	f.keys[k] = e
	l := f.lanes[req.DropID]
	if l == nil {
		l = &lane{dropID: req.DropID, wake: make(chan struct{}, 1)}
		f.lanes[req.DropID] = l
		go f.serve(l)
	}
	if l.soldOut {
		e.status, e.answer = http.StatusConflict, problemBody("sold_out")
		close(e.done)
		f.mu.Unlock()
		writeJSON(w, e.status, e.answer)
		return
	}
	l.pending = append(l.pending, &request{key: k, quantity: req.Quantity, e: e})
	f.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	<-e.done
	if e.status == http.StatusInternalServerError {
		// The outcome is unknown: let a retry of the key ask again.
		f.mu.Lock()
		delete(f.keys, k)
		f.mu.Unlock()
	}
	writeJSON(w, e.status, e.answer)
}

// serve is the batcher of one drop: it sells whatever is queued, one statement a batch.
func (f *floor) serve(l *lane) {
	for range l.wake {
		for {
			f.mu.Lock()
			n := min(len(l.pending), f.maxBatch)
			batch := l.pending[:n:n]
			l.pending = l.pending[n:]
			f.mu.Unlock()
			if n == 0 {
				break
			}
			f.sell(l, batch)
		}
	}
}

func (f *floor) sell(l *lane, batch []*request) {
	users := make([]int64, len(batch))
	quantities := make([]int32, len(batch))
	keys := make([]string, len(batch))
	for i, r := range batch {
		users[i], quantities[i], keys[i] = r.key.user, int32(r.quantity), r.key.key
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rows, err := f.pool.Query(ctx, sellSQL, l.dropID, users, quantities, keys)
	sold := map[orderKey][]byte{}
	if err == nil {
		var (
			id       int64
			created  time.Time
			k        orderKey
			quantity int
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &created, &k.key, &k.user, &quantity}, func() error {
			sold[k] = orderJSON(id, k.user, l.dropID, quantity, created)
			return nil
		})
	}
	f.mu.Lock()
	if err == nil && len(sold) < len(batch) {
		// The batch was cut short: what is left is less than the next order wanted (with the bench's
		// quantity 1, nothing). A yardstick may say sold out from then on.
		l.soldOut = true
	}
	f.mu.Unlock()
	for _, r := range batch {
		switch a, ok := sold[r.key]; {
		case err != nil:
			r.e.status, r.e.answer = http.StatusInternalServerError, problemBody("internal")
		case ok:
			r.e.status, r.e.answer = http.StatusCreated, a
		default:
			r.e.status, r.e.answer = http.StatusConflict, problemBody("sold_out")
		}
		close(r.e.done)
	}
}

func orderJSON(id, user, drop int64, quantity int, created time.Time) []byte {
	b, _ := json.Marshal(struct {
		OrderID   int64  `json:"order_id"`
		UserID    int64  `json:"user_id"`
		DropID    int64  `json:"drop_id"`
		Quantity  int    `json:"quantity"`
		Status    string `json:"status"`
		CreatedAt string `json:"created_at"`
	}{id, user, drop, quantity, "confirmed", created.UTC().Format("2006-01-02T15:04:05.000Z07:00")})
	return b
}

func problemBody(code string) []byte {
	return []byte(`{"code":"` + code + `"}`)
}

func problem(w http.ResponseWriter, status int, code string) { writeJSON(w, status, problemBody(code)) }

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body[:len(body):len(body)], '\n'))
}

// userOf reads the subject of a bearer JWT without checking its signature: the floor trusts its
// generator.
func userOf(header string) (int64, bool) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return 0, false
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return 0, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return 0, false
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return 0, false
	}
	id, err := strconv.ParseInt(claims.Sub, 10, 64)
	return id, err == nil && id > 0
}
