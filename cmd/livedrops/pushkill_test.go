package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/fanout/jetstream"
	"github.com/livedrops/livedrops/fanout/natstest"
	"github.com/livedrops/livedrops/fanout/push"
	"github.com/livedrops/livedrops/fanout/push/pushtest"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

// A worker process SIGKILLed in the middle of a push job loses nothing and duplicates nothing: the
// next worker sends exactly the devices the dead one had not finished.
func TestKilledWorkerLosesNoPush(t *testing.T) {
	bin := buildBinary(t)
	ctx := context.Background()
	dbURL := storetest.NewMigratedDatabase(t)
	pool, err := postgres.Open(ctx, dbURL, postgres.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rdb, prefix := storetest.NewRedis(t)
	natsSrv := natstest.Start(t)

	// The first 40 requests are accepted at once, every later one is held (as a slow provider would):
	// the kill comes while those are in flight, and none is being accepted at that moment.
	const followers, before = 200, 40
	var hold atomic.Bool
	hold.Store(true)
	var requests atomic.Int64
	fcmSrv, err := pushtest.StartFCM(pushtest.FCMConfig{Keep: true,
		Faults: func(string, int) pushtest.Fault {
			if hold.Load() && requests.Add(1) > before {
				return pushtest.Fault{Delay: time.Minute}
			}
			return pushtest.Fault{}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer fcmSrv.Close()
	keyFile := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(keyFile, fcmSrv.CredentialsJSON(), 0o600); err != nil {
		t.Fatal(err)
	}

	mustExec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	mustExec(`INSERT INTO users (user_id, name, email) VALUES (1, 'Cleo', 'cleo@example.com')`)
	mustExec(`INSERT INTO creators (creator_id, profile_name) VALUES (1, 'Cleo')`)
	mustExec(`INSERT INTO products (product_id, creator_id, title, description, price_cents) VALUES (1, 1, 'Hoodie', '', 4900)`)
	mustExec(`INSERT INTO drops (drop_id, creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user, status)
VALUES (1, 1, 1, now(), now() + interval '1 hour', 100, 100, 1, 'live')`)
	mustExec(`INSERT INTO users (user_id, name, email) SELECT g, 'F', 'f' || g || '@example.com' FROM generate_series(2, $1) g`, followers+1)
	mustExec(`INSERT INTO follows (creator_id, follower_id) SELECT 1, g FROM generate_series(2, $1) g`, followers+1)
	devices := make([]push.Device, followers)
	tokens := make([]string, followers)
	for i := range devices {
		tokens[i] = fmt.Sprintf("kill-test-token-%04d-%s", i, strings.Repeat("k", 40))
		devices[i] = push.Device{UserID: int64(i + 2), Provider: push.FCM, Token: tokens[i]}
	}
	if err := postgres.CopyDevices(ctx, pool, devices); err != nil {
		t.Fatal(err)
	}

	worker := func(name string) (*exec.Cmd, chan error) {
		t.Helper()
		cmd := exec.Command(bin, "worker")
		cmd.Env = append(os.Environ(), "LIVEDROPS_HTTP_ADDR=127.0.0.1:0", "DATABASE_URL="+dbURL,
			"REDIS_URL=redis://"+storetest.RedisAddr(t)+"/0", "NATS_URL="+natsSrv.ClientURL(),
			"LIVEDROPS_CACHE_PREFIX="+prefix, "LIVEDROPS_FCM_CREDENTIALS_FILE="+keyFile,
			"LIVEDROPS_FCM_BASE_URL="+fcmSrv.BaseURL(), "LIVEDROPS_PUSH_PAGE_SIZE=50",
			"LIVEDROPS_PUSH_ACK_WAIT=2s", "LIVEDROPS_PUSH_LEASE=3s", "LIVEDROPS_LOG_LEVEL=warn",
			"LIVEDROPS_VAPID_PUBLIC_KEY=", "LIVEDROPS_VAPID_PRIVATE_KEY=", "LIVEDROPS_DATA_DIR="+t.TempDir())
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				t.Logf("%s: %s", name, sc.Text())
			}
			exited <- cmd.Wait()
		}()
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				<-exited
			}
		})
		return cmd, exited
	}

	first, firstExited := worker("worker 1")
	nc, err := nats.Connect(natsSrv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 60*time.Second, func() error {
		_, err := js.Consumer(ctx, jetstream.DefaultStreamName, jetstream.PushEventsConsumer)
		return err
	})
	pub, err := jetstream.NewPublisher(nc, jetstream.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const eventID = "ev-kill"
	if _, err := pub.Publish(ctx, []fanout.Event{{ID: eventID, Type: fanout.DropStarted, TS: time.Now(), CreatorID: 1, DropID: 1}}); err != nil {
		t.Fatal(err)
	}

	// Kill when the first messages are accepted and marked done, and later ones are in flight.
	doneMarks := func() int {
		n := 0
		iter := rdb.Scan(ctx, 0, prefix+"push:"+eventID+".*", 1000).Iterator()
		for iter.Next(ctx) {
			if v, _ := rdb.Get(ctx, iter.Val()).Result(); v == "d" {
				n++
			}
		}
		return n
	}
	checkFor(t, 60*time.Second, func() error {
		st := fcmSrv.Stats()
		if st.Accepted != before || st.Requests <= before || doneMarks() != before {
			return fmt.Errorf("accepted %d of %d requests, %d marked done; waiting for %d and requests in flight",
				st.Accepted, st.Requests, doneMarks(), before)
		}
		return nil
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-firstExited
	atKill := fcmSrv.Stats()
	t.Logf("killed with %d accepted, %d requests received", atKill.Accepted, atKill.Requests)
	if atKill.Accepted != before {
		t.Fatalf("%d accepted at the kill, want %d", atKill.Accepted, before)
	}

	hold.Store(false)
	worker("worker 2")
	checkFor(t, 90*time.Second, func() error {
		st := fcmSrv.Stats()
		if st.Pairs != followers {
			return fmt.Errorf("%d of %d devices notified (%+v)", st.Pairs, followers, st)
		}
		return nil
	})
	// Let a straggler show itself, if there is one.
	time.Sleep(3 * time.Second)
	st := fcmSrv.Stats()
	if st.Duplicates != 0 || st.Accepted != followers {
		t.Fatalf("stats %+v: want each of the %d devices notified exactly once", st, followers)
	}
	for _, tok := range tokens {
		if n := fcmSrv.Count(tok, eventID); n != 1 {
			t.Fatalf("device %s notified %d times", tok, n)
		}
	}
}
