package web_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// signUp signs a new person up through the page and returns who they are (as the page keeps it).
func signUp(t *testing.T, s *server, ctx context.Context, name string) user {
	t.Helper()
	email := fmt.Sprintf("%s-%d@example.com", strings.ToLower(name), time.Now().UnixNano())
	run(t, ctx, "sign up "+name, 60*time.Second,
		chromedp.Navigate(s.base+"/#/"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="name"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="name"]`), name),
		chromedp.SendKeys(chromedp.CSS(`input[name="email"]`), email),
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#who .name`)),
	)
	u := eval[map[string]any](t, ctx, `JSON.parse(localStorage.getItem('livedrops.user'))`)
	return user{ID: int64(u["id"].(float64)), Token: u["token"].(string)}
}

func open(t *testing.T, s *server, ctx context.Context, hash, waitFor string) {
	t.Helper()
	run(t, ctx, "open "+hash, 30*time.Second,
		chromedp.Navigate(s.base+"/"+hash), chromedp.WaitVisible(chromedp.CSS(waitFor)))
}

// localTime is t as the value of a datetime-local input in the browser's time zone.
func localTime(t *testing.T, ctx context.Context, at time.Time) string {
	t.Helper()
	return eval[string](t, ctx, fmt.Sprintf(`(() => { const d = new Date(%d); const p = (n) => String(n).padStart(2, '0');
		return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds()) })()`,
		at.UnixMilli()))
}

func orderCount(t *testing.T, s *server, u user) int {
	t.Helper()
	var l struct {
		Items []map[string]any `json:"items"`
	}
	s.call(t, "GET", fmt.Sprintf("/users/%d/orders?limit=100", u.ID), u.Token, nil, 200, &l)
	return len(l.Items)
}

