package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/store/storetest"
)

// syncBuffer collects the process's log lines.
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

// The authorization matrix: every route of the API and both socket endpoints, each with no token, a
// malformed one, an expired one, one signed with another secret, one with alg "none", someone else's,
// and the right one, against the answer each must get. Then the tokens sent in query strings
// (access_token, as browsers send them to /ws and /events) must appear in no log line and no metric.
func TestAuthorizationMatrix(t *testing.T) {
	cfg := testConfig(t, "all", storetest.NewMigratedDatabase(t))
	cfg.LogLevel = slog.LevelDebug
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	app, err := Start(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := app.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	base := "http://" + app.Addr()

	type user struct {
		UserID int64  `json:"user_id"`
		Token  string `json:"token"`
	}
	var owner, other user
	call(t, "POST", base+"/users", "", map[string]string{"name": "Owner", "email": "owner@example.com"}, http.StatusCreated, &owner)
	call(t, "POST", base+"/users", "", map[string]string{"name": "Other", "email": "other@example.com"}, http.StatusCreated, &other)
	call(t, "POST", base+"/creators", owner.Token, map[string]string{"profile_name": "Owner's"}, http.StatusCreated, nil)
	var product struct {
		ProductID int64 `json:"product_id"`
	}
	call(t, "POST", base+"/products", owner.Token, map[string]any{"title": "Tee", "price_cents": 2500}, http.StatusCreated, &product)
	start := time.Now().Add(-time.Second).UTC()
	dropBody := func() map[string]any {
		return map[string]any{"product_id": product.ProductID, "start_time": time.Now().UTC().Format(time.RFC3339Nano),
			"end_time": start.Add(time.Hour).Format(time.RFC3339Nano), "stock_count": 100, "max_per_user": 50}
	}
	var drop struct {
		DropID int64 `json:"drop_id"`
	}
	call(t, "POST", base+"/drops", owner.Token, dropBody(), http.StatusCreated, &drop)
	var order struct {
		OrderID int64 `json:"order_id"`
	}
	checkFor(t, 10*time.Second, func() error { // the drop is live once its start_time has passed
		req, _ := http.NewRequest("POST", base+"/orders", strings.NewReader(fmt.Sprintf(`{"drop_id":%d,"quantity":1,"idempotency_key":"first"}`, drop.DropID)))
		req.Header.Set("Authorization", "Bearer "+owner.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("first order: %d %s", resp.StatusCode, b)
		}
		return json.NewDecoder(resp.Body).Decode(&order)
	})

	// The tokens, all for the owner but "someone else's".
	secret := []byte(cfg.JWTSecret)
	mint := func(c auth.Config, user int64, ttl time.Duration) string {
		t.Helper()
		c.Issuer, c.Audience = cfg.JWTIssuer, cfg.JWTAudience
		tok, err := auth.New(c)
		if err != nil {
			t.Fatal(err)
		}
		s, err := tok.Mint(user, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	past := func() time.Time { return time.Now().Add(-2 * time.Hour) }
	b64 := base64.RawURLEncoding.EncodeToString
	claims := fmt.Sprintf(`{"sub":"%d","iss":%q,"aud":%q,"iat":%d,"exp":%d}`, owner.UserID, cfg.JWTIssuer, cfg.JWTAudience,
		time.Now().Unix(), time.Now().Add(time.Hour).Unix())
	tokens := []struct{ name, token string }{
		{"no token", ""},
		{"malformed", "not.a-jwt"},
		{"expired", mint(auth.Config{Secret: secret, Now: past}, owner.UserID, time.Hour)},
		{"wrong signature", mint(auth.Config{Secret: []byte(strings.Repeat("w", 32))}, owner.UserID, time.Hour)},
		{"alg none", b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64([]byte(claims)) + "."},
		{"someone else's", other.Token},
		{"the right one", owner.Token},
	}
	bad := map[string]bool{"no token": true, "malformed": true, "expired": true, "wrong signature": true, "alg none": true}

	// want gives the status a route must answer with a token of kind k.
	public := func(string) int { return http.StatusOK }
	owned := func(okStatus, otherStatus int) func(string) int {
		return func(k string) int {
			switch {
			case bad[k]:
				return http.StatusUnauthorized
			case k == "someone else's":
				return otherStatus
			}
			return okStatus
		}
	}
	id := fmt.Sprint
	n := 0
	routes := []struct {
		method, path string
		body         func() any
		want         func(kind string) int
	}{
		{"GET", "/users/" + id(owner.UserID), nil, public},
		{"GET", "/users/" + id(owner.UserID) + "/following", nil, public},
		{"GET", "/creators/" + id(owner.UserID), nil, public},
		{"GET", "/creators/" + id(owner.UserID) + "/followers", nil, public},
		{"GET", "/products", nil, public},
		{"GET", "/products/" + id(product.ProductID), nil, public},
		{"GET", "/drops/live", nil, public},
		{"GET", "/drops/" + id(drop.DropID), nil, public},
		{"POST", "/users", func() any {
			n++
			return map[string]string{"name": "New", "email": fmt.Sprintf("new%d@example.com", n)}
		}, func(string) int { return http.StatusCreated }},
		// Becoming a creator acts on the caller: the other user becomes one, the owner already is.
		{"POST", "/creators", func() any { return map[string]string{"profile_name": "Shop"} },
			owned(http.StatusConflict, http.StatusCreated)},
		{"POST", "/users/" + id(owner.UserID) + "/follow/" + id(owner.UserID), nil, owned(http.StatusBadRequest, http.StatusForbidden)},
		{"DELETE", "/users/" + id(owner.UserID) + "/follow/" + id(owner.UserID), nil, owned(http.StatusNoContent, http.StatusForbidden)},
		{"POST", "/products", func() any { return map[string]any{"title": "Cap", "price_cents": 900} },
			owned(http.StatusCreated, http.StatusCreated)}, // the other user is a creator by now (POST /creators above)
		{"POST", "/drops", func() any { return dropBody() }, owned(http.StatusCreated, http.StatusForbidden)},
		{"POST", "/orders", func() any {
			n++
			return map[string]any{"drop_id": drop.DropID, "quantity": 1, "idempotency_key": fmt.Sprintf("matrix-%d", n)}
		}, owned(http.StatusCreated, http.StatusCreated)},
		{"GET", "/orders/" + id(order.OrderID), nil, owned(http.StatusOK, http.StatusNotFound)},
		{"GET", "/users/" + id(owner.UserID) + "/orders", nil, owned(http.StatusOK, http.StatusForbidden)},
	}
	for _, rt := range routes {
		for _, tk := range tokens {
			t.Run(rt.method+" "+rt.path+"/"+tk.name, func(t *testing.T) {
				var body io.Reader
				if rt.body != nil {
					b, _ := json.Marshal(rt.body())
					body = bytes.NewReader(b)
				}
				req, err := http.NewRequest(rt.method, base+rt.path, body)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				if tk.token != "" {
					req.Header.Set("Authorization", "Bearer "+tk.token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := rt.want(tk.name); resp.StatusCode != want {
					t.Errorf("got %d %s, want %d", resp.StatusCode, got, want)
				}
				if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
					t.Errorf("refusal %d as %q, want problem+json", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
				if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			})
		}
	}

	// Both socket endpoints, with the token in the header and in the query string.
	for _, tk := range tokens {
		for _, inQuery := range []bool{false, true} {
			where := map[bool]string{false: "header", true: "query"}[inQuery]
			t.Run("GET /ws/"+tk.name+"/"+where, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				u, h := "ws://"+app.Addr()+"/ws", http.Header{}
				switch {
				case tk.token != "" && inQuery:
					u += "?access_token=" + tk.token
				case tk.token != "":
					h.Set("Authorization", "Bearer "+tk.token)
				}
				ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
				if err != nil {
					t.Fatal(err)
				}
				defer ws.CloseNow()
				_, frame, err := ws.Read(ctx)
				if bad[tk.name] {
					if code := websocket.CloseStatus(err); code != 4401 {
						t.Errorf("got frame %s, err %v; want close 4401", frame, err)
					}
					return
				}
				if err != nil || !bytes.Contains(frame, []byte(`"type":"hello"`)) {
					t.Errorf("got %s, %v; want the hello", frame, err)
				}
			})
			t.Run("GET /events/"+tk.name+"/"+where, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				u := base + "/events"
				if tk.token != "" && inQuery {
					u += "?access_token=" + tk.token
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
				if tk.token != "" && !inQuery {
					req.Header.Set("Authorization", "Bearer "+tk.token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				want, wantType := http.StatusOK, "text/event-stream"
				if bad[tk.name] {
					want, wantType = http.StatusUnauthorized, "application/problem+json"
				}
				if resp.StatusCode != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), wantType) {
					t.Errorf("got %d %s, want %d %s", resp.StatusCode, resp.Header.Get("Content-Type"), want, wantType)
				}
			})
		}
	}

	// No token sent in a query string reaches a log line or a metric.
	_, metrics := get(t, base+"/metrics")
	lines := logs.String()
	for _, path := range []string{`"path":"/ws"`, `"path":"/events"`, `"path":"/orders"`} {
		if !strings.Contains(lines, `"msg":"http request"`) || !strings.Contains(lines, path) {
			t.Fatalf("no access log line with %s: the check below would read nothing\n%s", path, lines[:min(len(lines), 2000)])
		}
	}
	for _, tk := range tokens {
		if tk.token == "" {
			continue
		}
		for what, text := range map[string]string{"log": lines, "metrics": string(metrics)} {
			if strings.Contains(text, tk.token) {
				t.Errorf("the %s token appears in the %s", tk.name, what)
			}
		}
	}
	if strings.Contains(string(metrics), "access_token") {
		t.Error("a metric mentions access_token")
	}
}
