package hub_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/api/httpkit"
	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/natslocal"
	"github.com/livedrops/livedrops/fanout/natstest"
	"github.com/livedrops/livedrops/hub"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// leakCheck fails the test if it leaves goroutines behind; call it first so its check runs last.
func leakCheck(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// env is the world a hub lives in: real PostgreSQL, Redis and NATS with the events stream. It plays
// the relay itself: events go to the outbox and to JetStream, and the outbox learns their sequence.
type env struct {
	t      *testing.T
	ctx    context.Context
	pool   *pgxpool.Pool
	nats   *natslocal.Server
	nc     *nats.Conn // the relay's connection
	js     natsjs.JetStream
	tokens *auth.Tokens
	redis  *redis.Presence // reads presence
	store  *postgres.Hub
	logs   *syncBuffer
	rdbPre string
	hubs   int
	newDep func(hubID string) hub.Deps
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	leakCheck(t)
	e := &env{t: t, ctx: testContext(t), logs: &syncBuffer{}}
	url := storetest.NewMigratedDatabase(t)
	pool, err := postgres.Open(e.ctx, url, postgres.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e.pool = pool
	e.store = postgres.NewHub(pool)
	e.nats = natstest.Start(t)
	e.nc = e.connect("relay")
	if err := jetstream.EnsureStream(e.ctx, e.nc, jetstream.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if e.js, err = natsjs.New(e.nc); err != nil {
		t.Fatal(err)
	}
	e.tokens, err = auth.New(auth.Config{Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	rdb, prefix := storetest.NewRedis(t)
	e.rdbPre = prefix
	e.redis, err = redis.NewPresence(rdb, redis.PresenceConfig{HubID: "reader", Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	e.newDep = func(hubID string) hub.Deps {
		nc := e.connect(hubID)
		sub := jetstream.NewSubscriber(nc, slog.New(slog.DiscardHandler), jetstream.SubscriberConfig{})
		t.Cleanup(sub.Close)
		rep, err := jetstream.NewReplayer(nc, jetstream.ReplayerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		pres, err := redis.NewPresence(rdb, redis.PresenceConfig{HubID: hubID, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return hub.Deps{
			Logger:    slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Verifier:  e.tokens,
			Follows:   e.store,
			Drops:     e.store,
			Bus:       sub,
			Sequences: e.store,
			Replayer:  rep,
			Presence:  pres,
			Activity:  rep,
		}
	}
	return e
}

func (e *env) connect(name string) *nats.Conn {
	e.t.Helper()
	nc, err := jetstream.Connect(e.ctx, e.nats.ClientURL(), name, slog.New(slog.DiscardHandler))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, sql, args...); err != nil {
		e.t.Fatalf("exec %q: %v", sql, err)
	}
}

// users creates users with these ids; the ones in creators are creators too.
func (e *env) users(ids ...int64) {
	e.t.Helper()
	for _, id := range ids {
		e.exec(`INSERT INTO users (user_id, name, email) VALUES ($1, $2, $3)`, id, fmt.Sprint("u", id), fmt.Sprint("u", id, "@x.test"))
	}
}

func (e *env) creators(ids ...int64) {
	e.t.Helper()
	for _, id := range ids {
		e.exec(`INSERT INTO creators (creator_id, profile_name) VALUES ($1, $2)`, id, fmt.Sprint("c", id))
	}
}

func (e *env) follow(user, creator int64) {
	e.t.Helper()
	e.exec(`INSERT INTO follows (creator_id, follower_id) VALUES ($1, $2)`, creator, user)
}

func (e *env) drop(id, creator int64) {
	e.t.Helper()
	e.exec(`INSERT INTO products (product_id, creator_id, title, price_cents) VALUES ($1, $2, 'p', 100)`, id, creator)
	e.exec(`INSERT INTO drops (drop_id, creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user)
		VALUES ($1, $2, $1, now() + interval '1 hour', now() + interval '2 hours', 50, 50, 1)`, id, creator)
}

// publish plays the relay for ev: outbox row, JetStream message with Nats-Msg-Id, stream_seq recorded.
// It returns the event with its id.
func (e *env) publish(ev fanout.Event) fanout.Event {
	e.t.Helper()
	if ev.TS.IsZero() {
		ev.TS = time.Now()
	}
	if err := ev.Validate(); err != nil {
		e.t.Fatal(err)
	}
	ev.ID = ""
	payload, _ := json.Marshal(ev)
	if err := e.pool.QueryRow(e.ctx, `INSERT INTO outbox (subject, type, payload) VALUES ($1, $2, $3) RETURNING event_id`,
		ev.Subject(), string(ev.Type), payload).Scan(&ev.ID); err != nil {
		e.t.Fatal(err)
	}
	data, _ := json.Marshal(ev)
	m := nats.NewMsg(ev.Subject())
	m.Data = data
	m.Header.Set(nats.MsgIdHdr, ev.ID)
	ack, err := e.js.PublishMsg(e.ctx, m)
	if err != nil {
		e.t.Fatal(err)
	}
	e.exec(`UPDATE outbox SET stream_seq = $1, published_at = now() WHERE event_id = $2`, int64(ack.Sequence), ev.ID)
	return ev
}

func creatorEvent(typ fanout.Type, creator, drop int64) fanout.Event {
	return fanout.Event{Type: typ, CreatorID: creator, DropID: drop, Data: json.RawMessage(`{"n":1}`)}
}

func userEvent(typ fanout.Type, user, creator, drop int64) fanout.Event {
	return fanout.Event{Type: typ, UserID: user, CreatorID: creator, DropID: drop}
}

func followChanged(user, creator int64, following bool) fanout.Event {
	return fanout.Event{Type: fanout.FollowChanged, UserID: user, CreatorID: creator,
		Data: json.RawMessage(fmt.Sprintf(`{"creator_id":%d,"following":%v}`, creator, following))}
}

func stockChanged(creator, drop int64, stock int) fanout.Event {
	return fanout.Event{Type: fanout.StockChanged, CreatorID: creator, DropID: drop,
		Data: json.RawMessage(fmt.Sprintf(`{"stock_count":%d,"sold":%d}`, stock, 50-stock))}
}

func (e *env) token(user int64) string {
	e.t.Helper()
	tok, err := e.tokens.Mint(user, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// node is one hub behind a test HTTP server with the production middleware.
type node struct {
	e   *env
	h   *hub.Hub
	srv *httptest.Server
	reg *prometheus.Registry
}

func (e *env) startHub(cfg hub.Config) *node {
	e.t.Helper()
	return e.startHubWith(cfg, nil)
}

// startHubWith is startHub with deps changed by change first (when not nil).
func (e *env) startHubWith(cfg hub.Config, change func(*hub.Deps)) *node {
	e.t.Helper()
	e.hubs++
	deps := e.newDep(fmt.Sprint("hub-", e.hubs))
	if change != nil {
		change(&deps)
	}
	reg := prometheus.NewRegistry()
	deps.Registerer = reg
	h, err := hub.New(cfg, deps)
	if err != nil {
		e.t.Fatal(err)
	}
	router := httpkit.NewRouter(httpkit.Options{Logger: deps.Logger})
	router.Get("/ws", h.ServeWS)
	router.Get("/events", h.ServeSSE)
	srv := httptest.NewServer(router)
	n := &node{e: e, h: h, srv: srv, reg: reg}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Close()
		if err := h.Shutdown(ctx); err != nil {
			e.t.Errorf("hub shutdown: %v", err)
		}
	})
	return n
}

// metric is the value of a counter or gauge of n with these labels (sum over the others).
func (n *node) metric(name string, labels ...string) float64 {
	n.e.t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		n.e.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
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

// histSum is the sum of the observations of histogram name of n.
func (n *node) histSum(name string) float64 {
	n.e.t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		n.e.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return sum
}

// msg is one frame a test client received.
type msg struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	TS        string          `json:"ts"`
	CreatorID int64           `json:"creator_id"`
	DropID    int64           `json:"drop_id"`
	Data      json.RawMessage `json:"data"`
	ConnID    string          `json:"conn_id"`
	Recovered *bool           `json:"recovered"`
	Code      any             `json:"code"`
	raw       string
	sseID     string
	event     string // SSE event field
	retry     string // SSE retry field
	at        time.Time
}

// client is a test WebSocket or SSE client; a goroutine reads its frames into a channel.
type client struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan msg
	done   chan struct{}
	mu     sync.Mutex
	err    error
	resp   *http.Response
}

type dialOpts struct {
	token  string
	noAuth bool
	query  string
	origin string
	header http.Header
}

func (n *node) wsURL(query string) string {
	u := "ws" + strings.TrimPrefix(n.srv.URL, "http") + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// dialWS connects user to n; it fails the test unless the upgrade succeeds.
func (n *node) dialWS(user int64, o dialOpts) *client {
	t := n.e.t
	t.Helper()
	if o.token == "" && !o.noAuth {
		o.token = n.e.token(user)
	}
	h := http.Header{}
	if o.token != "" {
		h.Set("Authorization", "Bearer "+o.token)
	}
	if o.origin != "" {
		h.Set("Origin", o.origin)
	}
	ctx, cancel := context.WithTimeout(n.e.ctx, 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, n.wsURL(o.query), &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	ws.SetReadLimit(-1)
	c := &client{t: t, ws: ws, frames: make(chan msg, 10000), done: make(chan struct{}), resp: resp}
	go func() {
		defer close(c.done)
		defer close(c.frames)
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
				return
			}
			var m msg
			if err := json.Unmarshal(data, &m); err != nil {
				t.Errorf("frame is not JSON: %q", data)
			}
			m.raw, m.at = string(data), time.Now()
			c.frames <- m
		}
	}()
	t.Cleanup(func() { c.close() })
	return c
}

// dialSSE opens an event stream of user on n; resp is the answer when it is not a stream.
func (n *node) dialSSE(user int64, o dialOpts) (*client, *http.Response) {
	t := n.e.t
	t.Helper()
	if o.token == "" && !o.noAuth {
		o.token = n.e.token(user)
	}
	u := n.srv.URL + "/events"
	if o.query != "" {
		u += "?" + o.query
	}
	req, err := http.NewRequestWithContext(n.e.ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range o.header {
		req.Header[k] = v
	}
	if o.token != "" {
		req.Header.Set("Authorization", "Bearer "+o.token)
	}
	if o.origin != "" {
		req.Header.Set("Origin", o.origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return nil, resp
	}
	c := &client{t: t, frames: make(chan msg, 10000), done: make(chan struct{}), resp: resp}
	go func() {
		defer close(c.done)
		defer close(c.frames)
		r := bufio.NewReader(resp.Body)
		var cur msg
		var data []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "":
				if len(data) > 0 {
					raw := strings.Join(data, "\n")
					if err := json.Unmarshal([]byte(raw), &cur); err != nil {
						t.Errorf("SSE data is not JSON: %q", raw)
					}
					cur.raw, cur.at = raw, time.Now()
					c.frames <- cur
				}
				cur, data = msg{}, nil
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id: "):
				cur.sseID = line[4:]
			case strings.HasPrefix(line, "event: "):
				cur.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				data = append(data, line[6:])
			case strings.HasPrefix(line, "retry: "):
				cur.retry = line[7:]
			}
		}
	}()
	t.Cleanup(func() { c.close() })
	return c, resp
}

func (c *client) close() {
	if c.ws != nil {
		_ = c.ws.CloseNow()
	} else if c.resp != nil {
		c.resp.Body.Close()
	}
	<-c.done
}

// next is the next frame, or a test failure after 10 s.
func (c *client) next() msg {
	c.t.Helper()
	select {
	case m, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("socket ended: %v", c.readErr())
		}
		return m
	case <-time.After(10 * time.Second):
		c.t.Fatal("no frame within 10s")
	}
	return msg{}
}

func (c *client) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// hello reads the first frame and checks it is a hello.
func (c *client) hello() msg {
	c.t.Helper()
	m := c.next()
	if m.Type != "hello" || m.ConnID == "" {
		c.t.Fatalf("first frame %s, want a hello", m.raw)
	}
	return m
}

// expect reads the next frame and checks it is event ev.
func (c *client) expect(ev fanout.Event) msg {
	c.t.Helper()
	m := c.next()
	if m.ID != ev.ID || m.Type != string(ev.Type) {
		c.t.Fatalf("got frame %s, want event %s (%s)", m.raw, ev.ID, ev.Type)
	}
	return m
}

// closed waits for the socket to end and returns its close status (-1 if not a close frame).
func (c *client) closed() (websocket.StatusCode, string) {
	c.t.Helper()
	for {
		select {
		case _, ok := <-c.frames:
			if ok {
				continue
			}
			err := c.readErr()
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			return -1, ""
		case <-time.After(10 * time.Second):
			c.t.Fatal("socket not closed within 10s")
		}
	}
}

func (c *client) send(v string) {
	c.t.Helper()
	if err := c.ws.Write(context.Background(), websocket.MessageText, []byte(v)); err != nil {
		c.t.Fatal(err)
	}
}

// waitFor polls cond until it holds, or fails the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func q(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v.Encode()
}

// dialRaw opens a WebSocket of user by hand and returns the TCP connection after the upgrade, with a
// small receive buffer, for a client that stops reading.
func (n *node) dialRaw(user int64) net.Conn {
	t := n.e.t
	t.Helper()
	addr := strings.TrimPrefix(n.srv.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
		addr, n.e.token(user))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	return conn
}
