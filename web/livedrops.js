// LiveDrops browser SDK: one live connection (WebSocket, or Server-Sent Events when a WebSocket
// cannot be opened) with reconnect, resume and drop watches. No dependencies; web/README.md documents
// it, docs/protocol.md and docs/asyncapi.yaml describe the frames.

/**
 * @typedef {'connecting'|'connected'|'disconnected'|'suspended'} State
 * @typedef {'websocket'|'sse'} Transport
 * @typedef {'drop.scheduled'|'drop.started'|'stock.changed'|'stock.low'|'drop.soldout'|'drop.ended'|'order.confirmed'|'order.failed'|'follow.changed'} EventType
 * @typedef {{id: string, type: EventType, ts: string, creator_id?: number, drop_id?: number, data: any}} LiveEvent
 * @typedef {{state: State, previous: State, code?: number, reason?: string, transport?: Transport, retryIn?: number}} StateChange
 * @typedef {{recovered: boolean, since: string|null}} Resumed
 * @typedef {{connId: string, transport: Transport, serverTime: string, replayWindowS: number}} Connected
 * @typedef {{code: string, detail: string, op?: string, drop_id?: number}} ErrorFrame
 * @typedef {{action: 'backoff'|'now'|'hint'|'token'|'stop', why: string}} ClosePolicy
 * @typedef {{reason: 'connect'|'refused'}} TokenContext
 * @typedef {{
 *   url?: string,
 *   getToken: (ctx: TokenContext) => string|null|Promise<string|null>,
 *   transports?: Transport[],
 *   minDelay?: number, maxDelay?: number, suspendAfter?: number,
 *   connectTimeout?: number, idleTimeout?: number, since?: string,
 *   storage?: Pick<Storage,'getItem'|'setItem'|'removeItem'>|null,
 *   env?: EventTarget|null,
 * }} Options
 * @typedef {{
 *   state: StateChange, connected: Connected, resumed: Resumed, reload: Resumed, event: LiveEvent,
 *   watching: {drop_id: number}, error: ErrorFrame,
 *   'drop.scheduled': LiveEvent, 'drop.started': LiveEvent, 'stock.changed': LiveEvent, 'stock.low': LiveEvent,
 *   'drop.soldout': LiveEvent, 'drop.ended': LiveEvent, 'order.confirmed': LiveEvent, 'order.failed': LiveEvent,
 *   'follow.changed': LiveEvent,
 * }} EventMap
 */

/**
 * Close codes (docs/protocol.md, "Closing"): what the SDK does after each. `backoff`: reconnect after a
 * full-jitter exponential delay; `now`: reconnect at once; `hint`: after the server's retry_after_ms;
 * `token`: ask getToken for a new token, then reconnect; `stop`: final, stay disconnected.
 * @type {Record<number, ClosePolicy>}
 */
export const CLOSE_CODES = {
  1000: { action: 'backoff', why: 'closed' },
  1001: { action: 'backoff', why: 'going away' },
  1006: { action: 'backoff', why: 'connection lost' },
  1009: { action: 'stop', why: 'frame too large' },
  1011: { action: 'backoff', why: 'server error' },
  1012: { action: 'backoff', why: 'service restart' },
  1013: { action: 'backoff', why: 'try again later' },
  4000: { action: 'hint', why: 'draining' },
  4001: { action: 'now', why: 'slow reader' },
  4002: { action: 'backoff', why: 'server error' },
  4400: { action: 'stop', why: 'bad frame' },
  4401: { action: 'token', why: 'unauthorized' },
  4403: { action: 'stop', why: 'origin not allowed' },
  4408: { action: 'stop', why: 'too many frames' },
  4429: { action: 'stop', why: 'too many sockets' },
}

/**
 * The policy of a close code: the table above, else by range (4000-4399 reconnect with backoff,
 * 4400-4999 final, anything else backoff).
 * @param {number} code
 * @returns {ClosePolicy}
 */
export function closePolicy(code) {
  const p = CLOSE_CODES[code]
  if (p) return p
  if (code >= 4400 && code < 5000) return { action: 'stop', why: 'refused' }
  return { action: 'backoff', why: 'closed' }
}

