package k6

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Browse is browse.js: setup discovers the catalogue through the public reads, then reads drawn by
// the weights of scenarios.json arrive at RATE a second for DURATION.
func Browse(ctx context.Context, t Target) (Result, error) {
	r, err := newRun(t, "browse")
	if err != nil {
		return Result{}, err
	}
	rate, err1 := r.int("RATE")
	d, err2 := r.dur("DURATION")
	maxVUs, err3 := r.int("MAX_VUS")
	pages, err4 := r.int("FOLLOWER_PAGES")
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Result{}, err
	}

	// setup()
	rs, err := r.do(ctx, http.MethodGet, "/drops/live?limit=100", nil, "", "GET /drops/live", "setup", nil)
	if err != nil {
		return Result{}, err
	}
	var live struct {
		Items []struct {
			DropID    int64 `json:"drop_id"`
			CreatorID int64 `json:"creator_id"`
		} `json:"items"`
	}
	if err := rs.decode(&live); err != nil || rs.status != http.StatusOK {
		return Result{}, fmt.Errorf("GET /drops/live: %d %v", rs.status, err)
	}
	if len(live.Items) == 0 {
		return Result{}, errors.New("no live drops to read: seed the deployment first (livedrops seed)")
	}
	var drops, creators []int64
	seen := make(map[int64]bool)
	for _, it := range live.Items {
		drops = append(drops, it.DropID)
		if !seen[it.CreatorID] {
			seen[it.CreatorID] = true
			creators = append(creators, it.CreatorID)
		}
	}
	products := 0
	for page := 1; page <= 1000; page++ {
		rs, err := r.do(ctx, http.MethodGet, fmt.Sprintf("/products?page=%d&per_page=100", page), nil, "", "GET /products", "setup", nil)
		if err != nil {
			return Result{}, err
		}
		var p struct {
			Items   []json.RawMessage `json:"items"`
			HasMore bool              `json:"has_more"`
		}
		if err := rs.decode(&p); err != nil || rs.status != http.StatusOK {
			return Result{}, fmt.Errorf("GET /products: %d %v", rs.status, err)
		}
		products += len(p.Items)
		if !p.HasMore {
			break
		}
	}
	celebrity, _ := r.int("CREATOR_ID")
	if celebrity == 0 {
		most := -1
		for _, id := range creators {
			rs, err := r.do(ctx, http.MethodGet, fmt.Sprintf("/creators/%d", id), nil, "", "GET /creators/{id}", "setup", nil)
			if err != nil {
				return Result{}, err
			}
			var c struct {
				FollowerCount int `json:"follower_count"`
			}
			n := -1
			if rs.status == http.StatusOK && rs.decode(&c) == nil {
				n = c.FollowerCount
			}
			if n > most {
				most, celebrity = n, int(id)
			}
		}
	}
	var cursors []string
	cursor := ""
	for i := range pages {
		qs := ""
		if cursor != "" {
			qs = "&cursor=" + q(cursor)
		}
		rs, err := r.do(ctx, http.MethodGet, fmt.Sprintf("/creators/%d/followers?limit=100%s", celebrity, qs), nil, "",
			"GET /creators/{id}/followers", "setup", nil)
		if err != nil {
			return Result{}, err
		}
		var p struct {
			NextCursor string `json:"next_cursor"`
		}
		if err := rs.decode(&p); err != nil || rs.status != http.StatusOK {
			return Result{}, fmt.Errorf("GET /creators/%d/followers: %d %v", celebrity, rs.status, err)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
		if float64(i) >= float64(pages)/2-1 {
			cursors = append(cursors, cursor)
		}
	}
	productPages := max(1, int(math.Ceil(float64(products)/20)))

	// default(): one read per iteration.
	total := 0
	for _, m := range r.sc.Mix {
		total += m.Weight
	}
	g := newRNG()
	draw := func() string {
		x := g.intN(total)
		for _, m := range r.sc.Mix {
			if x -= m.Weight; x < 0 {
				return m.Request
			}
		}
		return r.sc.Mix[len(r.sc.Mix)-1].Request
	}
	var unknown atomic.Value
	r.arrivals(ctx, float64(rate), []stage{{float64(rate), d}}, maxVUs, func(int64) {
		var path, name string
		switch req := draw(); req {
		case "drop":
			path, name = fmt.Sprintf("/drops/%d", drops[g.intN(len(drops))]), "GET /drops/{id}"
		case "products_page":
			path, name = fmt.Sprintf("/products?page=%d", 1+g.intN(productPages)), "GET /products"
		case "creator":
			path, name = fmt.Sprintf("/creators/%d", creators[g.intN(len(creators))]), "GET /creators/{id}"
		case "followers_page":
			qs := ""
			if len(cursors) > 0 {
				qs = "&cursor=" + q(cursors[g.intN(len(cursors))])
			}
			path, name = fmt.Sprintf("/creators/%d/followers?limit=100%s", celebrity, qs), "GET /creators/{id}/followers"
		case "live_drops":
			path, name = "/drops/live", "GET /drops/live"
		default:
			unknown.Store(req)
			return
		}
		rs, err := r.do(ctx, http.MethodGet, path, nil, "", name, "read", nil)
		r.check("read is 200", err == nil && rs.status == http.StatusOK)
	})
	if req := unknown.Load(); req != nil {
		return Result{}, fmt.Errorf("unknown request %v in scenarios.json browse.mix", req)
	}
	return r.result(fmt.Sprintf("catalogue: %d live drops, %d creators, %d products, creator %d with %d follower cursors",
		len(drops), len(creators), products, celebrity, len(cursors))), nil
}

