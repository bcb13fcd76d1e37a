// The live drop page: plain DOM, no framework. State comes from the REST API (api/openapi.yaml) and
// stays live through the SDK (livedrops.js); views are routed by the URL hash (#/, #/drops/42, ...).
import { LiveDrops } from './livedrops.js'

const TOKEN_KEY = 'livedrops.user'
const $ = (/** @type {string} */ sel) => /** @type {HTMLElement} */ (document.querySelector(sel))

/** @type {{id:number,name:string,token:string}|null} */
let me = null
try { me = JSON.parse(localStorage.getItem(TOKEN_KEY) || 'null') } catch { me = null }
/** @type {Map<number, any>} drops by id, as the REST API shows them, kept current by events */
const drops = new Map()
/** @type {Map<number, string>} creator names */
const names = new Map()
/** @type {Set<number>} creators the user follows */
const following = new Set()
let isCreator = false
let skew = 0 // server clock minus ours, from hello
/** @type {Map<number, Set<(d:any) => void>>} */
let binds = new Map()
/** @type {Set<() => void>} */
let ticks = new Set()
/** @type {Array<() => void>} */
let unwatches = []
/** buying intents by drop: one idempotency key per intent, kept until a final answer */
const intents = new Map()
const log = /** @type {any[]} */ ([]) // what the page heard, for tests and curious people: window.livedropsLog
Object.assign(window, { livedropsLog: log })

const sdk = new LiveDrops({
  getToken: ({ reason }) => (reason === 'refused' ? null : me && me.token),
})
Object.assign(window, { livedrops: sdk })

// --- REST ---

/**
 * @param {string} method @param {string} path @param {any} [body] @param {Record<string,string>} [headers]
 * @returns {Promise<{status:number, body:any, headers:Headers}>}
 */
async function api(method, path, body, headers = {}) {
  const h = /** @type {Record<string, string>} */ ({ Accept: 'application/json', ...headers })
  if (body !== undefined) h['Content-Type'] = 'application/json'
  if (me) h.Authorization = 'Bearer ' + me.token
  const res = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  let data = null
  try { data = text ? JSON.parse(text) : null } catch { data = { detail: text } }
  if (!res.ok) {
    const err = Object.assign(new Error((data && (data.detail || data.title)) || 'HTTP ' + res.status),
      { status: res.status, code: data && data.code })
    if (res.status === 401 && me) signOut('Your session has expired: sign up again to continue.')
    throw err
  }
  return { status: res.status, body: data, headers: res.headers }
}

