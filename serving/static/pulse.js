// Pulse browser SDK: an ES module, no dependencies, no build step (JSDoc types; `tsc --checkJs` reads them).
//
//   import { Pulse } from "/static/pulse.js";
//   const pulse = new Pulse({ publishableKey: "pk", readKey: "rk", userId: "u1" });
//   const recs = await pulse.recommendations(10);          // remembers recs.request_id per item
//   pulse.track({ type: "click", item_id: recs.items[0].item_id });  // carries that request_id back
//
// Events are queued and sent in batches (POST /v1/events:batch); when the page is hidden the queue
// leaves with navigator.sendBeacon (text/plain, publishable key in the URL: a beacon sends no headers).

/**
 * @typedef {{type: string, user_id?: string, item_id?: string, value?: number, event_id?: string,
 *            event_time_ms?: number, context?: Record<string, string>, request_id?: string}} PulseEvent
 * @typedef {{index: number, status: "accepted" | "rejected" | "failed", event_id?: string | null,
 *            error?: string | null, detail?: string | null}} EventResult
 * @typedef {{accepted: number, rejected: number, failed: number, results: EventResult[]}} BatchResult
 * @typedef {{endpoint?: string, publishableKey?: string, readKey?: string, userId?: string,
 *            batchSize?: number, flushIntervalMs?: number, maxQueue?: number,
 *            fetch?: typeof fetch, sendBeacon?: (url: string, data: Blob) => boolean,
 *            document?: EventTarget & {visibilityState?: string}, window?: EventTarget,
 *            onRejected?: (event: PulseEvent, result: EventResult) => void}} PulseOptions
 */

/** The largest body one beacon carries (browsers refuse more than ~64 KiB in flight). */
export const BEACON_MAX_BYTES = 60000;

/** A 32-hex-digit id (what the server's ids look like). */
export function newId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Split `events` into JSON bodies of at most `maxBytes` each (a single larger event goes alone).
 * @param {PulseEvent[]} events
 * @param {number} maxBytes
 * @returns {{body: string, events: PulseEvent[]}[]}
 */
export function chunkBodies(events, maxBytes) {
  const chunks = [];
  let current = [];
  for (const event of events) {
    const candidate = [...current, event];
    if (current.length && JSON.stringify({ events: candidate }).length > maxBytes) {
      chunks.push(current);
      current = [event];
    } else {
      current = candidate;
    }
  }
  if (current.length) chunks.push(current);
  return chunks.map((part) => ({ body: JSON.stringify({ events: part }), events: part }));
}

export class Pulse {
  /** @param {PulseOptions} options */
  constructor(options = {}) {
    this.endpoint = (options.endpoint ?? "").replace(/\/$/, "");
    this.publishableKey = options.publishableKey;
    this.readKey = options.readKey;
    this.userId = options.userId;
    this.batchSize = options.batchSize ?? 20;
    this.maxQueue = options.maxQueue ?? 1000;
    this.onRejected = options.onRejected ?? (() => {});
    this._fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this._beacon = options.sendBeacon ?? ((url, data) => globalThis.navigator.sendBeacon(url, data));
    /** @type {PulseEvent[]} */
    this.queue = [];
    /** Item or arm -> the request_id of the answer that showed it (sent back on its events). */
    this.requestIds = new Map();
    this._sending = null;
    const doc = options.document ?? globalThis.document;
    const win = options.window ?? globalThis.window;
    const leave = () => this.flushBeacon();
    doc?.addEventListener?.("visibilitychange", () => { if (doc.visibilityState === "hidden") leave(); });
    win?.addEventListener?.("pagehide", leave);
    const every = options.flushIntervalMs ?? 2000;
    this._timer = every > 0 ? setInterval(() => { if (this.queue.length) this._flushQuietly(); }, every) : null;
    this._timer?.unref?.(); // node: a pending timer does not keep the tests alive
  }

  /** Stop the periodic flush. */
  close() { if (this._timer) clearInterval(this._timer); }

  /**
   * Queue one event; a full batch is sent at once. Fills in the id, the time, the user and, for an
   * item shown by recommendations() or decide(), the request_id of that answer.
   * @param {PulseEvent} event
   * @returns {PulseEvent} the event as it will be sent
   */
  track(event) {
    const full = { event_id: newId(), event_time_ms: Date.now(), ...event };
    if (full.user_id === undefined && this.userId !== undefined) full.user_id = this.userId;
    if (full.request_id === undefined && full.item_id !== undefined && this.requestIds.has(full.item_id)) {
      full.request_id = this.requestIds.get(full.item_id);
    }
    this.queue.push(full);
    if (this.queue.length > this.maxQueue) this.queue.splice(0, this.queue.length - this.maxQueue);
    if (this.queue.length >= this.batchSize) this._flushQuietly();
    return full;
  }

