// Command wsfan is a WebSocket fan-out load generator: it opens many sockets to LiveDrops hubs, waits
// until every one has its hello (the hub sends it once the socket's subscriptions are in force), and
// then measures, for each socket, the time from an event's "ts" to its receipt.
//
// It speaks the WebSocket protocol itself over plain TCP (one goroutine and a 1 KiB buffer per socket,
// no JSON decoding: it finds "type" and "ts" in the frame), so one process holds ~20,000 sockets on
// little CPU, and it binds each socket to its own source address in 127.0.0.0/8 so the sockets are not
// limited by one address's ephemeral ports. It imports no LiveDrops package: it is a client like any
// other.
//
// Protocol with whoever runs it (loadtest/fanoutbench), on stdout:
//
//	READY sockets=<n> failed=<n>          every socket got its hello (or failed: could not connect, or
//	                                      was refused ten times; a refusal that says reconnect is retried)
//	GOT                                   the sockets got the awaited events, or the wait ran out
//	DONE  sockets=<n> received=<n> ...    and here is how it went (the sockets are closed by then)
//
// With -out, one line per awaited event received is written there: "<drop_id> <latency_ms>", the
// latency from the event's "ts" to its receipt. DONE's last_id is the highest event id received (a
// reconnect storm resumes from it).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	urls        []string
	tokensFile  string
	from, count int
	srcBase     int // first source address: 127.<base>.0.1
	concurrency int
	eventType   string
	expect      int
	wait        time.Duration
	connectWait time.Duration
	out         string
	since       string
}

func main() {
	var cfg config
	var urls string
	flag.StringVar(&urls, "url", "ws://127.0.0.1:8080/ws", "hub WebSocket URL; several, comma-separated, are used in turn")
	flag.StringVar(&cfg.tokensFile, "tokens", "", "file of bearer tokens, one per line, or `user_id token` lines (livedrops seed --tokens-file)")
	flag.IntVar(&cfg.from, "from", 0, "first line of the tokens file to use")
	flag.IntVar(&cfg.count, "count", 1000, "sockets to open, one per token")
	flag.IntVar(&cfg.srcBase, "src-base", 10, "source addresses are 127.<src-base + i/65000>.x.y (1..250)")
	flag.IntVar(&cfg.concurrency, "concurrency", 256, "connections being set up at once")
	flag.StringVar(&cfg.eventType, "type", "drop.started", "event type to time")
	flag.IntVar(&cfg.expect, "expect", 1, "events of that type each socket waits for")
	flag.DurationVar(&cfg.wait, "wait", 60*time.Second, "how long to wait for the events once READY")
	flag.DurationVar(&cfg.connectWait, "connect-wait", 5*time.Minute, "how long the sockets may take to connect")
	flag.StringVar(&cfg.out, "out", "", "file to write the latencies to (ms, one per line)")
	flag.StringVar(&cfg.since, "since", "", "resume from this event id (a reconnect storm); READY then counts recovered hellos")
	flag.Parse()
	cfg.urls = strings.Split(urls, ",")
	if cfg.since != "" {
		for i, u := range cfg.urls {
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			cfg.urls[i] = u + sep + "since=" + url.QueryEscape(cfg.since)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "wsfan:", err)
		os.Exit(1)
	}
}

// socket is one client connection.
type socket struct {
	conn     net.Conn
	br       *bufio.Reader
	received int
	got      []receipt // the awaited events
	lastID   int64
}

// receipt is one awaited event: which drop, how late.
type receipt struct {
	dropID  int64
	latency time.Duration
}