/**
 * Full-jitter exponential backoff as centrifuge-js computes it: a delay in [min, min(max, min+min·2^step)].
 * @param {number} step attempts so far (0 for the first retry)
 * @param {number} min
 * @param {number} max
 * @param {() => number} [random]
 */
export function backoff(step, min, max, random = Math.random) {
  const span = Math.min(max, min * 2 ** Math.min(step, 31))
  return Math.floor(Math.min(max, min + random() * span))
}

/** @param {string} reason @returns {number|null} the delay of a drain close ("retry_after_ms=1234") */
export function retryHint(reason) {
  const m = /retry_after_ms=(\d+)/.exec(reason || '')
  return m ? Number(m[1]) : null
}

const HTTP_CLOSE = /** @type {Record<number, number>} */ ({ 400: 4400, 401: 4401, 403: 4403, 429: 4429, 503: 4000 })
const STORE_KEY = 'livedrops.transport'
const MAX_WATCHES = 32

/** Remembers the ids of the last n events, to drop what a resume or a second hub delivers twice. */
export class Seen {
  /** @param {number} n */
  constructor(n = 2048) { this.n = n; /** @type {Set<string>} */ this.ids = new Set() }
  /** @param {string} id @returns {boolean} true the first time id is seen */
  add(id) {
    if (this.ids.has(id)) return false
    this.ids.add(id)
    if (this.ids.size > this.n) this.ids.delete(/** @type {string} */ (this.ids.values().next().value))
    return true
  }
}

/** The client. new LiveDrops({getToken}).connect(); see web/README.md. */
export class LiveDrops {
  /** @param {Options} opts */
  constructor(opts) {
    const g = /** @type {any} */ (globalThis)
    this.o = {
      url: opts.url || (g.location ? g.location.origin : ''),
      transports: opts.transports || ['websocket', 'sse'],
      minDelay: opts.minDelay ?? 500, maxDelay: opts.maxDelay ?? 20000,
      suspendAfter: opts.suspendAfter ?? 120000, connectTimeout: opts.connectTimeout ?? 10000,
      idleTimeout: opts.idleTimeout ?? 60000,
    }
    this.getToken = opts.getToken
    let st = null
    try { st = g.sessionStorage || null } catch { /* storage blocked */ }
    this.storage = opts.storage !== undefined ? opts.storage : st
    this.env = opts.env !== undefined ? opts.env : (typeof g.addEventListener === 'function' ? g : null)
    /** @type {State} */ this.state = 'disconnected'
    /** @type {Transport|null} */ this.transport = null
    /** @type {string|null} */ this.lastEventId = opts.since || null
    /** @type {Map<number, number>} */ this.watches = new Map()
    /** @type {Map<string, Set<Function>>} */ this.handlers = new Map()
    this.seen = new Seen()
    this.step = 0 // failed attempts since the last hello
    this.want = false // connect() called and not disconnect()
    this.hidden = false
    this.offline = false
    this.refused = false // the last close refused the token
    this.sinceDown = 0 // when the connection was last lost (for suspended)
    this.gen = 0 // bumps at every attempt: callbacks of an older attempt are ignored
    /** @type {any} */ this.timer = null
    /** @type {any} */ this.idle = null
    /** @type {(() => void)|null} */ this.abort = null
    /** @type {WebSocket|null} */ this.ws = null
    this.hadHello = false
    /** @type {string|null} */ this.sentSince = null
    /** @type {number[]} */ this.sentWatch = [] // the ?watch= list of the current attempt
    /** @type {Set<number>} */ this.inForce = new Set() // watches whose events reach us, nothing missed
    this.listen()
  }

  /**
   * Subscribes to an SDK event; returns the function that unsubscribes.
   * @template {keyof EventMap} K
   * @param {K} type
   * @param {(e: EventMap[K]) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    let s = this.handlers.get(type)
    if (!s) this.handlers.set(type, (s = new Set()))
    s.add(fn)
    return () => { s.delete(fn) }
  }

  /** @param {string} type @param {any} e */
  emit(type, e) {
    for (const fn of [...(this.handlers.get(type) || [])]) {
      try { fn(e) } catch (err) { setTimeout(() => { throw err }) }
    }
  }

