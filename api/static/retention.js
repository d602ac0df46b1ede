// The retention dashboard: live churn alerts over server-sent events (read with fetch so the
// API key can go in a header, which EventSource cannot do), filters, actions, live metrics.
import { announce, api, apiKey, h, money, percent, setupKeyForm } from "./common.js";

const $ = (id) => document.getElementById(id);
const HANDLED_STORAGE = "omnirec.handledAlerts";
const BACKLOG_MS = 24 * 3600 * 1000; // on first connect, replay the last day's alerts
const METRICS_EVERY_MS = 2000;

const state = {
  alerts: new Map(), // alert stream id -> alert
  stores: new Map(), // customer_id -> last_store (or null)
  handled: JSON.parse(localStorage.getItem(HANDLED_STORAGE) || "{}"), // alert_id -> "contacted"|"dismissed"
  lastEventId: null,
  streamAbort: null,
  lastMetrics: null,
  retryMs: 1000,
};

// ------------------------------------------------------------------ SSE over fetch

/** Parse a text/event-stream body: yields {id, event, data} for each dispatched event. */
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { id: null, event: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") { // blank line: dispatch
        if (event.data.length) yield { id: event.id, event: event.event, data: event.data.join("\n") };
        event = { id: null, event: "message", data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // comment / keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? "" : line.slice(colon + 1);
      if (text.startsWith(" ")) text = text.slice(1);
      if (field === "id") event.id = text;
      else if (field === "event") event.event = text;
      else if (field === "data") event.data.push(text);
    }
  }
}

async function connect() {
  state.streamAbort?.abort();
  const controller = new AbortController();
  state.streamAbort = controller;
  const since = state.lastEventId || `${Date.now() - BACKLOG_MS}-0`;
  setConnection("connecting", "connecting…");
  try {
    const response = await fetch("/v1/alerts/churn/stream", {
      headers: { Accept: "text/event-stream", Authorization: `Bearer ${apiKey()}`, "Last-Event-ID": since },
      signal: controller.signal,
      cache: "no-store",
    });
    if (!response.ok) {
      const detail = await response.json().then((b) => b.detail).catch(() => response.statusText);
      throw new Error(`${response.status} ${detail}`);
    }
    setConnection("live", "live");
    state.retryMs = 1000;
    for await (const message of readEvents(response)) {
      if (message.id) state.lastEventId = message.id;
      if (message.event === "churn_alert") addAlert(JSON.parse(message.data));
    }
    throw new Error("the stream ended");
  } catch (error) {
    if (controller.signal.aborted) return;
    setConnection("down", `reconnecting (${error.message})`);
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 15000);
  }
}

function setConnection(kind, text) {
  const chip = $("connection");
  chip.dataset.state = kind;
  chip.textContent = text;
}

// ------------------------------------------------------------------ alerts

function addAlert(alert) {
  if (state.alerts.has(alert.id)) return;
  state.alerts.set(alert.id, alert);
  const card = alertCard(alert);
  const list = $("alerts");
  // most value at risk first, then newest first (stream ids grow with time)
  const after = [...list.children].find((node) => ranksBelow(node, alert));
  list.insertBefore(card, after || null);
  applyFilters();
  lookUpStore(alert.customer_id);
}

function ranksBelow(node, alert) {
  const mine = Number(alert.value_at_risk) || 0;
  const theirs = Number(node.dataset.value) || 0;
  return theirs < mine || (theirs === mine && compareIds(node.dataset.id, alert.id) < 0);
}

function compareIds(a, b) {
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  return am - bm || as - bs;
}

function alertCard(alert) {
  const handled = state.handled[alert.alert_id];
  const offer = alert.suggested_offer;
  // when their silence passed their own rhythm (event time), not when the alert was written:
  // a replayed history writes every alert at once
  const when = new Date(alert.ts_ms ?? Number(alert.id.split("-")[0]));
  const status = h("p", { class: "handled-state", role: "status" }, handled ? labelFor(handled) : "");
  const contacted = h("button", { type: "button", class: "accept" }, "Contacted");
  const dismissed = h("button", { type: "button", class: "secondary" }, "Dismissed");
  const card = h("li", {
    class: "alert-card", dataset: { id: alert.id, value: String(alert.value_at_risk ?? 0), tier: alert.tier || "",
      customer: alert.customer_id, handled: handled || "" },
  },
  h("div", { class: "card-head" },
    h("h3", {}, alert.customer_id),
    h("span", { class: `tier tier-${alert.tier || "none"}` }, alert.tier || "—"),
    alert.segment ? h("span", { class: "chip" }, alert.segment) : null,
    h("span", { class: "chip store-chip", hidden: true })),
  h("dl", { class: "facts" },
    h("div", { class: "fact" }, h("dt", {}, "Value at risk"), h("dd", { class: "var" }, money(alert.value_at_risk))),
    h("div", { class: "fact" }, h("dt", {}, "Churn score"), h("dd", {}, percent(alert.score))),
    h("div", { class: "fact" }, h("dt", {}, "Slipping since"),
      h("dd", {}, h("time", { datetime: when.toISOString() }, when.toLocaleString())))),
  alert.reasons?.length ? h("ul", { class: "reasons" }, alert.reasons.map((r) => h("li", {}, r))) : null,
  h("p", { class: "suggested" }, h("strong", {}, "Win-back offer: "),
    offer ? `${offer.name} (${offer.kind.replaceAll("_", " ")})` : "none eligible"),
  h("div", { class: "actions" }, contacted, dismissed),
  status);
  const mark = (how) => {
    state.handled[alert.alert_id] = how;
    localStorage.setItem(HANDLED_STORAGE, JSON.stringify(state.handled));
    card.dataset.handled = how;
    status.textContent = labelFor(how);
    announce(`${alert.customer_id}: ${labelFor(how).toLowerCase()}.`);
    applyFilters();
  };
  contacted.addEventListener("click", () => mark("contacted"));
  dismissed.addEventListener("click", () => mark("dismissed"));
  return card;
}

