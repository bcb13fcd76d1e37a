package faults_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livedrops/livedrops/api/auth"
)

// The world: creators 1..creators, each with one product; followers are users firstFollower.. each
// following two creators (follower u follows creators u mod C + 1 and (u+1) mod C + 1); the followers
// are also the buyers, so their own order.confirmed events reach their sockets as well.
const firstFollower = 1000

type world struct {
	creators  int
	followers int
	tokens    map[int64]string
}

func (w *world) follows(u int64) []int64 {
	c := int64(w.creators)
	return []int64{u%c + 1, (u+1)%c + 1}
}

func (w *world) followerIDs() []int64 {
	ids := make([]int64, w.followers)
	for i := range ids {
		ids[i] = firstFollower + int64(i)
	}
	return ids
}

func seedWorld(t *testing.T, s *stack, creators, followers int) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{creators: creators, followers: followers, tokens: map[int64]string{}}
	last := firstFollower + followers - 1
	for _, q := range []string{
		`INSERT INTO users (user_id, name, email) SELECT g, 'creator ' || g, 'c' || g || '@faults.test' FROM generate_series(1, $1) g`,
		`INSERT INTO creators (creator_id, profile_name) SELECT g, 'shop ' || g FROM generate_series(1, $1) g`,
		`INSERT INTO products (product_id, creator_id, title, price_cents) SELECT g, g, 'tee ' || g, 2500 FROM generate_series(1, $1) g`,
	} {
		if _, err := s.db.Exec(ctx, q, creators); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.db.Exec(ctx, `INSERT INTO users (user_id, name, email)
		SELECT g, 'follower ' || g, 'f' || g || '@faults.test' FROM generate_series($1::bigint, $2::bigint) g`, firstFollower, last); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(ctx, `INSERT INTO follows (creator_id, follower_id)
		SELECT c, g FROM generate_series($1::bigint, $2::bigint) g,
		LATERAL (VALUES (g % $3 + 1), ((g + 1) % $3 + 1)) AS f (c)`, firstFollower, last, creators); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`SELECT setval(pg_get_serial_sequence('users', 'user_id'), (SELECT max(user_id) FROM users))`,
		`SELECT setval(pg_get_serial_sequence('products', 'product_id'), (SELECT max(product_id) FROM products))`,
		`ANALYZE`,
	} {
		if _, err := s.db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	tokens, err := auth.New(auth.Config{Secret: []byte(jwtSecret)})
	if err != nil {
		t.Fatal(err)
	}
	for u := int64(1); u <= int64(creators); u++ {
		if w.tokens[u], err = tokens.Mint(u, 6*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range w.followerIDs() {
		if w.tokens[u], err = tokens.Mint(u, 6*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// clients is the follower processes.
type clients struct {
	t     *testing.T
	procs []*clientProc
}

type clientProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string
	logPath string
	mu      sync.Mutex
}

// startClients runs n follower processes, the followers split evenly, each socket starting on hub
// (i mod hubs); it waits until each says READY.
func startClients(t *testing.T, s *stack, w *world, n int) *clients {
	t.Helper()
	tokFile := filepath.Join(s.dir, "tokens.txt")
	var b strings.Builder
	for _, u := range w.followerIDs() {
		fmt.Fprintf(&b, "%d %s\n", u, w.tokens[u])
	}
	if err := os.WriteFile(tokFile, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var hubs []string
	for _, h := range s.hubs {
		hubs = append(hubs, "ws://"+h.addr)
	}
	c := &clients{t: t}
	per := (w.followers + n - 1) / n
	for i := range n {
		from := i * per
		count := min(per, w.followers-from)
		p := &clientProc{logPath: filepath.Join(s.dir, fmt.Sprintf("followers-%d.log", i)), lines: make(chan string, 16)}
		// Each process starts its sockets on a different hub first.
		order := append(append([]string{}, hubs[i%len(hubs):]...), hubs[:i%len(hubs)]...)
		p.cmd = exec.Command(s.bin.followers, "-hubs", strings.Join(order, ","), "-tokens", tokFile,
			"-from", fmt.Sprint(from), "-count", fmt.Sprint(count), "-log", p.logPath)
		stderr, err := os.Create(p.logPath + ".stderr")
		if err != nil {
			t.Fatal(err)
		}
		p.cmd.Stderr = stderr
		if p.stdin, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		out, err := p.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stderr.Close()
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				p.lines <- sc.Text()
			}
			close(p.lines)
		}()
		t.Cleanup(func() {
			_ = p.stdin.Close()
			done := make(chan struct{})
			go func() { _ = p.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = p.cmd.Process.Kill()
				<-done
			}
		})
		c.procs = append(c.procs, p)
	}
	for _, p := range c.procs {
		line := p.await(t, "READY", 5*time.Minute)
		if !strings.Contains(line, " failed=0") {
			t.Fatalf("followers: %s (see %s.stderr)", line, p.logPath)
		}
	}
	return c
}

func (p *clientProc) await(t *testing.T, prefix string, wait time.Duration) string {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("followers exited before %s; stderr:\n%s", prefix, tailFile(p.logPath+".stderr", 2000))
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-timer.C:
			t.Fatalf("followers: no %s within %s", prefix, wait)
		}
	}
}

// sync flushes every client's log and returns how many sockets are connected in all.
func (c *clients) sync() int {
	c.t.Helper()
	connected := 0
	for _, p := range c.procs {
		p.mu.Lock()
		if _, err := io.WriteString(p.stdin, "SYNC\n"); err != nil {
			c.t.Fatal(err)
		}
		line := p.await(c.t, "SYNCED", time.Minute)
		p.mu.Unlock()
		var n, h, e int
		if _, err := fmt.Sscanf(line, "SYNCED connected=%d hellos=%d events=%d", &n, &h, &e); err != nil {
			c.t.Fatalf("%q: %v", line, err)
		}
		connected += n
	}
	return connected
}
