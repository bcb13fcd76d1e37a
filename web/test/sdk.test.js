// Unit tests of the SDK (node --test). The resume tests run against a real livedrops server whose URL
// is in LIVEDROPS_URL (the Go test TestSDKNode starts one and runs these); without it they fail.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { LiveDrops, CLOSE_CODES, closePolicy, backoff, retryHint, Seen } from '../livedrops.js'

test('backoff stays within [min, max] and grows like centrifuge-js', () => {
  for (let step = 0; step < 40; step++) {
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const d = backoff(step, 500, 20000, () => r)
      assert.ok(d >= 500 && d <= 20000, `step ${step} random ${r}: ${d}`)
      assert.equal(d, Math.floor(Math.min(20000, 500 + r * Math.min(20000, 500 * 2 ** step))))
    }
  }
  assert.equal(backoff(0, 500, 20000, () => 0), 500)
  assert.equal(backoff(0, 500, 20000, () => 0.999999), 999)
  assert.equal(backoff(3, 500, 20000, () => 0.999999), 4499)
  assert.equal(backoff(30, 500, 20000, () => 0.999999), 20000)
  // Full jitter: the spread of a step covers its whole range (no two clients in lockstep).
  const seen = new Set(Array.from({ length: 200 }, () => backoff(5, 500, 20000)))
  assert.ok(seen.size > 100, `only ${seen.size} distinct delays`)
})

test('the close-code map is the table of docs/protocol.md', () => {
  const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8')
  const section = doc.slice(doc.indexOf('## Closing'), doc.indexOf('## Reconnecting well'))
  const rows = [...section.matchAll(/^\| (\d{4}) \|.*\| (\w+) \|$/gm)].map((m) => [Number(m[1]), m[2]])
  assert.ok(rows.length >= 10, `found ${rows.length} rows in docs/protocol.md`)
  assert.deepEqual(Object.fromEntries(rows), Object.fromEntries(Object.entries(CLOSE_CODES).map(([c, p]) => [c, p.action])))
  for (const [code, action] of rows) assert.equal(closePolicy(code).action, action, `code ${code}`)
  // By range, for codes the table does not list.
  assert.equal(closePolicy(4050).action, 'backoff')
  assert.equal(closePolicy(4499).action, 'stop')
  assert.equal(closePolicy(4999).action, 'stop')
  assert.equal(closePolicy(3000).action, 'backoff')
  assert.equal(retryHint('retry_after_ms=1234'), 1234)
  assert.equal(retryHint('bye'), null)
})

test('Seen drops duplicates and forgets the oldest', () => {
  const s = new Seen(3)
  assert.equal(s.add('1'), true)
  assert.equal(s.add('1'), false)
  s.add('2'); s.add('3'); s.add('4')
  assert.equal(s.add('1'), true, 'the oldest is forgotten past n')
  assert.equal(s.add('4'), false)
})

test('an event delivered twice reaches the page once, and moves the resume position', () => {
  const sdk = new LiveDrops({ getToken: () => 't', url: 'http://x.test', env: null, storage: null })
  const got = []
  sdk.on('stock.changed', (e) => got.push(e.id))
  const f = (id) => JSON.stringify({ id, type: 'stock.changed', ts: '2026-01-01T00:00:00.000Z', drop_id: 1, data: { stock_count: 1, sold: 1 } })
  sdk.frame(f('7'))
  sdk.frame(f('7'))
  sdk.frame(f('8'))
  sdk.frame('not json')
  assert.deepEqual(got, ['7', '8'])
  assert.equal(sdk.lastEventId, '8')
})

test('watch is reference-counted and every watched drop is in the connect URL', () => {
  const sdk = new LiveDrops({ getToken: () => 't', url: 'http://x.test', env: null, storage: null })
  const a = sdk.watch(42)
  const b = sdk.watch(42)
  sdk.watch(7)
  a()
  a() // a second call of one release does nothing
  assert.deepEqual([...sdk.watches], [[42, 1], [7, 1]])
  assert.equal(sdk.address('/ws', 'tok').searchParams.get('watch'), '42,7')
  b()
  assert.deepEqual([...sdk.watches], [[7, 1]])
})

