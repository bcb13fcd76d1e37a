// Command push is the push-fallback benchmark of LiveDrops (make bench-push). It is self-contained:
//
//  1. It starts PostgreSQL and Redis in a temporary dir, and `livedrops seed` writes a creator with
//     1,000,000 followers (-followers).
//  2. It starts the providers' stand-ins on loopback (package fanout/push/pushtest: FCM with its OAuth2
//     token endpoint, and a Web Push service that checks VAPID and decrypts every message), answering
//     like the real ones under load: 1% 503 with Retry-After 1 and 0.5% of devices gone (410/404).
//  3. Every follower gets one device, half FCM and half Web Push; 1 in 10 followers is offline
//     (100,000), the other 900,000 are online: their presence is set in Redis as a hub sets it.
//  4. It starts `livedrops all` on that PostgreSQL and Redis (NATS embedded), pointed at the stand-ins,
//     and inserts a drop of the creator starting a few seconds later. The scheduler starts it, the relay
//     publishes drop.started, the notifier pages the followers, checks presence and pushes.
//  5. It waits until every offline device that is not gone was accepted, then a little more for
//     stragglers, and checks: each such device exactly once, none of an online user, the gone devices
//     deleted from PostgreSQL.
//  6. The floor, in the same run: the same messages sent straight from this process with the same
//     provider clients, 256 in flight, no paging, presence, dedupe, rate limit or retry.
//
// It prints
//
//	RESULT followers=... offline_devices=... pushes=... duplicates=... lost=... removed=... scan_s=...
//	  all_sent_s=... pushes_per_s=... cpu_us_per_push=... stack_cpu_us_per_push=... floor_s=... vs_floor=...
//
// scan_s is start_time → the presence check of the last follower page; all_sent_s start_time → the
// last acceptance; cpu_us_per_push the CPU time of the livedrops process over that window per message
// accepted, stack_cpu_us_per_push the same with PostgreSQL and Redis; vs_floor the notifier's time from
// its first to its last acceptance over the floor's.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedrops/livedrops/fanout/push"
	"github.com/livedrops/livedrops/fanout/push/fcm"
	"github.com/livedrops/livedrops/fanout/push/pushtest"
	"github.com/livedrops/livedrops/fanout/push/webpush"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/postgres/pglocal"
	"github.com/livedrops/livedrops/store/redis"
	"github.com/livedrops/livedrops/store/redis/redislocal"
)

