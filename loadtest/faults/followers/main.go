// Command followers holds the sockets of many followers for the fault test (loadtest/faults), as
// browsers would: each socket connects to a hub, and whenever it loses its connection (the hub died or
// drained, the network failed) it reconnects to the next hub of the list with ?since= the last event
// id it received, as the protocol asks (docs/protocol.md). It writes everything that happened to its
// log, which the test reads to check that every event reached every follower exactly once.
//
// Log lines (space-separated; ms = Unix milliseconds of the receipt):
//
//	H <ms> <user> <hub index> <recovered: 1, 0, or - on a fresh connect>   a hello
//	E <ms> <user> <event id> <type> <creator_id> <drop_id> <ts ms>          an event
//	D <ms> <user> <reason>                                                  a lost connection
//
// Protocol with the test on standard input and output: it prints `READY sockets=<n> failed=<n>` once
// every socket had its first hello (or failed for -connect-wait); `SYNC` on stdin flushes the log and
// answers `SYNCED connected=<n> hellos=<n> events=<n>`; `STOP` (or end of input) closes every socket,
// flushes and answers `DONE`.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

type config struct {
	hubs        []string
	tokens      string
	from, count int
	logPath     string
	connectWait time.Duration
	concurrency int
}

func main() {
	var cfg config
	var hubs string
	flag.StringVar(&hubs, "hubs", "", "comma-separated hub base URLs (ws://host:port); socket i starts on hub i mod n")
	flag.StringVar(&cfg.tokens, "tokens", "", "file of `user_id token` lines")
	flag.IntVar(&cfg.from, "from", 0, "first line of the tokens file")
	flag.IntVar(&cfg.count, "count", 100, "sockets, one per line from -from")
	flag.StringVar(&cfg.logPath, "log", "followers.log", "the client log")
	flag.DurationVar(&cfg.connectWait, "connect-wait", 3*time.Minute, "how long the first connections may take")
	flag.IntVar(&cfg.concurrency, "concurrency", 64, "first connections set up at once")
	flag.Parse()
	cfg.hubs = strings.Split(hubs, ",")
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "followers:", err)
		os.Exit(1)
	}
}

type user struct {
	id    int64
	token string
}

// clientLog is the shared, buffered log.
type clientLog struct {
	mu sync.Mutex
	w  *bufio.Writer
	f  *os.File
}

func (l *clientLog) line(format string, args ...any) {
	l.mu.Lock()
	fmt.Fprintf(l.w, format+"\n", args...)
	l.mu.Unlock()
}

func (l *clientLog) flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.w.Flush(); err != nil {
		return err
	}
	return l.f.Sync()
}

type counters struct {
	connected, hellos, events atomic.Int64
}

func run(cfg config) error {
	users, err := readTokens(cfg.tokens, cfg.from, cfg.count)
	if err != nil {
		return err
	}
	f, err := os.Create(cfg.logPath)
	if err != nil {
		return err
	}
	log := &clientLog{w: bufio.NewWriterSize(f, 1<<20), f: f}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var c counters
	var wg sync.WaitGroup
	var first sync.WaitGroup
	var failed atomic.Int64
	sem := make(chan struct{}, cfg.concurrency)
	for i, u := range users {
		first.Add(1)
		wg.Go(func() {
			s := &socket{cfg: cfg, u: u, hub: i % len(cfg.hubs), log: log, c: &c}
			s.run(ctx, sem, &first, &failed)
		})
	}
	ready := make(chan struct{})
	go func() { first.Wait(); close(ready) }()
	select {
	case <-ready:
	case <-time.After(cfg.connectWait):
	}
	fmt.Printf("READY sockets=%d failed=%d\n", c.connected.Load(), failed.Load())

	go func() { // the log reaches the disk at least every second
		for ctx.Err() == nil {
			time.Sleep(time.Second)
			_ = log.flush()
		}
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "STOP" {
			break
		}
		if in.Text() == "SYNC" {
			if err := log.flush(); err != nil {
				return err
			}
			fmt.Printf("SYNCED connected=%d hellos=%d events=%d\n", c.connected.Load(), c.hellos.Load(), c.events.Load())
		}
	}
	cancel()
	wg.Wait()
	if err := log.flush(); err != nil {
		return err
	}
	fmt.Println("DONE")
	return f.Close()
}

// socket is one follower's connection, kept up across failures.
type socket struct {
	cfg    config
	u      user
	hub    int
	lastID string
	log    *clientLog
	c      *counters
}