/** @param {any} d */
function keep(d) {
  const old = drops.get(d.drop_id)
  const merged = { ...old, ...d }
  drops.set(d.drop_id, merged)
  changed(d.drop_id)
  // The feed sorts drops by status (live, coming up, finished): a change of status moves the card.
  if (old && old.status !== merged.status && !routing && location.hash.replace(/^#/, '') in { '': 1, '/': 1 }) route()
  return merged
}

/** @param {number} id */
function changed(id) {
  const d = drops.get(id)
  for (const fn of binds.get(id) || []) fn(d)
}

async function loadName(/** @type {number} */ id) {
  if (names.has(id)) return names.get(id)
  try {
    const c = (await api('GET', '/creators/' + id)).body
    names.set(id, c.profile_name)
  } catch { names.set(id, 'Creator ' + id) }
  return names.get(id)
}

async function loadFollowing() {
  following.clear()
  if (!me) return
  const r = await api('GET', `/users/${me.id}/following?limit=100`)
  for (const c of r.body.items) { following.add(c.creator_id); names.set(c.creator_id, c.profile_name) }
}

// --- live events ---

sdk.on('state', (s) => {
  const el = $('#conn')
  el.dataset.state = s.state
  el.dataset.transport = s.transport || ''
  const text = {
    connected: 'Live' + (s.transport === 'sse' ? ' (SSE)' : ''),
    connecting: s.previous === 'disconnected' ? 'Connecting…' : 'Reconnecting…',
    suspended: 'Offline: retrying',
    disconnected: me ? 'Disconnected' : 'Not signed in',
  }[s.state]
  $('#conn-text').textContent = text
  log.push({ t: Date.now(), kind: 'state', ...s })
})
sdk.on('connected', (c) => { skew = Date.parse(c.serverTime) - Date.now() })
sdk.on('resumed', (r) => {
  log.push({ t: Date.now(), kind: 'resumed', ...r })
  if (r.recovered) toast('Back online: caught up on what you missed.')
})
sdk.on('reload', () => { toast('Reconnected: reloading the latest state.'); route() })
// A watch now in force: what the page fetched before it may be older (an order in between), so fetch
// the drops again, a few at once (many: the page again, one list call), never moving stock back up.
const refetch = new Set()
let refetchTimer = 0
sdk.on('watching', (w) => {
  if (!drops.has(w.drop_id)) return
  refetch.add(w.drop_id)
  if (!refetchTimer) refetchTimer = setTimeout(refresh, 100)
})
async function refresh() {
  refetchTimer = 0
  const ids = [...refetch]
  refetch.clear()
  if (ids.length > 4) { if (!routing) route(); return }
  for (const id of ids) {
    try {
      const r = await api('GET', '/drops/' + id)
      if (r.status === 200) { keepNewer(r.body); log.push({ t: Date.now(), kind: 'refetched', drop_id: id }) }
    } catch { /* offline: the next hello asks again */ }
  }
}
const statusRank = /** @type {Record<string, number>} */ ({ scheduled: 0, live: 1, sold_out: 2, ended: 3 })
/** keep, for a read that may cross events: stock only goes down and status only forward. @param {any} d */
function keepNewer(d) {
  const old = drops.get(d.drop_id)
  if (!old) return keep(d)
  return keep({ ...d,
    stock_count: Math.min(old.stock_count ?? d.stock_count, d.stock_count),
    status: (statusRank[old.status] ?? -1) > (statusRank[d.status] ?? -1) ? old.status : d.status })
}
sdk.on('event', (e) => {
  log.push({ t: Date.now(), kind: 'event', id: e.id, type: e.type, drop_id: e.drop_id, data: e.data })
  switch (e.type) {
    case 'drop.scheduled': case 'drop.started':
      keep(e.data)
      if (e.type === 'drop.scheduled' && location.hash.replace(/^#/, '') in { '': 1, '/': 1 }) route()
      break
    case 'stock.changed': case 'stock.low':
      if (e.drop_id && drops.has(e.drop_id)) keep({ drop_id: e.drop_id, stock_count: e.data.stock_count })
      break
    case 'drop.soldout': keep({ drop_id: e.drop_id, status: 'sold_out', stock_count: 0 }); break
    case 'drop.ended': keep({ drop_id: e.drop_id, status: 'ended', stock_count: e.data.stock_count }); break
    case 'order.confirmed': case 'order.failed': orderEvent(e); break
    case 'follow.changed':
      if (e.data.following) following.add(e.data.creator_id); else following.delete(e.data.creator_id)
      if (location.hash.replace(/^#/, '') in { '': 1, '/': 1 }) route()
      break
  }
})

// --- little DOM helpers ---

/**
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node|string|null|undefined|false)} kids
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else if (k === 'text') el.textContent = v
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const k of kids) if (k !== null && k !== undefined && k !== false) el.append(k)
  return el
}

/** @param {number} id @param {(d:any) => void} fn */
function bind(id, fn) {
  let s = binds.get(id)
  if (!s) binds.set(id, (s = new Set()))
  s.add(fn)
  fn(drops.get(id))
}

let toastTimer = 0
/** @param {string} text */
function toast(text) {
  const t = $('#toast')
  t.textContent = text
  t.hidden = false
  clearTimeout(toastTimer)
  toastTimer = window.setTimeout(() => { t.hidden = true }, 4000)
}

const money = (/** @type {number} */ c) => (c / 100).toLocaleString('en-US', { style: 'currency', currency: 'USD' })
const statusText = /** @type {Record<string,string>} */ ({ scheduled: 'Coming up', live: 'Live', sold_out: 'Sold out', ended: 'Ended' })

/** @param {number} ms */
function countdown(ms) {
  if (ms <= 0) return 'now'
  const s = Math.ceil(ms / 1000)
  const d = Math.floor(s / 86400)
  const hh = Math.floor((s % 86400) / 3600)
  const mm = Math.floor((s % 3600) / 60)
  const ss = String(s % 60).padStart(2, '0')
  if (d > 0) return `${d}d ${hh}h`
  if (hh > 0) return `${hh}:${String(mm).padStart(2, '0')}:${ss}`
  return `${mm}:${ss}`
}

/** The status badge, countdown and stock bar of a drop, kept live. @param {number} id */
function liveParts(id) {
  const badge = h('span', { class: 'badge' })
  const when = h('span', { class: 'small muted' })
  const fill = h('span')
  const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-label': 'Stock left', 'aria-valuemin': 0 }, fill)
  const left = h('span', { class: 'small stock' })
  const update = (/** @type {any} */ d) => {
    if (!d) return
    badge.dataset.status = d.status
    badge.textContent = statusText[d.status] || d.status
    const pct = d.initial_stock ? Math.round((100 * d.stock_count) / d.initial_stock) : 0
    fill.style.width = pct + '%'
    bar.classList.toggle('low', pct <= 10)
    bar.setAttribute('aria-valuemax', d.initial_stock)
    bar.setAttribute('aria-valuenow', d.stock_count)
    bar.setAttribute('aria-valuetext', `${d.stock_count} of ${d.initial_stock} left`)
    left.textContent = d.status === 'sold_out' ? 'All gone' : `${d.stock_count} of ${d.initial_stock} left`
    left.dataset.stock = d.stock_count
  }
  const tick = () => {
    const d = drops.get(id)
    if (!d) return
    const now = Date.now() + skew
    if (d.status === 'scheduled') {
      const ms = Date.parse(d.start_time) - now
      when.replaceChildren(ms > 0 ? 'Starts in ' : 'Starting…', ms > 0 ? h('span', { class: 'count', text: countdown(ms) }) : '')
    } else if (d.status === 'live') {
      when.textContent = 'Ends in ' + countdown(Date.parse(d.end_time) - now)
    } else {
      when.textContent = d.status === 'ended' ? 'Ended ' + new Date(d.end_time).toLocaleString() : ''
    }
  }
  bind(id, (d) => { update(d); tick() })
  ticks.add(tick)
  return { badge, when, bar, left }
}

/** @param {any} d */
function dropCard(d) {
  const p = liveParts(d.drop_id)
  const card = h('article', { class: 'card drop', 'data-drop': d.drop_id },
    h('div', { class: 'row spread' }, p.badge, h('span', { class: 'price', text: money(d.product.price_cents) })),
    h('h3', {}, h('a', { href: `#/drops/${d.drop_id}`, text: d.product.title })),
    h('p', { class: 'small muted', text: 'by ' + (names.get(d.creator_id) || 'Creator ' + d.creator_id) }),
    p.bar, h('div', { class: 'row spread' }, p.left, p.when))
  return card
}

// --- views ---

const views = /** @type {Record<string, (arg?: string) => Promise<Node[]>>} */ ({ feed, drop, creators, creator, studio })

/** @type {Promise<void>|null} */
let routing = null
let again = false

/** Renders the view of the URL; renders one at a time, and a newer call wins over one in progress. */
function route() {
  if (routing) { again = true; return routing }
  routing = (async () => {
    do { again = false; await render() } while (again)
    routing = null
  })()
  return routing
}

async function render() {
  const hash = location.hash.replace(/^#\/?/, '')
  const [name, arg] = hash.split('/')
  const view = name === 'drops' ? 'drop' : name === 'creators' && arg ? 'creator' : name || 'feed'
  for (const a of document.querySelectorAll('nav a')) {
    const on = /** @type {HTMLElement} */ (a).dataset.nav === (view === 'drop' ? 'feed' : view === 'creator' ? 'creators' : view)
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current')
  }
  renderWho()
  const render = views[view] || feed
  const oldUnwatch = unwatches
  unwatches = []
  const oldBinds = binds
  binds = new Map()
  ticks = new Set()
  let nodes
  if (!me && view !== 'creators' && view !== 'creator' && view !== 'drop') nodes = signup()
  else {
    try { nodes = await render(arg) } catch (e) {
      nodes = [h('p', { class: 'card', role: 'alert', text: 'Could not load this page: ' + /** @type {Error} */ (e).message })]
    }
  }
  if (again) { // the URL changed meanwhile: drop this render, the next one follows
    for (const u of unwatches) u()
    unwatches = oldUnwatch
    return
  }
  for (const u of oldUnwatch) u() // after the new watches: a drop on both pages is not unwatched meanwhile
  oldBinds.clear()
  $('#view').replaceChildren(...nodes)
}

function renderWho() {
  const who = $('#who')
  if (!me) { who.replaceChildren(); return }
  who.replaceChildren(h('span', { class: 'name', text: 'Hi, ' + me.name }),
    h('button', { class: 'secondary', type: 'button', onclick: () => signOut('') }, 'Sign out'))
}

/** @param {string} why */
function signOut(why) {
  me = null
  localStorage.removeItem(TOKEN_KEY)
  sdk.disconnect()
  if (why) toast(why)
  route()
}

function signup() {
  const msg = h('p', { class: 'msg', role: 'alert' })
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'signup-title' },
    h('h1', { id: 'signup-title', text: 'Join the drop' }),
    h('p', { text: 'Follow creators and get their limited drops live, the moment they start.' }),
    h('p', { class: 'note', id: 'nopass' },
      'There are no passwords: signing up gives this browser a token, kept in its storage so a reload keeps you signed in. ',
      'Signing out (or clearing site data) forgets it, and this account with it.'),
    h('label', {}, 'Your name', h('input', { name: 'name', required: true, maxlength: 100, autocomplete: 'name' })),
    h('label', {}, 'Email', h('input', { name: 'email', type: 'email', required: true, autocomplete: 'email', 'aria-describedby': 'nopass' })),
    h('button', { type: 'submit' }, 'Sign up'), msg)
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const f = new FormData(/** @type {HTMLFormElement} */ (form))
    try {
      const r = await api('POST', '/users', { name: f.get('name'), email: f.get('email') })
      me = { id: r.body.user_id, name: r.body.name, token: r.body.token }
      localStorage.setItem(TOKEN_KEY, JSON.stringify(me))
      start()
    } catch (e) { msg.textContent = /** @type {Error} */ (e).message; msg.dataset.kind = 'bad' }
  })
  return [form]
}

async function feed() {
  await loadFollowing()
  const lists = await Promise.all([...following].map((c) => api('GET', `/creators/${c}/drops?limit=20`).then((r) => r.body.items, () => [])))
  const all = lists.flat().map(keep)
  const live = all.filter((d) => d.status === 'live')
  const soon = all.filter((d) => d.status === 'scheduled').sort((a, b) => Date.parse(a.start_time) - Date.parse(b.start_time))
  const past = all.filter((d) => d.status === 'sold_out' || d.status === 'ended').slice(0, 6)
  for (const d of [...live, ...soon].slice(0, 30)) unwatches.push(sdk.watch(d.drop_id))
  const section = (/** @type {string} */ title, /** @type {string} */ id, /** @type {any[]} */ items, /** @type {string} */ none) =>
    h('section', { 'aria-labelledby': id, 'data-section': id },
      h('h2', { id, text: title }),
      items.length ? h('div', { class: 'grid' }, ...items.map(dropCard)) : h('p', { class: 'muted', text: none }))
  const head = h('div', { class: 'row spread' }, h('h1', { text: 'Your drops' }), notifyControl())
  if (following.size === 0) {
    return [head, h('div', { class: 'card empty' },
      h('p', { text: 'You follow nobody yet. Follow creators to see their drops here, live.' }),
      h('a', { class: 'button', href: '#/creators' }, 'Browse creators'))]
  }
  return [head,
    section('Live now', 'live', live, 'Nothing live right now.'),
    section('Coming up', 'soon', soon, 'No drop scheduled by the creators you follow.'),
    past.length ? section('Recently finished', 'past', past, '') : null].filter((n) => n !== null)
}

async function drop(/** @type {string|undefined} */ arg) {
  const id = Number(arg)
  const d = keep((await api('GET', '/drops/' + id)).body)
  await loadName(d.creator_id)
  unwatches.push(sdk.watch(id))
  const p = liveParts(id)
  const qty = /** @type {HTMLInputElement} */ (h('input', { id: 'qty', type: 'number', min: 1, max: d.max_per_user, value: 1, inputmode: 'numeric' }))
  const msg = h('p', { class: 'msg', id: 'buy-msg', role: 'status', 'aria-live': 'polite' })
  const btn = /** @type {HTMLButtonElement} */ (h('button', { class: 'buy', type: 'button', id: 'buy' }, 'Buy'))
  btn.addEventListener('click', () => buy(id, Math.max(1, Math.floor(Number(qty.value) || 1)), btn, msg))
  bind(id, (x) => {
    if (!x) return
    const busy = intents.get(id)?.busy
    btn.disabled = x.status !== 'live' || !me || !!busy
    btn.textContent = busy ? 'Buying…' : { live: 'Buy now', scheduled: 'Not live yet', sold_out: 'Sold out', ended: 'Drop ended' }[/** @type {'live'} */ (x.status)] || 'Buy'
    if (!me) btn.textContent = 'Sign up to buy'
  })
  const buyBox = h('div', { class: 'card' },
    h('div', { class: 'row spread' }, p.badge, p.when),
    p.bar, p.left,
    h('label', { for: 'qty' }, `Quantity (at most ${d.max_per_user} per person)`), qty,
    h('p', {}, btn), msg)
  return [h('p', {}, h('a', { href: '#/' }, '← All drops')),
    h('div', { class: 'hero', 'data-drop': id },
      h('div', { class: 'card' },
        h('h1', { text: d.product.title }),
        h('p', { class: 'big price', text: money(d.product.price_cents) }),
        h('p', { class: 'muted' }, 'by ', h('a', { href: `#/creators/${d.creator_id}`, text: names.get(d.creator_id) || '' })),
        h('p', { class: 'small muted', text: `Starts ${new Date(d.start_time).toLocaleString()} · ends ${new Date(d.end_time).toLocaleString()}` })),
      buyBox)]
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID()
  const b = crypto.getRandomValues(new Uint8Array(16))
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('')
}

/**
 * Buys once per intent: a double click or a retry sends the same idempotency key, so the server
 * answers the one order again instead of taking stock twice.
 * @param {number} id @param {number} quantity @param {HTMLButtonElement} btn @param {HTMLElement} msg
 */
async function buy(id, quantity, btn, msg) {
  let it = intents.get(id)
  if (it && it.busy) return
  if (!it || it.quantity !== quantity) it = { key: newKey(), quantity }
  intents.set(id, it)
  it.busy = true
  changed(id)
  const say = (/** @type {string} */ t, /** @type {string} */ kind) => { msg.textContent = t; msg.dataset.kind = kind }
  say('Placing your order…', '')
  let final = true
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await api('POST', '/orders', { drop_id: id, quantity, idempotency_key: it.key }, { 'Idempotency-Key': it.key })
      const o = r.body
      it.order = o.order_id
      msg.dataset.order = o.order_id
      if (o.status === 'confirmed') say(`Order #${o.order_id} confirmed: ${quantity} × ${drops.get(id)?.product.title}.`, 'ok')
      else say(`Order #${o.order_id} received; confirming…`, '')
      if (r.headers.get('Idempotent-Replayed') === 'true') msg.dataset.replayed = 'true'
      break
    } catch (e) {
      const err = /** @type {any} */ (e)
      if (!err.status && attempt < 3) { await new Promise((r) => setTimeout(r, 500 * 2 ** attempt)); continue }
      const text = /** @type {Record<string,string>} */ ({
        sold_out: 'Sold out: every unit is gone.', drop_not_live: 'This drop is not live (it has not started, or it ended).',
        limit_exceeded: 'You already bought the most this drop allows per person.',
      })[err.code] || (err.status ? err.message : 'Network problem: press Buy again to retry; you will not be charged twice.')
      say(text, 'bad')
      final = !!err.status
      break
    }
  }
  it.busy = false
  if (final) intents.delete(id)
  changed(id)
}

/** @param {any} e */
function orderEvent(e) {
  const o = e.data
  const msg = document.getElementById('buy-msg')
  if (!msg || Number(msg.closest('[data-drop]')?.getAttribute('data-drop') ?? e.drop_id) !== e.drop_id) {
    if (e.type === 'order.confirmed') toast(`Order #${o.order_id} confirmed.`)
    return
  }
  if (e.type === 'order.confirmed') {
    msg.textContent = `Order #${o.order_id} confirmed: ${o.quantity} × ${drops.get(e.drop_id)?.product.title || 'item'}. Enjoy!`
    msg.dataset.kind = 'ok'
    msg.dataset.confirmed = String(o.order_id)
  } else {
    msg.textContent = `Order #${o.order_id} failed: nothing was charged.`
    msg.dataset.kind = 'bad'
  }
}

async function creators() {
  await loadFollowing().catch(() => {})
  const r = await api('GET', '/creators?limit=100')
  const items = r.body.items.map((/** @type {any} */ c) => {
    names.set(c.creator_id, c.profile_name)
    return h('article', { class: 'card', 'data-creator': c.creator_id },
      h('h3', {}, h('a', { href: `#/creators/${c.creator_id}`, text: c.profile_name })),
      h('p', { class: 'small muted followers', 'data-count': c.follower_count, text: followers(c.follower_count) }),
      followButton(c.creator_id, c.profile_name))
  })
  return [h('h1', { text: 'Creators' }),
    items.length ? h('div', { class: 'grid' }, ...items) : h('p', { class: 'card empty', text: 'No creator yet. Become the first in the Studio.' })]
}

const followers = (/** @type {number} */ n) => `${n} follower${n === 1 ? '' : 's'}`

/** @param {number} id @param {string} name */
function followButton(id, name) {
  if (!me || id === me.id) return null
  const b = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'follow' }))
  const paint = () => {
    const on = following.has(id)
    b.setAttribute('aria-pressed', String(on))
    b.textContent = on ? 'Following' : 'Follow'
    b.setAttribute('aria-label', (on ? 'Unfollow ' : 'Follow ') + name)
  }
  paint()
  b.addEventListener('click', async () => {
    if (!me) return
    const on = following.has(id)
    b.disabled = true
    try {
      await api(on ? 'DELETE' : 'POST', `/users/${me.id}/follow/${id}`)
      if (on) following.delete(id); else following.add(id)
      const count = /** @type {HTMLElement|null} */ (b.closest('[data-creator], main')?.querySelector('.followers') ?? null)
      if (count) {
        const n = Math.max(0, Number(count.dataset.count) + (on ? -1 : 1))
        count.dataset.count = String(n)
        count.textContent = followers(n)
      }
      toast(on ? `You unfollowed ${name}.` : `You follow ${name}: their drops reach you live.`)
    } catch (e) { toast(/** @type {Error} */ (e).message) }
    b.disabled = false
    paint()
  })
  return b
}

