package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/livedrops/livedrops/loadtest/livedropstest"
)

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestNginxFrontsTwoAPIsAndTwoHubs runs the multi-node layout of docker-compose.yml as processes on
// this machine: `livedrops all` for the services (its PostgreSQL, Redis and NATS) and the worker, two
// `livedrops api` and two `livedrops hub` processes on them, and nginx with deploy/nginx/nginx.conf in
// front. The configuration is the committed one with only what a test must change: the upstream
// addresses and the listen port (free loopback ports instead of the compose names and :80) and the
// file limits (this machine caps a process at 20,000 open files). Through nginx, REST reaches both
// api processes, a WebSocket upgrades and an SSE stream flows unbuffered to a hub, both receive a
// drop's start, /metrics stays hidden, and the access log never holds the ?access_token= of a browser.
func TestNginxFrontsTwoAPIsAndTwoHubs(t *testing.T) {
	dir, err := livedropstest.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin, err := livedropstest.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	start := func(role string, extra ...string) *livedropstest.Process {
		t.Helper()
		p, err := livedropstest.Start(bin, role, data, extra...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := p.Stop(); err != nil {
				t.Error(err)
			}
		})
		return p
	}
	services := start("all")
	secret, err := os.ReadFile(filepath.Join(data, "jwt-secret"))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"DATABASE_URL=" + services.DatabaseURL, "REDIS_URL=" + services.RedisURL,
		"NATS_URL=" + services.NatsURL, "LIVEDROPS_JWT_SECRET=" + strings.TrimSpace(string(secret))}
	nodes := map[string]*livedropstest.Process{
		"api-1": start("api", env...), "api-2": start("api", env...),
		"hub-1": start("hub", env...), "hub-2": start("hub", env...),
	}

	// The committed configuration, with the test's addresses and limits.
	b, err := os.ReadFile("nginx/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	lb := freeAddr(t)
	for name, p := range nodes {
		conf = strings.ReplaceAll(conf, "server "+name+":8080 ", "server "+strings.TrimPrefix(p.URL, "http://")+" ")
	}
	for from, to := range map[string]string{
		"listen 80;": "listen " + lb + ";", "worker_processes auto;": "worker_processes 2;",
		"worker_rlimit_nofile 1048576;": "worker_rlimit_nofile 8192;", "worker_connections 65535;": "worker_connections 4096;",
	} {
		if !strings.Contains(conf, from) {
			t.Fatalf("nginx.conf has no %q to replace for the test", from)
		}
		conf = strings.ReplaceAll(conf, from, to)
	}
	if regexp.MustCompile(`server (api|hub)-\d`).MatchString(conf) {
		t.Fatalf("an upstream name is left:\n%s", conf)
	}
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	nginx := "nginx"
	if _, err := exec.LookPath(nginx); err != nil {
		nginx = "/usr/sbin/nginx"
	}
	var accessLog, errorLog lockedBuffer
	cmd := exec.Command(nginx, "-p", dir, "-c", confFile, "-e", "stderr", "-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+";")
	cmd.Stdout, cmd.Stderr = &accessLog, &errorLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	base := "http://" + lb
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("nginx exited: %v\n%s", err, errorLog.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not answering after 30 s (%v)\n%s", err, errorLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := rest{t, ctx, base}
	creator, fan, product := r.shop("nginx")

	// A browser's WebSocket and a browser's SSE stream, both with ?access_token=.
	ws, _, err := websocket.Dial(ctx, "ws://"+lb+"/ws?access_token="+fan.Token, nil)
	if err != nil {
		t.Fatalf("WebSocket through nginx: %v\n%s", err, errorLog.String())
	}
	defer ws.CloseNow()
	if _, hello, err := ws.Read(ctx); err != nil || !bytes.Contains(hello, []byte(`"hello"`)) {
		t.Fatalf("WebSocket hello through nginx: %q, %v", hello, err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/events?access_token="+fan.Token, nil)
	sse, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sse.Body.Close()
	if sse.StatusCode != http.StatusOK || !strings.HasPrefix(sse.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("SSE through nginx: %d %s", sse.StatusCode, sse.Header.Get("Content-Type"))
	}
	sseLines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(sse.Body)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "data:") {
				sseLines <- l
			}
		}
		close(sseLines)
	}()
	waitSSE := func(what string) {
		t.Helper()
		for {
			select {
			case l, ok := <-sseLines:
				if !ok {
					t.Fatalf("SSE stream ended before %s", what)
				}
				if strings.Contains(l, what) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no %s on the SSE stream through nginx (buffered?)", what)
			}
		}
	}
	waitSSE(`"hello"`)

	drop := r.drop(creator, product, 1500*time.Millisecond)
	for {
		_, frame, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("waiting for drop.started on the WebSocket through nginx: %v", err)
		}
		if bytes.Contains(frame, []byte(`"drop.started"`)) {
			break
		}
	}
	// The SSE frame must come as it happens (within seconds), not when nginx's buffer fills.
	waitSSE(`"drop.started"`)
	ws.Close(websocket.StatusNormalClosure, "")

	// REST is spread over both api processes; the metrics are not served through nginx.
	apiRequests := func() map[string]float64 {
		out := make(map[string]float64)
		for _, name := range []string{"api-1", "api-2"} {
			resp, err := http.Get(nodes[name].URL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "livedrops_http_requests_total{") && strings.Contains(l, `route="/drops/{id}"`) {
					var v float64
					fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v)
					out[name] += v
				}
			}
		}
		return out
	}
	before := apiRequests()
	for range 20 {
		r.call("GET", fmt.Sprintf("/drops/%d", drop), "", nil, 200, nil)
	}
	after := apiRequests()
	for _, name := range []string{"api-1", "api-2"} {
		if after[name] <= before[name] {
			t.Errorf("%s served none of 20 GET /drops/{id} through nginx (%v → %v)", name, before, after)
		}
	}
	r.call("GET", "/metrics", "", nil, 404, nil)

	// The access log: the socket paths are there (nginx writes a line when a request ends), the
	// token is not.
	sse.Body.Close()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(accessLog.String(), "GET /events "); {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	log := accessLog.String()
	for _, want := range []string{"GET /ws HTTP/1.1\" 101", "GET /events HTTP/1.1\" 200", "GET /drops/"} {
		if !strings.Contains(log, want) {
			t.Errorf("access log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "access_token") || strings.Contains(log, fan.Token) {
		t.Errorf("the access log holds the token:\n%s", log)
	}
}
