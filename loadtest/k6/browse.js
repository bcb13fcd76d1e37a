// browse.js: the read mix of LiveDrops' public catalogue at a constant arrival rate, against a
// deployment that has data (`livedrops seed`, or a real one). Each iteration is one read, drawn by
// the weights of scenarios.json: a drop, a page of products, a creator, a deep page of a creator's
// followers, the live drops. The design's promise is the threshold: read p95 <= 200 ms, errors < 0.1%.
//
//   k6 run -e BASE_URL=http://localhost:8080 -e RATE=500 -e DURATION=2m loadtest/k6/browse.js
//
// Settings (-e NAME=value, defaults in scenarios.json): RATE reads a second, DURATION, VUS
// pre-allocated and MAX_VUS at most, FOLLOWER_PAGES how deep the follower pages go (100 a page),
// CREATOR_ID whose followers to page (default: the discovered creator with the most followers).
// Its Go twin is loadtest/k6/twin_test.go (TestBrowse), which make test runs small.
import http from "k6/http";
import { check, fail } from "k6";
import { baseURL, intSetting, params, scenarios, setting } from "./lib.js";

const S = "browse";
const mix = /** @type {{ request: string, weight: number }[]} */ (scenarios[S].mix);

/** @type {import("k6/options").Options} */
export const options = {
  scenarios: {
    browse: {
      executor: "constant-arrival-rate",
      rate: intSetting(S, "RATE"),
      timeUnit: "1s",
      duration: setting(S, "DURATION"),
      preAllocatedVUs: intSetting(S, "VUS"),
      maxVUs: intSetting(S, "MAX_VUS"),
    },
  },
  thresholds: scenarios[S].thresholds,
};

/**
 * @typedef {object} Catalogue
 * @property {number[]} drops ids of live drops
 * @property {number[]} creators their creators
 * @property {number} productPages pages of 20 products
 * @property {number} celebrity the creator whose followers are paged
 * @property {string[]} cursors follower page cursors, the deeper half of the walk
 */

/** @returns {Catalogue} */
export function setup() {
  const live = http.get(`${baseURL}/drops/live?limit=100`, params(null, "GET /drops/live", "setup"));
  if (live.status !== 200) {
    fail(`GET /drops/live: ${live.status}`);
  }
  const items = /** @type {{ drop_id: number, creator_id: number }[]} */ (live.json("items"));
  if (items.length === 0) {
    fail("no live drops to read: seed the deployment first (livedrops seed)");
  }
  const drops = items.map((d) => d.drop_id);
  const creators = [...new Set(items.map((d) => d.creator_id))];

  let products = 0;
  for (let page = 1; page <= 1000; page++) {
    const res = http.get(`${baseURL}/products?page=${page}&per_page=100`, params(null, "GET /products", "setup"));
    if (res.status !== 200) {
      fail(`GET /products: ${res.status}`);
    }
    products += /** @type {unknown[]} */ (res.json("items")).length;
    if (res.json("has_more") !== true) {
      break;
    }
  }

  let celebrity = Number(__ENV.CREATOR_ID || 0);
  if (!celebrity) {
    let most = -1;
    for (const id of creators) {
      const res = http.get(`${baseURL}/creators/${id}`, params(null, "GET /creators/{id}", "setup"));
      const n = res.status === 200 ? Number(res.json("follower_count")) : -1;
      if (n > most) {
        most = n;
        celebrity = id;
      }
    }
  }
  /** @type {string[]} */
  const cursors = [];
  let cursor = "";
  const pages = intSetting(S, "FOLLOWER_PAGES");
  for (let i = 0; i < pages; i++) {
    const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const res = http.get(`${baseURL}/creators/${celebrity}/followers?limit=100${q}`,
      params(null, "GET /creators/{id}/followers", "setup"));
    if (res.status !== 200) {
      fail(`GET /creators/${celebrity}/followers: ${res.status}`);
    }
    const next = /** @type {string | undefined} */ (res.json("next_cursor"));
    if (!next) {
      break;
    }
    cursor = next;
    if (i >= pages / 2 - 1) {
      cursors.push(cursor);
    }
  }
  return { drops, creators, productPages: Math.max(1, Math.ceil(products / 20)), celebrity, cursors };
}

/**
 * @template T
 * @param {T[]} xs
 * @returns {T}
 */
function pick(xs) {
  return xs[Math.floor(Math.random() * xs.length)];
}

const totalWeight = mix.reduce((s, m) => s + m.weight, 0);

/** @returns {string} */
function draw() {
  let r = Math.random() * totalWeight;
  for (const m of mix) {
    r -= m.weight;
    if (r < 0) {
      return m.request;
    }
  }
  return mix[mix.length - 1].request;
}

/** @param {Catalogue} c */
export default function (c) {
  let url = "";
  let name = "";
  switch (draw()) {
    case "drop":
      url = `/drops/${pick(c.drops)}`;
      name = "GET /drops/{id}";
      break;
    case "products_page":
      url = `/products?page=${1 + Math.floor(Math.random() * c.productPages)}`;
      name = "GET /products";
      break;
    case "creator":
      url = `/creators/${pick(c.creators)}`;
      name = "GET /creators/{id}";
      break;
    case "followers_page": {
      const q = c.cursors.length > 0 ? `&cursor=${encodeURIComponent(pick(c.cursors))}` : "";
      url = `/creators/${c.celebrity}/followers?limit=100${q}`;
      name = "GET /creators/{id}/followers";
      break;
    }
    case "live_drops":
      url = "/drops/live";
      name = "GET /drops/live";
      break;
    default:
      fail("unknown request in scenarios.json browse.mix");
  }
  const res = http.get(baseURL + url, params(null, name, "read"));
  check(res, { "read is 200": (r) => r.status === 200 });
}