test('a watch in force tells the page which drops to refetch: all without a position, new ones after a resume', () => {
  const sdk = new LiveDrops({ getToken: () => 't', url: 'http://x.test', env: null, storage: null })
  const got = []
  sdk.on('watching', (w) => got.push(w.drop_id))
  sdk.watch(42)
  sdk.address('/events', 'tok') // an attempt with ?watch=42 and no since (no event yet)
  sdk.frame(JSON.stringify({ type: 'hello', conn_id: 'c1' }))
  assert.deepEqual(got, [42], 'no position: events before the hello may be missed')
  sdk.frame(JSON.stringify({ id: '7', type: 'stock.changed', ts: '2026-01-01T00:00:00.000Z', drop_id: 42, data: { stock_count: 1, sold: 1 } }))
  sdk.watch(9)
  sdk.address('/events', 'tok') // reconnect: since=7, watch=42,9
  got.length = 0
  sdk.frame(JSON.stringify({ type: 'hello', conn_id: 'c2', recovered: true }))
  assert.deepEqual(got, [9], 'recovered: only the drop that was not watched before')
  got.length = 0
  sdk.address('/events', 'tok')
  const reloads = []
  sdk.on('reload', (r) => reloads.push(r))
  sdk.frame(JSON.stringify({ type: 'hello', conn_id: 'c3', recovered: false }))
  assert.equal(reloads.length, 1)
  assert.deepEqual(got, [], 'a reload refetches everything: no watching events on top')
  sdk.frame(JSON.stringify({ type: 'watching', drop_id: 5 }))
  assert.deepEqual(got, [5], 'a watching frame is passed on')
})

// --- against the real server ---

const base = process.env.LIVEDROPS_URL
const needServer = () => assert.ok(base, 'LIVEDROPS_URL is not set: run these through the Go test TestSDKNode')

