package faults_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/store/postgres/pglocal"
	"github.com/livedrops/livedrops/store/redis/redislocal"
)

// The stack: PostgreSQL (pglocal), Redis (one redislocal server, or a Redis Cluster of six
// redis-server processes), a NATS cluster of three nats-server processes with JetStream, and the
// livedrops roles as processes of the real binary, the workers pushing to the FCM and Web Push
// stand-ins the test runs (push_test.go). Every livedrops process reaches PostgreSQL and each NATS node
// through a proxy of the test (proxy_test.go), so the network between them can be slowed and cut; the
// test itself talks to the servers directly.

const jwtSecret = "faults-test-secret-0123456789abcdef-0123"

// binaries builds livedrops, nats-server (from the nats-server/v2 module in go.mod) and the followers
// client into dir.
type binaries struct{ livedrops, nats, followers string }

func buildBinaries(t *testing.T, dir string) binaries {
	t.Helper()
	b := binaries{
		livedrops: filepath.Join(dir, "livedrops"),
		nats:      filepath.Join(dir, "nats-server"),
		followers: filepath.Join(dir, "followers"),
	}
	for out, pkg := range map[string]string{
		b.livedrops: "github.com/livedrops/livedrops/cmd/livedrops",
		b.nats:      "github.com/nats-io/nats-server/v2",
		b.followers: "github.com/livedrops/livedrops/loadtest/faults/followers",
	} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, o)
		}
	}
	return b
}

// freePort is a free loopback port.
func freePort(t *testing.T) int {
	t.Helper()
	p, err := pglocal.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// child is a process of the stack the test can kill, stop and start again with the same arguments.
type child struct {
	t       *testing.T
	name    string
	path    string
	args    []string
	env     []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newChild(t *testing.T, name, logPath, path string, args, env []string) *child {
	c := &child{t: t, name: name, path: path, args: args, env: env, logPath: logPath}
	t.Cleanup(func() { c.stop(10 * time.Second) })
	return c
}

// start runs the process, its standard error (and output) appended to its log.
func (c *child) start() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.path, c.args...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatalf("start %s: %v", c.name, err)
	}
	f.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.cmd, c.done = cmd, done
}

// running reports whether the process is up.
func (c *child) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// signal sends sig and waits up to wait for the exit, then kills.
func (c *child) signal(sig syscall.Signal, wait time.Duration) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-done
	}
	c.mu.Lock()
	c.cmd = nil
	c.mu.Unlock()
}

func (c *child) kill()                   { c.signal(syscall.SIGKILL, time.Minute) }
func (c *child) stop(wait time.Duration) { c.signal(syscall.SIGTERM, wait) }

// natsNode is one nats-server of the cluster.
type natsNode struct {
	*child
	name              string
	port, clusterPort int
	monitorPort       int
	proxy             *proxy
}

