// flash-sale.js: many buyers on one hot drop. setup() creates a creator, a product, a drop of STOCK
// units (MAX_PER_USER each) starting START_IN from now and BUYERS accounts (or reads them from
// TOKENS_FILE), and waits until the drop is live; then buyers arrive at a ramping rate (0 → PEAK_RATE
// over RAMP, PEAK_RATE for HOLD, back to 0 over RAMP), each iteration one POST /orders of one unit
// with a fresh idempotency key. 201 (confirmed) and 409 (sold_out, limit_exceeded) are answers, not
// errors. teardown() reads the books through the API: the confirmed orders of every buyer on this
// drop must add up to the stock the drop lost (initial_stock - stock_count), and never exceed it.
//
//   k6 run -e BASE_URL=http://localhost:8080 -e STOCK=10000 -e BUYERS=2000 -e PEAK_RATE=2000 loadtest/k6/flash-sale.js
//
// Thresholds (scenarios.json): order p95 <= 500 ms, errors < 0.1%, the books balance, and at most
// 0.1% of the planned iterations dropped (k6 had no free VU when a buyer was due: raise VUS/MAX_VUS,
// or the service is too slow for the rate). The deployment's per-user and per-address write limits
// must allow the rate (`livedrops all` defaults: 50/s per user, 2000/s per address).
// TOKENS_FILE: "user_id token" lines from `livedrops seed -followers N -tokens-file F` instead of
// creating BUYERS accounts. Its Go twin is TestFlashSale in loadtest/k6/twin_test.go.
import http from "k6/http";
import exec from "k6/execution";
import { check, fail } from "k6";
import { Counter } from "k6/metrics";
import { SharedArray } from "k6/data";
import {
  baseURL, createAccounts, createCreator, createDrop, intSetting, loadAccounts, millis, params, runID,
  scenarios, setting, waitForStatus,
} from "./lib.js";

const S = "flash-sale";
const peak = intSetting(S, "PEAK_RATE");
const ramp = setting(S, "RAMP");
const hold = setting(S, "HOLD");
const stages = [
  { target: peak, duration: ramp },
  { target: peak, duration: hold },
  { target: 0, duration: ramp },
];
// Iterations the stages ask for: the area under the rate curve (ramps count half).
const planned = Math.round(peak * (millis(ramp) / 1000 + millis(hold) / 1000));
const maxDropped = Math.floor(planned * scenarios[S].dropped_iterations_max_ratio);

/** @type {import("k6/options").Options} */
export const options = {
  scenarios: {
    buyers: {
      executor: "ramping-arrival-rate",
      startRate: 0,
      timeUnit: "1s",
      preAllocatedVUs: intSetting(S, "VUS"),
      maxVUs: intSetting(S, "MAX_VUS"),
      stages,
    },
  },
  thresholds: { ...scenarios[S].thresholds, dropped_iterations: [`count<=${maxDropped}`] },
  setupTimeout: "5m",
  teardownTimeout: "5m",
};

const confirmed = new Counter("orders_confirmed");
const refused = new Counter("orders_refused");
// One copy for all VUs (a seeded file may hold a million accounts).
const tokensFile = __ENV.TOKENS_FILE ? new SharedArray("buyers", () => loadAccounts(__ENV.TOKENS_FILE)) : null;
// Confirmed and the documented refusals are answers; anything else counts in http_req_failed.
const orderAnswers = http.expectedStatuses(201, 202, 409);

/**
 * @typedef {object} Sale
 * @property {number} dropID
 * @property {number} stock
 * @property {import("./lib.js").Account[]} buyers the accounts setup created (none with TOKENS_FILE)
 * @property {string} run
 */

/** @returns {Sale} */
export function setup() {
  const run = runID();
  const stock = intSetting(S, "STOCK");
  const { creator, productID } = createCreator(run);
  const drop = createDrop(creator, productID, millis(setting(S, "START_IN")), stock, intSetting(S, "MAX_PER_USER"));
  const buyers = tokensFile ? [] : createAccounts(run, intSetting(S, "BUYERS"));
  if (tokensFile?.length === 0) {
    fail(`no accounts in ${__ENV.TOKENS_FILE}`);
  }
  waitForStatus(drop.drop_id, "live", millis(setting(S, "START_IN")) + 30000);
  return { dropID: drop.drop_id, stock, buyers, run };
}

/**
 * @param {Sale} sale
 * @returns {import("./lib.js").Account[]}
 */
function buyersOf(sale) {
  return tokensFile ?? sale.buyers;
}

/** @param {Sale} sale */
export default function (sale) {
  const n = exec.scenario.iterationInTest;
  const buyers = buyersOf(sale);
  const buyer = buyers[n % buyers.length];
  const p = params(buyer.token, "POST /orders", "order");
  p.responseCallback = orderAnswers;
  const res = http.post(`${baseURL}/orders`,
    JSON.stringify({ drop_id: sale.dropID, quantity: 1, idempotency_key: `${sale.run}-${n}` }), p);
  if (res.status === 201) {
    confirmed.add(1);
  } else if (res.status === 409) {
    refused.add(1, { code: String(res.json("code")) });
  }
  check(res, { "order answered": (r) => r.status === 201 || r.status === 202 || r.status === 409 });
}

/**
 * The sum of buyer's confirmed quantities on dropID, from GET /users/{id}/orders.
 * @param {import("./lib.js").Account} buyer
 * @param {number} dropID
 * @returns {number}
 */
function confirmedUnits(buyer, dropID) {
  let units = 0;
  let cursor = "";
  for (;;) {
    const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const res = http.get(`${baseURL}/users/${buyer.user_id}/orders?limit=100${q}`,
      params(buyer.token, "GET /users/{id}/orders", "teardown"));
    if (res.status !== 200) {
      fail(`GET /users/${buyer.user_id}/orders: ${res.status}`);
    }
    const page = /** @type {{ items: { drop_id: number, quantity: number, status: string }[], next_cursor?: string }} */ (res.json());
    for (const o of page.items) {
      if (o.drop_id === dropID && o.status === "confirmed") {
        units += o.quantity;
      }
    }
    if (!page.next_cursor) {
      return units;
    }
    cursor = page.next_cursor;
  }
}

/** @param {Sale} sale */
export function teardown(sale) {
  // Iteration n bought as buyer n mod len, and the stages never run much past planned iterations.
  const buyers = buyersOf(sale);
  let sold = 0;
  for (let i = 0; i < Math.min(buyers.length, planned + peak); i++) {
    sold += confirmedUnits(buyers[i], sale.dropID);
  }
  // GET /drops/{id} may be cached for about a second (README, "The cache"): read until it agrees
  // or 10 s have passed.
  let taken = -1;
  const deadline = Date.now() + 10000;
  do {
    const res = http.get(`${baseURL}/drops/${sale.dropID}`, params(null, "GET /drops/{id}", "teardown"));
    if (res.status === 200) {
      const d = /** @type {{ initial_stock: number, stock_count: number }} */ (res.json());
      taken = d.initial_stock - d.stock_count;
    }
  } while (taken !== sold && Date.now() < deadline);
  console.log(`books: ${sold} units confirmed to buyers, ${taken} taken from the stock of ${sale.stock}`);
  check({ sold, taken, stock: sale.stock }, {
    "confirmed orders equal the stock taken": (b) => b.sold === b.taken && b.taken <= b.stock,
  });
}