// FlashSale is flash-sale.js: setup creates a creator, a product, a drop of STOCK units and BUYERS
// accounts, waits for the drop to be live; buyers arrive at a ramping rate, one POST /orders of one
// unit each; teardown checks through the API that the confirmed orders equal the stock taken.
func FlashSale(ctx context.Context, t Target, buyers []Account) (Result, error) {
	r, err := newRun(t, "flash-sale")
	if err != nil {
		return Result{}, err
	}
	peak, err1 := r.int("PEAK_RATE")
	ramp, err2 := r.dur("RAMP")
	hold, err3 := r.dur("HOLD")
	stock, err4 := r.int("STOCK")
	maxPer, err5 := r.int("MAX_PER_USER")
	startIn, err6 := r.dur("START_IN")
	maxVUs, err7 := r.int("MAX_VUS")
	nBuyers, err8 := r.int("BUYERS")
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7, err8); err != nil {
		return Result{}, err
	}
	stages := []stage{{float64(peak), ramp}, {float64(peak), hold}, {0, ramp}}
	planned := int(math.Round(float64(peak) * (ramp.Seconds() + hold.Seconds())))
	maxDropped := int(math.Floor(float64(planned) * r.sc.DroppedIterationsMaxRatio))
	r.sc.Thresholds = cloneThresholds(r.sc.Thresholds)
	r.sc.Thresholds["dropped_iterations"] = []string{fmt.Sprintf("count<=%d", maxDropped)}

	// setup()
	run := runID()
	creator, product, err := r.createCreator(ctx, run)
	if err != nil {
		return Result{}, err
	}
	drop, _, err := r.createDrop(ctx, creator, product, startIn, stock, maxPer)
	if err != nil {
		return Result{}, err
	}
	if buyers == nil {
		if buyers, err = r.createAccounts(ctx, run, nBuyers); err != nil {
			return Result{}, err
		}
	}
	if len(buyers) == 0 {
		return Result{}, errors.New("no buyers")
	}
	if err := r.waitForStatus(ctx, drop, "live", startIn+30*time.Second); err != nil {
		return Result{}, err
	}

	// default(): one order per iteration.
	orderAnswers := []int{http.StatusCreated, http.StatusAccepted, http.StatusConflict}
	r.arrivals(ctx, 0, stages, maxVUs, func(n int64) {
		b := buyers[int(n)%len(buyers)]
		rs, err := r.do(ctx, http.MethodPost, "/orders", map[string]any{"drop_id": drop, "quantity": 1,
			"idempotency_key": fmt.Sprintf("%s-%d", run, n)}, b.Token, "POST /orders", "order", orderAnswers)
		switch {
		case err != nil:
		case rs.status == http.StatusCreated:
			r.m.Add("orders_confirmed", nil, 1)
		case rs.status == http.StatusConflict:
			var p struct {
				Code string `json:"code"`
			}
			_ = rs.decode(&p)
			r.m.Add("orders_refused", map[string]string{"code": p.Code}, 1)
		}
		r.check("order answered", err == nil && (rs.status == 201 || rs.status == 202 || rs.status == 409))
	})

	// teardown()
	sold := 0
	for i := 0; i < min(len(buyers), planned+peak); i++ {
		units, err := r.confirmedUnits(ctx, buyers[i], drop)
		if err != nil {
			return Result{}, err
		}
		sold += units
	}
	taken := -1
	deadline := time.Now().Add(10 * time.Second)
	for {
		rs, err := r.do(ctx, http.MethodGet, fmt.Sprintf("/drops/%d", drop), nil, "", "GET /drops/{id}", "teardown", nil)
		if err != nil {
			return Result{}, err
		}
		var d struct {
			InitialStock int `json:"initial_stock"`
			StockCount   int `json:"stock_count"`
		}
		if rs.status == http.StatusOK && rs.decode(&d) == nil {
			taken = d.InitialStock - d.StockCount
		}
		if taken == sold || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.check("confirmed orders equal the stock taken", sold == taken && taken <= stock)
	return r.result(fmt.Sprintf("books: %d units confirmed to buyers, %d taken from the stock of %d", sold, taken, stock)), nil
}

func cloneThresholds(t map[string][]string) map[string][]string {
	out := make(map[string][]string, len(t)+1)
	for k, v := range t {
		out[k] = v
	}
	return out
}

