// Helpers shared by the LiveDrops k6 scripts: configuration from -e NAME=value (falling back to
// scenarios.json), the public REST calls the setups make, and duration arithmetic. Everything here
// speaks only the public API (api/openapi.yaml), so the scripts run against any deployment.
import http from "k6/http";
import { check, fail, sleep } from "k6";

/** @typedef {{ user_id: number, token: string }} Account */

/** @type {Record<string, any>} */
export const scenarios = JSON.parse(open("./scenarios.json"));

/** BASE_URL: the deployment's REST base, e.g. https://livedrops.example (default http://localhost:8080). */
export const baseURL = (__ENV.BASE_URL || "http://localhost:8080").replace(/\/+$/, "");

/** WS_URL: the socket endpoint; default BASE_URL with ws(s):// and /ws. */
export const wsURL = __ENV.WS_URL || baseURL.replace(/^http/, "ws") + "/ws";

/**
 * The value of setting name for scenario: -e name=value, else the scenario's default.
 * @param {string} scenario
 * @param {string} name
 * @returns {string}
 */
export function setting(scenario, name) {
  const v = __ENV[name];
  if (v !== undefined && v !== "") {
    return v;
  }
  const d = scenarios[scenario].defaults[name];
  if (d === undefined) {
    fail(`no default for ${name} in scenarios.json ${scenario}`);
  }
  return String(d);
}

/**
 * setting as a positive integer.
 * @param {string} scenario
 * @param {string} name
 * @returns {number}
 */
export function intSetting(scenario, name) {
  const n = Number(setting(scenario, name));
  if (!Number.isInteger(n) || n < 1) {
    fail(`${name} must be a positive integer, not ${setting(scenario, name)}`);
  }
  return n;
}

/**
 * Milliseconds of a k6 duration such as "500ms", "5s", "1m30s" or "2h".
 * @param {string} s
 * @returns {number}
 */
export function millis(s) {
  const units = /** @type {Record<string, number>} */ ({ ms: 1, s: 1000, m: 60000, h: 3600000 });
  let total = 0;
  let rest = s.trim();
  while (rest !== "") {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)/.exec(rest);
    if (m === null) {
      fail(`not a duration: ${s}`);
    }
    total += Number(m[1]) * units[m[2]];
    rest = rest.slice(m[0].length);
  }
  return total;
}

/** A prefix that keeps this run's e-mail addresses apart from every other run's. */
export function runID() {
  return `k6-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e9).toString(36)}`;
}

/**
 * Request parameters with the caller's token and the request's name and kind as tags.
 * @param {string | null} token
 * @param {string} name
 * @param {string} kind
 * @returns {import("k6/http").RefinedParams<"text">}
 */
export function params(token, name, kind) {
  /** @type {Record<string, string>} */
  const headers = { "Content-Type": "application/json" };
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  return { headers, tags: { name, kind } };
}

/**
 * POST path with a JSON body; fails the setup unless the answer has one of the wanted statuses.
 * @param {string} path
 * @param {object | null} body
 * @param {string | null} token
 * @param {string} name
 * @param {number[]} want
 */
export function mustPost(path, body, token, name, want) {
  const res = http.post(baseURL + path, body === null ? null : JSON.stringify(body), params(token, name, "setup"));
  if (!want.includes(res.status)) {
    fail(`${name}: status ${res.status}, want ${want.join(" or ")}: ${res.body}`);
  }
  return res;
}

/**
 * Creates n accounts through POST /users, 50 requests at a time.
 * @param {string} prefix a runID
 * @param {number} n
 * @returns {Account[]}
 */
export function createAccounts(prefix, n) {
  /** @type {Account[]} */
  const out = [];
  for (let i = 0; i < n; i += 50) {
    /** @type {import("k6/http").BatchRequest[]} */
    const reqs = [];
    for (let j = i; j < Math.min(n, i + 50); j++) {
      reqs.push(["POST", baseURL + "/users",
        JSON.stringify({ name: `Buyer ${j}`, email: `${prefix}-${j}@load.test` }),
        params(null, "POST /users", "setup")]);
    }
    for (const res of http.batch(reqs)) {
      if (res.status !== 201) {
        fail(`POST /users: status ${res.status}: ${res.body}`);
      }
      const u = /** @type {Account} */ (res.json());
      out.push({ user_id: u.user_id, token: u.token });
    }
  }
  return out;
}

/**
 * Accounts from a tokens file of `livedrops seed -tokens-file` (one "user_id token" per line); call
 * it in the init context (k6's open()).
 * @param {string} path
 * @returns {Account[]}
 */
export function loadAccounts(path) {
  return open(path).split("\n").filter((l) => l.trim() !== "").map((l) => {
    const [id, token] = l.trim().split(/\s+/);
    return { user_id: Number(id), token };
  });
}

/**
 * A new creator with one product: POST /users, POST /creators, POST /products.
 * @param {string} prefix
 * @returns {{ creator: Account, productID: number }}
 */
export function createCreator(prefix) {
  const creator = /** @type {Account} */ (mustPost("/users",
    { name: "Load creator", email: `${prefix}-creator@load.test` }, null, "POST /users", [201]).json());
  mustPost("/creators", { profile_name: `Load shop ${prefix}` }, creator.token, "POST /creators", [201]);
  const product = /** @type {{ product_id: number }} */ (mustPost("/products",
    { title: "Load-test hoodie", description: "k6", price_cents: 4900 }, creator.token, "POST /products", [201]).json());
  return { creator: { user_id: creator.user_id, token: creator.token }, productID: product.product_id };
}

/**
 * Schedules a drop of the creator's product starting startInMs from now, for an hour.
 * @param {Account} creator
 * @param {number} productID
 * @param {number} startInMs
 * @param {number} stock
 * @param {number} maxPerUser
 * @returns {{ drop_id: number, start_time: string }}
 */
export function createDrop(creator, productID, startInMs, stock, maxPerUser) {
  const start = new Date(Date.now() + startInMs);
  const end = new Date(start.getTime() + 3600000);
  return /** @type {{ drop_id: number, start_time: string }} */ (mustPost("/drops", {
    product_id: productID, start_time: start.toISOString(), end_time: end.toISOString(),
    stock_count: stock, max_per_user: maxPerUser,
  }, creator.token, "POST /drops", [201]).json());
}

/**
 * Polls GET /drops/{id} until its status is want, for at most timeoutMs.
 * @param {number} dropID
 * @param {string} want
 * @param {number} timeoutMs
 */
export function waitForStatus(dropID, want, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = http.get(`${baseURL}/drops/${dropID}`, params(null, "GET /drops/{id}", "setup"));
    const ok = check(res, { "GET /drops/{id} is 200": (r) => r.status === 200 });
    if (ok && /** @type {{ status: string }} */ (res.json()).status === want) {
      return;
    }
    if (Date.now() > deadline) {
      fail(`drop ${dropID} not ${want} after ${timeoutMs} ms`);
    }
    sleep(0.2);
  }
}