func startNATSCluster(t *testing.T, bin, dir string, n int) []*natsNode {
	t.Helper()
	nodes := make([]*natsNode, n)
	for i := range nodes {
		nodes[i] = &natsNode{name: fmt.Sprintf("n%d", i+1), port: freePort(t), clusterPort: freePort(t), monitorPort: freePort(t)}
	}
	var routes []string
	for _, nd := range nodes {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", nd.clusterPort))
	}
	for _, nd := range nodes {
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
max_payload: 1MB
jetstream { store_dir: %q }
cluster {
  name: livedrops
  listen: 127.0.0.1:%d
  routes: [%s]
  no_advertise: true
}
`, nd.name, nd.port, nd.monitorPort, filepath.Join(dir, nd.name), nd.clusterPort, strings.Join(routes, ", "))
		confPath := filepath.Join(dir, nd.name+".conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		nd.child = newChild(t, "nats-"+nd.name, filepath.Join(dir, nd.name+".log"), bin, []string{"-c", confPath}, nil)
		nd.start()
	}
	// The proxies only once every node listens: a proxy's listener takes an ephemeral port, which could
	// be one freePort handed to a node not started yet.
	for _, nd := range nodes {
		nd.proxy = startProxy(t, fmt.Sprintf("127.0.0.1:%d", nd.port))
	}
	for _, nd := range nodes {
		nd.waitHealthy(t, time.Minute)
	}
	return nodes
}

// waitHealthy waits until the node is healthy, JetStream current with its meta leader (/healthz).
func (nd *natsNode) waitHealthy(t *testing.T, wait time.Duration) {
	t.Helper()
	u := fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.monitorPort)
	checkFor(t, wait, 100*time.Millisecond, func() error {
		if !nd.running() {
			t.Fatalf("nats %s exited; its log ends:\n%s", nd.name, tailFile(nd.logPath, 3000))
		}
		resp, err := http.Get(u)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("nats %s: /healthz %d; its log ends:\n%s", nd.name, resp.StatusCode, tailFile(nd.logPath, 2000))
		}
		return nil
	})
}

// natsURLs is the NATS_URL of the livedrops processes: every node, through its proxy.
func natsURLs(nodes []*natsNode) string {
	var urls []string
	for _, nd := range nodes {
		urls = append(urls, "nats://"+nd.proxy.addr())
	}
	return strings.Join(urls, ",")
}

// redisStore is the Redis of the stack: one server or a cluster.
type redisStore interface {
	url() string
	// restart stops Redis and starts it again on its data (lose: on none).
	restart(t *testing.T, down time.Duration, lose bool)
	// killMaster kills one master of a cluster and waits until its replica took over; it returns
	// a function that starts the killed node again.
	killMaster(t *testing.T) func()
	client() redisClient
}

// redisClient is what the test asks of Redis directly.
type redisClient interface {
	hkeys(ctx context.Context, key string) ([]string, error)
}

// singleRedis is one redislocal server, append-only.
type singleRedis struct {
	dir  string
	port int
	mu   sync.Mutex
	s    *redislocal.Server
}

func startSingleRedis(t *testing.T, dir string) *singleRedis {
	t.Helper()
	r := &singleRedis{dir: dir, port: freePort(t)}
	r.start(t)
	t.Cleanup(func() { r.stopNow() })
	return r
}

func (r *singleRedis) start(t *testing.T) {
	t.Helper()
	s, err := redislocal.Start(context.Background(), redislocal.Config{Dir: r.dir, Port: r.port})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.s = s
	r.mu.Unlock()
}

func (r *singleRedis) stopNow() {
	r.mu.Lock()
	s := r.s
	r.s = nil
	r.mu.Unlock()
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = s.Stop(ctx)
}

func (r *singleRedis) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *singleRedis) restart(t *testing.T, down time.Duration, lose bool) {
	t.Helper()
	r.stopNow()
	if lose {
		if err := os.RemoveAll(r.dir); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(down)
	r.start(t)
}

func (r *singleRedis) killMaster(t *testing.T) func() {
	t.Fatal("killMaster: not a cluster")
	return nil
}

func (r *singleRedis) client() redisClient {
	return cliClient{addrs: []string{fmt.Sprintf("127.0.0.1:%d", r.port)}}
}

// cliClient asks Redis through redis-cli (in cluster mode -c follows redirections).
type cliClient struct {
	addrs   []string
	cluster bool
}

func (c cliClient) hkeys(ctx context.Context, key string) ([]string, error) {
	var lastErr error
	for _, addr := range c.addrs {
		host, port, _ := strings.Cut(addr, ":")
		args := []string{"-h", host, "-p", port}
		if c.cluster {
			args = append(args, "-c")
		}
		out, err := exec.CommandContext(ctx, "redis-cli", append(args, "HKEYS", key)...).Output()
		if err != nil {
			lastErr = err
			continue
		}
		var keys []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" {
				keys = append(keys, l)
			}
		}
		return keys, nil
	}
	return nil, lastErr
}

// role is one livedrops process: api, hub or worker.
type role struct {
	*child
	role string
	addr string
}

func (r *role) base() string { return "http://" + r.addr }

// waitReady waits for /readyz 200.
func (r *role) waitReady(t *testing.T, wait time.Duration) {
	t.Helper()
	checkFor(t, wait, 100*time.Millisecond, func() error {
		if !r.running() {
			return fmt.Errorf("%s exited; log %s:\n%s", r.name, r.logPath, tailFile(r.logPath, 3000))
		}
		resp, err := http.Get(r.base() + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s /readyz %d: %s", r.name, resp.StatusCode, body)
		}
		return nil
	})
}

// metric reads the sum of a metric's samples from /metrics (0 when absent).
func (r *role) metric(name string) (float64, error) {
	resp, err := http.Get(r.base() + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum, sc.Err()
}

// stack is everything the test runs.
type stack struct {
	t        *testing.T
	dir      string
	bin      binaries
	pgDir    string
	pgPort   int
	pgMu     sync.Mutex
	pg       *pglocal.Server
	pgProxy  *proxy
	db       *pgxpool.Pool // direct, for the test's own reads
	redis    redisStore
	nats     []*natsNode
	nc       *nats.Conn // direct to the nodes, for the test's own look at the stream
	apis     []*role
	hubs     []*role
	workers  []*role
	push     *pushStandins // the push providers' stand-ins (push_test.go)
	reqLimit time.Duration
}

type stackConfig struct {
	redisCluster bool
	reqTimeout   time.Duration
}

func startStack(t *testing.T, cfg stackConfig) *stack {
	t.Helper()
	dir := t.TempDir()
	if *keepDir != "" {
		dir = filepath.Join(*keepDir, strings.ReplaceAll(t.Name(), "/", "-"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil { // PostgreSQL may run as another user
		t.Fatal(err)
	}
	s := &stack{t: t, dir: dir, pgDir: filepath.Join(dir, "pg"), reqLimit: cfg.reqTimeout}
	started := time.Now()
	s.bin = buildBinaries(t, dir)
	t.Logf("built livedrops, nats-server and followers in %s", time.Since(started).Round(time.Millisecond))

	s.pgPort = freePort(t)
	s.startPG()
	t.Cleanup(s.stopPG)
	s.pgProxy = startProxy(t, fmt.Sprintf("127.0.0.1:%d", s.pgPort))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.pgURL(false, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE livedrops"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	if cfg.redisCluster {
		s.redis = startRedisCluster(t, filepath.Join(dir, "redis"))
	} else {
		s.redis = startSingleRedis(t, filepath.Join(dir, "redis"))
	}
	s.nats = startNATSCluster(t, s.bin.nats, dir, 3)
	var urls []string
	for _, nd := range s.nats {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", nd.port))
	}
	if s.nc, err = nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.nc.Close)

	migrate := exec.Command(s.bin.livedrops, "migrate")
	migrate.Env = append(os.Environ(), "DATABASE_URL="+s.pgURL(false, "livedrops"))
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("livedrops migrate: %v\n%s", err, out)
	}
	if s.db, err = pgxpool.New(ctx, s.pgURL(false, "livedrops")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.db.Close)
	s.push = startPush(t, dir)

	// Workers first, together, as deployments start them: their relay creates the stream (3 replicas)
	// the hubs read. On the new cluster they race to create the stream and the push notifier's streams,
	// and either may time out: neither is fatal, and a worker is ready once its push streams exist.
	for i := range 2 {
		s.workers = append(s.workers, s.newRole("worker", i))
	}
	for _, w := range s.workers {
		w.start()
	}
	for _, w := range s.workers {
		w.waitReady(t, 2*time.Minute)
	}
	s.waitStream(time.Minute)
	for i := range 2 {
		s.apis = append(s.apis, s.newRole("api", i))
		s.hubs = append(s.hubs, s.newRole("hub", i))
	}
	for _, r := range append(append([]*role{}, s.apis...), s.hubs...) {
		r.start()
	}
	for _, r := range append(append([]*role{}, s.apis...), s.hubs...) {
		r.waitReady(t, 2*time.Minute)
	}
	t.Logf("stack up in %s: PostgreSQL, %s, NATS x3 (R3), api x2, hub x2, worker x2, FCM and Web Push stand-ins; work dir %s",
		time.Since(started).Round(time.Millisecond), map[bool]string{true: "Redis Cluster (3+3)", false: "Redis"}[cfg.redisCluster], dir)
	return s
}

func (s *stack) pgURL(proxied bool, db string) string {
	port := s.pgPort
	if proxied {
		_, p, _ := strings.Cut(s.pgProxy.addr(), ":")
		port, _ = strconv.Atoi(p)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
}

func (s *stack) startPG() {
	s.t.Helper()
	pg, err := pglocal.Start(context.Background(), pglocal.Config{Dir: s.pgDir, Port: s.pgPort, Ephemeral: true,
		Settings: map[string]string{"max_connections": "400"}})
	if err != nil {
		s.t.Fatal(err)
	}
	s.pgMu.Lock()
	s.pg = pg
	s.pgMu.Unlock()
}

func (s *stack) stopPG() {
	s.pgMu.Lock()
	pg := s.pg
	s.pg = nil
	s.pgMu.Unlock()
	if pg == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = pg.Stop(ctx)
}

// newRole prepares livedrops <name> number i on a port of its own.
func (s *stack) newRole(name string, i int) *role {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(s.t))
	env := []string{
		"DATABASE_URL=" + s.pgURL(true, "livedrops"),
		"REDIS_URL=" + s.redis.url(),
		"NATS_URL=" + natsURLs(s.nats),
		"LIVEDROPS_JWT_SECRET=" + jwtSecret,
		"LIVEDROPS_HTTP_ADDR=" + addr,
		"LIVEDROPS_STREAM_REPLICAS=3",
		"LIVEDROPS_REQUEST_TIMEOUT=" + s.reqLimit.String(),
		"LIVEDROPS_SHUTDOWN_TIMEOUT=10s",
		"LIVEDROPS_LOG_LEVEL=info",
		"LIVEDROPS_DB_MAX_CONNS=20",
	}
	switch name {
	case "worker":
		env = append(env, s.push.workerEnv()...)
	case "api":
		env = append(env, s.push.apiEnv()...)
	}
	n := fmt.Sprintf("%s-%d", name, i)
	c := newChild(s.t, n, filepath.Join(s.dir, n+".log"), s.bin.livedrops, []string{name}, env)
	return &role{child: c, role: name, addr: addr}
}

// streamInfo is the stream as its leader sees it.
func (s *stack) streamInfo(ctx context.Context) (*natsjs.StreamInfo, error) {
	js, err := natsjs.New(s.nc)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, "LIVEDROPS")
	if err != nil {
		return nil, err
	}
	return st.Info(ctx)
}

// waitStream waits until the stream exists with three current replicas.
func (s *stack) waitStream(wait time.Duration) {
	s.t.Helper()
	checkFor(s.t, wait, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := s.streamInfo(ctx)
		if err != nil {
			return err
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("stream: replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
		}
		for _, p := range info.Cluster.Replicas {
			if !p.Current {
				return fmt.Errorf("stream replica %s not current", p.Name)
			}
		}
		if len(info.Cluster.Replicas) != 2 {
			return fmt.Errorf("stream has %d peers besides its leader, want 2", len(info.Cluster.Replicas))
		}
		return nil
	})
}

// streamLeader is the node leading the stream.
func (s *stack) streamLeader() *natsNode {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := s.streamInfo(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, nd := range s.nats {
		if nd.name == info.Cluster.Leader {
			return nd
		}
	}
	s.t.Fatalf("stream leader %q is none of the nodes", info.Cluster.Leader)
	return nil
}

// relayLeader is the worker whose relay leads (livedrops_relay_leader 1).
func (s *stack) relayLeader() *role {
	s.t.Helper()
	var leader *role
	checkFor(s.t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, w := range s.workers {
			if v, err := w.metric("livedrops_relay_leader"); err == nil && v == 1 {
				leader = w
				return nil
			}
		}
		return fmt.Errorf("no worker leads the relay")
	})
	return leader
}

// apiErrors returns the last n lines the api processes logged at level ERROR (a 500's cause: the
// problem+json only says "internal"), each prefixed by its process's name.
func (s *stack) apiErrors(n int) string {
	var out []string
	for _, a := range s.apis {
		b, err := os.ReadFile(a.logPath)
		if err != nil {
			out = append(out, a.name+": "+err.Error())
			continue
		}
		var lines []string
		for l := range strings.Lines(string(b)) {
			if strings.Contains(l, `"level":"ERROR"`) && !strings.Contains(l, `"msg":"order batch failed"`) {
				lines = append(lines, a.name+": "+strings.TrimSpace(l))
			}
		}
		out = append(out, lines[max(0, len(lines)-n):]...)
	}
	return strings.Join(out, "\n")
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// checkFor polls f until it returns nil or wait passes, then fails with f's last error.
func checkFor(tb testing.TB, wait, every time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(wait)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: %v", wait, err)
		}
		time.Sleep(every)
	}
}
