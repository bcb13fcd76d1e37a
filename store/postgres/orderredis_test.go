package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/livedrops/livedrops/store"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/redis/redislocal"
	"github.com/livedrops/livedrops/store/storetest"
)

// redisDropCache is a drop cache kept in a real Redis: one key per cached drop, deleted on
// invalidation.
type redisDropCache struct{ client *goredis.Client }

func dropKey(id int64) string { return "drop:" + strconv.FormatInt(id, 10) }

func (c redisDropCache) InvalidateDrop(ctx context.Context, id int64) error {
	return c.client.Del(ctx, dropKey(id)).Err()
}

// TestOrdersWithoutRedis stops Redis in the middle of a sale: orders go on, nothing is oversold, and
// the lost invalidations are counted, not waited for.
func TestOrdersWithoutRedis(t *testing.T) {
	for _, mode := range orderModes {
		t.Run(string(mode), func(t *testing.T) {
			rs, err := redislocal.Start(testContext(t), redislocal.Config{Dir: storetest.PrivateDir(t) + "/redis", Ephemeral: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rs.Stop(context.Background()) })
			client := goredis.NewClient(&goredis.Options{Addr: rs.Addr()})
			t.Cleanup(func() { _ = client.Close() })

			w := newOrderWorld(t)
			ctx := testContext(t)
			reg := prometheus.NewRegistry()
			// Small batches, so that the sale spans many transactions.
			orders := newOrders(t, w.pool, postgres.OrdersConfig{Mode: mode, Registerer: reg, MaxBatch: 8,
				Cache: redisDropCache{client}, CacheTimeout: 200 * time.Millisecond})
			const stock, buyers = 1000, 200 // at the stop, at most one order per buyer is in flight
			dropID := w.drop(t, dropSpec{stock: stock, maxPerUser: 10})
			users := w.users(t, buyers)

			// While Redis runs, a commit invalidates the cached drop.
			if err := client.Set(ctx, dropKey(dropID), "cached", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: users[0], DropID: dropID, Quantity: 1, IdempotencyKey: "first"}); err != nil {
				t.Fatal(err)
			}
			checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
				if n, err := client.Exists(ctx, dropKey(dropID)).Result(); err != nil || n != 0 {
					return fmt.Errorf("cached drop still there (%d, %v)", n, err)
				}
				return nil
			})

			var confirmed, atStop atomic.Int64
			confirmed.Add(1)
			stopped := make(chan struct{})
			var stopOnce sync.Once
			var wg sync.WaitGroup
			for i, u := range users {
				wg.Go(func() {
					for attempt := 0; ; attempt++ {
						_, err := orders.PlaceOrder(ctx, store.PlaceOrder{UserID: u, DropID: dropID, Quantity: 1,
							IdempotencyKey: fmt.Sprint("k", attempt)})
						switch {
						case err == nil:
							// A quarter in, Redis goes down; the buyers wait until it is gone (a batch
							// can sell the rest faster than redis-server exits), then buy on.
							if confirmed.Add(1) >= stock/4 {
								stopOnce.Do(func() {
									if err := rs.Stop(context.Background()); err != nil {
										t.Errorf("stop redis: %v", err)
									}
									atStop.Store(confirmed.Load())
									close(stopped)
								})
								<-stopped
							}
						case errors.Is(err, store.ErrSoldOut), errors.Is(err, store.ErrLimitExceeded):
							return
						default:
							t.Errorf("buyer %d (%d): %v", u, i, err)
							return
						}
					}
				})
			}
			wg.Wait()
			select {
			case <-stopped:
			default:
				t.Fatal("Redis was never stopped")
			}
			if sold := stock - atStop.Load(); sold <= 0 {
				t.Errorf("nothing was sold after Redis stopped")
			}
			a := checkBooks(t, w.pool, dropID)
			if a.confirmed != stock || confirmed.Load() != stock {
				t.Errorf("got %d confirmed in the database, %d answered; want %d", a.confirmed, confirmed.Load(), stock)
			}
			checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
				if n := metricValue(t, reg, "livedrops_order_cache_invalidations_total", map[string]string{"result": "error"}); n == 0 {
					return errors.New("no failed invalidation counted")
				}
				return nil
			})
		})
	}
}
