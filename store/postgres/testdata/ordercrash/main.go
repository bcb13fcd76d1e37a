// Command ordercrash places orders on one drop as fast as it can, from many goroutines, until it is
// killed: the victim of TestOrdersSurviveSIGKILL. Before each order it prints "try <user> <key>
// <quantity>", after a confirmation "ok <user> <key> <order id>", after a refusal "no <user> <key>
// <code>", one line each, so the test knows what was attempted and what was promised.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
)

func main() {
	dbURL := flag.String("db", "", "database URL")
	mode := flag.String("mode", "batched", "order mode")
	dropID := flag.Int64("drop", 0, "drop to buy")
	users := flag.String("users", "", "comma-separated buyer ids")
	workers := flag.Int("workers", 32, "buying goroutines; worker w buys as users w, w+workers, ... in turn, "+
		"moving on when one reaches the drop's limit")
	flag.Parse()
	if err := run(*dbURL, postgres.OrderMode(*mode), *dropID, *users, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "ordercrash:", err)
		os.Exit(1)
	}
}

func run(dbURL string, mode postgres.OrderMode, dropID int64, users string, workers int) error {
	ctx := context.Background()
	pool, err := postgres.Open(ctx, dbURL, postgres.PoolConfig{})
	if err != nil {
		return err
	}
	orders, err := postgres.NewOrders(pool, postgres.OrdersConfig{Mode: mode,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return err
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
	}
	var ids []int64
	for _, s := range strings.Split(users, ",") {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	var wg sync.WaitGroup
	for w := range min(workers, len(ids)) {
		wg.Go(func() {
			next := w
			for n := 0; next < len(ids); n++ {
				user := ids[next]
				key := fmt.Sprintf("u%d-%d", user, n)
				say("try %d %s 1", user, key)
				placed, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: user, DropID: dropID, Quantity: 1, IdempotencyKey: key})
				switch code := store.Code(err); {
				case err == nil:
					say("ok %d %s %d", user, key, placed.Order.ID)
				case code != "":
					say("no %d %s %s", user, key, code)
					if code == "limit_exceeded" {
						next += workers
					}
				default:
					say("err %d %s %v", user, key, err)
				}
			}
		})
	}
	wg.Wait()
	return nil
}