async function rest(method, path, token, body, headers = {}) {
  const res = await fetch(base + path, {
    method,
    headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: 'Bearer ' + token } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`)
  return text ? JSON.parse(text) : null
}

const user = (name) => rest('POST', '/users', '', { name, email: `${name}-${Date.now()}-${Math.random()}@example.com` })

async function liveDrop() {
  const maker = await user('maker')
  await rest('POST', '/creators', maker.token, { profile_name: 'Maker ' + maker.user_id })
  const p = await rest('POST', '/products', maker.token, { title: 'Mug', price_cents: 1200 })
  const start = Date.now() + 500
  const d = await rest('POST', '/drops', maker.token, { product_id: p.product_id, start_time: new Date(start).toISOString(),
    end_time: new Date(start + 3600e3).toISOString(), stock_count: 100, max_per_user: 100 })
  for (;;) {
    const now = await rest('GET', '/drops/' + d.drop_id)
    if (now.status === 'live') return now
    await sleep(100)
  }
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms))

/** Waits for the SDK event type matching pred, within ms. */
function next(sdk, type, pred = () => true, ms = 15000) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => { off(); fail(new Error('no ' + type + ' within ' + ms + ' ms')) }, ms)
    const off = sdk.on(type, (e) => { if (pred(e)) { clearTimeout(timer); off(); ok(e) } })
  })
}

for (const transport of ['websocket', 'sse']) {
  test(`resume over ${transport}: the missed events arrive once, recovered`, async () => {
    needServer()
    const d = await liveDrop()
    const buyer = await user('buyer')
    const fan = await user('fan')
    const sdk = new LiveDrops({ url: base, getToken: () => fan.token, transports: [transport], env: null, storage: null })
    const ids = []
    sdk.on('event', (e) => ids.push(e.id))
    const connected = next(sdk, 'connected')
    sdk.watch(d.drop_id)
    sdk.connect()
    assert.equal((await connected).transport, transport)
    const buy = (n) => rest('POST', '/orders', buyer.token, { drop_id: d.drop_id, quantity: n, idempotency_key: `${transport}-${n}-${Date.now()}` })
    const first = next(sdk, 'stock.changed', (e) => e.data.stock_count === 99)
    await buy(1)
    await first
    sdk.disconnect()
    await buy(2)
    await buy(3)
    await sleep(1000) // the stock event of the missed orders is published meanwhile
    const since = ids[ids.length - 1]
    const resumed = next(sdk, 'resumed')
    const caughtUp = next(sdk, 'stock.changed', (e) => e.data.stock_count === 94)
    sdk.connect()
    assert.deepEqual(await resumed, { recovered: true, since })
    await caughtUp
    assert.equal(new Set(ids).size, ids.length, 'an event arrived twice: ' + ids)
    sdk.disconnect()
  })
}

test('resume from an unknown position says recovered: false and asks for a reload', async () => {
  needServer()
  const fan = await user('lost')
  const sdk = new LiveDrops({ url: base, getToken: () => fan.token, since: '999999999', env: null, storage: null })
  const resumed = next(sdk, 'resumed')
  const reload = next(sdk, 'reload')
  sdk.connect()
  assert.equal((await resumed).recovered, false)
  assert.equal((await reload).recovered, false)
  sdk.disconnect()
})

test('a refused token makes the SDK ask getToken again, then it connects', async () => {
  needServer()
  const fan = await user('refused')
  const reasons = []
  const states = []
  const sdk = new LiveDrops({
    url: base, env: null, storage: null,
    getToken: ({ reason }) => { reasons.push(reason); return reasons.length === 1 ? 'not-a-token' : fan.token },
  })
  sdk.on('state', (s) => states.push(s.state + (s.code ? ' ' + s.code : '')))
  const connected = next(sdk, 'connected')
  sdk.connect()
  await connected
  assert.deepEqual(reasons, ['connect', 'refused'])
  assert.ok(states.includes('connecting 4401'), states.join(', '))
  sdk.disconnect()
})

test('a token refused twice in a row is final: disconnected with 4401, no loop', async () => {
  needServer()
  let asked = 0
  const sdk = new LiveDrops({ url: base, env: null, storage: null, getToken: () => { asked++; return 'bad' } })
  const final = next(sdk, 'state', (s) => s.state === 'disconnected')
  sdk.connect()
  const s = await final
  assert.equal(s.code, 4401)
  await sleep(1500)
  assert.equal(asked, 2)
})

test('offline for long: suspended, still retrying with bounded backoff', async () => {
  const states = []
  const sdk = new LiveDrops({ url: 'http://127.0.0.1:9', getToken: () => 't', env: null, storage: null,
    minDelay: 20, maxDelay: 60, suspendAfter: 300 })
  sdk.on('state', (s) => states.push(s))
  const suspended = next(sdk, 'state', (s) => s.state === 'suspended', 10000)
  sdk.connect()
  await suspended
  sdk.disconnect()
  const retries = states.filter((s) => s.retryIn !== undefined)
  assert.ok(retries.length >= 3, `${retries.length} retries`)
  for (const s of retries) assert.ok(s.retryIn >= 20 && s.retryIn <= 60, `retry in ${s.retryIn}`)
  assert.equal(states.at(-1).state, 'disconnected')
})

test('pagehide closes and pageshow reconnects; a hidden page does not reconnect until visible', async () => {
  needServer()
  const fan = await user('hidden')
  const env = new EventTarget()
  const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' })
  globalThis.document = /** @type {any} */ (doc)
  try {
    const sdk = new LiveDrops({ url: base, getToken: () => fan.token, env, storage: null })
    let connects = 0
    sdk.on('connected', () => connects++)
    const first = next(sdk, 'connected')
    sdk.connect()
    await first

    env.dispatchEvent(new Event('pagehide'))
    assert.equal(sdk.state, 'connecting')
    assert.equal(sdk.ws, null, 'the socket is closed on pagehide (back/forward cache)')
    await sleep(1200)
    assert.equal(connects, 1, 'no reconnect while the page is hidden')
    const back = next(sdk, 'connected')
    env.dispatchEvent(new Event('pageshow'))
    await back

    doc.visibilityState = 'hidden'
    doc.dispatchEvent(new Event('visibilitychange'))
    assert.equal(sdk.state, 'connected', 'a hidden tab keeps its socket')
    sdk.ws.close() // the socket drops while hidden
    await sleep(1500)
    assert.equal(connects, 2, 'no reconnect loop while hidden')
    const visible = next(sdk, 'connected')
    doc.visibilityState = 'visible'
    doc.dispatchEvent(new Event('visibilitychange'))
    await visible
    assert.equal(connects, 3)

    const gone = next(sdk, 'state', (s) => s.state === 'connecting')
    env.dispatchEvent(new Event('offline'))
    await gone
    await sleep(1000)
    assert.equal(connects, 3, 'no reconnect while offline')
    const online = next(sdk, 'connected')
    env.dispatchEvent(new Event('online'))
    await online
    sdk.disconnect()
  } finally {
    delete globalThis.document
  }
})
