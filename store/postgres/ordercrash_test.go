package postgres_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
)

// TestOrdersSurviveSIGKILL kills a process placing orders (testdata/ordercrash) with SIGKILL in the
// middle of its load, in each mode, and checks that no order it confirmed is lost, nothing is
// oversold, every order has its event, and a retry of every attempted key afterwards answers the
// order that committed under it, or places it anew when none did.
func TestOrdersSurviveSIGKILL(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ordercrash")
	build := exec.Command("go", "build", "-o", bin, "./testdata/ordercrash")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the victim: %v\n%s", err, out)
	}
	for _, mode := range orderModes {
		t.Run(string(mode), func(t *testing.T) {
			w := newOrderWorld(t)
			ctx := testContext(t)
			const stock, killAfter = 5000, 400
			dropID := w.drop(t, dropSpec{stock: stock, maxPerUser: 5})
			users := w.users(t, 400)
			list := make([]string, len(users))
			for i, u := range users {
				list[i] = strconv.FormatInt(u, 10)
			}
			url := w.pool.Config().ConnString()
			victim := exec.Command(bin, "-db", url, "-mode", string(mode), "-drop", strconv.FormatInt(dropID, 10),
				"-users", strings.Join(list, ","), "-workers", "64")
			victim.Stderr = os.Stderr
			stdout, err := victim.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := victim.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = victim.Process.Kill(); _ = victim.Wait() })

			type attempt struct {
				user int64
				key  string
			}
			var tried []attempt
			promised := map[attempt]int64{} // key → order id the victim confirmed
			lines := bufio.NewScanner(stdout)
			killed := false
			for lines.Scan() {
				f := strings.Fields(lines.Text())
				if len(f) != 4 {
					t.Fatalf("victim wrote %q", lines.Text())
				}
				user, _ := strconv.ParseInt(f[1], 10, 64)
				a := attempt{user, f[2]}
				switch f[0] {
				case "try":
					tried = append(tried, a)
				case "ok":
					id, _ := strconv.ParseInt(f[3], 10, 64)
					promised[a] = id
				case "err":
					t.Fatalf("victim: %s", lines.Text())
				}
				if !killed && len(promised) >= killAfter {
					if err := victim.Process.Kill(); err != nil { // SIGKILL: no defer, no shutdown
						t.Fatal(err)
					}
					killed = true
				}
			}
			err = victim.Wait()
			var exit *exec.ExitError
			if !killed || !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("victim ended with %v (killed: %v), want death by SIGKILL", err, killed)
			}

			// The server side of the killed connections finishes what it was running (a COMMIT already sent
			// still commits) or rolls back; wait until no session but idle ones is left, so the books below
			// are read once the database has settled.
			checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
				n := queryInt(t, w.pool, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
  AND state IS DISTINCT FROM 'idle'`)
				if n != 0 {
					return fmt.Errorf("%d sessions still running or in a transaction", n)
				}
				return nil
			})

			a := checkBooks(t, w.pool, dropID)
			if a.confirmed < len(promised) || a.confirmed == stock {
				t.Fatalf("%d units confirmed in the database, %d promised: want at least the promised, and the drop still selling", a.confirmed, len(promised))
			}
			for k, id := range promised {
				var status string
				if err := w.pool.QueryRow(ctx, `SELECT status FROM orders WHERE order_id = $1 AND user_id = $2 AND idempotency_key = $3`,
					id, k.user, k.key).Scan(&status); err != nil || status != "confirmed" {
					t.Fatalf("promised order %d (%v) is %q, %v; want confirmed", id, k, status, err)
				}
			}
			if got := countEventsOf(t, w, dropID, "order.confirmed"); got != a.orders {
				t.Errorf("got %d order.confirmed events for %d orders", got, a.orders)
			}
			t.Logf("killed after %d promised; %d committed; %d attempted", len(promised), a.orders, len(tried))

			// Retry every attempted key, as the victim's clients would.
			orders := newOrders(t, w.pool, postgres.OrdersConfig{Mode: mode})
			for _, k := range tried {
				var stored int64
				err := w.pool.QueryRow(ctx, `SELECT order_id FROM orders WHERE user_id = $1 AND idempotency_key = $2`, k.user, k.key).Scan(&stored)
				placed, perr := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: k.user, DropID: dropID, Quantity: 1, IdempotencyKey: k.key})
				switch {
				case err == nil: // committed before the kill, answered or not
					if perr != nil || !placed.Replayed || placed.Order.ID != stored {
						t.Fatalf("retry of %v: got %+v, %v; want order %d replayed", k, placed, perr, stored)
					}
				case perr != nil && !errors.Is(perr, store.ErrLimitExceeded):
					t.Fatalf("retry of uncommitted %v: got %v, want a new order or ErrLimitExceeded", k, perr)
				case perr == nil && placed.Replayed:
					t.Fatalf("retry of uncommitted %v replayed %+v", k, placed)
				}
			}
			checkBooks(t, w.pool, dropID)
		})
	}
}

func countEventsOf(tb testing.TB, w orderWorld, dropID int64, typ string) int {
	tb.Helper()
	return int(queryInt(tb, w.pool, `SELECT count(*) FROM outbox WHERE type = $1 AND (payload->>'drop_id')::bigint = $2`, typ, dropID))
}
