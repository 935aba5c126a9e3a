// Unit tests of the browser SDK (serving/static/pulse.js) under node's test runner: `node --test tests/unit/serving/sdk`.
// The network, the beacon and the page are small fakes recording what the SDK hands them.
import { test } from "node:test";
import assert from "node:assert/strict";

import { BEACON_MAX_BYTES, Pulse, chunkBodies, newId } from "../../../../serving/static/pulse.js";

/** A fetch that answers like the shim: each event accepted unless `answer` says otherwise. */
function fakeFetch(answer = () => "accepted") {
  const calls = [];
  const fetch = async (url, init) => {
    const body = init.body === undefined ? undefined : JSON.parse(init.body);
    calls.push({ url, init, body });
    if (url.includes("/v1/events:batch")) {
      const results = body.events.map((e, index) => ({ index, status: answer(e), event_id: e.event_id,
                                                       error: answer(e) === "accepted" ? null : "bad" }));
      const count = (s) => results.filter((r) => r.status === s).length;
      return { ok: true, status: 200, json: async () => ({ accepted: count("accepted"), rejected: count("rejected"),
                                                            failed: count("failed"), results }) };
    }
    if (url.includes("/recommendations")) {
      return { ok: true, status: 200, json: async () => ({ request_id: "r-recs", items: [{ item_id: "i1" }, { item_id: "i2" }] }) };
    }
    if (url.endsWith("/v1/decisions")) {
      return { ok: true, status: 200, json: async () => ({ request_id: "r-dec", arm: "banner-b", propensity: 0.5 }) };
    }
    return { ok: false, status: 403, json: async () => ({ error: "forbidden", detail: "no" }) };
  };
  return { fetch, calls };
}

function page() {
  const doc = new EventTarget();
  doc.visibilityState = "visible";
  return { doc, win: new EventTarget() };
}

function client(extra = {}) {
  const net = fakeFetch(extra.answer);
  const beacons = [];
  const { doc, win } = page();
  const pulse = new Pulse({ endpoint: "https://api.example/", publishableKey: "pk", readKey: "rk", userId: "u1",
                            batchSize: 3, flushIntervalMs: 0, fetch: net.fetch, document: doc, window: win,
                            sendBeacon: (url, blob) => { beacons.push({ url, blob }); return true; }, ...extra });
  return { pulse, net, beacons, doc, win };
}

test("ids are 32 hex digits", () => {
  assert.match(newId(), /^[0-9a-f]{32}$/);
  assert.notEqual(newId(), newId());
});

test("track fills in id, time and user, and sends nothing until a batch is full", async () => {
  const { pulse, net } = client();
  const event = pulse.track({ type: "view", item_id: "i9" });
  assert.equal(event.user_id, "u1");
  assert.match(event.event_id, /^[0-9a-f]{32}$/);
  assert.ok(Math.abs(event.event_time_ms - Date.now()) < 5000);
  pulse.track({ type: "view", item_id: "i8" });
  assert.equal(net.calls.length, 0);
  pulse.track({ type: "view", item_id: "i7" });
  await pulse.flush();
  assert.equal(net.calls.length, 1);
  const [call] = net.calls;
  assert.equal(call.url, "https://api.example/v1/events:batch");
  assert.equal(call.init.headers.Authorization, "Bearer pk");
  assert.deepEqual(call.body.events.map((e) => e.item_id), ["i9", "i8", "i7"]);
  assert.equal(pulse.queue.length, 0);
});

test("flush sends in batches of batchSize and sums the results", async () => {
  const { pulse, net } = client({ batchSize: 100 });
  for (let i = 0; i < 7; i++) pulse.track({ type: "view", item_id: `i${i}` });
  pulse.batchSize = 3;
  const total = await pulse.flush();
  assert.deepEqual(net.calls.map((c) => c.body.events.length), [3, 3, 1]);
  assert.equal(total.accepted, 7);
});