  /** Opens the connection and keeps it open until disconnect(). */
  connect() {
    if (this.want) return
    this.want = true
    this.step = 0
    this.open()
  }

  /** Closes the connection for good (until connect()). */
  disconnect() {
    this.want = false
    this.drop()
    this.setState('disconnected', { reason: 'disconnect() called' })
  }

  /**
   * Receives the drop's stock.changed ticks and lifecycle events; reference-counted, so every watch()
   * needs its unwatch(), and re-sent after every reconnect. Returns the function that unwatches.
   * @param {number} dropId
   * @returns {() => void}
   */
  watch(dropId) {
    const n = this.watches.get(dropId) || 0
    this.watches.set(dropId, n + 1)
    if (n === 0) this.changeWatch('watch', dropId)
    let done = false
    return () => { if (!done) { done = true; this.unwatch(dropId) } }
  }

  /** @param {number} dropId */
  unwatch(dropId) {
    const n = this.watches.get(dropId) || 0
    if (n > 1) { this.watches.set(dropId, n - 1); return }
    if (n === 0) return
    this.watches.delete(dropId)
    this.inForce.delete(dropId)
    this.changeWatch('unwatch', dropId)
  }

  /** @param {'watch'|'unwatch'} op @param {number} dropId */
  changeWatch(op, dropId) {
    if (this.state !== 'connected') return // the next connect sends the list
    if (this.ws) {
      this.ws.send(JSON.stringify({ op, drop_id: dropId }))
    } else if (this.transport === 'sse') {
      // SSE sends no frames: reconnect with the new ?watch= list, resuming from the last event id (with
      // none yet, the hello's watching events tell the page which drops to refetch).
      clearTimeout(this.timer)
      this.timer = setTimeout(() => { this.drop(); this.open() }, 50)
    }
  }

  // --- connection lifecycle ---

  /** @param {State} state @param {Partial<StateChange>} [extra] */
  setState(state, extra = {}) {
    const previous = this.state
    if (previous === state && state !== 'connecting') return
    this.state = state
    this.emit('state', { state, previous, transport: this.transport || undefined, ...extra })
  }

  listen() {
    const env = this.env
    if (!env) return
    const doc = /** @type {any} */ (globalThis).document
    env.addEventListener('offline', () => {
      this.offline = true
      if (!this.want) return
      this.drop()
      this.down(1006, 'offline')
    })
    env.addEventListener('online', () => { this.offline = false; this.now() })
    env.addEventListener('pagehide', () => {
      this.hidden = true
      if (this.want) { this.drop(); this.down(1001, 'page hidden') }
    })
    env.addEventListener('pageshow', () => { this.hidden = false; this.now() })
    if (doc) {
      doc.addEventListener('visibilitychange', () => {
        this.hidden = doc.visibilityState === 'hidden'
        if (!this.hidden) this.now()
      })
    }
  }

  /** Reconnects at once when it should be connected and is not (page back, network back). */
  now() {
    if (!this.want || this.hidden || this.offline || this.state === 'connected') return
    this.step = 0
    this.drop()
    this.open()
  }

  /** Stops the current attempt or connection, without any state change. */
  drop() {
    this.gen++
    clearTimeout(this.timer)
    clearTimeout(this.idle)
    if (this.abort) this.abort()
    this.abort = null
    if (this.ws) {
      const ws = this.ws
      this.ws = null
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null
      try { ws.close(1000) } catch { /* already closed */ }
    }
  }

  async open() {
    const gen = ++this.gen
    if (this.state === 'disconnected' || this.state === 'connected') this.setState('connecting')
    let token
    try {
      token = await this.getToken({ reason: this.refused ? 'refused' : 'connect' })
    } catch (err) {
      if (gen === this.gen) this.down(1006, 'getToken failed: ' + err)
      return
    }
    if (gen !== this.gen) return
    if (!token) { this.want = false; this.setState('disconnected', { code: 4401, reason: 'no token' }); return }
    const t = this.o.transports
    const sse = !t.includes('websocket') || (t.includes('sse') && this.storage?.getItem(STORE_KEY) === 'sse')
    this.hadHello = false
    if (sse) this.openSSE(gen, token, false)
    else this.openWS(gen, token)
  }

