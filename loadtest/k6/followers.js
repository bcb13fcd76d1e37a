// followers.js: a creator's followers hold live sockets (k6/websockets, the stable module) when one
// of its drops starts, and each measures how late drop.started reached it: receipt - the event's ts
// (the drop's start_time), as the custom Trend delivery_ms. setup() creates a creator with a product,
// FOLLOWERS accounts that follow it (or takes TOKENS_FILE and CREATOR_ID/CREATOR_TOKEN), and a drop
// starting LEAD from now; every VU opens SOCKETS_PER_VU sockets, which wait for their hello, then for
// drop.started, at most WAIT past the start.
//
//   k6 run -e BASE_URL=http://localhost:8080 -e FOLLOWERS=5000 -e SOCKETS_PER_VU=250 loadtest/k6/followers.js
//
// Thresholds (scenarios.json): delivery p99 < 2 s; socket_errors (a socket that failed, closed, or
// never got the event) below 0.1%. Seeded followers instead of new accounts:
//   livedrops seed -followers 100000 -tokens-file tokens.txt; livedrops token --user 1 > creator.txt
//   k6 run -e TOKENS_FILE=tokens.txt -e CREATOR_ID=1 -e CREATOR_TOKEN=$(cat creator.txt) ... followers.js
// (seeded followers follow the first creator; CREATOR_TOKEN must be that creator's, and it needs a
// product: setup creates one). WS_URL overrides the socket endpoint (default BASE_URL's /ws).
// Its Go twin is TestFollowers in loadtest/k6/twin_test.go.
import { WebSocket } from "k6/websockets";
import { clearTimeout, setTimeout } from "k6/timers";
import exec from "k6/execution";
import { SharedArray } from "k6/data";
import { Rate, Trend, Counter } from "k6/metrics";
import http from "k6/http";
import { fail } from "k6";
import {
  baseURL, createAccounts, createDrop, intSetting, loadAccounts, millis, mustPost, params, runID, scenarios,
  setting, wsURL,
} from "./lib.js";

const S = "followers";
const perVU = intSetting(S, "SOCKETS_PER_VU");
const tokensFile = __ENV.TOKENS_FILE ? new SharedArray("followers", () => loadAccounts(__ENV.TOKENS_FILE)) : null;
const followers = tokensFile ? tokensFile.length : intSetting(S, "FOLLOWERS");
const leadMs = millis(setting(S, "LEAD"));
const waitMs = millis(setting(S, "WAIT"));

/** @type {import("k6/options").Options} */
export const options = {
  scenarios: {
    followers: {
      executor: "per-vu-iterations",
      vus: Math.ceil(followers / perVU),
      iterations: 1,
      maxDuration: `${Math.ceil((leadMs + waitMs) / 1000) + 30}s`,
    },
  },
  thresholds: scenarios[S].thresholds,
  setupTimeout: "10m",
};

const delivery = new Trend("delivery_ms", true);
const socketErrors = new Rate("socket_errors");
const received = new Counter("drop_started_received");

/**
 * @typedef {object} Start
 * @property {number} dropID
 * @property {number} startMs the drop's start_time, Unix ms
 * @property {import("./lib.js").Account[]} accounts the followers setup created (none with TOKENS_FILE)
 */

/** @returns {Start} */
export function setup() {
  const run = runID();
  let creator;
  if (tokensFile) {
    creator = { user_id: Number(__ENV.CREATOR_ID), token: __ENV.CREATOR_TOKEN || "" };
    if (!creator.user_id || !creator.token) {
      fail("TOKENS_FILE needs CREATOR_ID and CREATOR_TOKEN (livedrops token --user <id>)");
    }
  } else {
    creator = /** @type {import("./lib.js").Account} */ (mustPost("/users",
      { name: "Load creator", email: `${run}-creator@load.test` }, null, "POST /users", [201]).json());
  }
  // POST /creators answers 409 when the caller is a creator already (a seeded one).
  mustPost("/creators", { profile_name: `Load shop ${run}` }, creator.token, "POST /creators", [201, 409]);
  const product = /** @type {{ product_id: number }} */ (mustPost("/products",
    { title: "Load-test hoodie", description: "k6", price_cents: 4900 }, creator.token, "POST /products", [201]).json());

  const accounts = tokensFile ? [] : createAccounts(run, followers);
  for (let i = 0; i < accounts.length; i += 50) {
    http.batch(accounts.slice(i, i + 50).map((a) => /** @type {import("k6/http").BatchRequest} */ (["POST",
      `${baseURL}/users/${a.user_id}/follow/${creator.user_id}`, null,
      params(a.token, "POST /users/{id}/follow/{creatorId}", "setup")]))).forEach((res) => {
      if (res.status !== 204) {
        fail(`follow: ${res.status}: ${res.body}`);
      }
    });
  }
  const drop = createDrop(creator, product.product_id, leadMs, 100, 1);
  return { dropID: drop.drop_id, startMs: Date.parse(drop.start_time), accounts };
}

/** @param {Start} start */
export default function (start) {
  const all = tokensFile ?? start.accounts;
  // This scenario's VUs are the only ones: idInTest runs 1..vus.
  const first = (exec.vu.idInTest - 1) * perVU;
  const mine = all.slice(first, Math.min(all.length, first + perVU));
  for (const account of mine) {
    follow(account, start);
  }
}

/**
 * One follower's socket: wait for the hello, then for drop.started of start.dropID.
 * @param {import("./lib.js").Account} account
 * @param {Start} start
 */
function follow(account, start) {
  let done = false;
  /** @param {boolean} failed */
  const finish = (failed) => {
    if (done) {
      return;
    }
    done = true;
    clearTimeout(timer);
    socketErrors.add(failed);
    ws.close();
  };
  const ws = new WebSocket(wsURL, null, { headers: { Authorization: `Bearer ${account.token}` }, tags: { name: "GET /ws" } });
  ws.onmessage = (e) => {
    if (e === undefined || typeof e.data !== "string") {
      return;
    }
    const ev = JSON.parse(e.data);
    if (ev.type === "drop.started" && ev.drop_id === start.dropID) {
      delivery.add(Date.now() - Date.parse(ev.ts));
      received.add(1);
      finish(false);
    }
  };
  ws.onerror = () => finish(true);
  // A close before drop.started (the server's 4000-range codes: docs/protocol.md) is a failure.
  ws.onclose = () => finish(true);
  const timer = setTimeout(() => finish(true), Math.max(0, start.startMs + waitMs - Date.now()));
}