func run(ctx context.Context, cfg config, stdout io.Writer) error {
	tokens, err := readTokens(cfg.tokensFile, cfg.from, cfg.count)
	if err != nil {
		return err
	}
	targets := make([]*url.URL, len(cfg.urls))
	for i, u := range cfg.urls {
		if targets[i], err = url.Parse(strings.TrimSpace(u)); err != nil {
			return fmt.Errorf("url %q: %w", u, err)
		}
	}
	socks := make([]*socket, len(tokens))
	var failed, recovered atomic.Int64
	var firstErr atomic.Pointer[error]
	var hellos sync.WaitGroup
	var got sync.WaitGroup     // sockets still waiting for their events
	var readers sync.WaitGroup // reading goroutines
	sem := make(chan struct{}, cfg.concurrency)
	start := time.Now()
	connectCtx, cancel := context.WithTimeout(ctx, cfg.connectWait)
	defer cancel()
	for i, tok := range tokens {
		sem <- struct{}{}
		hellos.Add(1)
		go func() {
			defer func() { <-sem }()
			defer hellos.Done()
			s, wasRecovered, err := connect(connectCtx, targets[i%len(targets)], tok, sourceAddr(cfg.srcBase, cfg.from+i))
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			if wasRecovered {
				recovered.Add(1)
			}
			socks[i] = s
			got.Add(1)
			readers.Add(1)
			go func() {
				defer readers.Done()
				s.read(cfg, &got)
			}()
		}()
	}
	hellos.Wait()
	fmt.Fprintf(stdout, "READY sockets=%d failed=%d recovered=%d connect_s=%.2f\n", len(tokens)-int(failed.Load()),
		failed.Load(), recovered.Load(), time.Since(start).Seconds())
	if p := firstErr.Load(); p != nil {
		fmt.Fprintln(os.Stderr, "wsfan: first connection error:", *p)
	}

	done := make(chan struct{})
	go func() { got.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.wait):
	case <-ctx.Done():
	}
	fmt.Fprintln(stdout, "GOT") // every socket has its events, or the wait ran out: now the sockets close
	var lat []time.Duration
	received, events := 0, 0
	var lastID int64
	for _, s := range socks {
		if s == nil {
			continue
		}
		_ = s.conn.Close()
	}
	readers.Wait() // what they recorded is read below
	var b strings.Builder
	for _, s := range socks {
		if s == nil {
			continue
		}
		if s.received >= cfg.expect {
			received++
		}
		lastID = max(lastID, s.lastID)
		for _, r := range s.got {
			events++
			lat = append(lat, r.latency)
			b.WriteString(strconv.FormatInt(r.dropID, 10))
			b.WriteByte(' ')
			b.WriteString(strconv.FormatFloat(ms(r.latency), 'f', 3, 64))
			b.WriteByte('\n')
		}
	}
	slices.Sort(lat)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "DONE sockets=%d received=%d missing=%d events=%d last_id=%d p50_ms=%.1f p99_ms=%.1f last_ms=%.1f\n",
		len(tokens), received, len(tokens)-received, events, lastID, ms(pct(lat, 0.50)), ms(pct(lat, 0.99)), ms(pct(lat, 1)))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func readTokens(path string, from, count int) ([]string, error) {
	if path == "" {
		return nil, errors.New("-tokens is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// One token per line, or `user_id token` per line as livedrops seed --tokens-file writes them.
	var lines []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			lines = append(lines, f[len(f)-1])
		}
	}
	if from+count > len(lines) {
		return nil, fmt.Errorf("%s has %d tokens, need %d from line %d", path, len(lines), count, from)
	}
	return lines[from : from+count], nil
}

// sourceAddr spreads sockets over 127.0.0.0/8: socket i binds 127.(base + i/62500).(i/250%250).(i%250+1).
func sourceAddr(base, i int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(127, byte(base+i/62500), byte(i/250%250), byte(i%250+1))}
}

// connect opens a socket and waits for its hello, as a real client does: a socket the hub closes before
// its hello with a code that says "reconnect" (4000-4099: draining, slow reader, server error, e.g. a
// hub shedding a connect storm) is opened again after a jittered, growing pause. It returns whether the
// hello said recovered:true.
func connect(ctx context.Context, u *url.URL, token string, src *net.TCPAddr) (*socket, bool, error) {
	pause := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		s, err := dial(ctx, u, token, src)
		if err != nil {
			return nil, false, err
		}
		recovered, code, err := s.awaitHello()
		if err == nil {
			return s, recovered, nil
		}
		_ = s.conn.Close()
		if code < 4000 || code > 4099 || attempt == 10 {
			return nil, false, fmt.Errorf("attempt %d: %w", attempt, err)
		}
		jitter := time.Duration(mrand.Int64N(int64(pause)))
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(pause + jitter):
		}
		pause = min(2*pause, 4*time.Second)
	}
}