  /** @param {string} path @param {string} token */
  address(path, token) {
    const u = new URL(path, this.o.url)
    u.searchParams.set('access_token', token)
    this.sentSince = this.lastEventId
    if (this.lastEventId) u.searchParams.set('since', this.lastEventId)
    const w = [...this.watches.keys()].slice(0, MAX_WATCHES)
    this.sentWatch = w
    if (w.length) u.searchParams.set('watch', w.join(','))
    return u
  }

  /** @param {number} gen @param {string} token */
  openWS(gen, token) {
    const u = this.address('/ws', token)
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:'
    this.transport = 'websocket'
    let opened = false
    let ws
    try { ws = new WebSocket(u) } catch { this.failedWS(gen, token); return }
    this.ws = ws
    this.timer = setTimeout(() => {
      if (!opened && gen === this.gen) { this.drop(); this.failedWS(this.gen, token) }
    }, this.o.connectTimeout)
    ws.onopen = () => { opened = true; clearTimeout(this.timer) }
    ws.onmessage = (m) => { if (gen === this.gen) this.frame(String(m.data)) }
    /** @param {number} code @param {string} reason */
    const end = (code, reason) => {
      if (gen !== this.gen || this.ws !== ws) return // handled already (error, then close)
      this.ws = null
      clearTimeout(this.timer)
      if (!opened && !this.hadHello) this.failedWS(gen, token)
      else this.closed(code, reason)
    }
    // An error before the socket opened is a failure to open; some runtimes send no close after it.
    ws.onerror = () => {
      if (opened) return
      ws.onerror = ws.onclose = null
      end(1006, 'websocket failed')
      try { ws.close() } catch { /* not open */ }
    }
    ws.onclose = (c) => end(c.code, c.reason)
  }

  /** A WebSocket could not be opened: try SSE once, and remember it for the tab when it works. */
  /** @param {number} gen @param {string} token */
  failedWS(gen, token) {
    if (gen !== this.gen) return
    if (this.o.transports.includes('sse')) this.openSSE(gen, token, true)
    else this.closed(1006, 'websocket failed')
  }

  /** @param {number} gen @param {string} token @param {boolean} fallback */
  async openSSE(gen, token, fallback) {
    this.transport = 'sse'
    const ctl = new AbortController()
    this.abort = () => ctl.abort()
    let code = 1006
    let reason = 'stream ended'
    try {
      const res = await fetch(this.address('/events', token), {
        headers: { Accept: 'text/event-stream' }, cache: 'no-store', signal: ctl.signal,
      })
      if (gen !== this.gen) return
      if (!res.ok || !res.body) {
        code = HTTP_CLOSE[res.status] || 1006
        const after = Number(res.headers.get('Retry-After'))
        reason = code === 4000 ? 'retry_after_ms=' + (after > 0 ? after * 1000 : 1000) : 'HTTP ' + res.status
        throw null
      }
      if (fallback) this.storage?.setItem(STORE_KEY, 'sse')
      const rd = res.body.pipeThrough(new TextDecoderStream()).getReader()
      let buf = ''
      /** @type {Record<string, string>} */ let rec = {}
      for (;;) {
        const { value, done } = await rd.read()
        if (done || gen !== this.gen) break
        this.alive()
        buf += value
        let i
        while ((i = buf.search(/\r\n|\r|\n/)) >= 0) {
          const line = buf.slice(0, i)
          buf = buf.slice(buf[i] === '\r' && buf[i + 1] === '\n' ? i + 2 : i + 1)
          if (line === '') {
            if (rec.event === 'close') {
              const c = JSON.parse(rec.data || '{}')
              code = c.code || 4000; reason = c.reason || ''
            } else if (rec.data !== undefined) this.frame(rec.data)
            rec = {}
          } else if (line[0] !== ':') {
            const j = line.indexOf(':')
            const k = j < 0 ? line : line.slice(0, j)
            const v = j < 0 ? '' : line.slice(j + 1).replace(/^ /, '')
            rec[k] = k === 'data' && rec.data !== undefined ? rec.data + '\n' + v : v
          }
        }
      }
    } catch { /* network error, abort or refusal: code says which */ }
    if (gen !== this.gen) return
    this.abort = null
    this.closed(code, reason)
  }

