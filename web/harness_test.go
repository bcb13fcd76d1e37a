package web_test

// The end-to-end harness: a real `livedrops all` (built from ../cmd/livedrops, its own dev stack in a
// temporary data dir, on a free loopback port), a second origin served by the test for the SDK on other
// people's pages, and headless Chromium driven with chromedp.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/livedrops/livedrops/api/auth"
)

// chromiumPath is Debian's chromium; `.ci/deps.sh chromium` installs it.
const chromiumPath = "/usr/bin/chromium"

// artifacts is where the browser tests write their screenshots (gitignored).
const artifacts = "test-artifacts"

// stack is the livedrops process all the tests of the package share, and the second origin.
var stack *server

func TestMain(m *testing.M) {
	code := m.Run()
	if browserOnce.stop != nil {
		browserOnce.stop()
	}
	if stack != nil {
		stack.stop(syscall.SIGTERM)
		_ = os.RemoveAll(stack.dataDir)
		stack.origin.Close()
	}
	os.Exit(code)
}

var stackOnce sync.Mutex

// liveStack starts (once) and returns the shared `livedrops all`.
func liveStack(t *testing.T) *server {
	t.Helper()
	stackOnce.Lock()
	defer stackOnce.Unlock()
	if stack != nil {
		if err := stack.ready(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		return stack
	}
	s := &server{}
	tmp, err := os.MkdirTemp("", "livedrops-web-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(tmp, 0o755) // PostgreSQL runs as the postgres user when the tests run as root
	s.dataDir = filepath.Join(tmp, "data")
	s.bin = filepath.Join(tmp, "livedrops")
	out, err := exec.Command("go", "build", "-o", s.bin, "../cmd/livedrops").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	s.port = freePort(t)
	s.base = fmt.Sprintf("http://localhost:%d", s.port)
	s.origin = httptest.NewServer(http.HandlerFunc(s.serveOrigin))
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	if err := s.ready(120 * time.Second); err != nil {
		t.Fatal(err)
	}
	stack = s
	return s
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// server is one `livedrops all` child process; restart keeps its data dir and port.
type server struct {
	bin, dataDir, base string
	port               int
	origin             *httptest.Server

	mu   sync.Mutex
	cmd  *exec.Cmd
	log  bytes.Buffer
	exit chan error
}

func (s *server) start() error {
	cmd := exec.Command(s.bin, "all")
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("LIVEDROPS_HTTP_ADDR=127.0.0.1:%d", s.port), "LIVEDROPS_DATA_DIR="+s.dataDir,
		"DATABASE_URL=", "REDIS_URL=", "NATS_URL=", "LIVEDROPS_JWT_SECRET=", "LIVEDROPS_LOG_FORMAT=json",
		"LIVEDROPS_ALLOWED_ORIGINS="+s.origin.URL, "LIVEDROPS_RATE_IP=0", "LIVEDROPS_SHUTDOWN_TIMEOUT=20s")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exit := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			if s.log.Len() < 8<<20 {
				s.log.Write(sc.Bytes())
				s.log.WriteByte('\n')
			}
			s.mu.Unlock()
		}
		exit <- cmd.Wait()
	}()
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()
	return nil
}

// ready waits for /readyz to answer 200.
func (s *server) ready(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-s.exit:
			s.exit <- err
			return fmt.Errorf("livedrops exited before ready: %v\n%s", err, s.tail())
		default:
		}
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("livedrops not ready within %s (last: %v)\n%s", timeout, err, s.tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop signals the process and waits for it to exit.
func (s *server) stop(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.mu.Unlock()
	if cmd == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exit:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-exit
	}
}

func (s *server) tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.log.Bytes()
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// mint makes a token for user id with the dev stack's secret; now shifts its clock (for expired ones).
func (s *server) mint(id int64, now func() time.Time) (string, error) {
	secret, err := os.ReadFile(filepath.Join(s.dataDir, "jwt-secret"))
	if err != nil {
		return "", err
	}
	tk, err := auth.New(auth.Config{Secret: bytes.TrimSpace(secret), Issuer: "livedrops", Audience: "livedrops", Now: now})
	if err != nil {
		return "", err
	}
	return tk.Mint(id, time.Hour)
}

// call is one REST call from the test itself; it fails the test on a status other than want.
func (s *server) call(t *testing.T, method, path, token string, body any, want int, out any) http.Header {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.Header
}

type user struct {
	ID    int64  `json:"user_id"`
	Token string `json:"token"`
}

func (s *server) newUser(t *testing.T, name string) user {
	t.Helper()
	var u user
	s.call(t, "POST", "/users", "", map[string]string{"name": name, "email": fmt.Sprintf("%s-%d@example.com", name, time.Now().UnixNano())}, 201, &u)
	return u
}