test("failed events stay queued, rejected ones are dropped and reported", async () => {
  const rejected = [];
  const answer = (e) => (e.item_id === "bad" ? "rejected" : e.item_id === "later" ? "failed" : "accepted");
  const { pulse } = client({ batchSize: 100, answer, onRejected: (event, result) => rejected.push([event.item_id, result.error]) });
  for (const item of ["a", "bad", "later"]) pulse.track({ type: "view", item_id: item });
  const total = await pulse.flush();
  assert.deepEqual([total.accepted, total.rejected, total.failed], [1, 1, 1]);
  assert.deepEqual(pulse.queue.map((e) => e.item_id), ["later"]);
  assert.deepEqual(rejected, [["bad", "bad"]]);
});

test("a network error keeps the events queued", async () => {
  const { pulse } = client({ batchSize: 100, fetch: async () => { throw new Error("offline"); } });
  pulse.track({ type: "view", item_id: "a" });
  await assert.rejects(pulse.flush(), /offline/);
  assert.equal(pulse.queue.length, 1);
});

test("hiding the page sends the queue by beacon, as text/plain with the publishable key in the URL", async () => {
  const { pulse, beacons, doc, net } = client({ batchSize: 100 });
  pulse.track({ type: "view", item_id: "a" });
  pulse.track({ type: "click", item_id: "b" });
  doc.visibilityState = "hidden";
  doc.dispatchEvent(new Event("visibilitychange"));
  assert.equal(net.calls.length, 0);
  assert.equal(beacons.length, 1);
  assert.equal(beacons[0].url, "https://api.example/v1/events:batch?key=pk");
  assert.equal(beacons[0].blob.type, "text/plain;charset=utf-8");
  const sent = JSON.parse(await beacons[0].blob.text());
  assert.deepEqual(sent.events.map((e) => e.item_id), ["a", "b"]);
  assert.equal(pulse.queue.length, 0);
});

test("pagehide also flushes by beacon; a refused beacon keeps the events", () => {
  const { pulse, win } = client({ batchSize: 100, sendBeacon: () => false });
  pulse.track({ type: "view", item_id: "a" });
  win.dispatchEvent(new Event("pagehide"));
  assert.equal(pulse.queue.length, 1);
});

test("beacon bodies stay under the browser's limit", () => {
  const events = Array.from({ length: 800 }, (_, i) => ({ type: "view", user_id: "u", item_id: `item-${i}`,
                                                         context: { note: "x".repeat(100) } }));
  const chunks = chunkBodies(events, BEACON_MAX_BYTES);
  assert.ok(chunks.length > 1);
  assert.ok(chunks.every((c) => c.body.length <= BEACON_MAX_BYTES));
  assert.equal(chunks.reduce((n, c) => n + c.events.length, 0), 800);
});

test("recommendations ask with the read key and their request id is carried onto the item's events", async () => {
  const { pulse, net } = client({ batchSize: 100 });
  const recs = await pulse.recommendations(5, { explain: true, segment: "men" });
  assert.equal(recs.request_id, "r-recs");
  const call = net.calls[0];
  assert.equal(call.url, "https://api.example/v1/users/u1/recommendations?k=5&explain=true&segment=men");
  assert.equal(call.init.headers.Authorization, "Bearer rk");
  assert.equal(pulse.track({ type: "click", item_id: "i2" }).request_id, "r-recs");
  assert.equal(pulse.track({ type: "click", item_id: "other" }).request_id, undefined);
  assert.equal(pulse.track({ type: "click", item_id: "i1", request_id: "mine" }).request_id, "mine");
});

test("decide posts the decision point and carries its request id onto the arm's click", async () => {
  const { pulse, net } = client({ batchSize: 100 });
  const decision = await pulse.decide("home", { arms: ["banner-a", "banner-b"], context: { segment: "men" } });
  assert.equal(decision.arm, "banner-b");
  assert.deepEqual(net.calls[0].body, { user_id: "u1", decision_point: "home", arms: ["banner-a", "banner-b"],
                                        context: { segment: "men" } });
  assert.equal(pulse.track({ type: "click", item_id: "banner-b" }).request_id, "r-dec");
});

test("an error answer rejects with its status and reason", async () => {
  const { pulse } = client({ fetch: async () => ({ ok: false, status: 403, json: async () => ({ error: "forbidden", detail: "x" }) }) });
  await assert.rejects(pulse.recommendations(3), (error) => error.status === 403 && error.reason === "forbidden");
});