  /** flush() whose failure only leaves the events queued (the next flush or the beacon sends them). */
  _flushQuietly() { this.flush().catch(() => {}); }

  /**
   * Send the queue now (one request per batchSize events). Rejected events are dropped and reported to
   * onRejected; failed ones (the broker did not acknowledge them) go back to the queue.
   * @returns {Promise<BatchResult>} the counts over every request sent
   */
  async flush() {
    if (this._sending) await this._sending.catch(() => {});
    const total = { accepted: 0, rejected: 0, failed: 0, results: [] };
    const run = async () => {
      while (this.queue.length) {
        const batch = this.queue.splice(0, this.batchSize);
        let result;
        try {
          result = await this._post("/v1/events:batch", { events: batch }, this.publishableKey);
        } catch (error) {
          this.queue.unshift(...batch); // the network or the server failed: keep them for later
          throw error;
        }
        for (const r of result.results) {
          if (r.status === "failed") this.queue.push(batch[r.index]);
          if (r.status === "rejected") this.onRejected(batch[r.index], r);
        }
        total.accepted += result.accepted; total.rejected += result.rejected; total.failed += result.failed;
        total.results.push(...result.results);
        if (result.failed) break; // resend on the next flush, not in a tight loop
      }
      return total;
    };
    this._sending = run();
    try { return await this._sending; } finally { this._sending = null; }
  }

  /**
   * Hand the queue to the browser with sendBeacon (it outlives the page); used when the page is hidden.
   * @returns {boolean} whether every chunk was accepted by the browser (else the rest stays queued)
   */
  flushBeacon() {
    if (!this.queue.length) return true;
    const key = this.publishableKey ? `?key=${encodeURIComponent(this.publishableKey)}` : "";
    const url = `${this.endpoint}/v1/events:batch${key}`;
    for (const chunk of chunkBodies(this.queue.slice(), BEACON_MAX_BYTES)) {
      if (!this._beacon(url, new Blob([chunk.body], { type: "text/plain;charset=UTF-8" }))) return false;
      this.queue.splice(0, chunk.events.length);
    }
    return true;
  }

  /**
   * The user's live top-k; remembers the answer's request_id for each item (see track()).
   * @param {number} k
   * @param {{userId?: string, explain?: boolean, excludeSeen?: boolean, segment?: string}} [opts]
   */
  async recommendations(k = 10, opts = {}) {
    const user = opts.userId ?? this.userId;
    const query = new URLSearchParams({ k: String(k) });
    if (opts.explain) query.set("explain", "true");
    if (opts.excludeSeen === false) query.set("exclude_seen", "false");
    if (opts.segment) query.set("segment", opts.segment);
    const body = await this._request("GET", `/v1/users/${encodeURIComponent(user)}/recommendations?${query}`,
                                     undefined, this.readKey);
    for (const item of body.items) this.requestIds.set(item.item_id, body.request_id);
    return body;
  }

  /**
   * Ask the bandit which arm to show at `decisionPoint`; remembers the request_id for the arm.
   * @param {string} decisionPoint
   * @param {{userId?: string, arms?: string[], context?: Record<string, string>}} [opts]
   */
  async decide(decisionPoint, opts = {}) {
    const request = { user_id: opts.userId ?? this.userId, decision_point: decisionPoint };
    if (opts.arms) request.arms = opts.arms;
    if (opts.context) request.context = opts.context;
    const body = await this._post("/v1/decisions", request, this.readKey);
    this.requestIds.set(body.arm, body.request_id);
    return body;
  }

  async _post(path, body, key) { return this._request("POST", path, body, key); }

  async _request(method, path, body, key) {
    const headers = {};
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await this._fetch(`${this.endpoint}${path}`,
                                       { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await response.json();
    if (!response.ok) {
      const error = new Error(`${method} ${path}: ${response.status} ${data.error ?? ""}: ${data.detail ?? ""}`);
      error.status = response.status;
      error.reason = data.error;
      throw error;
    }
    return data;
  }
}