type dropJSON struct {
	DropID       int64  `json:"drop_id"`
	CreatorID    int64  `json:"creator_id"`
	StartTime    string `json:"start_time"`
	StockCount   int    `json:"stock_count"`
	InitialStock int    `json:"initial_stock"`
	Status       string `json:"status"`
}

// newDrop makes u a creator (once) with a product and a drop starting after `in`.
func (s *server) newDrop(t *testing.T, u user, in time.Duration, stock, perUser int) dropJSON {
	t.Helper()
	var c map[string]any
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/creators/%d", s.base, u.ID), nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 404 {
			s.call(t, "POST", "/creators", u.Token, map[string]string{"profile_name": "Shop " + fmt.Sprint(u.ID)}, 201, &c)
		}
	}
	var p struct {
		ProductID int64 `json:"product_id"`
	}
	s.call(t, "POST", "/products", u.Token, map[string]any{"title": "Poster", "price_cents": 900}, 201, &p)
	start := time.Now().Add(in)
	var d dropJSON
	s.call(t, "POST", "/drops", u.Token, map[string]any{"product_id": p.ProductID, "start_time": start.UTC().Format(time.RFC3339Nano),
		"end_time": start.Add(time.Hour).UTC().Format(time.RFC3339Nano), "stock_count": stock, "max_per_user": perUser}, 201, &d)
	return d
}

func (s *server) drop(t *testing.T, id int64) dropJSON {
	t.Helper()
	var d dropJSON
	s.call(t, "GET", fmt.Sprintf("/drops/%d", id), "", nil, 200, &d)
	return d
}

// --- the browser ---

var browserOnce struct {
	sync.Mutex
	ctx  context.Context
	stop func() // ends Chromium and removes its profile
}

// browser returns the shared Chromium (started once, headless, a fresh profile).
func browser(t *testing.T) context.Context {
	t.Helper()
	browserOnce.Lock()
	defer browserOnce.Unlock()
	if browserOnce.ctx != nil {
		return browserOnce.ctx
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is missing at %s (%v): `.ci/deps.sh chromium` installs it (make test-browser does)", chromiumPath, err)
	}
	profile, err := os.MkdirTemp("", "livedrops-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(profile),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 800),
	}
	allocCtx, stopAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, stopBrowser := chromedp.NewContext(allocCtx)
	browserOnce.stop = func() {
		stopBrowser()
		stopAlloc()
		_ = os.RemoveAll(profile)
	}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start Chromium: %v", err)
	}
	browserOnce.ctx = ctx
	return ctx
}

// tab opens a page in a new browser context (its own storage: another person) and closes it at the end
// of the test.
func tab(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser(t), chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("new tab: %v", err)
	}
	return ctx
}

// run does the actions within a deadline, failing the test with what the page shows.
func run(t *testing.T, ctx context.Context, what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		t.Fatalf("%s: %v\npage: %s\nlog: %s", what, err, pageText(ctx), pageLog(ctx))
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) into T.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("eval %s: %v", expr, err)
	}
	return v
}

// until polls a JavaScript predicate until it is truthy.
func until(t *testing.T, ctx context.Context, what, expr string, timeout time.Duration) {
	t.Helper()
	run(t, ctx, what, timeout, chromedp.Steps(asVoid(chromedp.Poll[any](expr, chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(timeout)))))
}

func asVoid[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Run(ctx, a)
		return err
	})
}

func pageText(ctx context.Context) string {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(c, chromedp.Evaluate[string](`document.body ? document.body.innerText : ''`))
	return strings.Join(strings.Fields(s), " ")
}

func pageLog(ctx context.Context) string {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(c, chromedp.Evaluate[string](`JSON.stringify((window.livedropsLog || []).slice(-30))`))
	return s
}

// screenshot writes the viewport as test-artifacts/<name>.png.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	time.Sleep(600 * time.Millisecond) // the stock bar's transition settles
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := chromedp.Run(c, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(artifacts, name+".png"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// serveOrigin is the second origin: a page that uses the SDK and the REST API of the livedrops server
// from another site, and /token, which mints tokens for it (?user=N&expired=1 for an expired one).
func (s *server) serveOrigin(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/token":
		var id int64
		_, _ = fmt.Sscan(r.URL.Query().Get("user"), &id)
		now := time.Now
		if r.URL.Query().Get("expired") == "1" {
			now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
		}
		tok, err := s.mint(id, now)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		_, _ = io.WriteString(w, tok)
	case "/":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, strings.ReplaceAll(shopPage, "BASE", s.base))
	case "/readme.html":
		// The complete example of web/README.md, pointed at this server.
		b, err := os.ReadFile("README.md")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		_, rest, _ := strings.Cut(string(b), "```html\n")
		example, _, _ := strings.Cut(rest, "```")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, strings.ReplaceAll(example, "http://localhost:8080", s.base))
	default:
		http.NotFound(w, r)
	}
}