// awaitHello reads frames until the hello. A close frame before it returns its code.
func (s *socket) awaitHello() (recovered bool, closeCode int, err error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(time.Minute))
	defer s.conn.SetReadDeadline(time.Time{})
	var payload []byte
	for {
		op, p, err := s.frame(payload[:0])
		if err != nil {
			return false, 0, fmt.Errorf("before hello: %w", err)
		}
		payload = p
		switch op {
		case 0x9:
			if err := s.writeFrame(0xA, p); err != nil {
				return false, 0, err
			}
		case 0x8:
			code := 0
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
			}
			_ = s.writeFrame(0x8, p[:min(2, len(p))])
			return false, code, fmt.Errorf("closed before hello with code %d: %s", code, p[min(2, len(p)):])
		case 0x1:
			if bytes.Contains(p, []byte(`"type":"hello"`)) {
				return bytes.Contains(p, []byte(`"recovered":true`)), 0, nil
			}
		}
	}
}

// dial opens a WebSocket by hand: TCP from src, the upgrade request, the 101 answer.
func dial(ctx context.Context, u *url.URL, token string, src *net.TCPAddr) (*socket, error) {
	d := net.Dialer{LocalAddr: src, Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	path := u.RequestURI()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key) + "\r\nSec-WebSocket-Version: 13\r\n" +
		"Authorization: Bearer " + token + "\r\n\r\n"
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("upgrade: %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return &socket{conn: conn, br: br}, nil
}

var (
	tsKey   = []byte(`"ts":"`)
	dropKey = []byte(`"drop_id":`)
	idKey   = []byte(`"id":"`)
)

// intAfter parses the decimal number right after key in p (0 when absent).
func intAfter(p, key []byte) int64 {
	i := bytes.Index(p, key)
	if i < 0 {
		return 0
	}
	var n int64
	for _, c := range p[i+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// read handles the socket's frames: the hello, pings, and the awaited events.
func (s *socket) read(cfg config, got *sync.WaitGroup) {
	counted := false
	defer func() {
		if !counted {
			got.Done()
		}
	}()
	want := []byte(`"type":"` + cfg.eventType + `"`)
	var payload []byte
	for {
		op, p, err := s.frame(payload[:0])
		if err != nil {
			return
		}
		payload = p
		switch op {
		case 0x9: // ping: answer with a pong
			if err := s.writeFrame(0xA, p); err != nil {
				return
			}
		case 0x8: // close
			_ = s.writeFrame(0x8, p[:min(2, len(p))])
			return
		case 0x1:
			now := time.Now()
			if !bytes.Contains(p, want) {
				continue
			}
			s.received++
			s.got = append(s.got, receipt{dropID: intAfter(p, dropKey), latency: now.Sub(eventTS(p))})
			s.lastID = max(s.lastID, intAfter(p, idKey))
			if s.received == cfg.expect && !counted {
				counted = true
				got.Done()
			}
		}
	}
}

// eventTS finds the "ts" of an event frame.
func eventTS(p []byte) time.Time {
	i := bytes.Index(p, tsKey)
	if i < 0 {
		return time.Time{}
	}
	rest := p[i+len(tsKey):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return time.Time{}
	}
	ts, _ := time.Parse(time.RFC3339Nano, string(rest[:j]))
	return ts
}

// frame reads one server frame (unmasked, unfragmented as the hub sends them) into buf.
func (s *socket) frame(buf []byte) (op byte, payload []byte, err error) {
	var h [8]byte
	if _, err = io.ReadFull(s.br, h[:2]); err != nil {
		return 0, nil, err
	}
	op = h[0] & 0x0f
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		if _, err = io.ReadFull(s.br, h[:2]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(h[:2]))
	case 127:
		if _, err = io.ReadFull(s.br, h[:8]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(h[:8])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err = io.ReadFull(s.br, buf)
	return op, buf, err
}

// writeFrame writes a masked control frame (len(p) <= 125), as a client must.
func (s *socket) writeFrame(op byte, p []byte) error {
	b := make([]byte, 0, 6+len(p))
	b = append(b, 0x80|op, 0x80|byte(len(p)))
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, c := range p {
		b = append(b, c^mask[i%4])
	}
	_, err := s.conn.Write(b)
	return err
}