  /** @param {string} text one JSON frame */
  frame(text) {
    let f
    try { f = JSON.parse(text) } catch { return }
    this.alive()
    switch (f.type) {
      case 'hello': return this.hello(f)
      case 'pong': return
      case 'watching': this.inForce.add(f.drop_id); return this.emit('watching', { drop_id: f.drop_id })
      case 'error': return this.emit('error', f)
    }
    if (!f.id || !this.seen.add(f.id)) return
    this.lastEventId = f.id
    this.emit('event', f)
    this.emit(f.type, f)
  }

  /** @param {any} h */
  hello(h) {
    const wasDown = this.sinceDown > 0
    const since = this.sentSince
    this.hadHello = true
    this.step = 0
    this.refused = false
    this.sinceDown = 0
    this.setState('connected', { transport: this.transport || undefined })
    this.emit('connected', { connId: h.conn_id, transport: this.transport, serverTime: h.server_time,
      replayWindowS: h.replay_window_s })
    let reload = false
    if (h.recovered !== undefined || wasDown) {
      // Reconnected without a position (no event yet) counts as not recovered: events may be missed.
      const r = { recovered: h.recovered === true, since: since || null }
      this.emit('resumed', r)
      if (!r.recovered) { reload = true; this.emit('reload', r) }
    }
    // The ?watch= drops are in force from the hello. Which of them may have missed events: with a
    // recovered resume, only those not in force before (the page fetched them before watching); without
    // a position (no event received yet, as after an SSE watch change), all of them. After a reload the
    // page refetches everything anyway.
    const before = this.inForce
    this.inForce = new Set(this.sentWatch)
    if (reload) return
    for (const id of this.sentWatch) {
      if (!since || !before.has(id)) this.emit('watching', { drop_id: id })
    }
  }

  /** Every frame (and SSE comment) proves the connection alive; silence past idleTimeout is a dead one. */
  alive() {
    clearTimeout(this.idle)
    if (!this.want) return
    const gen = this.gen
    this.idle = setTimeout(() => {
      if (gen !== this.gen) return
      if (this.ws && this.ws.readyState === 1) this.ws.send('{"op":"ping"}')
      this.idle = setTimeout(() => { if (gen === this.gen) { this.drop(); this.closed(4002, 'no frame in time') } },
        this.o.idleTimeout / 2)
    }, this.o.idleTimeout / 2)
  }

  /** @param {number} code @param {string} reason */
  closed(code, reason) {
    clearTimeout(this.idle)
    if (!this.want) return
    this.down(code, reason)
  }

  /** The connection is lost or refused: reconnect as the close code says. */
  /** @param {number} code @param {string} reason */
  down(code, reason) {
    this.gen++
    clearTimeout(this.timer)
    if (!this.sinceDown) this.sinceDown = Date.now()
    const p = closePolicy(code)
    let delay = backoff(this.step++, this.o.minDelay, this.o.maxDelay)
    if (p.action === 'stop' || (p.action === 'token' && this.refused)) {
      // A second refusal in a row with a fresh token: final too, or it would loop.
      this.want = false
      this.setState('disconnected', { code, reason: reason || p.why })
      return
    }
    if (p.action === 'token') { this.refused = true; delay = 0 }
    if (p.action === 'now' && this.step === 1) delay = 0
    if (p.action === 'hint') delay = retryHint(reason) ?? delay
    const suspended = Date.now() - this.sinceDown >= this.o.suspendAfter
    this.setState(suspended ? 'suspended' : 'connecting', { code, reason: reason || p.why, retryIn: delay })
    if (this.hidden || this.offline) return // no reconnect loop while hidden or offline: now() resumes
    const gen = this.gen
    this.timer = setTimeout(() => { if (gen === this.gen) this.open() }, delay)
  }
}