// TestLiveDropInTwoBrowsers is the whole drop as two people see it: a creator schedules a drop in the
// studio, a follower sees it go live within 2 s of start_time, buys (the confirmation comes from
// order.confirmed) and the creator's stock bar falls; a double click and a lost answer buy once; a
// purchase works with the keyboard alone.
func TestLiveDropInTwoBrowsers(t *testing.T) {
	s := liveStack(t)
	creatorTab, fanTab := tab(t), tab(t)

	cora := signUp(t, s, creatorTab, "Cora")
	run(t, creatorTab, "become a creator", 30*time.Second,
		chromedp.Navigate(s.base+"/#/studio"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="profile_name"]`)),
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#new-drop`)))

	// The quick choice schedules a drop 30 s ahead.
	before := time.Now()
	run(t, creatorTab, "schedule a drop in 30 s", 30*time.Second,
		chromedp.SendKeys(chromedp.CSS(`#new-drop input[name="title"]`), "Signed poster"),
		chromedp.Click(chromedp.CSS(`#new-drop button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#new-drop`)))
	until(t, creatorTab, "the drop in the studio list", `document.querySelectorAll('[data-drop]').length === 1`, 20*time.Second)
	quick := s.drop(t, int64(eval[float64](t, creatorTab, `Number(document.querySelector('[data-drop]').dataset.drop)`)))
	start, _ := time.Parse(time.RFC3339, quick.StartTime)
	if d := start.Sub(before); d < 25*time.Second || d > 40*time.Second {
		t.Errorf("'in 30 s' scheduled the drop %s ahead, want about 30 s", d)
	}

	// The drop the test follows starts in 8 s (the "at a time" choice), 10 units, 5 per person.
	at := time.Now().Add(8 * time.Second).Truncate(time.Second).Add(time.Second)
	run(t, creatorTab, "schedule a drop at a time", 30*time.Second,
		chromedp.SendKeys(chromedp.CSS(`#new-drop input[name="title"]`), "Tour hoodie"),
		chromedp.SetValue(chromedp.CSS(`#new-drop input[name="stock"]`), "10"),
		chromedp.SetValue(chromedp.CSS(`#new-drop input[name="max"]`), "5"),
		chromedp.Click(chromedp.CSS(`#new-drop input[value="at"]`)),
		chromedp.SetValue(chromedp.CSS(`#new-drop input[name="at"]`), localTime(t, creatorTab, at)),
		chromedp.Click(chromedp.CSS(`#new-drop button[type="submit"]`)))
	until(t, creatorTab, "two drops in the studio list", `document.querySelectorAll('[data-drop]').length === 2`, 20*time.Second)
	dropID := int64(eval[float64](t, creatorTab, `Math.max(...[...document.querySelectorAll('[data-drop]')].map(e => Number(e.dataset.drop)))`))
	d := s.drop(t, dropID)
	if d.Status != "scheduled" || d.InitialStock != 10 {
		t.Fatalf("drop %d: %+v, want scheduled with 10 units", dropID, d)
	}

	// The follower follows Cora and sees the drop coming up, with a countdown.
	fan := signUp(t, s, fanTab, "Finn")
	open(t, s, fanTab, "#/creators", fmt.Sprintf(`[data-creator="%d"] button.follow`, cora.ID))
	run(t, fanTab, "follow Cora", 20*time.Second,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`[data-creator="%d"] button.follow`, cora.ID))),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`[data-creator="%d"] button.follow[aria-pressed="true"]`, cora.ID))))
	screenshot(t, fanTab, "creators-desktop")
	card := fmt.Sprintf(`[data-section="soon"] [data-drop="%d"]`, dropID)
	open(t, s, fanTab, "#/", card)
	until(t, fanTab, "a countdown", fmt.Sprintf(`document.querySelector(%s).querySelector('.count') !== null`, js(card)), 10*time.Second)
	// The dev stack offers Web Push (GET /push/config: enabled, with the VAPID key of its data dir), so
	// "Notify me" shows (push_browser_test.go follows a push to the service worker).
	until(t, fanTab, "Notify me shows", `!document.querySelector('#notify').hidden && document.querySelector('#notify').offsetParent !== null`, 10*time.Second)

	// At start_time the card goes live, from the drop.started event, within 2 s.
	until(t, fanTab, "the drop goes live", fmt.Sprintf(`document.querySelector('[data-drop="%d"] .badge').dataset.status === 'live'`, dropID), 30*time.Second)
	until(t, fanTab, "the card moves to Live now", fmt.Sprintf(`document.querySelector('[data-section="live"] [data-drop="%d"]') !== null`, dropID), 10*time.Second)
	late := eval[float64](t, fanTab, fmt.Sprintf(`window.livedropsLog.find(e => e.type === 'drop.started' && e.drop_id === %d).t - Date.parse(%s)`, dropID, js(d.StartTime)))
	t.Logf("drop.started reached the follower's page %.0f ms after start_time", late)
	if late > 2000 {
		t.Errorf("drop.started came %.0f ms after start_time, want within 2000", late)
	}

	// The creator watches the drop's page; the follower buys one.
	dropPage := fmt.Sprintf("#/drops/%d", dropID)
	open(t, s, creatorTab, dropPage, `.stock[data-stock="10"]`)
	open(t, s, fanTab, dropPage, `#buy:not([disabled])`)
	run(t, fanTab, "buy one", 30*time.Second, chromedp.Click(chromedp.CSS(`#buy`)))
	until(t, fanTab, "the confirmation from order.confirmed", `document.querySelector('#buy-msg').dataset.confirmed`, 20*time.Second)
	until(t, creatorTab, "the creator's stock bar falls", `document.querySelector('.stock').dataset.stock === '9'`, 20*time.Second)

	// A double click is one buying intent: one order.
	until(t, fanTab, "the button is ready again", `!document.querySelector('#buy').disabled`, 10*time.Second)
	run(t, fanTab, "double click", 30*time.Second, chromedp.DoubleClick(chromedp.CSS(`#buy`)))
	until(t, fanTab, "the second confirmation", `document.querySelector('#buy-msg').dataset.kind === 'ok' && !document.querySelector('#buy').disabled`, 20*time.Second)
	if n := orderCount(t, s, fan); n != 2 {
		t.Fatalf("after one click and one double click: %d orders, want 2", n)
	}

	// A lost answer: the order commits but the response never reaches the page; the page retries with
	// the same key and the server answers the one order again.
	eval[any](t, fanTab, `(() => { const real = window.fetch; let once = true;
		window.fetch = async (u, o) => { const r = await real(u, o); if (once && String(u).endsWith('/orders')) { once = false; throw new TypeError('network lost') } return r } })()`)
	run(t, fanTab, "buy with a lost answer", 30*time.Second, chromedp.Click(chromedp.CSS(`#buy`)))
	until(t, fanTab, "the replayed answer", `document.querySelector('#buy-msg').dataset.replayed === 'true'`, 20*time.Second)
	if n := orderCount(t, s, fan); n != 3 {
		t.Fatalf("after a retried purchase: %d orders, want 3", n)
	}
	until(t, creatorTab, "stock after three orders", `document.querySelector('.stock').dataset.stock === '7'`, 20*time.Second)

	// Keyboard only: Tab to the quantity, raise it, Tab to the button, Enter.
	open(t, s, fanTab, dropPage, `#buy:not([disabled])`)
	eval[any](t, fanTab, `document.activeElement && document.activeElement.blur()`)
	for i := 0; ; i++ {
		if eval[bool](t, fanTab, `document.activeElement && document.activeElement.id === 'qty'`) {
			break
		}
		if i == 40 {
			t.Fatalf("40 Tab presses never reached the quantity field; focus is on %s", eval[string](t, fanTab, `document.activeElement.outerHTML.slice(0, 120)`))
		}
		run(t, fanTab, "Tab", 10*time.Second, chromedp.KeyEvent("\t"))
	}
	run(t, fanTab, "raise the quantity and buy with Enter", 20*time.Second,
		chromedp.KeyEvent(kb.ArrowUp),
		chromedp.KeyEvent("\t"))
	if id := eval[string](t, fanTab, `document.activeElement.id`); id != "buy" {
		t.Fatalf("Tab after the quantity focuses %q, want the buy button", id)
	}
	run(t, fanTab, "Enter", 10*time.Second, chromedp.KeyEvent("\r"))
	until(t, fanTab, "the keyboard purchase confirmed", `document.querySelector('#buy-msg').dataset.confirmed && /2 ×/.test(document.querySelector('#buy-msg').textContent)`, 20*time.Second)
	until(t, creatorTab, "stock after the keyboard purchase", `document.querySelector('.stock').dataset.stock === '5'`, 20*time.Second)

	// The screenshots (README shows two of them).
	screenshot(t, fanTab, "drop-desktop")
	open(t, s, fanTab, "#/", fmt.Sprintf(`[data-section="live"] [data-drop="%d"]`, dropID))
	screenshot(t, fanTab, "feed-desktop")
	open(t, s, creatorTab, "#/studio", `#new-drop`)
	until(t, creatorTab, "the studio's drops", `document.querySelectorAll('[data-drop]').length === 2`, 10*time.Second)
	screenshot(t, creatorTab, "studio-desktop")
	run(t, fanTab, "phone size", 20*time.Second, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	open(t, s, fanTab, "#/", fmt.Sprintf(`[data-drop="%d"]`, dropID))
	screenshot(t, fanTab, "feed-phone")
	open(t, s, fanTab, dropPage, `#buy`)
	screenshot(t, fanTab, "drop-phone")
	run(t, creatorTab, "phone size", 20*time.Second, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	open(t, s, creatorTab, "#/studio", `#new-drop`)
	screenshot(t, creatorTab, "studio-phone")
}

// TestReconnectResumeAndRewatch: the page misses events while offline and shows them after it comes
// back (resume, recovered); when the server drains (SIGTERM: close 4000 with a retry hint) and starts
// again on the same data, the page reconnects, watches the drop again and shows new stock.
func TestReconnectResumeAndRewatch(t *testing.T) {
	s := liveStack(t)
	maker := s.newUser(t, "Maya")
	d := s.newDrop(t, maker, 1*time.Second, 50, 50)
	buyer := s.newUser(t, "Bo")
	ctx := tab(t)
	signUp(t, s, ctx, "Rhea")
	until(t, ctx, "connected", `document.querySelector('#conn').dataset.state === 'connected'`, 20*time.Second)
	waitLive(t, s, d.DropID)
	dropPage := fmt.Sprintf("#/drops/%d", d.DropID)
	open(t, s, ctx, dropPage, `.stock[data-stock="50"]`)
	// The watch in force, the page reads the drop once more (what changed before it is not an event).
	until(t, ctx, "watching, then refetched", fmt.Sprintf(`window.livedropsLog.some(e => e.kind === 'refetched' && e.drop_id === %d)`, d.DropID), 10*time.Second)

	buy := func(n int) {
		t.Helper()
		s.call(t, "POST", "/orders", buyer.Token, map[string]any{"drop_id": d.DropID, "quantity": n,
			"idempotency_key": fmt.Sprintf("k-%d-%d", n, time.Now().UnixNano())}, 201, nil)
	}
	buy(1)
	until(t, ctx, "live stock", `document.querySelector('.stock').dataset.stock === '49'`, 20*time.Second)

	// Offline: the SDK closes the socket; what happens meanwhile comes back with the resume.
	eval[any](t, ctx, `window.dispatchEvent(new Event('offline'))`)
	until(t, ctx, "reconnecting while offline", `document.querySelector('#conn').dataset.state !== 'connected'`, 10*time.Second)
	buy(2)
	time.Sleep(1500 * time.Millisecond) // let the missed stock.changed be published while the page is away
	if got := eval[string](t, ctx, `document.querySelector('.stock').dataset.stock`); got != "49" {
		t.Fatalf("offline, the page still got stock %s; log: %s", got, eval[string](t, ctx, `JSON.stringify(window.livedropsLog)`))
	}
	eval[any](t, ctx, `window.dispatchEvent(new Event('online'))`)
	until(t, ctx, "the missed stock after the resume", `document.querySelector('.stock').dataset.stock === '47'`, 20*time.Second)
	until(t, ctx, "resumed, recovered", `window.livedropsLog.some(e => e.kind === 'resumed' && e.recovered === true)`, 10*time.Second)

	// Drain and restart: SIGTERM closes the socket with 4000 and a retry hint; the process comes back on
	// the same data dir and port; the page reconnects, watches the drop again, and sees new stock.
	s.stop(syscall.SIGTERM)
	until(t, ctx, "the drain close", `window.livedropsLog.some(e => e.kind === 'state' && e.code === 4000 && /retry_after_ms=/.test(e.reason))`, 20*time.Second)
	hint := eval[[]float64](t, ctx, `(() => { const e = window.livedropsLog.find(e => e.kind === 'state' && e.code === 4000);
		return [Number(/retry_after_ms=(\d+)/.exec(e.reason)[1]), e.retryIn] })()`)
	if hint[0] != hint[1] {
		t.Errorf("drain hint retry_after_ms=%v, but the SDK retries in %v ms", hint[0], hint[1])
	}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	if err := s.ready(120 * time.Second); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "reconnected after the restart", `document.querySelector('#conn').dataset.state === 'connected'`, 60*time.Second)
	buy(3)
	until(t, ctx, "stock after the restart (the drop is watched again)", `document.querySelector('.stock').dataset.stock === '44'`, 30*time.Second)
}

