// The Pulse console: polls /v1/console/state (read or admin key) once a second and draws it.
// The key and user come from the fields or the URL fragment (#key=...&user=...), which browsers
// never send to the server; charts are uPlot, vendored from npm by infra/setup.sh.
import uPlot from "/static/vendor/uPlot.esm.js";

const HISTORY = 120; // samples kept for the charts
const $ = (id) => document.getElementById(id);
const hash = new URLSearchParams(location.hash.slice(1));
$("user").value = hash.get("user") ?? "u1";
$("key").value = hash.get("key") ?? "";
const every = Number(hash.get("every") ?? 1000);

/** Samples over time: t (s since the page opened), freshness and lag (s), learned events/s. */
const series = { t: [], fresh: [], lag: [], rate: [] };
let previous = null;
let charts = null;

function text(id, value) { $(id).textContent = value; }
const seconds = (ms) => (ms == null ? "–" : `${(ms / 1000).toFixed(1)} s`);
const fixed = (x, n = 3) => (x == null ? "–" : Number(x).toFixed(n));

function makeCharts() {
  const size = { width: 440, height: 170, scales: { x: { time: false } } };
  const axes = [{ label: "seconds since the page opened" }, { size: 50 }];
  return {
    freshness: new uPlot({ ...size, axes, series: [{}, { label: "user score freshness", stroke: "#4a7bd0" },
                                                    { label: "model lag", stroke: "#d0704a" }] },
                         [series.t, series.fresh, series.lag], $("freshness-chart")),
    rate: new uPlot({ ...size, axes, series: [{}, { label: "learned/s", stroke: "#3a9a5b", fill: "#3a9a5b22" }] },
                    [series.t, series.rate], $("rate-chart")),
  };
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const [value, cls] of cells) {
    const td = document.createElement("td");
    if (value instanceof Node) td.append(value); else td.textContent = value;
    if (cls) td.className = cls;
    tr.append(td);
  }
  return tr;
}

function drawTopK(recs) {
  text("user-label", recs.user_id);
  $("topk").replaceChildren(...recs.items.map((item, i) => {
    const why = item.explanation;
    const tr = row([[String(i + 1)], [item.item_id], [fixed(item.score), "num"],
                    [why ? `${fixed(why.user_bias, 2)} / ${fixed(why.item_bias, 2)}` : "–", "num"],
                    [why ? fixed(why.dot) : "–", "num"]]);
    tr.dataset.item = item.item_id;
    return tr;
  }));
  text("topk-source", `source ${recs.source}, model ${recs.model_version ?? "–"}, ` +
                      `freshness ${seconds(recs.freshness_ms)}, request ${recs.request_id}`);
}

function drawSession(session) {
  const dl = $("session");
  if (!session) { dl.replaceChildren(Object.assign(document.createElement("dd"), { textContent: "no session" })); return; }
  const p = session.payload;
  const pairs = [["open", String(!!p.open)], ["session", p.session_id ?? "–"], ["events", p.n_events ?? 0],
                 ["counts", JSON.stringify(p.counts ?? {})], ["recent items", (p.recent_items ?? []).join(", ")],
                 ["age", seconds(session.event_age_ms)]];
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [Object.assign(document.createElement("dt"), { textContent: k }),
                                                   Object.assign(document.createElement("dd"), { textContent: v })]));
}

function drawJob(state, rate) {
  const model = state.model;
  text("events-learned", model ? String(model.payload.events_learned) : "–");
  text("learned-rate", rate == null ? "–" : rate.toFixed(1));
  text("rmse", model ? fixed(model.payload.rmse) : "–");
  text("model-lag", model ? seconds(model.event_age_ms) : "–");
  text("user-freshness", seconds(state.recommendations.freshness_ms));
}

function drawDeadLetters(dead, before) {
  if (!dead) {
    $("dlq").replaceChildren();
    text("dlq-note", "no dead letters yet (the job writes model:dlq at the first one)");
    return;
  }
  const byReason = dead.payload.by_reason ?? {};
  const dt = before ? (dead.write_time_ms - before.write_time_ms) / 1000 : 0;
  $("dlq").replaceChildren(...Object.entries(byReason).map(([reason, n]) => {
    const was = before?.payload.by_reason?.[reason] ?? n;
    return row([[reason], [String(n), "num"], [dt > 0 ? ((n - was) / dt).toFixed(2) : "–", "num"]]);
  }));
  text("dlq-note", `as of ${seconds(dead.write_age_ms)} ago`);
}

function drawBandit(bandit) {
  text("bandit-policy", bandit ? `${bandit.policy}, ${bandit.scope}` : "none yet");
  const arms = bandit?.arms ?? [];
  $("arms").replaceChildren(...arms.map((a) => {
    const bar = Object.assign(document.createElement("div"), { className: "bar" });
    bar.style.width = `${Math.round(100 * (a.mean ?? 0))}%`;
    const tr = row([[a.arm], [Object.entries(a.stats).map(([k, v]) => `${k} ${fixed(v, 1)}`).join(", ")],
                    [fixed(a.mean), "num"], [bar]]);
    tr.dataset.arm = a.arm;
    return tr;
  }));
}

function learnedRate(model, before) {
  if (!model || !before?.model) return null;
  const dt = (model.write_time_ms - before.model.write_time_ms) / 1000;
  return dt > 0 ? (model.payload.events_learned - before.model.payload.events_learned) / dt : null;
}

async function poll(started) {
  const user = $("user").value.trim();
  const key = $("key").value.trim();
  const response = await fetch(`/v1/console/state?user_id=${encodeURIComponent(user)}&k=10`,
                               { headers: key ? { Authorization: `Bearer ${key}` } : {}, cache: "no-store" });
  const state = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${state.error}: ${state.detail}`);
  // The model is rewritten about once a second: between two rewrites the last rate stands.
  const rate = learnedRate(state.model, previous) ?? (series.rate.length ? series.rate.at(-1) : null);
  drawTopK(state.recommendations);
  drawSession(state.session);
  drawJob(state, rate);
  drawDeadLetters(state.dead_letters, previous?.dead_letters);
  drawBandit(state.bandit);
  series.t.push((performance.now() - started) / 1000);
  series.fresh.push((state.recommendations.freshness_ms ?? 0) / 1000);
  series.lag.push((state.model?.event_age_ms ?? 0) / 1000);
  series.rate.push(rate ?? 0);
  for (const s of Object.values(series)) if (s.length > HISTORY) s.shift();
  charts ??= makeCharts();
  charts.freshness.setData([series.t, series.fresh, series.lag]);
  charts.rate.setData([series.t, series.rate]);
  if (!previous?.model || state.model?.write_time_ms !== previous.model.write_time_ms) previous = state;
  text("clock", new Date(state.now_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC");
  document.body.dataset.polls = String(Number(document.body.dataset.polls ?? 0) + 1);
  document.body.dataset.state = "live";
}

const started = performance.now();
async function loop() {
  try {
    await poll(started);
    text("error", "");
  } catch (error) {
    text("error", String(error.message ?? error));
    document.body.dataset.state = "error";
  }
  setTimeout(loop, every);
}
loop();