type options struct {
	bin          string
	followers    int
	offlineEvery int
	unavailable  float64
	gone         float64
	lead         time.Duration
	timeout      time.Duration
	floor        bool
	keepData     bool
	serverArgs   string
	encoder      string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/livedrops", "the livedrops binary")
	flag.IntVar(&o.followers, "followers", 1_000_000, "followers of the creator, one device each")
	flag.IntVar(&o.offlineEvery, "offline-every", 10, "1 in this many followers is offline")
	flag.Float64Var(&o.unavailable, "unavailable", 0.01, "share of requests the stand-ins answer 503")
	flag.Float64Var(&o.gone, "gone", 0.005, "share of devices the stand-ins answer gone")
	flag.DurationVar(&o.lead, "lead", 4*time.Second, "time from inserting the drop to its start_time")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up waiting for the pushes after this")
	flag.BoolVar(&o.floor, "floor", true, "also measure the floor (the same sends straight from here)")
	flag.BoolVar(&o.keepData, "keep-data", false, "keep the temporary dir (logs, data)")
	flag.StringVar(&o.serverArgs, "server-args", "", "extra flags of livedrops all, space-separated")
	flag.StringVar(&o.encoder, "webpush-encoder", webpush.EncoderStdlib, "LIVEDROPS_WEBPUSH_ENCODER of the server, and the floor's: stdlib or webpush-go")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-push:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (err error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "livedrops-bench-push-")
	if err != nil {
		return err
	}
	if !o.keepData {
		defer os.RemoveAll(dir)
	} else {
		fmt.Printf("data dir %s (kept)\n", dir)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // PostgreSQL runs as its own user when we are root
		return err
	}
	logger := slog.New(slog.DiscardHandler)
	t0 := time.Now()

	// 1. PostgreSQL, Redis, the followers.
	pg, err := pglocal.Start(ctx, pglocal.Config{Dir: filepath.Join(dir, "pg"), Logger: logger,
		Settings: map[string]string{"max_connections": "200"}})
	if err != nil {
		return err
	}
	defer stopWithin(pg.Stop)
	rs, err := redislocal.Start(ctx, redislocal.Config{Dir: filepath.Join(dir, "redis"), Ephemeral: true, Logger: logger})
	if err != nil {
		return err
	}
	defer stopWithin(rs.Stop)
	admin, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return err
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE livedrops")
	admin.Close(ctx)
	if err != nil {
		return err
	}
	dbURL := pg.URL("livedrops")
	seedOut, err := runCommand(ctx, bin, []string{"seed", "-log-format", "text", "-users", strconv.Itoa(o.followers + 1),
		"-creators", "1", "-products", "0", "-drops", "0", "-followers", strconv.Itoa(o.followers)},
		[]string{"DATABASE_URL=" + dbURL}, filepath.Join(dir, "seed.log"))
	if err != nil {
		return fmt.Errorf("seed: %w (log in %s)", err, filepath.Join(dir, "seed.log"))
	}
	var seed struct {
		CelebrityID int64 `json:"celebrity_id"`
		Followers   struct {
			First int64 `json:"first"`
			Last  int64 `json:"last"`
		} `json:"followers"`
	}
	if err := json.Unmarshal(seedOut, &seed); err != nil {
		return fmt.Errorf("seed printed %q: %w", seedOut, err)
	}
	fmt.Printf("seeded %d followers in %s\n", o.followers, time.Since(t0).Round(time.Millisecond))
	pool, err := postgres.Open(ctx, dbURL, postgres.PoolConfig{MaxConns: 4})
	if err != nil {
		return err
	}
	defer pool.Close()

	// 2. The stand-ins.
	vapidPriv, vapidPub, err := webpush.GenerateKeys()
	if err != nil {
		return err
	}
	b := &bench{online: map[string]bool{}}
	faults := pushtest.RandomFaults(o.unavailable, o.gone)
	b.fcm, err = pushtest.StartFCM(pushtest.FCMConfig{Faults: faults, OnAccept: b.accepted})
	if err != nil {
		return err
	}
	defer b.fcm.Close()
	b.wp, err = pushtest.StartWebPush(pushtest.WebPushConfig{VAPIDPublicKey: vapidPub, Seed: []byte("bench-push"),
		Faults: faults, OnAccept: b.accepted})
	if err != nil {
		return err
	}
	defer b.wp.Close()
	keyFile := filepath.Join(dir, "service-account.json")
	if err := os.WriteFile(keyFile, b.fcm.CredentialsJSON(), 0o600); err != nil {
		return err
	}

	// 3. Devices and presence.
	t1 := time.Now()
	devices, offline, err := b.makeDevices(seed.Followers.First, o)
	if err != nil {
		return err
	}
	if err := postgres.CopyDevices(ctx, pool, devices); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, "ANALYZE devices"); err != nil {
		return err
	}
	b.expected, b.goneWant = 0, 0
	for _, d := range offline {
		if pushtest.Gone(deviceKey(d), o.gone) {
			b.goneWant++
		} else {
			b.expected++
		}
	}
	rdb, err := redis.Open(ctx, rs.URL(0))
	if err != nil {
		return err
	}
	defer rdb.Close()
	presence, err := redis.NewPresence(rdb, redis.PresenceConfig{HubID: "bench-hub", Prefix: "ld:"})
	if err != nil {
		return err
	}
	if err := presence.Heartbeat(ctx); err != nil {
		return err
	}
	var onlineIDs []int64
	for _, d := range devices {
		if b.online[deviceKey(d)] {
			onlineIDs = append(onlineIDs, d.UserID)
		}
	}
	for i := 0; i < len(onlineIDs); i += 10_000 {
		if err := presence.Add(ctx, onlineIDs[i:min(i+10_000, len(onlineIDs))]); err != nil {
			return err
		}
	}
	beatCtx, stopBeat := context.WithCancel(ctx)
	defer stopBeat()
	go func() { // a hub beats while it runs
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-beatCtx.Done():
				return
			case <-t.C:
				_ = presence.Heartbeat(beatCtx)
			}
		}
	}()
	fmt.Printf("%d devices (%d offline: %d to push, %d gone), %d users online, in %s\n", len(devices), len(offline),
		b.expected, b.goneWant, len(onlineIDs), time.Since(t1).Round(time.Millisecond))

	// 4. livedrops all, and the drop.
	srv, err := startServer(ctx, bin, dir, []string{
		"DATABASE_URL=" + dbURL, "REDIS_URL=" + rs.URL(0),
		"LIVEDROPS_FCM_CREDENTIALS_FILE=" + keyFile, "LIVEDROPS_FCM_BASE_URL=" + b.fcm.BaseURL(),
		"LIVEDROPS_VAPID_PUBLIC_KEY=" + vapidPub, "LIVEDROPS_VAPID_PRIVATE_KEY=" + vapidPriv,
		"LIVEDROPS_WEBPUSH_ENDPOINTS=http://127.0.0.1:*", "LIVEDROPS_NATS_SYNC=always", "LIVEDROPS_WEBPUSH_ENCODER=" + o.encoder,
	}, strings.Fields(o.serverArgs))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.stop()) }()
	var productID, dropID int64
	if err := pool.QueryRow(ctx, `INSERT INTO products (creator_id, title, price_cents) VALUES ($1, 'Signed vinyl', 4900) RETURNING product_id`,
		seed.CelebrityID).Scan(&productID); err != nil {
		return err
	}
	startTime := time.Now().Add(o.lead).Truncate(time.Millisecond)
	if err := pool.QueryRow(ctx, `INSERT INTO drops (creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user, status)
VALUES ($1, $2, $3, $4, 1000, 1000, 1, 'scheduled') RETURNING drop_id`, seed.CelebrityID, productID, startTime, startTime.Add(time.Hour)).Scan(&dropID); err != nil {
		return err
	}
	fmt.Printf("drop %d starts at %s\n", dropID, startTime.Format(time.RFC3339Nano))
	if err := sleep(ctx, time.Until(startTime)); err != nil {
		return err
	}
	cpu0, stack0, self0 := cpuTime(srv.pid()), cpuTime(srv.pid(), pg.PID(), rs.PID()), selfCPU()

	// 5. Wait for the pushes.
	pages := (o.followers + 999) / 1000
	var scanDone time.Time
	deadline := time.Now().Add(o.timeout)
	for {
		m, err := srv.metrics()
		if err == nil && scanDone.IsZero() && m["livedrops_push_presence_seconds_count"] >= float64(pages) {
			scanDone = time.Now()
		}
		if b.pairs.Load() >= int64(b.expected) && !scanDone.IsZero() && err == nil && m["livedrops_push_jobs_pending"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			fmt.Printf("timed out: %d of %d accepted, metrics %v\n", b.pairs.Load(), b.expected, m)
			break
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	cpu1, stack1, self1 := cpuTime(srv.pid()), cpuTime(srv.pid(), pg.PID(), rs.PID()), selfCPU()
	_ = sleep(ctx, 3*time.Second) // stragglers would be duplicates
	fs, ws := b.fcm.Stats(), b.wp.Stats()
	var remaining int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM devices`).Scan(&remaining); err != nil {
		return err
	}
	removed := len(devices) - remaining
	pushes := fs.Accepted + ws.Accepted
	last := fs.Last
	if ws.Last.After(last) {
		last = ws.Last
	}
	first := b.firstAccept()
	lost := int64(b.expected) - (fs.Pairs + ws.Pairs - b.toOnline.Load())
	m, _ := srv.metrics()
	fmt.Printf("fcm %+v\nwebpush %+v\n", fs, ws)
	fmt.Printf("notifier: sent %v, failed %v, retried %v, dead-lettered %v, removed %v, skipped online %v, deduplicated %v, auth failures %v\n",
		m["livedrops_push_sent_total"], m["livedrops_push_failed_total"], m["livedrops_push_retried_total"],
		m["livedrops_push_dead_lettered_total"], m["livedrops_push_devices_removed_total"], m["livedrops_push_skipped_online_total"],
		m["livedrops_push_deduplicated_total"], m["livedrops_push_auth_failures_total"])
	if b.toOnline.Load() > 0 || fs.Invalid+ws.Invalid > 0 {
		fmt.Printf("WRONG: %d pushes to online users, %d refused as invalid by the stand-ins\n", b.toOnline.Load(), fs.Invalid+ws.Invalid)
	}
	if removed != b.goneWant {
		fmt.Printf("WRONG: %d devices removed, %d were gone\n", removed, b.goneWant)
	}
	scanS, allS := scanDone.Sub(startTime).Seconds(), last.Sub(startTime).Seconds()
	if scanDone.IsZero() {
		scanS = -1
	}
	cpuPer, stackPer, standinPer := 0.0, 0.0, 0.0
	if pushes > 0 {
		cpuPer = float64((cpu1 - cpu0).Microseconds()) / float64(pushes)
		stackPer = float64((stack1 - stack0).Microseconds()) / float64(pushes)
		standinPer = float64((self1 - self0).Microseconds()) / float64(pushes)
	}
	fmt.Printf("CPU per push over the window: livedrops %.0f µs, with PostgreSQL and Redis %.0f µs, this generator (the stand-ins) %.0f µs\n",
		cpuPer, stackPer, standinPer)
	sendS := last.Sub(first).Seconds()

	// 6. The floor.
	floorS, vsFloor := 0.0, 0.0
	if o.floor {
		fl, err := b.floor(ctx, offline, vapidPub, vapidPriv, o.encoder)
		if err != nil {
			return err
		}
		floorS = fl.Seconds()
		if floorS > 0 {
			vsFloor = sendS / floorS
		}
		fmt.Printf("floor: %d messages sent straight in %.2f s; the notifier took %.2f s from its first to its last acceptance\n",
			len(offline), floorS, sendS)
	}
	rate := 0.0
	if sendS > 0 {
		rate = float64(pushes) / sendS
	}
	fmt.Printf("web push encoder: %s\n", o.encoder)
	fmt.Printf("RESULT followers=%d offline_devices=%d pushes=%d duplicates=%d lost=%d removed=%d scan_s=%.2f all_sent_s=%.2f pushes_per_s=%.0f cpu_us_per_push=%.0f stack_cpu_us_per_push=%.0f floor_s=%.2f vs_floor=%.2f\n",
		o.followers, len(offline), pushes, fs.Duplicates+ws.Duplicates, max(lost, 0), removed, scanS, allS, rate, cpuPer, stackPer, floorS, vsFloor)
	return nil
}

// bench holds the stand-ins and what they saw.
type bench struct {
	fcm      *pushtest.FCM
	wp       *pushtest.WebPush
	online   map[string]bool // device key -> its user is online (written before the run, then read only)
	expected int             // offline devices not gone: each must be accepted once
	goneWant int
	pairs    atomic.Int64 // acceptances (the stand-ins count distinct pairs)
	toOnline atomic.Int64
	mu       sync.Mutex
	first    time.Time
}

func (b *bench) accepted(d pushtest.Delivery) {
	if d.EventID == "floor" {
		return
	}
	b.pairs.Add(1)
	if b.online[d.Device] {
		b.toOnline.Add(1)
	}
	b.mu.Lock()
	if b.first.IsZero() || d.At.Before(b.first) {
		b.first = d.At
	}
	b.mu.Unlock()
}

func (b *bench) firstAccept() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.first
}

// deviceKey is how the stand-ins name a device: the FCM token, or the Web Push subscription id.
func deviceKey(d push.Device) string {
	if d.Provider == push.FCM {
		return d.Token
	}
	return d.Token[strings.LastIndexByte(d.Token, '/')+1:]
}

// makeDevices gives follower i (user first+i) one device: offline every offlineEvery-th follower,
// alternating FCM and Web Push among the offline ones and among the online ones. Offline Web Push
// subscriptions get their own keys (the stand-in decrypts with them); the online ones share one pair,
// so a push wrongly sent to one fails to decrypt and shows.
func (b *bench) makeDevices(first int64, o options) (all, offline []push.Device, err error) {
	shared, err := b.wp.Subscription("online-shared")
	if err != nil {
		return nil, nil, err
	}
	all = make([]push.Device, o.followers)
	for i := range all {
		uid := first + int64(i)
		isOffline := i%o.offlineEvery == 0
		fcmDevice := i%2 == 0
		if isOffline { // i is a multiple of offlineEvery: alternate by the offline ones' own count

			fcmDevice = (i/o.offlineEvery)%2 == 0
		}
		d := push.Device{UserID: uid, Provider: push.WebPush}
		if fcmDevice {
			d.Provider, d.Token = push.FCM, fmt.Sprintf("bench-%d-%s", uid, "APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx")
		} else {
			id := "u" + strconv.FormatInt(uid, 10)
			d.Token, d.P256dh, d.Auth = shared.Endpoint[:strings.LastIndexByte(shared.Endpoint, '/')+1]+id, shared.P256dh, shared.Auth
		}
		all[i] = d
		if isOffline {
			offline = append(offline, d)
		} else {
			b.online[deviceKey(d)] = true
		}
	}
	// The offline subscriptions' own keys, derived on every CPU.
	var wg sync.WaitGroup
	var firstErr atomic.Value
	idx := make(chan int, 1024)
	for range 4 {
		wg.Go(func() {
			for i := range idx {
				d := &all[i]
				sub, err := b.wp.Subscription(deviceKey(*d))
				if err != nil {
					firstErr.Store(err)
					continue
				}
				d.P256dh, d.Auth = sub.P256dh, sub.Auth
			}
		})
	}
	for i := range all {
		if i%o.offlineEvery == 0 && all[i].Provider == push.WebPush {
			idx <- i
		}
	}
	close(idx)
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return nil, nil, e
	}
	for i := range offline {
		offline[i] = all[offline[i].UserID-first]
	}
	return all, offline, nil
}

// floor sends one message to each of devices straight from here, 256 in flight, and times it.
func (b *bench) floor(ctx context.Context, devices []push.Device, vapidPub, vapidPriv, encoder string) (time.Duration, error) {
	f, err := fcm.New(fcm.Config{CredentialsJSON: b.fcm.CredentialsJSON(), BaseURL: b.fcm.BaseURL()})
	if err != nil {
		return 0, err
	}
	w, err := webpush.New(webpush.Config{VAPIDPublicKey: vapidPub, VAPIDPrivateKey: vapidPriv, Subject: "mailto:bench@livedrops.example",
		Allow: func(string) bool { return true }, Client: &http.Client{Transport: webpush.NewTransport(256), Timeout: 15 * time.Second},
		Encoder: encoder})
	if err != nil {
		return 0, err
	}
	n := &push.Notification{EventID: "floor", Type: "drop.started", DropID: 1, CreatorID: 1, Title: "Celebrity is live: Signed vinyl",
		Body: "Signed vinyl, $49.00. Tap to shop before it sells out.", URL: "/#/drops/1", Tag: "drop-1", Expires: time.Now().Add(time.Hour)}
	// Warm the token and the connections, then time.
	_ = f.Send(ctx, n, push.Device{Provider: push.FCM, Token: "warm-up"})
	start := time.Now()
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, d := range devices {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if d.Provider == push.FCM {
				f.Send(ctx, n, d)
			} else {
				w.Send(ctx, n, d)
			}
		})
	}
	wg.Wait()
	return time.Since(start), ctx.Err()
}

// selfCPU is this process's user+system CPU time (the stand-ins run in it).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuTime is the user+system CPU time of the processes pids and their children alive now (Linux).
func cpuTime(pids ...int) time.Duration {
	want := map[int]bool{}
	for _, p := range pids {
		want[p] = true
	}
	entries, _ := os.ReadDir("/proc")
	var ticks int64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		if !want[pid] && !want[ppid] {
			continue
		}
		ut, _ := strconv.ParseInt(fields[11], 10, 64)
		st, _ := strconv.ParseInt(fields[12], 10, 64)
		ticks += ut + st
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ is 100 on Linux
}

func runCommand(ctx context.Context, bin string, args, env []string, logPath string) ([]byte, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stderr = logf
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	return cmd.Output()
}

// cleanEnv is this process's environment without any LiveDrops setting (the bench sets its own).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LIVEDROPS_") || k == "DATABASE_URL" || k == "REDIS_URL" || k == "NATS_URL" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

type server struct {
	cmd  *exec.Cmd
	base string
	done chan error
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func startServer(ctx context.Context, bin, dir string, env, args []string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"all", "-data-dir", filepath.Join(dir, "data"), "-http-addr", addr}, args...)...)
	cmd.Env = append(cleanEnv(), append(env, "LIVEDROPS_LOG_LEVEL=warn", "LIVEDROPS_JWT_SECRET="+strings.Repeat("b", 32))...)
	cmd.Stderr, cmd.Stdout = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s := &server{cmd: cmd, base: "http://" + addr, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Printf("livedrops all ready on %s (log in %s)\n", addr, logPath)
				return s, nil
			}
		}
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("livedrops all exited before it was ready: %v (log in %s)", err, logPath)
		case <-ctx.Done():
			_ = s.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = s.stop()
			return nil, fmt.Errorf("livedrops all not ready after 2 minutes (log in %s)", logPath)
		}
	}
}

func (s *server) stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("livedrops all: %w", err)
		}
		return nil
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return errors.New("livedrops all did not stop within 60 s; killed")
	}
}

// metrics reads /metrics: each livedrops_push_* family summed over its labels.
func (s *server) metrics() (map[string]float64, error) {
	resp, err := http.Get(s.base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "livedrops_push_") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			if strings.HasSuffix(name[:i], "_bucket") {
				continue
			}
			name = name[:i]
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func stopWithin(stop func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = stop(ctx)
}