const labelFor = (how) => (how === "contacted" ? "Marked as contacted" : "Dismissed");

/** Alerts carry no store, so we take the customer's last store from their profile (once each). */
async function lookUpStore(customerId) {
  if (state.stores.has(customerId)) return showStore(customerId);
  state.stores.set(customerId, undefined);
  try {
    const profile = await api(`/v1/customers/${encodeURIComponent(customerId)}`);
    state.stores.set(customerId, profile.last_store || null);
  } catch {
    state.stores.set(customerId, null);
  }
  showStore(customerId);
}

function showStore(customerId) {
  const store = state.stores.get(customerId);
  if (store === undefined) return;
  for (const card of $("alerts").querySelectorAll(`[data-customer="${CSS.escape(customerId)}"]`)) {
    card.dataset.store = store || "";
    const chip = card.querySelector(".store-chip");
    chip.hidden = !store;
    chip.textContent = store ? `store ${store}` : "";
  }
  if (store) {
    const select = $("store-filter");
    if (![...select.options].some((o) => o.value === store)) {
      select.append(h("option", { value: store }, store));
    }
  }
  applyFilters();
}

function applyFilters() {
  const tier = $("tier-filter").value;
  const store = $("store-filter").value;
  const hideHandled = $("hide-handled").checked;
  let shown = 0;
  for (const card of $("alerts").children) {
    const visible = (!tier || card.dataset.tier === tier)
      && (!store || card.dataset.store === store)
      && (!hideHandled || !card.dataset.handled);
    card.hidden = !visible;
    if (visible) shown += 1;
  }
  $("alert-count").textContent = String(shown);
  $("alerts-empty").hidden = shown > 0;
}

// ------------------------------------------------------------------ live metrics

const COUNTERS = {
  "dead-letters": (m) => m.flow.dead_letters,
  "step-errors": (m) => m.flow.step_errors,
  "redis-retries": (m) => m.flow.redis_retries,
  "consumer-lag": (m) => m.flow.consumer_lag,
  "alerts-raised": (m) => m.flow.churn_alerts,
  "api-5xx": (m) => m.api.server_errors,
  "api-429": (m) => m.api.rate_limited,
  "api-503": (m) => (m.api.shed ? `${m.api.unavailable} (${m.api.shed} shed)` : m.api.unavailable),
};

/** Events per second between two summaries, over the flow's own report times (it reports every
 *  second); null while it has not reported anew. A restarted process counts from 0 again: never < 0. */
function eventRate(last, m) {
  if (!last || m.flow.updated_ms === null || last.flow.updated_ms === null) return null;
  const seconds = (m.flow.updated_ms - last.flow.updated_ms) / 1000;
  return seconds > 0 ? Math.max(0, (m.flow.events - last.flow.events) / seconds) : null;
}

async function pollMetrics() {
  let note = "Refreshed every 2 seconds from /v1/metrics/summary.";
  try {
    const m = await api("/v1/metrics/summary");
    const last = state.lastMetrics;
    const rate = eventRate(last, m);
    if (rate !== null) {
      $("rate").textContent = rate >= 100 ? rate.toFixed(0) : rate.toFixed(1);
      state.lastMetrics = m;
    } else if (!last || m.flow.updated_ms === null || m.now_ms - m.flow.updated_ms > 10_000) {
      $("rate").textContent = "—";
      state.lastMetrics = m;
    }
    const reporting = m.flow.processes > 0;
    for (const [id, value] of Object.entries(COUNTERS)) {
      const flowCell = !id.startsWith("api-");
      $(id).textContent = flowCell && !reporting ? "—" : String(value(m));
    }
    if (!reporting) note = "The flow has not reported its metrics. " + note;
    else if (m.now_ms - m.flow.updated_ms > 10_000) {
      note = `The flow last reported ${Math.round((m.now_ms - m.flow.updated_ms) / 1000)} s ago. ` + note;
    }
    $("alerts-today").textContent = String(m.alerts_today);
    $("acceptance").textContent = m.offer_acceptance_rate === null ? "—"
      : `${percent(m.offer_acceptance_rate, 1)} (${Math.round(m.offer_accepts)}/${Math.round(m.offer_impressions)})`;
  } catch (error) {
    $("rate").textContent = "—";
    $("metrics-note").textContent = `Metrics unavailable: ${error.message}`;
    return;
  }
  $("metrics-note").textContent = note;
}

// ------------------------------------------------------------------ wiring

for (const id of ["tier-filter", "store-filter", "hide-handled"]) $(id).addEventListener("change", applyFilters);
$("filters").addEventListener("submit", (event) => event.preventDefault());

let timer = null;
setupKeyForm(() => {
  connect();
  clearInterval(timer);
  pollMetrics();
  timer = setInterval(pollMetrics, METRICS_EVERY_MS);
}, "/v1/metrics/summary");