func waitLive(t *testing.T, s *server, id int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.drop(t, id).Status != "live" {
		if time.Now().After(deadline) {
			t.Fatalf("drop %d not live within 30 s", id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWorksOverSSEWhenWebSocketIsBlocked: a network that refuses WebSockets (here: every WebSocket
// goes to a closed port) leaves the page on Server-Sent Events, remembered for the tab, with live stock
// and the purchase confirmation.
func TestWorksOverSSEWhenWebSocketIsBlocked(t *testing.T) {
	s := liveStack(t)
	maker := s.newUser(t, "Sol")
	d := s.newDrop(t, maker, 1*time.Second, 20, 5)
	other := s.newUser(t, "Ode")
	ctx := tab(t)
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.WebSocket = class extends WebSocket { constructor(u, p) { super('ws://127.0.0.1:9/blocked', p) } }`,
	}); err != nil {
		t.Fatal(err)
	}
	signUp(t, s, ctx, "Sam")
	until(t, ctx, "connected over SSE", `document.querySelector('#conn').dataset.state === 'connected' && document.querySelector('#conn').dataset.transport === 'sse'`, 30*time.Second)
	if got := eval[string](t, ctx, `sessionStorage.getItem('livedrops.transport')`); got != "sse" {
		t.Errorf("sessionStorage livedrops.transport = %q, want sse (remembered for the tab)", got)
	}
	waitLive(t, s, d.DropID)
	open(t, s, ctx, fmt.Sprintf("#/drops/%d", d.DropID), `#buy:not([disabled])`)
	until(t, ctx, "connected over SSE with the watch", `document.querySelector('#conn').dataset.state === 'connected'`, 20*time.Second)
	s.call(t, "POST", "/orders", other.Token, map[string]any{"drop_id": d.DropID, "quantity": 2, "idempotency_key": "sse-1"}, 201, nil)
	until(t, ctx, "live stock over SSE", `document.querySelector('.stock').dataset.stock === '18'`, 20*time.Second)
	run(t, ctx, "buy over SSE", 20*time.Second, chromedp.Click(chromedp.CSS(`#buy`)))
	until(t, ctx, "order.confirmed over SSE", `document.querySelector('#buy-msg').dataset.confirmed`, 20*time.Second)
	if n := eval[float64](t, ctx, `window.livedropsLog.filter(e => e.kind === 'state' && e.state === 'connected' && e.transport === 'websocket').length`); n != 0 {
		t.Errorf("the page connected over WebSocket %v times, though WebSockets are blocked", n)
	}
}

// TestSDKOnAnotherOrigin runs the SDK on a page of another site (an allowed origin): sign-up, follow and
// a purchase with an idempotency key through CORS, a first token that is expired (4401) refreshed
// through getToken, live stock on a watched drop.
func TestSDKOnAnotherOrigin(t *testing.T) {
	s := liveStack(t)
	maker := s.newUser(t, "Kai")
	d := s.newDrop(t, maker, 1*time.Second, 30, 5)
	waitLive(t, s, d.DropID)
	ctx := tab(t)
	run(t, ctx, "open the shop", 30*time.Second,
		chromedp.Navigate(fmt.Sprintf("%s/?creator=%d&drop=%d", s.origin.URL, maker.ID, d.DropID)))
	until(t, ctx, "the shop's script done", `window.shop && (window.shop.done || window.shop.error)`, 60*time.Second)
	res := eval[map[string]any](t, ctx, `window.shop`)
	if res["error"] != nil {
		t.Fatalf("shop page: %v", res["error"])
	}
	t.Logf("shop: %v", res)
	if res["follow"] != float64(204) || res["requestId"] == nil || res["requestId"] == "" {
		t.Errorf("follow %v, X-Request-Id %v: want 204 and a readable request id", res["follow"], res["requestId"])
	}
	reasons := fmt.Sprint(res["reasons"])
	if reasons != "[connect refused]" {
		t.Errorf("getToken was asked %s, want [connect refused] (an expired token, then a fresh one)", reasons)
	}
	if !strings.Contains(fmt.Sprint(res["states"]), "connecting 4401") || res["connected"] != "websocket" {
		t.Errorf("states %v, connected %v: want a 4401 refusal, then connected over websocket", res["states"], res["connected"])
	}
	orders := res["orders"].([]any)
	if orders[0] != float64(201) || orders[1] != float64(201) || orders[2] != orders[3] || orders[4] != "true" {
		t.Errorf("the same key twice: %v, want the one order twice, the second with Idempotent-Replayed: true", orders)
	}
	until(t, ctx, "live stock on the other origin", `window.shop.stock === 29`, 20*time.Second)
}

const shopPage = `<!doctype html><meta charset="utf-8"><title>A creator's shop</title><p>Shop</p>
<script type="module">
import { LiveDrops } from 'BASE/sdk/livedrops.js'
const r = { states: [], reasons: [], events: [] }
window.shop = r
const q = new URLSearchParams(location.search)
const drop = Number(q.get('drop'))
try {
  const res = await fetch('BASE/users', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'Shopper', email: 'shopper' + Date.now() + '@example.com' }) })
  const u = await res.json()
  r.requestId = res.headers.get('X-Request-Id')
  r.follow = (await fetch('BASE/users/' + u.user_id + '/follow/' + q.get('creator'), { method: 'POST', headers: { Authorization: 'Bearer ' + u.token } })).status
  let n = 0
  const sdk = new LiveDrops({ url: 'BASE', getToken: async (ctx) => {
    r.reasons.push(ctx.reason)
    return (await fetch('/token?user=' + u.user_id + '&expired=' + (n++ === 0 ? 1 : 0))).text()
  } })
  sdk.on('state', (s) => r.states.push(s.state + ' ' + (s.code || 0)))
  sdk.on('stock.changed', (e) => { r.stock = e.data.stock_count })
  const connected = new Promise((ok) => sdk.on('connected', (c) => { r.connected = c.transport; ok() }))
  sdk.connect()
  await connected
  const watching = new Promise((ok) => sdk.on('watching', ok))
  sdk.watch(drop)
  await watching
  const key = crypto.randomUUID()
  const buy = () => fetch('BASE/orders', { method: 'POST', body: JSON.stringify({ drop_id: drop, quantity: 1 }),
    headers: { Authorization: 'Bearer ' + u.token, 'Content-Type': 'application/json', 'Idempotency-Key': key } })
  const a = await buy()
  const b = await buy()
  r.orders = [a.status, b.status, (await a.json()).order_id, (await b.json()).order_id, b.headers.get('Idempotent-Replayed')]
  r.done = true
} catch (e) { r.error = String((e && e.stack) || e) }
</script>`

// TestServiceWorkerRegisters: /sw.js installs and activates under the page's CSP, at the scope of the
// whole page.
func TestServiceWorkerRegisters(t *testing.T) {
	s := liveStack(t)
	ctx := tab(t)
	open(t, s, ctx, "#/creators", `h1`)
	state := eval[string](t, ctx, `(async () => {
		const reg = await navigator.serviceWorker.register('/sw.js')
		await navigator.serviceWorker.ready
		const w = reg.active || reg.waiting || reg.installing
		return reg.scope + ' ' + (w ? w.state : 'none')
	})()`)
	if want := s.base + "/ activated"; state != want && state != s.base+"/ activating" {
		t.Errorf("service worker: %q, want %q", state, want)
	}
}

// TestDropStates: a drop not live yet, one that sells out while the page shows it, and one that ends
// while the page shows it, each with its badge and a buy button that says why it is off.
func TestDropStates(t *testing.T) {
	s := liveStack(t)
	maker := s.newUser(t, "Ida")
	later := s.newDrop(t, maker, time.Hour, 5, 5)
	selling := s.newDrop(t, maker, time.Second, 3, 3)
	buyer := s.newUser(t, "Eve")
	ctx := tab(t)
	open(t, s, ctx, "#/", `input[name="email"]`)
	screenshot(t, ctx, "signup-desktop")
	signUp(t, s, ctx, "Uma")

	open(t, s, ctx, fmt.Sprintf("#/drops/%d", later.DropID), `#buy`)
	until(t, ctx, "not live yet", `document.querySelector('#buy').disabled && document.querySelector('#buy').textContent === 'Not live yet' &&
		document.querySelector('.badge').dataset.status === 'scheduled'`, 10*time.Second)

	waitLive(t, s, selling.DropID)
	open(t, s, ctx, fmt.Sprintf("#/drops/%d", selling.DropID), `#buy:not([disabled])`)
	until(t, ctx, "connected", `document.querySelector('#conn').dataset.state === 'connected'`, 20*time.Second)
	s.call(t, "POST", "/orders", buyer.Token, map[string]any{"drop_id": selling.DropID, "quantity": 3, "idempotency_key": "all"}, 201, nil)
	until(t, ctx, "sold out, live", `document.querySelector('#buy').disabled && document.querySelector('#buy').textContent === 'Sold out' &&
		document.querySelector('.badge').dataset.status === 'sold_out' && document.querySelector('.stock').textContent === 'All gone'`, 20*time.Second)

	// A drop that lasts two seconds ends while the page shows it.
	var p struct {
		ProductID int64 `json:"product_id"`
	}
	s.call(t, "POST", "/products", maker.Token, map[string]any{"title": "Flash", "price_cents": 100}, 201, &p)
	start := time.Now().Add(1500 * time.Millisecond)
	var short dropJSON
	s.call(t, "POST", "/drops", maker.Token, map[string]any{"product_id": p.ProductID, "start_time": start.UTC().Format(time.RFC3339Nano),
		"end_time": start.Add(2 * time.Second).UTC().Format(time.RFC3339Nano), "stock_count": 5, "max_per_user": 1}, 201, &short)
	open(t, s, ctx, fmt.Sprintf("#/drops/%d", short.DropID), `#buy`)
	until(t, ctx, "live, then ended", `document.querySelector('.badge').dataset.status === 'ended' &&
		document.querySelector('#buy').disabled && document.querySelector('#buy').textContent === 'Drop ended'`, 30*time.Second)
	if !eval[bool](t, ctx, fmt.Sprintf(`window.livedropsLog.some(e => e.type === 'drop.ended' && e.drop_id === %d)`, short.DropID)) {
		t.Errorf("the ended state did not come from drop.ended")
	}
}

// TestReadmeExampleRuns serves the complete example of web/README.md from another origin: it signs up,
// connects and shows the connection state, as the README says.
func TestReadmeExampleRuns(t *testing.T) {
	s := liveStack(t)
	ctx := tab(t)
	run(t, ctx, "open the README example", 30*time.Second, chromedp.Navigate(s.origin.URL+"/readme.html"))
	until(t, ctx, "the example connected", `/^connected/.test(document.querySelector('#state').textContent)`, 30*time.Second)
}