// frame is what the client reads of a server frame.
type frame struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	TS        string `json:"ts"`
	CreatorID int64  `json:"creator_id"`
	DropID    int64  `json:"drop_id"`
	Recovered *bool  `json:"recovered"`
}

func (s *socket) run(ctx context.Context, sem chan struct{}, first *sync.WaitGroup, failed *atomic.Int64) {
	firstDone := false
	done := func(ok bool) {
		if !firstDone {
			firstDone = true
			if !ok {
				failed.Add(1)
			}
			first.Done()
		}
	}
	defer done(false)
	pause := 100 * time.Millisecond
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if !firstDone {
			sem <- struct{}{}
		}
		conn, hello, err := s.dial(ctx)
		if !firstDone {
			<-sem
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.line("D %d %d dial:%s", nowMS(), s.u.id, reason(err))
			}
			s.hub = (s.hub + 1) % len(s.cfg.hubs)
			sleep(ctx, pause+rand.N(pause))
			pause = min(2*pause, 2*time.Second)
			continue
		}
		pause = 100 * time.Millisecond
		rec := "-"
		if hello.Recovered != nil {
			rec = map[bool]string{true: "1", false: "0"}[*hello.Recovered]
		}
		s.log.line("H %d %d %d %s", nowMS(), s.u.id, s.hub, rec)
		s.c.hellos.Add(1)
		s.c.connected.Add(1)
		done(true)
		err = s.read(ctx, conn)
		s.c.connected.Add(-1)
		if ctx.Err() != nil {
			_ = conn.Close(websocket.StatusNormalClosure, "")
			return
		}
		s.log.line("D %d %d %s", nowMS(), s.u.id, reason(err))
		_ = conn.CloseNow()
		s.hub = (s.hub + 1) % len(s.cfg.hubs)
		sleep(ctx, rand.N(200*time.Millisecond))
	}
}

// dial opens a socket and reads its hello.
func (s *socket) dial(ctx context.Context) (*websocket.Conn, frame, error) {
	u := s.cfg.hubs[s.hub] + "/ws"
	if s.lastID != "" {
		u += "?since=" + url.QueryEscape(s.lastID)
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + s.u.token}},
	})
	if err != nil {
		if resp != nil {
			return nil, frame{}, fmt.Errorf("upgrade %d: %w", resp.StatusCode, err)
		}
		return nil, frame{}, err
	}
	conn.SetReadLimit(1 << 20)
	_, p, err := conn.Read(dctx)
	if err != nil {
		_ = conn.CloseNow()
		return nil, frame{}, fmt.Errorf("before hello: %w", err)
	}
	var hello frame
	if err := json.Unmarshal(p, &hello); err != nil || hello.Type != "hello" {
		_ = conn.CloseNow()
		return nil, frame{}, fmt.Errorf("first frame is not a hello: %s", p)
	}
	return conn, hello, nil
}

// read logs the socket's events until its connection ends.
func (s *socket) read(ctx context.Context, conn *websocket.Conn) error {
	for {
		_, p, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		recv := nowMS()
		var f frame
		if err := json.Unmarshal(p, &f); err != nil {
			return fmt.Errorf("undecodable frame %q: %w", p, err)
		}
		if f.ID == "" {
			continue // pong, watching, error frames
		}
		ts, err := time.Parse(time.RFC3339Nano, f.TS)
		if err != nil {
			return fmt.Errorf("event %s: ts %q: %w", f.ID, f.TS, err)
		}
		s.lastID = f.ID
		s.c.events.Add(1)
		s.log.line("E %d %d %s %s %d %d %d", recv, s.u.id, f.ID, f.Type, f.CreatorID, f.DropID, ts.UnixMilli())
	}
}

// reason is a one-word account of why a connection ended.
func reason(err error) string {
	if code := websocket.CloseStatus(err); code != -1 {
		return fmt.Sprintf("close:%d", code)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return strings.ReplaceAll(s, " ", "_")
}

func nowMS() int64 { return time.Now().UnixMilli() }

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func readTokens(path string, from, count int) ([]user, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var users []user
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		var u user
		if _, err := fmt.Sscan(f[0], &u.id); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", path, line, err)
		}
		u.token = f[1]
		users = append(users, u)
	}
	if from < 0 || count < 1 || from+count > len(users) {
		return nil, fmt.Errorf("%s has %d tokens, need %d from line %d", path, len(users), count, from)
	}
	return users[from : from+count], nil
}