// confirmedUnits is flash-sale.js confirmedUnits: the buyer's confirmed units on drop, every page of
// GET /users/{id}/orders.
func (r *run) confirmedUnits(ctx context.Context, b Account, drop int64) (int, error) {
	units, cursor := 0, ""
	for {
		qs := ""
		if cursor != "" {
			qs = "&cursor=" + q(cursor)
		}
		rs, err := r.do(ctx, http.MethodGet, fmt.Sprintf("/users/%d/orders?limit=100%s", b.UserID, qs), nil, b.Token,
			"GET /users/{id}/orders", "teardown", nil)
		if err != nil {
			return 0, err
		}
		var page struct {
			Items []struct {
				DropID   int64  `json:"drop_id"`
				Quantity int    `json:"quantity"`
				Status   string `json:"status"`
			} `json:"items"`
			NextCursor string `json:"next_cursor"`
		}
		if rs.status != http.StatusOK {
			return 0, fmt.Errorf("GET /users/%d/orders: %d %s", b.UserID, rs.status, rs.body)
		}
		if err := rs.decode(&page); err != nil {
			return 0, err
		}
		for _, o := range page.Items {
			if o.DropID == drop && o.Status == "confirmed" {
				units += o.Quantity
			}
		}
		if page.NextCursor == "" {
			return units, nil
		}
		cursor = page.NextCursor
	}
}

// Followers is followers.js: setup creates a creator with a product and FOLLOWERS accounts that
// follow it (or takes followers and creator, seeded), and a drop starting LEAD from now; every
// follower holds a socket, waits for drop.started and records receipt - ts as delivery_ms.
func Followers(ctx context.Context, t Target, followers []Account, creator *Account) (Result, error) {
	r, err := newRun(t, "followers")
	if err != nil {
		return Result{}, err
	}
	perVU, err1 := r.int("SOCKETS_PER_VU")
	lead, err2 := r.dur("LEAD")
	wait, err3 := r.dur("WAIT")
	n, err4 := r.int("FOLLOWERS")
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Result{}, err
	}

	// setup()
	run := runID()
	var c Account
	if creator != nil {
		c = *creator
	} else {
		rs, err := r.mustPost(ctx, "/users", map[string]string{"name": "Load creator", "email": run + "-creator@load.test"},
			"", "POST /users", http.StatusCreated)
		if err == nil {
			err = rs.decode(&c)
		}
		if err != nil {
			return Result{}, err
		}
	}
	product, err := r.addProduct(ctx, c, run, http.StatusCreated, http.StatusConflict)
	if err != nil {
		return Result{}, err
	}
	if followers == nil {
		if followers, err = r.createAccounts(ctx, run, n); err != nil {
			return Result{}, err
		}
		for i := 0; i < len(followers); i += 50 {
			var wg sync.WaitGroup
			errs := make([]error, min(len(followers), i+50)-i)
			for j := i; j < min(len(followers), i+50); j++ {
				wg.Go(func() {
					a := followers[j]
					rs, err := r.do(ctx, http.MethodPost, fmt.Sprintf("/users/%d/follow/%d", a.UserID, c.UserID), nil, a.Token,
						"POST /users/{id}/follow/{creatorId}", "setup", nil)
					if err == nil && rs.status != http.StatusNoContent {
						err = fmt.Errorf("follow: %d: %s", rs.status, rs.body)
					}
					errs[j-i] = err
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return Result{}, err
			}
		}
	}
	drop, startTime, err := r.createDrop(ctx, c, product, lead, 100, 1)
	if err != nil {
		return Result{}, err
	}

	// default(): VU v holds followers[(v-1)*perVU : v*perVU], every socket at once.
	deadline := startTime.Add(wait)
	var wg sync.WaitGroup
	for first := 0; first < len(followers); first += perVU {
		for _, a := range followers[first:min(len(followers), first+perVU)] {
			wg.Go(func() { r.follow(ctx, a, drop, deadline) })
		}
	}
	wg.Wait()
	got, _ := r.m.Values("drop_started_received")
	return r.result(fmt.Sprintf("%d of %d followers received drop.started", len(got), len(followers))), nil
}

// follow is followers.js follow(): one socket, its hello, then drop.started of drop before deadline.
func (r *run) follow(ctx context.Context, a Account, drop int64, deadline time.Time) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, r.t.wsURL(), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + a.Token}},
	})
	if err != nil {
		r.m.AddRate("socket_errors", nil, true)
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			// Closed by the server, or the deadline passed without the event.
			r.m.AddRate("socket_errors", nil, true)
			return
		}
		var ev struct {
			Type   string    `json:"type"`
			DropID int64     `json:"drop_id"`
			TS     time.Time `json:"ts"`
		}
		if json.Unmarshal(data, &ev) != nil {
			continue
		}
		if ev.Type == "drop.started" && ev.DropID == drop {
			r.m.Add("delivery_ms", nil, float64(time.Since(ev.TS))/float64(time.Millisecond))
			r.m.Add("drop_started_received", nil, 1)
			r.m.AddRate("socket_errors", nil, false)
			conn.Close(websocket.StatusNormalClosure, "")
			return
		}
	}
}
