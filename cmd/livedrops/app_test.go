package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/natstest"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// testConfig is a configuration for role against this package's servers, listening on a free port.
func testConfig(t *testing.T, role, databaseURL string) Config {
	t.Helper()
	cfg, err := parseConfig(role, nil, env(map[string]string{
		"LIVEDROPS_HTTP_ADDR":  "127.0.0.1:0",
		"DATABASE_URL":         databaseURL,
		"REDIS_URL":            "redis://" + storetest.RedisAddr(t) + "/0",
		"NATS_URL":             natstest.Start(t).ClientURL(),
		"LIVEDROPS_JWT_SECRET": strings.Repeat("k", 32),
		"LIVEDROPS_DATA_DIR":   t.TempDir(),
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startApp(t *testing.T, cfg Config) *App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	app, err := Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := app.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return app
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// checkFor polls f until it returns nil or the timeout passes.
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

func TestEveryRoleServesProbesAndMetrics(t *testing.T) {
	for _, role := range []string{"all", "api", "hub", "worker"} {
		t.Run(role, func(t *testing.T) {
			app := startApp(t, testConfig(t, role, storetest.NewMigratedDatabase(t)))
			base := "http://" + app.Addr()

			resp, body := get(t, base+"/healthz")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("/healthz: got %d %s, want 200", resp.StatusCode, body)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("/healthz: no X-Request-Id")
			}

			resp, body = get(t, base+"/readyz")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("/readyz: got %d %s, want 200", resp.StatusCode, body)
			}
			var ready struct{ Checks map[string]string }
			if err := json.Unmarshal(body, &ready); err != nil {
				t.Fatal(err)
			}
			wantChecks := []string{"postgres", "redis"}
			if useNATS, _ := uses(role); useNATS {
				wantChecks = append(wantChecks, "nats")
			}
			for _, c := range wantChecks {
				if ready.Checks[c] != "ok" {
					t.Errorf("/readyz check %s: got %q, want ok (%s)", c, ready.Checks[c], body)
				}
			}

			resp, _ = get(t, base+"/no/such/route")
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("unknown route: got %d %q, want 404 problem+json", resp.StatusCode, resp.Header.Get("Content-Type"))
			}

			_, body = get(t, base+"/metrics")
			for _, want := range []string{
				`livedrops_http_requests_total{method="GET",route="/healthz",status="200"} 1`,
				`livedrops_http_request_duration_seconds_bucket{method="GET",route="/readyz"`,
				`livedrops_build_info{`,
				`role="` + role + `"`,
				`livedrops_db_pool_max_conns`,
				`go_goroutines`,
				`process_open_fds`,
			} {
				if !strings.Contains(string(body), want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		})
	}
}

func TestReadyzFailsWhenPostgresStops(t *testing.T) {
	pg := storetest.StartPostgres(t)
	app := startApp(t, testConfig(t, "api", pg.URL("postgres")))
	base := "http://" + app.Addr()
	if resp, body := get(t, base+"/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz before: got %d %s, want 200", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, base+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after PostgreSQL stopped: got %d %s, want 503", resp.StatusCode, body)
	}
	var problem struct{ Code, Detail string }
	if err := json.Unmarshal(body, &problem); err != nil {
		t.Fatal(err)
	}
	if problem.Code != "not_ready" || !strings.Contains(problem.Detail, "postgres") {
		t.Fatalf("/readyz problem: got %+v, want code not_ready naming postgres", problem)
	}
	if resp, _ := get(t, base+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz must stay 200 while a dependency is down, got %d", resp.StatusCode)
	}
}

// Shutdown fails readiness first and keeps serving through the drain delay, then closes the listener.
func TestShutdownFailsReadinessBeforeClosing(t *testing.T) {
	cfg := testConfig(t, "all", storetest.NewMigratedDatabase(t))
	cfg.DrainDelay = 2 * time.Second
	app, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + app.Addr()
	done := make(chan error, 1)
	go func() { done <- app.Shutdown(context.Background()) }()

	checkFor(t, time.Second, func() error {
		resp, _ := get(t, base+"/readyz")
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz while draining: got %d, want 503", resp.StatusCode)
		}
		return nil
	})
	if resp, _ := get(t, base+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz while draining: got %d, want 200", resp.StatusCode)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("listener still open after Shutdown")
	}
}

func TestRunTokenAndVersion(t *testing.T) {
	secret := strings.Repeat("z", 32)
	var out strings.Builder
	err := run(context.Background(), []string{"token", "-user", "42"},
		env(map[string]string{"LIVEDROPS_JWT_SECRET": secret}), &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.New(auth.Config{Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := tokens.Verify(strings.TrimSpace(out.String())); err != nil || id != 42 {
		t.Fatalf("minted token: Verify = %d, %v; want 42", id, err)
	}

	// Without a secret the token command uses, and creates, the dev stack's secret in the data dir.
	dir := t.TempDir()
	var a, b strings.Builder
	for _, w := range []*strings.Builder{&a, &b} {
		if err := run(context.Background(), []string{"token", "-user", "1"},
			env(map[string]string{"LIVEDROPS_DATA_DIR": dir}), w, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	devSecret, err := loadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	devTokens, _ := auth.New(auth.Config{Secret: []byte(devSecret)})
	if _, err := devTokens.Verify(strings.TrimSpace(b.String())); err != nil {
		t.Fatalf("token not signed with the data dir's secret: %v", err)
	}

	out.Reset()
	if err := run(context.Background(), []string{"version"}, env(nil), &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "livedrops ") {
		t.Fatalf("version: %q, %v", out.String(), err)
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"frobnicate"}, {"api", "-no-such-flag"}} {
		if err := run(context.Background(), args, env(nil), io.Discard, io.Discard); !isUsage(err) {
			t.Errorf("run(%q): got %v, want a usage error", args, err)
		}
	}
}

func TestRunMigrate(t *testing.T) {
	url := storetest.NewDatabase(t)
	for i := 0; i < 2; i++ { // a second run finds nothing to do
		if err := run(context.Background(), []string{"migrate"}, env(map[string]string{"DATABASE_URL": url}), io.Discard, io.Discard); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
	}
}

func isUsage(err error) bool { return errors.Is(err, errUsage) }

// call sends a JSON request and decodes the JSON answer into out (when not nil); it fails the test on
// any status but want.
func call(t *testing.T, method, url, token string, body any, want int, out any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: got %d %s, want %d", method, url, resp.StatusCode, got, want)
	}
	if out != nil {
		if err := json.Unmarshal(got, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, got)
		}
	}
}

// The whole path inside one `all` process: a drop created over REST is announced (drop.scheduled) and
// started on time by the worker (drop.started), both relayed to the creator's NATS subject.
func TestAllRoleDropIsScheduledAndStartedOverNATS(t *testing.T) {
	cfg := testConfig(t, "all", storetest.NewMigratedDatabase(t))
	app := startApp(t, cfg)
	base := "http://" + app.Addr()

	var user struct {
		UserID int64  `json:"user_id"`
		Token  string `json:"token"`
	}
	call(t, "POST", base+"/users", "", map[string]string{"name": "Cleo", "email": "cleo@example.com"}, http.StatusCreated, &user)
	call(t, "POST", base+"/creators", user.Token, map[string]string{"profile_name": "Cleo's"}, http.StatusCreated, nil)
	var product struct {
		ProductID int64 `json:"product_id"`
	}
	call(t, "POST", base+"/products", user.Token, map[string]any{"title": "Hoodie", "description": "warm", "price_cents": 4900},
		http.StatusCreated, &product)

	nc, err := nats.Connect(cfg.NatsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msgs := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(fanout.CreatorSubject(user.UserID), msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	start := time.Now().Add(1500 * time.Millisecond).UTC().Truncate(time.Millisecond)
	var drop struct {
		DropID int64 `json:"drop_id"`
	}
	call(t, "POST", base+"/drops", user.Token, map[string]any{
		"product_id": product.ProductID, "start_time": start.Format(time.RFC3339Nano),
		"end_time": start.Add(time.Hour).Format(time.RFC3339Nano), "stock_count": 10, "max_per_user": 2,
	}, http.StatusCreated, &drop)

	for _, want := range []fanout.Type{fanout.DropScheduled, fanout.DropStarted} {
		select {
		case m := <-msgs:
			var ev fanout.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatalf("event %s: %v", m.Data, err)
			}
			if ev.Type != want || ev.DropID != drop.DropID || ev.CreatorID != user.UserID || ev.ID == "" {
				t.Fatalf("got %s, want %s of drop %d by creator %d with an id", m.Data, want, drop.DropID, user.UserID)
			}
			if m.Header.Get(nats.MsgIdHdr) != ev.ID {
				t.Errorf("Nats-Msg-Id %q, want the event id %q", m.Header.Get(nats.MsgIdHdr), ev.ID)
			}
			if want == fanout.DropStarted {
				if !ev.TS.Equal(start) {
					t.Errorf("drop.started ts %s, want the start_time %s", ev.TS, start)
				}
				if lag := time.Since(start); lag > 2*time.Second {
					t.Errorf("drop.started arrived %s after start_time", lag)
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s on %s", want, fanout.CreatorSubject(user.UserID))
		}
	}
}

// A follower's socket on the `all` role receives the creator's drop.scheduled and, on time,
// drop.started: REST, outbox, relay, JetStream, hub, WebSocket, end to end.
func TestAllRoleFollowerSocketGetsTheDrop(t *testing.T) {
	cfg := testConfig(t, "all", storetest.NewMigratedDatabase(t))
	app := startApp(t, cfg)
	base := "http://" + app.Addr()

	type user struct {
		UserID int64  `json:"user_id"`
		Token  string `json:"token"`
	}
	var creator, fan user
	call(t, "POST", base+"/users", "", map[string]string{"name": "Dee", "email": "dee@example.com"}, http.StatusCreated, &creator)
	call(t, "POST", base+"/users", "", map[string]string{"name": "Fan", "email": "fan@example.com"}, http.StatusCreated, &fan)
	call(t, "POST", base+"/creators", creator.Token, map[string]string{"profile_name": "Dee"}, http.StatusCreated, nil)
	call(t, "POST", fmt.Sprintf("%s/users/%d/follow/%d", base, fan.UserID, creator.UserID), fan.Token, nil, http.StatusNoContent, nil)
	var product struct {
		ProductID int64 `json:"product_id"`
	}
	call(t, "POST", base+"/products", creator.Token, map[string]any{"title": "Cap", "description": "", "price_cents": 1500},
		http.StatusCreated, &product)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+app.Addr()+"/ws?access_token="+fan.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	read := func() map[string]any {
		t.Helper()
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
		return m
	}
	if hello := read(); hello["type"] != "hello" || hello["conn_id"] == "" {
		t.Fatalf("first frame %v, want hello", hello)
	}

	start := time.Now().Add(1500 * time.Millisecond).UTC().Truncate(time.Millisecond)
	var drop struct {
		DropID int64 `json:"drop_id"`
	}
	call(t, "POST", base+"/drops", creator.Token, map[string]any{
		"product_id": product.ProductID, "start_time": start.Format(time.RFC3339Nano),
		"end_time": start.Add(time.Hour).Format(time.RFC3339Nano), "stock_count": 5, "max_per_user": 1,
	}, http.StatusCreated, &drop)

	for _, want := range []string{"drop.scheduled", "drop.started"} {
		ev := read()
		// The follow made before the socket opened may be relayed after its hello: the socket receives
		// every event from hello on, that one included.
		for ev["type"] == "follow.changed" {
			ev = read()
		}
		if ev["type"] != want || ev["drop_id"] != float64(drop.DropID) || ev["id"] == "" {
			t.Fatalf("got %v, want %s of drop %d", ev, want, drop.DropID)
		}
		if want == "drop.started" {
			if lag := time.Since(start); lag > 2*time.Second {
				t.Errorf("drop.started reached the socket %s after start_time, want within 2 s", lag)
			}
		}
	}
}

// The hub's follow-list cache (Redis) stays in step with the follows: a fan whose list was cached while
// following nobody follows through the API, reconnects and hears the creator; then follows a second
// creator through the store alone (as if the API died between its commit and its invalidation), and the
// relay's invalidation before it publishes follow.changed makes the next socket hear that creator too.
func TestAllRoleFollowListCacheKeptInStep(t *testing.T) {
	cfg := testConfig(t, "all", storetest.NewMigratedDatabase(t))
	app := startApp(t, cfg)
	base := "http://" + app.Addr()
	type user struct {
		UserID int64  `json:"user_id"`
		Token  string `json:"token"`
	}
	var c1, c2, fan user
	call(t, "POST", base+"/users", "", map[string]string{"name": "C1", "email": "c1@example.com"}, http.StatusCreated, &c1)
	call(t, "POST", base+"/users", "", map[string]string{"name": "C2", "email": "c2@example.com"}, http.StatusCreated, &c2)
	call(t, "POST", base+"/users", "", map[string]string{"name": "Fan", "email": "fan2@example.com"}, http.StatusCreated, &fan)
	products := map[int64]int64{}
	for _, c := range []user{c1, c2} {
		call(t, "POST", base+"/creators", c.Token, map[string]string{"profile_name": "C"}, http.StatusCreated, nil)
		var p struct {
			ProductID int64 `json:"product_id"`
		}
		call(t, "POST", base+"/products", c.Token, map[string]any{"title": "Cap", "price_cents": 1500}, http.StatusCreated, &p)
		products[c.UserID] = p.ProductID
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func() *websocket.Conn {
		t.Helper()
		ws, _, err := websocket.Dial(ctx, "ws://"+app.Addr()+"/ws?access_token="+fan.Token, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, b, err := ws.Read(ctx)
		if err != nil || !strings.Contains(string(b), `"type":"hello"`) {
			t.Fatalf("first frame %s, %v; want hello", b, err)
		}
		return ws
	}
	// hears waits for the drop.scheduled of a new drop of creator c on a fresh socket.
	hears := func(c user) {
		t.Helper()
		ws := dial()
		defer ws.CloseNow()
		start := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
		var drop struct {
			DropID int64 `json:"drop_id"`
		}
		call(t, "POST", base+"/drops", c.Token, map[string]any{"product_id": products[c.UserID],
			"start_time": start.Format(time.RFC3339Nano), "end_time": start.Add(time.Hour).Format(time.RFC3339Nano),
			"stock_count": 5, "max_per_user": 1}, http.StatusCreated, &drop)
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				t.Fatalf("creator %d's drop %d never reached the fan: %v", c.UserID, drop.DropID, err)
			}
			var ev map[string]any
			_ = json.Unmarshal(b, &ev)
			if ev["type"] == "drop.scheduled" && ev["drop_id"] == float64(drop.DropID) {
				return
			}
		}
	}
	// The fan's empty list gets cached.
	dial().CloseNow()
	call(t, "POST", fmt.Sprintf("%s/users/%d/follow/%d", base, fan.UserID, c1.UserID), fan.Token, nil, http.StatusNoContent, nil)
	hears(c1)

	// A follow the API never invalidated: only the relay's invalidation (before follow.changed goes out)
	// can bring it to the cache. Wait for the relay to have published it, then connect.
	nc, err := nats.Connect(cfg.NatsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msgs := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(fanout.UserSubject(fan.UserID), msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.NewFollows(app.pool, nil).Follow(ctx, fan.UserID, c2.UserID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-msgs:
	case <-time.After(10 * time.Second):
		t.Fatal("follow.changed not relayed")
	}
	hears(c2)
}