async function creator(/** @type {string|undefined} */ arg) {
  const id = Number(arg)
  const c = (await api('GET', '/creators/' + id)).body
  names.set(id, c.profile_name)
  await loadFollowing().catch(() => {})
  const list = (await api('GET', `/creators/${id}/drops?limit=50`)).body.items.map(keep)
  return [h('div', { class: 'row spread' }, h('h1', { text: c.profile_name }), followButton(id, c.profile_name)),
    h('p', { class: 'muted followers', 'data-count': c.follower_count, text: followers(c.follower_count) }),
    list.length ? h('div', { class: 'grid' }, ...list.map(dropCard)) : h('p', { class: 'card empty', text: 'No drop yet.' })]
}

async function studio() {
  if (!me) return signup()
  try { await api('GET', '/creators/' + me.id); isCreator = true } catch { isCreator = false }
  const msg = h('p', { class: 'msg', role: 'status', 'aria-live': 'polite', id: 'studio-msg' })
  if (!isCreator) {
    const form = h('form', { class: 'card narrow' },
      h('h1', { text: 'Become a creator' }),
      h('p', { text: 'Creators add products and schedule limited drops; their followers see each drop go live.' }),
      h('label', {}, 'Profile name', h('input', { name: 'profile_name', required: true, maxlength: 100, value: me.name })),
      h('button', { type: 'submit' }, 'Become a creator'), msg)
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault()
      try {
        await api('POST', '/creators', { profile_name: new FormData(/** @type {HTMLFormElement} */ (form)).get('profile_name') })
        route()
      } catch (e) { msg.textContent = /** @type {Error} */ (e).message; msg.dataset.kind = 'bad' }
    })
    return [form]
  }
  const when = h('fieldset', {}, h('legend', { text: 'Starts' }),
    ...[['30', 'in 30 s'], ['120', 'in 2 min'], ['600', 'in 10 min'], ['at', 'at a time']].map(([v, t], i) =>
      h('label', {}, h('input', { type: 'radio', name: 'start', value: v, checked: i === 0 }), t)),
    h('label', {}, h('span', { class: 'small', text: 'Time' }), h('input', { type: 'datetime-local', name: 'at', step: 1, 'aria-label': 'Start time' })))
  const form = h('form', { class: 'card', id: 'new-drop' },
    h('h2', { text: 'New drop' }),
    h('label', {}, 'Product', h('input', { name: 'title', required: true, maxlength: 200, placeholder: 'Signed vinyl, tour hoodie…' })),
    h('label', {}, 'Description', h('textarea', { name: 'description', rows: 2, maxlength: 5000 })),
    h('div', { class: 'two' },
      h('label', {}, 'Price (USD)', h('input', { name: 'price', type: 'number', min: 0, step: '0.01', value: '25.00', required: true })),
      h('label', {}, 'Units', h('input', { name: 'stock', type: 'number', min: 1, value: 50, required: true }))),
    h('div', { class: 'two' },
      h('label', {}, 'At most per person', h('input', { name: 'max', type: 'number', min: 1, value: 2, required: true })),
      h('label', {}, 'Lasts', h('select', { name: 'minutes' },
        ...[['10', '10 minutes'], ['60', '1 hour'], ['1440', '1 day']].map(([v, t]) => h('option', { value: v }, t))))),
    when,
    h('button', { type: 'submit' }, 'Schedule the drop'), msg)
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const f = new FormData(/** @type {HTMLFormElement} */ (form))
    const choice = String(f.get('start'))
    const start = choice === 'at' ? new Date(String(f.get('at'))).getTime() : Date.now() + skew + Number(choice) * 1000
    if (!Number.isFinite(start)) { msg.textContent = 'Pick a start time.'; msg.dataset.kind = 'bad'; return }
    try {
      const p = (await api('POST', '/products', { title: f.get('title'), description: f.get('description') || '',
        price_cents: Math.round(Number(f.get('price')) * 100) })).body
      const d = (await api('POST', '/drops', { product_id: p.product_id, start_time: new Date(start).toISOString(),
        end_time: new Date(start + Number(f.get('minutes')) * 60000).toISOString(),
        stock_count: Number(f.get('stock')), max_per_user: Number(f.get('max')) })).body
      keep(d)
      route()
      toast(`Drop #${d.drop_id} scheduled: it starts ${new Date(d.start_time).toLocaleTimeString()}.`)
    } catch (e) { msg.textContent = /** @type {Error} */ (e).message; msg.dataset.kind = 'bad' }
  })
  const mine = (await api('GET', `/creators/${me.id}/drops?limit=50`)).body.items.map(keep)
  for (const d of mine.filter((/** @type {any} */ x) => x.status === 'live' || x.status === 'scheduled').slice(0, 30)) unwatches.push(sdk.watch(d.drop_id))
  names.set(me.id, names.get(me.id) || me.name)
  return [h('h1', { text: 'Studio' }),
    h('div', { class: 'hero' }, form,
      h('section', { 'aria-labelledby': 'mine' }, h('h2', { id: 'mine', text: 'Your drops' }),
        mine.length ? h('div', { class: 'grid' }, ...mine.map(dropCard)) : h('p', { class: 'muted', text: 'None yet: schedule one, then watch it go live.' })))]
}

