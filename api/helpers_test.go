package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/api"
	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/api/httpkit"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// spec is api/openapi.yaml, loaded and validated once; every answer the tests receive is checked
// against it.
var spec = sync.OnceValues(func() (routers.Router, error) {
	doc, err := openapi3.NewLoader().LoadFromFile("openapi.yaml")
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi.yaml is invalid: %w", err)
	}
	doc.Servers = nil // match the test server's address
	return gorillamux.NewRouter(doc)
})

func specRouter(tb testing.TB) routers.Router {
	tb.Helper()
	r, err := spec()
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// env is an API server on a fresh database.
type env struct {
	t      testing.TB
	srv    *httptest.Server
	pool   *pgxpool.Pool
	tokens *auth.Tokens
	now    func() time.Time
	logs   *bytes.Buffer
	// handler is the router srv serves, for benchmarks that skip the network.
	handler http.Handler
}

type envOption func(*api.Config)

// newEnv starts the API against PostgreSQL (no cache) with cfg edits applied.
func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	ctx := context.Background()
	url := storetest.NewMigratedDatabase(t)
	pool, err := postgres.Open(ctx, url, postgres.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	tokens, err := auth.New(auth.Config{Secret: []byte(strings.Repeat("s", 32))})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, pool: pool, tokens: tokens, now: time.Now, logs: &bytes.Buffer{}}
	logger := slog.New(slog.NewJSONHandler(&lockedWriter{w: e.logs}, nil))
	catalog := postgres.NewCatalog(pool, nil)
	users := postgres.NewUsers(pool)
	orders, err := postgres.NewOrders(pool, postgres.OrdersConfig{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = orders.Close(context.Background()) })
	cfg := api.Config{Logger: logger, Tokens: tokens, Users: users, Creators: users,
		Follows: postgres.NewFollows(pool, nil), Products: catalog, Drops: catalog, Orders: orders,
		Directory: postgres.NewDirectory(pool, nil)}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	router := httpkit.NewRouter(httpkit.Options{Logger: cfg.Logger, BodyLimit: 64 << 10})
	a.Routes(router)
	e.handler = router
	e.srv = httptest.NewServer(router)
	t.Cleanup(e.srv.Close)
	return e
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// response is an answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		tb.Fatalf("decode %s: %v", r.body, err)
	}
}

// problem decodes a problem+json answer.
func (r *response) problem(tb testing.TB) httpkit.Problem {
	tb.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		tb.Fatalf("got Content-Type %q (status %d, %s), want application/problem+json", ct, r.status, r.body)
	}
	var p httpkit.Problem
	r.decode(tb, &p)
	return p
}

// expect fails unless the answer has status and, for an error, problem code.
func (r *response) expect(tb testing.TB, status int, code string) {
	tb.Helper()
	if r.status != status {
		tb.Fatalf("got status %d (%s), want %d", r.status, r.body, status)
	}
	if code != "" {
		if p := r.problem(tb); p.Code != code || p.Status != status || p.Detail == "" {
			tb.Fatalf("got problem %+v, want code %s, status %d and a detail", p, code, status)
		}
	}
}

// raw sends a request as given, with a JSON Content-Type when body is not empty, checks the answer
// against the OpenAPI document, and returns it.
func (e *env) raw(method, path, token string, body []byte, header ...string) *response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := &response{status: resp.StatusCode, header: resp.Header, body: b}
	if resp.Header.Get(httpkit.RequestIDHeader) == "" {
		e.t.Errorf("%s %s: no %s header", method, path, httpkit.RequestIDHeader)
	}
	checkSpec(e.t, req, out)
	return out
}

// do sends v as JSON (nil: no body).
func (e *env) do(method, path, token string, v any) *response {
	e.t.Helper()
	var body []byte
	if v != nil {
		var err error
		if body, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	return e.raw(method, path, token, body)
}

// checkSpec validates an answer against the OpenAPI document: the path and method must be there, and
// the status, headers and body must match what it promises.
func checkSpec(tb testing.TB, req *http.Request, resp *response) {
	tb.Helper()
	route, params, err := specRouter(tb).FindRoute(req)
	if err != nil {
		if resp.status == http.StatusNotFound || resp.status == http.StatusMethodNotAllowed {
			return // no route here: the router's own 404/405
		}
		tb.Errorf("%s %s: not in openapi.yaml: %v", req.Method, req.URL.Path, err)
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.status,
		Header:                 resp.header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(resp.body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		tb.Errorf("%s %s answered %d %s\nwhich openapi.yaml does not allow: %v", req.Method, req.URL.Path, resp.status, resp.body, err)
	}
}

// newUser creates a user through the API and returns its id and token.
func (e *env) newUser(name string) (int64, string) {
	e.t.Helper()
	resp := e.do("POST", "/users", "", map[string]string{"name": name, "email": name + "@example.com"})
	resp.expect(e.t, http.StatusCreated, "")
	var u struct {
		UserID int64  `json:"user_id"`
		Token  string `json:"token"`
	}
	resp.decode(e.t, &u)
	return u.UserID, u.Token
}

// newCreator creates a user who becomes a creator.
func (e *env) newCreator(name string) (int64, string) {
	e.t.Helper()
	id, token := e.newUser(name)
	e.do("POST", "/creators", token, map[string]string{"profile_name": name}).expect(e.t, http.StatusCreated, "")
	return id, token
}

// newProduct creates a product of the creator with token.
func (e *env) newProduct(token, title string) int64 {
	e.t.Helper()
	resp := e.do("POST", "/products", token, map[string]any{"title": title, "description": "d", "price_cents": 1500})
	resp.expect(e.t, http.StatusCreated, "")
	var p struct {
		ProductID int64 `json:"product_id"`
	}
	resp.decode(e.t, &p)
	return p.ProductID
}