// --- push: "notify me" (shown only when the server offers Web Push: GET /push/config) ---

function notifyControl() {
  const b = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'secondary', id: 'notify', hidden: true }, 'Notify me when drops start'))
  if (!me || !('serviceWorker' in navigator) || !('PushManager' in window)) return b
  fetch('/push/config').then((r) => (r.ok ? r.json() : null)).then((cfg) => {
    const key = cfg && cfg.webpush && cfg.webpush.enabled && cfg.webpush.vapid_public_key
    if (!key) return
    b.hidden = false
    b.addEventListener('click', async () => {
      try {
        if ((await Notification.requestPermission()) !== 'granted') { toast('Notifications are blocked for this site.'); return }
        const reg = await navigator.serviceWorker.register('/sw.js')
        const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64url(key) })
        const j = sub.toJSON()
        await api('POST', `/users/${me && me.id}/devices`, { platform: 'webpush', subscription: { endpoint: j.endpoint, keys: j.keys } })
        b.textContent = 'Notifications on'
        b.disabled = true
      } catch (e) { toast('Could not turn notifications on: ' + /** @type {Error} */ (e).message) }
    })
  }, () => {})
  return b
}

/** @param {string} s unpadded base64url */
function b64url(s) {
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4))
  return Uint8Array.from(bin, (c) => c.charCodeAt(0))
}

// --- start ---

function start() {
  if (me) sdk.connect()
  else $('#conn-text').textContent = 'Not signed in'
  route()
}

// A notification clicked while this tab is not controlled by the service worker: it asks us to open the drop.
navigator.serviceWorker?.addEventListener('message', (e) => {
  const url = e.data && e.data.type === 'open' && new URL(e.data.url, location.href)
  if (url && url.origin === location.origin) location.href = url.href
})

setInterval(() => { for (const t of ticks) t() }, 250)
window.addEventListener('hashchange', () => { route(); $('#main').focus({ preventScroll: true }) })
start()
